//! The tus `Upload-Metadata` header: comma-separated `key base64value` pairs (tus 1.0.0,
//! creation extension). Keys are non-empty, without spaces or commas, and unique; a value may be
//! missing (a key alone); values are base64, with or without padding.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// The padding is optional: clients differ (tus-js-client pads, some encoders do not).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What an upload's metadata says of the file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileMetadata {
    /// `filename` (or `name`), as sent.
    pub name: Option<String>,
    /// `filetype` (or `type`), as sent.
    pub mime: Option<String>,
}

/// Reads an `Upload-Metadata` header. Unknown keys are allowed (and ignored); values that are
/// not UTF-8 are read lossily, as a multipart file name is. An empty header says nothing (tuspy
/// sends one when given no metadata).
pub fn parse(header: &str) -> Result<FileMetadata, String> {
    let mut seen: Vec<&str> = Vec::new();
    let mut found = FileMetadata::default();
    if header.trim().is_empty() {
        return Ok(found);
    }
    for pair in header.split(',') {
        let pair = pair.trim_matches(|c| c == ' ' || c == '\t');
        let (key, value) = match pair.split_once(' ') {
            Some((key, value)) => (key, value.trim_start()),
            None => (pair, ""),
        };
        if key.is_empty() {
            return Err("a key is empty".into());
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "the key {key:?} is not printable ASCII without spaces"
            ));
        }
        if value.contains(' ') {
            return Err(format!("the value of {key} has a space"));
        }
        if seen.contains(&key) {
            return Err(format!("the key {key} appears twice"));
        }
        seen.push(key);
        let decoded = BASE64
            .decode(value)
            .map_err(|_| format!("the value of {key} is not base64"))?;
        let text = || String::from_utf8_lossy(&decoded).into_owned();
        match key {
            "filename" => found.name = Some(text()),
            "name" if found.name.is_none() => found.name = Some(text()),
            "filetype" => found.mime = Some(text()),
            "type" if found.mime.is_none() => found.mime = Some(text()),
            _ => {}
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn file_name_and_type_are_read_under_either_key() {
        let header = format!(
            "filename {},filetype {}",
            b64("report.pdf"),
            b64("application/pdf")
        );
        assert_eq!(
            parse(&header),
            Ok(FileMetadata {
                name: Some("report.pdf".into()),
                mime: Some("application/pdf".into())
            })
        );
        let header = format!("name {}, type {}", b64("a.txt"), b64("text/plain"));
        assert_eq!(
            parse(&header),
            Ok(FileMetadata {
                name: Some("a.txt".into()),
                mime: Some("text/plain".into())
            })
        );
        // `filename` wins over `name`, whichever comes first.
        let header = format!("name {},filename {}", b64("second"), b64("first"));
        assert_eq!(parse(&header).map(|m| m.name), Ok(Some("first".into())));
    }

    #[test]
    fn values_may_be_unpadded_or_missing_and_other_keys_are_ignored() {
        let header = format!(
            "filename {},is_confidential,relativePath bnVsbA",
            "bmHDr3ZlLnR4dA"
        );
        assert_eq!(parse(&header).map(|m| m.name), Ok(Some("naïve.txt".into())));
        assert_eq!(
            parse("filename"),
            Ok(FileMetadata {
                name: Some(String::new()),
                mime: None
            })
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(parse(""), Ok(FileMetadata::default()));
        assert_eq!(parse("  "), Ok(FileMetadata::default()));
        for bad in [
            ",",
            "filename !!!",
            "filename YQ== YQ==",
            "filename YQ==,filename Yg==",
            "fïlename YQ==",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
