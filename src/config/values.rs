//! The values the flags take, parsed and formatted: durations within their ranges, sizes, URLs,
//! CORS origins, trusted proxies and object stores.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

/// The bounds of a duration flag and examples that lie within them.
struct DurationRange {
    min: Duration,
    max: Duration,
    examples: &'static str,
}

const URL_TTL: DurationRange = DurationRange {
    min: Duration::from_secs(1),
    max: Duration::from_secs(7 * 24 * 3600),
    examples: "90s, 15m or 7d",
};
const UPLOAD_EXPIRY: DurationRange = DurationRange {
    min: Duration::from_secs(60),
    max: Duration::from_secs(30 * 24 * 3600),
    examples: "1h, 24h or 7d",
};
const SESSION_TTL: DurationRange = DurationRange {
    min: Duration::from_secs(1),
    max: Duration::from_secs(365 * 24 * 3600),
    examples: "12h, 7d or 30d",
};
const TIMEOUT: DurationRange = DurationRange {
    min: Duration::from_millis(100),
    max: Duration::from_secs(3600),
    examples: "500ms, 10s or 2m",
};

/// A size in the largest binary unit that holds it exactly, as the flags take it: `25MiB`,
/// `1GiB`, `512KiB`; `1000B` when no unit divides it.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    UNITS
        .iter()
        .find(|(size, _)| bytes >= *size && bytes.is_multiple_of(*size))
        .map_or_else(
            || format!("{bytes}B"),
            |(size, unit)| format!("{}{unit}", bytes / size),
        )
}

/// A duration in the largest unit that holds it exactly, as the flags take it: `7d`, `15m`,
/// `90s`, `100ms`.
pub fn format_duration(duration: Duration) -> String {
    const UNITS: [(u128, &str); 7] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    UNITS
        .iter()
        .find(|(size, _)| nanos.is_multiple_of(*size))
        .map_or_else(
            || format!("{nanos}ns"),
            |(size, unit)| format!("{}{unit}", nanos / size),
        )
}

pub(super) fn parse_public_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("not an absolute URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("scheme must be http or https".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("a host is required".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not carry a query or fragment".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    Ok(url)
}

/// Where objects go, as `--object-store` (and `migrate --to`) name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreTarget {
    /// `local`: `<storage>/objects`.
    Local,
    /// `s3://BUCKET[/PREFIX]`; the prefix is empty or ends with `/`.
    S3 { bucket: String, prefix: String },
}

/// `local` or `s3://BUCKET[/PREFIX]`, with a bucket name as S3 allows it (3 to 63 lowercase
/// letters, digits, dots and hyphens, starting and ending with a letter or digit) and a prefix
/// of plain path segments.
pub fn parse_object_store(value: &str) -> Result<StoreTarget, String> {
    if value == "local" {
        return Ok(StoreTarget::Local);
    }
    let rest = value
        .strip_prefix("s3://")
        .ok_or("expected local or s3://BUCKET[/PREFIX]")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && edge(bucket.chars().next())
        && edge(bucket.chars().last())
        && !bucket.contains("..");
    if !bucket_ok {
        return Err(format!(
            "bucket name {bucket:?} is not one S3 allows (3-63 lowercase letters, digits, dots, hyphens)"
        ));
    }
    let prefix = prefix.trim_end_matches('/');
    let segments_ok = prefix.is_empty()
        || prefix.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.!*'()".contains(c))
        });
    if !segments_ok {
        return Err(format!(
            "prefix {prefix:?} must be path segments of letters, digits and -_.!*'()"
        ));
    }
    Ok(StoreTarget::S3 {
        bucket: bucket.to_owned(),
        prefix: if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        },
    })
}

/// An S3 endpoint: an http(s) URL of a host, without path, query or credentials.
pub(super) fn parse_s3_endpoint(value: &str) -> Result<Url, String> {
    let url = parse_public_url(value)?;
    if url.path() != "/" {
        return Err("must be the endpoint's root, without a path".into());
    }
    Ok(url)
}

/// A duration as humantime reads it (`90s`, `15m`, `7d`, `1h 30m`) within `range`; the error
/// suggests only values the range takes.
fn parse_duration_within(value: &str, range: &DurationRange) -> Result<Duration, String> {
    humantime::parse_duration(value.trim())
        .ok()
        .filter(|duration| (range.min..=range.max).contains(duration))
        .ok_or_else(|| {
            format!(
                "expected a duration such as {}, between {} and {}",
                range.examples,
                format_duration(range.min),
                format_duration(range.max)
            )
        })
}

pub(super) fn parse_timeout(value: &str) -> Result<Duration, String> {
    parse_duration_within(value, &TIMEOUT)
}

pub(super) fn parse_url_ttl(value: &str) -> Result<Duration, String> {
    parse_duration_within(value, &URL_TTL)
}

pub(super) fn parse_upload_expiry(value: &str) -> Result<Duration, String> {
    parse_duration_within(value, &UPLOAD_EXPIRY)
}

pub(super) fn parse_session_ttl(value: &str) -> Result<Duration, String> {
    parse_duration_within(value, &SESSION_TTL)
}

/// Parses `25MiB`, `512KiB`, `1GiB`, `10MB`, `100B` or plain bytes. Binary units are powers of
/// 1024, decimal units of 1000.
pub fn parse_size(value: &str) -> Result<u64, String> {
    match parse_bytes(value)? {
        0 => Err("must be at least 1 byte".into()),
        size => Ok(size),
    }
}

/// A size as [`parse_size`] reads it, zero allowed.
fn parse_bytes(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    if digits.is_empty() {
        return Err("expected a size such as 25MiB, 512KiB or 1GiB, or plain bytes".into());
    }
    let unit = unit.trim();
    if unit.starts_with(['.', ',']) {
        return Err("expected a whole number: write 1536MiB rather than 1.5GiB".into());
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "unknown unit {unit:?}: use B, KiB, MiB, GiB or TiB (powers of 1024) or kB, \
                 MB, GB or TB (powers of 1000)"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(multiplier))
        .ok_or_else(|| "too large".to_owned())
}

/// A size as [`parse_size`] reads it, or zero (`0`, `0B`, `0GiB`): no quota, no cache.
pub(super) fn parse_size_or_zero(value: &str) -> Result<u64, String> {
    parse_bytes(value)
}

/// One CORS origin, normalised to `scheme://host[:port]` as browsers send `Origin`.
pub(super) fn parse_origin(value: &str) -> Result<String, String> {
    let url = Url::parse(value.trim()).map_err(|e| format!("{value:?} is not an origin: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{value:?} is not an http(s) origin"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{value:?} must be an origin only, without a path"));
    }
    Ok(url.origin().ascii_serialization())
}

/// One trusted proxy: an address (a /32 or /128) or a CIDR range.
pub(super) fn parse_proxy(value: &str) -> Result<IpNet, String> {
    let value = value.trim();
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{value:?} is not an IP address or CIDR range"))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::public_base;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("25MiB"), Ok(25 * 1024 * 1024));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2 MB"), Ok(2_000_000));
        assert_eq!(parse_size("3kB"), Ok(3_000));
        assert_eq!(parse_size("3KB"), Ok(3_000));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1TB"), Ok(1_000_000_000_000));
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert!(parse_size("17179869184GiB").is_err());
    }

    #[test]
    fn size_errors_name_both_unit_families() {
        let err = parse_size("12 parsecs").err().unwrap_or_default();
        assert_eq!(
            err,
            "unknown unit \"parsecs\": use B, KiB, MiB, GiB or TiB (powers of 1024) or kB, MB, \
             GB or TB (powers of 1000)"
        );
        let err = parse_size("1.5GiB").err().unwrap_or_default();
        assert!(err.contains("1536MiB"), "{err}");
        assert_eq!(parse_size("1536MiB"), Ok(1536 << 20));
        let err = parse_size("-1").err().unwrap_or_default();
        assert!(err.contains("25MiB"), "{err}");
    }

    #[test]
    fn sizes_are_shown_in_the_units_the_flags_take() {
        assert_eq!(format_size(26_214_400), "25MiB");
        assert_eq!(format_size(1 << 30), "1GiB");
        assert_eq!(format_size(512 * 1024), "512KiB");
        assert_eq!(format_size(3 << 40), "3TiB");
        assert_eq!(format_size(1536 << 20), "1536MiB");
        assert_eq!(format_size(1000), "1000B");
        assert_eq!(format_size(2_000_000), "2000000B");
        assert_eq!(format_size(1), "1B");
        assert_eq!(format_size(0), "0B");
        for bytes in [1, 1000, 1024, 1536 << 20, 26_214_400, 3 << 40, u64::MAX] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
    }

    #[test]
    fn durations_are_shown_in_the_units_the_flags_take() {
        assert_eq!(format_duration(Duration::from_secs(604_800)), "7d");
        assert_eq!(format_duration(Duration::from_secs(365 * 86_400)), "365d");
        assert_eq!(format_duration(Duration::from_secs(900)), "15m");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(5400)), "90m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(1)), "1s");
        assert_eq!(format_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(format_duration(Duration::from_micros(1500)), "1500us");
        assert_eq!(format_duration(Duration::from_nanos(7)), "7ns");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        for secs in [1, 90, 900, 5400, 604_800] {
            let duration = Duration::from_secs(secs);
            assert_eq!(
                humantime::parse_duration(&format_duration(duration)).ok(),
                Some(duration)
            );
        }
    }

    #[test]
    fn ttls_are_bounded() {
        assert_eq!(parse_url_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_url_ttl("7d"), Ok(URL_TTL.max));
        assert_eq!(parse_url_ttl("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_url_ttl(" 90s "), Ok(Duration::from_secs(90)));
        assert!(parse_url_ttl("8d").is_err());
        assert!(parse_url_ttl("0s").is_err());
        assert!(parse_session_ttl("366d").is_err());
        assert!(parse_session_ttl("nonsense").is_err());
        assert_eq!(parse_timeout("100ms"), Ok(Duration::from_millis(100)));
        assert!(parse_timeout("99ms").is_err());
        assert!(parse_timeout("2h").is_err());
    }

    #[test]
    fn duration_errors_suggest_only_what_the_range_takes() {
        assert_eq!(
            parse_url_ttl("9d"),
            Err("expected a duration such as 90s, 15m or 7d, between 1s and 7d".to_owned())
        );
        assert_eq!(parse_url_ttl("15 parsecs"), parse_url_ttl("9d"));
        assert_eq!(
            parse_timeout("1ns"),
            Err("expected a duration such as 500ms, 10s or 2m, between 100ms and 1h".to_owned())
        );
        assert_eq!(
            parse_session_ttl("0s"),
            Err("expected a duration such as 12h, 7d or 30d, between 1s and 365d".to_owned())
        );
        for range in [&URL_TTL, &SESSION_TTL, &TIMEOUT, &UPLOAD_EXPIRY] {
            for example in range.examples.split([',', ' ']).filter(|w| w.len() > 2) {
                assert!(
                    parse_duration_within(example, range).is_ok(),
                    "{example} is suggested but refused"
                );
            }
        }
    }

    #[test]
    fn public_urls_must_be_absolute_http() {
        assert!(parse_public_url("https://example.com/chat/").is_ok());
        assert!(parse_public_url("ftp://example.com").is_err());
        assert!(parse_public_url("example.com").is_err());
        assert!(parse_public_url("https://example.com/?a=b").is_err());
        let url = parse_public_url("https://example.com/chat/").ok();
        let bound = SocketAddr::from(([127, 0, 0, 1], 1));
        assert_eq!(public_base(url.as_ref(), bound), "https://example.com/chat");
        assert_eq!(public_base(None, bound), "http://127.0.0.1:1");
    }

    #[test]
    fn cors_origins_are_normalised_origins() {
        assert_eq!(
            parse_origin("http://localhost:5173/"),
            Ok("http://localhost:5173".to_owned())
        );
        assert_eq!(
            parse_origin("HTTPS://App.Example.com:443"),
            Ok("https://app.example.com".to_owned())
        );
        assert!(parse_origin("http://localhost:5173/app").is_err());
        assert!(parse_origin("localhost:5173").is_err());
        assert!(parse_origin("*").is_err());
    }

    #[test]
    fn quotas_and_proxies_parse() {
        assert_eq!(parse_size_or_zero("0"), Ok(0));
        assert_eq!(parse_size_or_zero("0B"), Ok(0));
        assert_eq!(parse_size_or_zero("0 GiB"), Ok(0));
        assert_eq!(parse_size_or_zero("1GiB"), Ok(1 << 30));
        assert!(parse_size_or_zero("-1").is_err());
        assert_eq!(
            parse_proxy("10.0.0.0/8").map(|n| n.to_string()),
            Ok("10.0.0.0/8".to_owned())
        );
        assert_eq!(
            parse_proxy("127.0.0.1").map(|n| n.to_string()),
            Ok("127.0.0.1/32".to_owned())
        );
        assert!(parse_proxy("proxy.local").is_err());
    }
}
