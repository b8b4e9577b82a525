//! The Chat Files listing's JSON, written straight from SQLite's rows into one buffer.
//!
//! A listing is built afresh whenever a chat opens after an upload or in a new URL minute, so
//! this is the work a user waits for. Through serde it cost a `FileRow` and a `ChatFile` per
//! file (a dozen strings allocated and freed) and serde's byte-by-byte escaping of every URL.
//! Here each row's strings are copied once, from SQLite's buffer into the answer: a name or type
//! goes through serde_json's escaper only when it holds a character JSON escapes, and a URL of
//! ours, made only of characters JSON leaves alone, is signed in place. The bytes are the ones
//! serde writes for `{"chatFiles": [ChatFile, …]}` (the tests hold them to that).

use crate::clock::push_rfc3339;
use crate::db::FileRef;
use crate::media_type::content_disposition;
use crate::signing::SigningBatch;
use crate::state::AppState;

/// A listing being written: `{"chatFiles":[` … `]}`.
pub struct ListingWriter<'s> {
    state: &'s AppState,
    expires: i64,
    /// Our URLs' signer, for this listing's expiry.
    signing: SigningBatch,
    /// `"<public base>/files/`: the part of our URLs that every file shares, escaped once.
    url_prefix: String,
    out: String,
    files: usize,
    /// The last `created_at` written, and its text: the files of one upload share it.
    created: (i64, String),
}

impl<'s> ListingWriter<'s> {
    /// A listing of `files` files whose URLs expire at `expires`.
    pub fn new(state: &'s AppState, expires: i64, files: usize) -> Self {
        let mut url_prefix = String::with_capacity(state.public_base.len() + 9);
        push_json_str(&mut url_prefix, &format!("{}/files/", state.public_base));
        url_prefix.pop(); // the closing quote: the key and the query follow
        // Room for the whole answer, so that it is written without a copy: a file with a short
        // name takes some 180 bytes, then its URL's prefix, key and query (about 120).
        let per_file = 180 + url_prefix.len() + 120;
        let mut out = String::with_capacity(64 + files.saturating_mul(per_file));
        out.push_str("{\"chatFiles\":[");
        Self {
            state,
            expires,
            signing: state.signer.batch(expires, false),
            url_prefix,
            out,
            files: 0,
            created: (0, String::new()),
        }
    }

    /// Appends one file, with its signed URL.
    pub fn push(&mut self, file: FileRef<'_>) {
        if self.files > 0 {
            self.out.push(',');
        }
        self.files += 1;
        let Self {
            state,
            expires,
            signing,
            url_prefix,
            out,
            created,
            ..
        } = self;
        if created.1.is_empty() || created.0 != file.created_at {
            created.1.clear();
            push_rfc3339(&mut created.1, file.created_at);
            created.0 = file.created_at;
        }
        push_file(out, &file, &created.1, |out| {
            let direct = state.store.direct_url(
                file.object_key,
                file.mime,
                || content_disposition(file.name, file.mime, false),
                *expires,
                state.url_ttl_secs,
            );
            match direct {
                Some(url) => push_json_str(out, &url),
                None if is_plain(file.object_key) => {
                    out.push_str(url_prefix);
                    out.push_str(file.object_key);
                    out.push('?');
                    // Digits, the hex kid and base64url: nothing JSON escapes.
                    signing.push_query(out, file.object_key);
                    out.push('"');
                }
                None => {
                    let mut url = format!("{}/files/{}?", state.public_base, file.object_key);
                    signing.push_query(&mut url, file.object_key);
                    push_json_str(out, &url);
                }
            }
        });
    }

    /// The whole answer.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.push_str("]}");
        self.out.into_bytes()
    }
}

/// One `ChatFile` object, fields in the order serde writes them, with `created_at` already
/// formatted; `url` writes the quoted URL.
fn push_file(
    out: &mut String,
    file: &FileRef<'_>,
    created_at: &str,
    url: impl FnOnce(&mut String),
) {
    let mut number = itoa::Buffer::new();
    out.push_str("{\"id\":");
    out.push_str(number.format(file.id));
    out.push_str(",\"chat_conversation_id\":");
    out.push_str(number.format(file.chat_id));
    out.push_str(",\"name\":");
    push_json_str(out, file.name);
    out.push_str(",\"size\":");
    out.push_str(number.format(file.size));
    out.push_str(",\"type\":");
    push_json_str(out, file.mime);
    out.push_str(",\"created_at\":\"");
    out.push_str(created_at);
    out.push_str("\",\"url\":");
    url(out);
    out.push('}');
}

/// Whether JSON carries `s` as it is: no control character, quote or backslash.
fn is_plain(s: &str) -> bool {
    s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// Appends `s` as a JSON string, exactly as serde_json writes it.
fn push_json_str(out: &mut String, s: &str) {
    if is_plain(s) {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // Serialising a string cannot fail.
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::rfc3339;
    use crate::routes::ChatFile;
    use crate::routes::files::GetChatFilesResponse;

    const URL: &str = "https://files.example.com/chat/files/0123?expires=1&kid=ab&signature=x-_";

    fn file(name: &'static str, mime: &'static str, created_at: i64) -> FileRef<'static> {
        FileRef {
            id: i64::MAX,
            chat_id: 7,
            object_key: "0123",
            name,
            size: u64::MAX,
            mime,
            created_at,
        }
    }

    fn serde_file(f: &FileRef<'_>) -> ChatFile {
        ChatFile {
            id: f.id,
            chat_conversation_id: f.chat_id,
            name: f.name.to_owned(),
            size: f.size,
            mime: f.mime.to_owned(),
            created_at: rfc3339(f.created_at),
            url: URL.to_owned(),
        }
    }

    #[test]
    fn files_are_written_as_serde_writes_them() {
        let files = [
            file("notes.txt", "text/plain; charset=utf-8", 1_710_928_800),
            file("quote \" back\\slash.pdf", "application/pdf", 0),
            file("tab\tnew\nline\u{1}\u{1f}\u{7f}.bin", "a/b", 951_868_799),
            file("résumé 日本語 😀.png", "image/png", 253_402_300_799),
            file("</script><!--", "text/html", 253_402_300_800),
            file("", "x/y", -1),
        ];
        let mut ours = String::from("{\"chatFiles\":[");
        for (i, f) in files.iter().enumerate() {
            if i > 0 {
                ours.push(',');
            }
            push_file(&mut ours, f, &rfc3339(f.created_at), |out| {
                push_json_str(out, URL)
            });
        }
        ours.push_str("]}");
        let theirs = serde_json::to_string(&GetChatFilesResponse {
            chat_files: files.iter().map(serde_file).collect(),
        })
        .unwrap_or_default();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn strings_escape_only_when_json_needs_it() {
        for s in [
            "plain",
            "",
            "a\"b",
            "a\\b",
            "\u{0}",
            "\u{1f}",
            "\u{7f}",
            "é\u{2028}",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap_or_default(), "{s:?}");
        }
        assert!(is_plain("0123456789abcdef"));
        assert!(!is_plain("a\"b"));
    }
}
