//! Signed download URLs: pure functions of a key, the object, the expiry and the clock.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The longest a URL we sign can live: the largest `--url-ttl` (7 days), plus the minute
/// `expiry` may round up.
const MAX_LIFETIME: i64 = 7 * 24 * 3600 + 60;

/// Why a download URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// Missing, malformed or wrong signature, or a parameter changed after signing.
    Invalid,
    /// Correctly signed, but `expires` (unix seconds) has passed.
    Expired { expires: i64 },
}

/// What a correctly signed, unexpired URL grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub expires: i64,
    /// Serve as an attachment whatever the type.
    pub download: bool,
}

/// Signs download URLs with the current HMAC-SHA256 key, and verifies them with it or with the
/// key of a previous secret named by the URL's `kid`.
#[derive(Clone)]
pub struct UrlSigner {
    // Keyed once; cloning the state is cheaper than re-keying for every URL.
    mac: HmacSha256,
    kid: String,
    /// Keys of previous secrets, by kid: URLs made under them verify until they expire.
    previous: Vec<(String, HmacSha256)>,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The MAC of a URL's canonical string under `key`, whose id `kid` is covered too.
fn mac_for(
    key: &HmacSha256,
    kid: &str,
    object_key: &str,
    expires: i64,
    download: bool,
) -> HmacSha256 {
    // Fields are separated by a byte that none of them may contain, so no two different URLs
    // share a canonical string.
    let mut mac = key.clone();
    mac.update(b"chatfiles-url-v1\n");
    mac.update(kid.as_bytes());
    mac.update(b"\n");
    mac.update(object_key.as_bytes());
    mac.update(b"\n");
    mac.update(itoa::Buffer::new().format(expires).as_bytes());
    mac.update(if download { b"\ndownload=1" } else { b"\n" });
    mac
}

/// [`UrlSigner::push_query`] for many keys with one expiry: the MAC state comes keyed and fed
/// the canonical string's fixed start, and the query's fixed start is written once, so that a
/// URL costs its MAC and little else. The bytes are `push_query`'s.
pub struct SigningBatch {
    /// The key's MAC state after `chatfiles-url-v1\n{kid}\n`.
    keyed: HmacSha256,
    /// What follows the object key in the canonical string.
    tail: String,
    /// `expires=…&kid=…&signature=`.
    query_head: String,
    download: bool,
}

impl SigningBatch {
    pub fn push_query(&self, out: &mut String, object_key: &str) {
        let mut mac = self.keyed.clone();
        mac.update(object_key.as_bytes());
        mac.update(self.tail.as_bytes());
        let mac = mac.finalize().into_bytes();
        out.push_str(&self.query_head);
        // 32 bytes are 43 characters of unpadded base64.
        let mut signature = [0u8; 43];
        let written = URL_SAFE_NO_PAD
            .encode_slice(mac, &mut signature)
            .unwrap_or(0);
        out.push_str(std::str::from_utf8(&signature[..written]).unwrap_or_default());
        if self.download {
            out.push_str("&download=1");
        }
    }
}

/// The expiry for a URL made at `now`: `now + ttl` rounded up to a whole minute, so that every
/// listing within the same minute hands out byte-identical (cacheable) URLs.
pub fn expiry(now: i64, ttl_secs: u64) -> i64 {
    let ttl = i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2);
    let at = now.saturating_add(ttl);
    at.saturating_add(59).div_euclid(60).saturating_mul(60)
}

impl UrlSigner {
    /// `kid` names the key in every URL so that a later rotation can tell keys apart.
    pub fn new(key: &[u8], kid: impl Into<String>) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        Self {
            mac,
            kid: kid.into(),
            previous: Vec::new(),
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn mac_for(&self, object_key: &str, expires: i64, download: bool) -> HmacSha256 {
        mac_for(&self.mac, &self.kid, object_key, expires, download)
    }

    /// Also accepts URLs signed under `older` (the signer of a previous secret); new URLs are
    /// still signed with this one's key.
    pub fn accept_previous(&mut self, older: UrlSigner) {
        if older.kid != self.kid && self.previous.iter().all(|(kid, _)| *kid != older.kid) {
            self.previous.push((older.kid, older.mac));
        }
    }

    /// The query string (without `?`) that makes `/files/{object_key}` valid until `expires`.
    pub fn query(&self, object_key: &str, expires: i64, download: bool) -> String {
        let mut query = String::new();
        self.push_query(&mut query, object_key, expires, download);
        query
    }

    /// [`UrlSigner::query`], appended to `out` (a listing signs a hundred URLs: no allocation
    /// of its own).
    pub fn push_query(&self, out: &mut String, object_key: &str, expires: i64, download: bool) {
        let mac = self
            .mac_for(object_key, expires, download)
            .finalize()
            .into_bytes();
        out.push_str("expires=");
        out.push_str(itoa::Buffer::new().format(expires));
        out.push_str("&kid=");
        out.push_str(&self.kid);
        out.push_str("&signature=");
        URL_SAFE_NO_PAD.encode_string(mac, out);
        if download {
            out.push_str("&download=1");
        }
    }

    /// A signer for many URLs with one expiry (a listing), with what they share prepared once.
    pub fn batch(&self, expires: i64, download: bool) -> SigningBatch {
        let expires_text = itoa::Buffer::new().format(expires).to_owned();
        let mut keyed = self.mac.clone();
        keyed.update(b"chatfiles-url-v1\n");
        keyed.update(self.kid.as_bytes());
        keyed.update(b"\n");
        let mut tail = format!("\n{expires_text}");
        tail.push_str(if download { "\ndownload=1" } else { "\n" });
        let query_head = format!("expires={expires_text}&kid={}&signature=", self.kid);
        SigningBatch {
            keyed,
            tail,
            query_head,
            download,
        }
    }

    /// Checks a request's raw query string against `object_key` at time `now`.
    ///
    /// Unknown parameters are ignored (they cannot change the response); a repeated or altered
    /// known one invalidates the URL. The signature is checked before the expiry, so an expired
    /// answer is only ever given for a URL we really issued.
    pub fn verify(&self, object_key: &str, query: &str, now: i64) -> Result<Grant, SignatureError> {
        let mut expires = None;
        let mut signature = None;
        let mut kid = None;
        let mut download = None;
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "expires" => &mut expires,
                "signature" => &mut signature,
                "kid" => &mut kid,
                "download" => &mut download,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(SignatureError::Invalid);
            }
        }
        let expires_raw = expires.ok_or(SignatureError::Invalid)?;
        if expires_raw.is_empty() || !expires_raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SignatureError::Invalid);
        }
        let expires: i64 = expires_raw.parse().map_err(|_| SignatureError::Invalid)?;
        let kid = kid.ok_or(SignatureError::Invalid)?;
        let key = if kid == self.kid {
            &self.mac
        } else {
            self.previous
                .iter()
                .find(|(old, _)| *old == kid)
                .map(|(_, mac)| mac)
                .ok_or(SignatureError::Invalid)?
        };
        let download = match download.as_deref() {
            None => false,
            Some("1") => true,
            Some(_) => return Err(SignatureError::Invalid),
        };
        let signature = signature
            .and_then(|s| URL_SAFE_NO_PAD.decode(s.as_bytes()).ok())
            .ok_or(SignatureError::Invalid)?;
        mac_for(key, &kid, object_key, expires, download)
            .verify_slice(&signature)
            .map_err(|_| SignatureError::Invalid)?;
        if now >= expires {
            return Err(SignatureError::Expired { expires });
        }
        // We never hand out a URL that lives longer than the longest TTL: one that claims to
        // was minted with a key that leaked (a previous secret, say), and is refused.
        if expires - now > MAX_LIFETIME {
            return Err(SignatureError::Invalid);
        }
        Ok(Grant { expires, download })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn signer() -> UrlSigner {
        UrlSigner::new(b"test key material, 32 bytes long", "k1")
    }

    #[test]
    fn urls_of_a_previous_key_verify_by_their_kid() {
        let old = UrlSigner::new(b"an older key material, 32 bytes!", "k0");
        let old_query = old.query(KEY, 600, false);
        let mut current = signer();
        assert_eq!(
            current.verify(KEY, &old_query, 0),
            Err(SignatureError::Invalid)
        );
        current.accept_previous(old);
        assert_eq!(
            current.verify(KEY, &old_query, 0),
            Ok(Grant {
                expires: 600,
                download: false
            })
        );
        // New URLs carry the current kid, and a forged kid does not borrow another key.
        let new_query = current.query(KEY, 600, false);
        assert!(new_query.contains("kid=k1"));
        assert!(current.verify(KEY, &new_query, 0).is_ok());
        let forged = old_query.replace("kid=k0", "kid=k1");
        assert_eq!(
            current.verify(KEY, &forged, 0),
            Err(SignatureError::Invalid)
        );
        // Not even a valid signature makes a URL live beyond the longest TTL.
        let far = current.query(KEY, MAX_LIFETIME + 120, false);
        assert_eq!(current.verify(KEY, &far, 0), Err(SignatureError::Invalid));
        assert!(current.verify(KEY, &far, 120).is_ok());
    }

    #[test]
    fn a_batch_signs_exactly_as_one_by_one() {
        let signer = signer();
        for download in [false, true] {
            for expires in [0, 60, 1_710_929_700, i64::MAX] {
                let batch = signer.batch(expires, download);
                for key in ["", "0123456789abcdef0123456789abcdef", "k\n"] {
                    let mut ours = String::from("x?");
                    batch.push_query(&mut ours, key);
                    let theirs = format!("x?{}", signer.query(key, expires, download));
                    assert_eq!(ours, theirs);
                }
            }
        }
    }

    #[test]
    fn expiry_rounds_up_to_the_minute() {
        assert_eq!(expiry(0, 900), 900);
        assert_eq!(expiry(1, 900), 960);
        assert_eq!(expiry(59, 900), 960);
        assert_eq!(expiry(60, 1), 120);
    }

    #[test]
    fn a_fresh_url_verifies_until_it_expires() {
        let query = signer().query(KEY, 960, false);
        assert_eq!(
            signer().verify(KEY, &query, 959),
            Ok(Grant {
                expires: 960,
                download: false
            })
        );
        assert_eq!(
            signer().verify(KEY, &query, 960),
            Err(SignatureError::Expired { expires: 960 })
        );
    }

    #[test]
    fn the_download_flag_is_covered() {
        let query = signer().query(KEY, 960, true);
        assert_eq!(
            signer().verify(KEY, &query, 0).map(|g| g.download),
            Ok(true)
        );
        let stripped = query.replace("&download=1", "");
        assert_eq!(
            signer().verify(KEY, &stripped, 0),
            Err(SignatureError::Invalid)
        );
        let added = format!("{}&download=1", signer().query(KEY, 960, false));
        assert_eq!(
            signer().verify(KEY, &added, 0),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn any_change_invalidates() {
        let query = signer().query(KEY, 960, false);
        let other_key = "1123456789abcdef0123456789abcdef";
        assert_eq!(
            signer().verify(other_key, &query, 0),
            Err(SignatureError::Invalid)
        );
        let later = query.replace("expires=960", "expires=1020");
        assert_eq!(
            signer().verify(KEY, &later, 0),
            Err(SignatureError::Invalid)
        );
        let doubled = format!("{query}&expires=960");
        assert_eq!(
            signer().verify(KEY, &doubled, 0),
            Err(SignatureError::Invalid)
        );
        let other = UrlSigner::new(b"another key, also 32 bytes long!", "k1");
        assert_eq!(other.verify(KEY, &query, 0), Err(SignatureError::Invalid));
        assert_eq!(
            signer().verify(KEY, "expires=960&kid=k1", 0),
            Err(SignatureError::Invalid)
        );
        assert_eq!(signer().verify(KEY, "", 0), Err(SignatureError::Invalid));
        let signed_negative = query.replace("expires=960", "expires=-960");
        assert_eq!(
            signer().verify(KEY, &signed_negative, 0),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn unknown_parameters_are_ignored() {
        let query = format!("{}&utm_source=mail", signer().query(KEY, 960, false));
        assert!(signer().verify(KEY, &query, 0).is_ok());
    }
}
