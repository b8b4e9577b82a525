//! The master secret (from the environment or `<storage>/secret.key`) and the keys derived from it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, anyhow};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use hkdf::Hkdf;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;

use crate::config::{PREVIOUS_SECRETS_ENV, SECRET_ENV};
use crate::signing::UrlSigner;

const MIN_SECRET_BYTES: usize = 32;
const SECRET_FILE: &str = "secret.key";

/// Keys for the session cookie and for download URLs, each derived from the master secret
/// under its own label so that neither can stand in for the other.
pub struct Keys {
    pub session: actix_web::cookie::Key,
    pub urls: UrlSigner,
}

/// The keys in use: the current secret's, plus what previous secrets left valid (their URLs
/// verify by kid through `urls`; their session keys are in `previous_sessions`).
pub struct KeyRing {
    pub current: Keys,
    pub previous_sessions: Vec<actix_web::cookie::Key>,
}

/// What a secret must be, as every message about a bad one states it.
const SECRET_RULE: &str = "it must be at least 32 bytes once decoded, written as hex or base64 \
                           (make one with: openssl rand -hex 32)";

/// Why a secret's text was refused; never carries the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("it is empty")]
    Empty,
    #[error("it is neither hex nor base64")]
    NotHexOrBase64,
    #[error("it decodes to only {0} bytes")]
    TooShort(usize),
}

/// `what is invalid (why): the rule`, for a secret from `what`.
fn invalid(what: &str, err: SecretError) -> anyhow::Error {
    anyhow!("{what} is invalid ({err}): {SECRET_RULE}")
}

/// The same for the secret file, with what can be done about it.
fn invalid_file(path: &Path, err: SecretError) -> anyhow::Error {
    anyhow!(
        "{} is invalid ({err}): it must hold at least 32 bytes, written as hex or base64; \
         restore it from a backup, or delete it to have a new one generated at start (which \
         ends every session and signed URL made under the old one)",
        path.display()
    )
}

/// The current keys and those of the previous secrets (`CHATFILES_PREVIOUS_SECRETS`).
pub fn load_key_ring(
    storage_dir: &Path,
    from_env: Option<&SecretString>,
    previous: &[SecretString],
) -> anyhow::Result<KeyRing> {
    let master = load_master(storage_dir, from_env)?;
    let mut current = derive_keys(&master);
    drop(master);
    let mut previous_sessions = Vec::with_capacity(previous.len());
    for (index, secret) in previous.iter().enumerate() {
        let old = decode_secret(secret.expose_secret()).map_err(|err| {
            let what = format!(
                "{PREVIOUS_SECRETS_ENV} entry {} of {}",
                index + 1,
                previous.len()
            );
            invalid(&what, err)
        })?;
        let old = derive_keys(&old);
        current.urls.accept_previous(old.urls);
        previous_sessions.push(old.session);
    }
    Ok(KeyRing {
        current,
        previous_sessions,
    })
}

/// Decodes a secret given as hex (an even number of hex digits) or base64 (standard or URL-safe,
/// padded or not), and insists on at least 32 bytes.
pub fn decode_secret(text: &str) -> Result<SecretBox<Vec<u8>>, SecretError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(SecretError::Empty);
    }
    let is_hex = text.len().is_multiple_of(2) && text.bytes().all(|b| b.is_ascii_hexdigit());
    let bytes = if is_hex {
        hex::decode(text).ok()
    } else {
        [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
    };
    let bytes = bytes.ok_or(SecretError::NotHexOrBase64)?;
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(SecretError::TooShort(bytes.len()));
    }
    Ok(SecretBox::new(Box::new(bytes)))
}

/// The master secret: the environment's if given, else the one in `<storage>/secret.key`,
/// created (mode 0600) on first start.
pub fn load_master(
    storage_dir: &Path,
    from_env: Option<&SecretString>,
) -> anyhow::Result<SecretBox<Vec<u8>>> {
    if let Some(secret) = from_env {
        return decode_secret(secret.expose_secret()).map_err(|err| invalid(SECRET_ENV, err));
    }
    let path = storage_dir.join(SECRET_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let mode = fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "secret key file is readable by others; chmod 600 it");
            }
            decode_secret(&text).map_err(|err| invalid_file(&path, err))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => generate(&path),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn generate(path: &Path) -> anyhow::Result<SecretBox<Vec<u8>>> {
    let mut bytes = vec![0u8; MIN_SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => file,
        // Another process won the race to create it: use theirs.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            return decode_secret(&text).map_err(|err| invalid_file(path, err));
        }
        Err(err) => return Err(err).with_context(|| format!("cannot create {}", path.display())),
    };
    file.write_all(format!("{}\n", hex::encode(&bytes)).as_bytes())?;
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    tracing::info!(path = %path.display(), "generated a new secret key");
    Ok(SecretBox::new(Box::new(bytes)))
}

/// Derives the session and URL keys from the master secret with HKDF-SHA256.
pub fn derive_keys(master: &SecretBox<Vec<u8>>) -> Keys {
    let hkdf = Hkdf::<Sha256>::new(Some(b"chatfiles"), master.expose_secret());
    let mut session = [0u8; 64];
    let mut urls = [0u8; 32];
    let mut kid = [0u8; 4];
    // Output lengths are far below HKDF's 255 * 32 byte limit, so expansion cannot fail.
    for (label, out) in [
        (&b"chatfiles session cookie v1"[..], &mut session[..]),
        (&b"chatfiles download url v1"[..], &mut urls[..]),
        (&b"chatfiles download url key id v1"[..], &mut kid[..]),
    ] {
        hkdf.expand(label, out).unwrap_or_else(|_| unreachable!());
    }
    let keys = Keys {
        session: actix_web::cookie::Key::from(&session),
        urls: UrlSigner::new(&urls, hex::encode(kid)),
    };
    session.fill(0);
    urls.fill(0);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_decode_from_hex_and_base64() {
        let hex32 = "00".repeat(32);
        assert_eq!(
            decode_secret(&hex32).map(|s| s.expose_secret().len()).ok(),
            Some(32)
        );
        let b64 = STANDARD.encode([7u8; 40]);
        assert_eq!(
            decode_secret(&b64).map(|s| s.expose_secret().clone()).ok(),
            Some(vec![7u8; 40])
        );
        let b64url = URL_SAFE_NO_PAD.encode([0xfbu8; 33]);
        assert!(decode_secret(&b64url).is_ok());
        assert_eq!(
            decode_secret("too short").err(),
            Some(SecretError::NotHexOrBase64)
        );
        assert_eq!(
            decode_secret(&"ab".repeat(31)).err(),
            Some(SecretError::TooShort(31))
        );
        assert_eq!(decode_secret("  \n").err(), Some(SecretError::Empty));
    }

    #[test]
    fn a_bad_secret_is_named_with_the_rule_and_never_shown() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let short = SecretString::from("c0ffee".repeat(5));
        let err = load_master(dir.path(), Some(&short))
            .err()
            .map(|e| format!("{e:#}"));
        assert_eq!(
            err.as_deref(),
            Some(
                "CHATFILES_SECRET is invalid (it decodes to only 15 bytes): it must be at least \
                 32 bytes once decoded, written as hex or base64 (make one with: openssl rand \
                 -hex 32)"
            )
        );
        let garbage = SecretString::from("not*a*secret!");
        let err = load_master(dir.path(), Some(&garbage))
            .err()
            .map(|e| format!("{e:#}"));
        let err = err.unwrap_or_default();
        assert!(err.contains("neither hex nor base64"), "{err}");
        assert!(!err.contains("not*a*secret"), "{err}");

        let good = SecretString::from("ab".repeat(32));
        let previous = [good.clone(), short.clone(), good.clone()];
        let err = load_key_ring(dir.path(), Some(&good), &previous)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(
            err.starts_with(
                "CHATFILES_PREVIOUS_SECRETS entry 2 of 3 is invalid (it decodes to only 15 bytes): \
                 it must be at least 32 bytes"
            ),
            "{err}"
        );
        assert!(!err.contains(&"c0ffee".repeat(5)), "{err}");

        fs::write(dir.path().join(SECRET_FILE), "c0ffee\n")?;
        fs::set_permissions(
            dir.path().join(SECRET_FILE),
            fs::Permissions::from_mode(0o600),
        )?;
        let err = load_master(dir.path(), None)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(
            err.contains("secret.key is invalid (it decodes to only 3 bytes)"),
            "{err}"
        );
        assert!(
            err.contains("delete it to have a new one generated"),
            "{err}"
        );
        assert!(!err.contains("c0ffee"), "{err}");
        Ok(())
    }

    #[test]
    fn the_secret_file_is_created_private_and_reused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let first = load_master(dir.path(), None)?;
        let mode = fs::metadata(dir.path().join(SECRET_FILE))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = load_master(dir.path(), None)?;
        assert_eq!(first.expose_secret(), second.expose_secret());
        Ok(())
    }

    #[test]
    fn different_secrets_give_different_keys() -> anyhow::Result<()> {
        let a = derive_keys(&decode_secret(&"11".repeat(32))?);
        let b = derive_keys(&decode_secret(&"22".repeat(32))?);
        assert_ne!(a.urls.kid(), b.urls.kid());
        assert_ne!(a.urls.query("k", 60, false), b.urls.query("k", 60, false));
        assert_ne!(a.session.signing(), b.session.signing());
        Ok(())
    }
}
