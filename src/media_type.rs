//! The type a stored file is served with: the uploader's when it is a real media type, else a
//! guess from its name; text that turns out to be UTF-8 says so. And how a download presents
//! it: inline or as an attachment, under its name (the same for our route and a presigned URL).

use mime::Mime;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What a browser assumes of text without a charset is not UTF-8 (it shows `rÃ©sumÃ©`), so
/// text found to be UTF-8 carries this parameter.
const UTF8: &str = "charset=utf-8";

/// The type to store for a part that declared `declared` and is named `name`, before its bytes
/// are seen: the declared type when it is a concrete media type (lowercased, only `charset`
/// kept), else a guess from the name, else `application/octet-stream`.
///
/// The declared type must be `type/subtype` with an RFC 9110 token on both sides (the `mime`
/// parser checks the characters; it lets an empty subtype through, so that is checked here) and
/// name one type, not a range (`*`). `application/octet-stream` says nothing, so the name is
/// asked instead.
pub fn declared_or_guessed(declared: Option<&Mime>, name: &str) -> String {
    if let Some(mime) = declared.filter(|m| is_concrete(m)) {
        let essence = mime.essence_str().to_ascii_lowercase();
        return match mime.get_param(mime::CHARSET) {
            Some(charset) => format!(
                "{essence}; charset={}",
                charset.as_str().to_ascii_lowercase()
            ),
            None => essence,
        };
    }
    mime_guess::from_path(name).first().map_or_else(
        || mime::APPLICATION_OCTET_STREAM.to_string(),
        |m| m.essence_str().to_owned(),
    )
}

fn is_concrete(mime: &Mime) -> bool {
    let (kind, subtype) = (mime.type_().as_str(), mime.subtype().as_str());
    !kind.is_empty()
        && !subtype.is_empty()
        && kind != "*"
        && subtype != "*"
        && *mime != mime::APPLICATION_OCTET_STREAM
}

/// Whether the bytes decide the type's charset: a `text/*` type that names none.
pub fn wants_charset(stored: &str) -> bool {
    stored.starts_with("text/") && !stored.contains(';')
}

/// `stored` with `; charset=utf-8` when the bytes were UTF-8 and the type wants a charset.
pub fn with_charset(stored: String, utf8: bool) -> String {
    if utf8 && wants_charset(&stored) {
        format!("{stored}; {UTF8}")
    } else {
        stored
    }
}

/// Tells, chunk by chunk, whether a stream of bytes is UTF-8: a character split between two
/// chunks is carried over to the next.
#[derive(Debug, Clone)]
pub struct Utf8Stream {
    valid: bool,
    /// The start of a character that the last chunk ended inside (at most 3 bytes).
    pending: [u8; 4],
    pending_len: usize,
}

impl Default for Utf8Stream {
    fn default() -> Self {
        Self {
            valid: true,
            pending: [0; 4],
            pending_len: 0,
        }
    }
}

impl Utf8Stream {
    /// Takes the next chunk of the stream.
    pub fn update(&mut self, mut chunk: &[u8]) {
        if !self.valid {
            return;
        }
        if self.pending_len > 0 {
            // `pending` starts with a valid lead byte (anything else failed below), so its
            // width is known.
            let width = match self.pending[0] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let needed = width - self.pending_len;
            if chunk.len() < needed {
                self.pending[self.pending_len..self.pending_len + chunk.len()]
                    .copy_from_slice(chunk);
                self.pending_len += chunk.len();
                return;
            }
            self.pending[self.pending_len..width].copy_from_slice(&chunk[..needed]);
            self.pending_len = 0;
            if std::str::from_utf8(&self.pending[..width]).is_err() {
                self.valid = false;
                return;
            }
            chunk = &chunk[needed..];
        }
        match std::str::from_utf8(chunk) {
            Ok(_) => {}
            // The chunk ends inside a character: keep its start for the next chunk.
            Err(err) if err.error_len().is_none() => {
                let tail = &chunk[err.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len();
            }
            Err(_) => self.valid = false,
        }
    }

    /// Whether everything taken was UTF-8, ending on a character boundary.
    pub fn is_utf8(&self) -> bool {
        self.valid && self.pending_len == 0
    }
}

/// RFC 8187 `attr-char`: everything else in `filename*` is percent-encoded.
const ATTR_CHAR_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// Whether a browser may show this type in place; anything that can run script (HTML, SVG,
/// XML…) is always an attachment.
fn is_inline_type(mime: &str) -> bool {
    let essence = mime.split(';').next().unwrap_or_default().trim();
    (essence.starts_with("image/") && essence != "image/svg+xml")
        || essence.starts_with("audio/")
        || essence.starts_with("video/")
        || essence == "application/pdf"
        || essence == "text/plain"
}

/// `inline` or `attachment`, with an ASCII `filename=` fallback and the exact name in
/// `filename*` (RFC 6266 / RFC 8187).
pub fn content_disposition(name: &str, mime: &str, force_download: bool) -> String {
    let kind = if force_download || !is_inline_type(mime) {
        "attachment"
    } else {
        "inline"
    };
    let fallback: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' && c != '%' => c,
            _ => '_',
        })
        .collect();
    let encoded = utf8_percent_encode(name, ATTR_CHAR_ESCAPES);
    format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Option<Mime> {
        text.parse().ok()
    }

    #[test]
    fn a_concrete_declared_type_is_kept_lowercased_with_only_its_charset() {
        let pdf = parsed("Application/PDF");
        assert_eq!(
            declared_or_guessed(pdf.as_ref(), "x.bin"),
            "application/pdf"
        );
        let text = parsed("text/plain; charset=UTF-8; format=flowed");
        assert_eq!(
            declared_or_guessed(text.as_ref(), "x"),
            "text/plain; charset=utf-8"
        );
        let quoted = parsed("text/csv; charset=\"ISO-8859-1\"");
        assert_eq!(
            declared_or_guessed(quoted.as_ref(), "x"),
            "text/csv; charset=iso-8859-1"
        );
        let vendor =
            parsed("application/vnd.openxmlformats-officedocument.wordprocessingml.document");
        assert_eq!(
            declared_or_guessed(vendor.as_ref(), "x"),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        );
    }

    #[test]
    fn no_type_octet_stream_or_an_invalid_one_asks_the_name() {
        assert_eq!(declared_or_guessed(None, "doc.pdf"), "application/pdf");
        assert_eq!(
            declared_or_guessed(None, "mystery"),
            "application/octet-stream"
        );
        let octet = mime::APPLICATION_OCTET_STREAM;
        assert_eq!(declared_or_guessed(Some(&octet), "photo.png"), "image/png");
        // What a multipart parser hands over for these is either nothing or the `mime` crate's
        // reading; neither may become the stored type.
        for invalid in [
            "text/",
            "/x",
            "a b/c",
            "*/*",
            "text/*",
            "text",
            "te(xt/plain",
            "a/b/c",
        ] {
            assert_eq!(
                declared_or_guessed(parsed(invalid).as_ref(), "photo.png"),
                "image/png",
                "{invalid:?}"
            );
        }
    }

    #[test]
    fn only_text_without_a_charset_takes_one_from_its_bytes() {
        assert_eq!(
            with_charset("text/plain".into(), true),
            "text/plain; charset=utf-8"
        );
        assert_eq!(with_charset("text/plain".into(), false), "text/plain");
        assert_eq!(
            with_charset("text/plain; charset=iso-8859-1".into(), true),
            "text/plain; charset=iso-8859-1"
        );
        assert_eq!(
            with_charset("application/json".into(), true),
            "application/json"
        );
        assert_eq!(with_charset("image/svg+xml".into(), true), "image/svg+xml");
    }

    fn streamed(chunks: &[&[u8]]) -> bool {
        let mut stream = Utf8Stream::default();
        for chunk in chunks {
            stream.update(chunk);
        }
        stream.is_utf8()
    }

    #[test]
    fn utf8_is_told_across_chunk_boundaries() {
        let text = "résumé, 東京, 🦀 — done".as_bytes();
        for split in 0..=text.len() {
            assert!(streamed(&[&text[..split], &text[split..]]), "split {split}");
        }
        let bytewise: Vec<&[u8]> = text.chunks(1).collect();
        assert!(streamed(&bytewise));
        assert!(streamed(&[]));
        assert!(streamed(&[b"", b"plain ascii", b""]));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_caught_wherever_they_fall() {
        let latin1 = b"r\xe9sum\xe9";
        assert!(!streamed(&[latin1]));
        // A character cut off at the end of the stream.
        let crab = "🦀".as_bytes();
        assert!(!streamed(&[&crab[..3]]));
        assert!(!streamed(&[&crab[..1], &crab[1..2]]));
        // A lead byte followed by one that does not continue it, in the next chunk.
        assert!(!streamed(&[b"ok \xe6", b"A"]));
        assert!(!streamed(&[b"ok \xe6\x9d", b"A and more"]));
        // An overlong encoding and a surrogate, split.
        assert!(!streamed(&[b"\xc0", b"\xaf"]));
        assert!(!streamed(&[b"\xed\xa0", b"\x80"]));
        // Once invalid, always invalid.
        assert!(!streamed(&[b"\xff", b"fine afterwards"]));
    }
}
