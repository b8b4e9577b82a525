//! `GET|HEAD /files/{key}`: the bytes behind a signed URL, with ranges, validators and the
//! headers that keep a hostile upload from doing harm in a browser.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody, SizedStream};
use actix_web::http::header;
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::cache::{MAX_CACHED_OBJECT, ObjectMark};
use crate::clock::rfc3339;
use crate::db::{self, FileRow};
use crate::error::AppError;
use crate::media_type::content_disposition;
use crate::metrics::Rejection;
use crate::routes::body::Sliced;
use crate::routes::method_not_allowed;
use crate::routes::openapi::{ErrorResponse, Unavailable};
use crate::signing::SignatureError;
use crate::state::AppState;
use crate::storage::{self, ObjectBody};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/files/{key}")
            .route(web::get().to(download))
            .route(web::head().to(download))
            .default_service(method_not_allowed("GET, HEAD")),
    );
}

/// The byte range to serve, per RFC 9110 §14.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable `Range`: the whole representation (a malformed or multi-range header is
    /// ignored, as the RFC allows).
    Full,
    /// `start..=end`, both within the file.
    Partial {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.map(str::trim) else {
        return RangeRequest::Full;
    };
    let Some(set) = spec
        .split_once('=')
        .filter(|(unit, _)| unit.trim().eq_ignore_ascii_case("bytes"))
        .map(|(_, set)| set.trim())
    else {
        return RangeRequest::Full;
    };
    if set.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = set.split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if first.is_empty() {
        // Suffix range: the last N bytes.
        if !digits(last) {
            return RangeRequest::Full;
        }
        let Ok(len) = last.parse::<u64>() else {
            return RangeRequest::Full;
        };
        if len == 0 || size == 0 {
            return RangeRequest::Unsatisfiable;
        }
        return RangeRequest::Partial {
            start: size.saturating_sub(len),
            end: size - 1,
        };
    }
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return RangeRequest::Full;
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeRequest::Unsatisfiable;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match last.parse::<u64>() {
            Ok(end) if end >= start => end,
            Ok(_) => return RangeRequest::Full,
            Err(_) => u64::MAX,
        }
    };
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial {
        start,
        end: end.min(size - 1),
    }
}

/// Whether an `If-None-Match` list matches `etag` (weak comparison, as RFC 9110 asks).
fn none_match(header: &str, etag: &str) -> bool {
    let bare = etag.trim_start_matches("W/");
    header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == bare)
}

fn header_str(req: &HttpRequest, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn http_date(unix: i64) -> String {
    let time =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    httpdate::fmt_http_date(time)
}

/// Download a file through its signed URL
///
/// No cookie needed: the signature is the permission, for GET and HEAD only. `HEAD` answers
/// the same headers without the body.
#[utoipa::path(
    method(get, head),
    path = "/files/{key}",
    tag = "downloads",
    params(
        ("key" = String, Path, description = "The stored object's random id (from a `ChatFile.url`)"),
        ("expires" = i64, Query, description = "Unix seconds after which the URL answers 403 \
            `URL has expired`"),
        ("kid" = String, Query, description = "Which key signed the URL"),
        ("signature" = String, Query, description = "HMAC-SHA256 over the key and the other \
            parameters, base64url without padding"),
        ("download" = Option<String>, Query, description = "`1`: answer as an attachment; only \
            in URLs issued that way (it is signed too)"),
        ("Range" = Option<String>, Header, nullable = false, description = "One byte range, e.g. `bytes=0-1023`, \
            `bytes=1024-` or `bytes=-500`; a malformed or multi-range header is ignored"),
        ("If-Range" = Option<String>, Header, nullable = false, description = "Honour `Range` only when this is \
            the current `ETag` or `Last-Modified`"),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "ETags the client holds: 304 \
            when one matches"),
        ("If-Modified-Since" = Option<String>, Header, nullable = false, description = "An HTTP-date: 304 when \
            the file is not newer (ignored beside `If-None-Match`)"),
    ),
    responses(
        (status = 200, description = "The bytes, with the type they were stored with",
            content(("*/*")),
            headers(
                ("Content-Length" = u64, description = "The file's size"),
                ("Accept-Ranges" = String, description = "`bytes`"),
                ("ETag" = String, description = "Strong, from the content's SHA-256"),
                ("Last-Modified" = String, description = "When the file was uploaded (HTTP-date)"),
                ("Cache-Control" = String, description = "`private, max-age=<seconds until the \
                    URL expires>`"),
                ("Content-Disposition" = String, description = "`inline` for images other than \
                    SVG, PDF, plain text, audio and video, else (and with `download=1`) \
                    `attachment`; `filename=` (ASCII) and `filename*=UTF-8''…`"),
                ("Content-Security-Policy" = String, description = "`default-src 'none'; sandbox`"),
                ("Referrer-Policy" = String, description = "`no-referrer`"),
                ("X-Content-Type-Options" = String, description = "`nosniff`"),
            )),
        (status = 206, description = "The requested byte range",
            content(("*/*")),
            headers(
                ("Content-Range" = String, description = "`bytes <first>-<last>/<size>`"),
                ("Content-Length" = u64, description = "The range's length"),
                ("Accept-Ranges" = String, description = "`bytes`"),
                ("ETag" = String, description = "Strong, from the content's SHA-256"),
                ("Last-Modified" = String, description = "When the file was uploaded (HTTP-date)"),
                ("Cache-Control" = String, description = "`private, max-age=<seconds until the \
                    URL expires>`"),
                ("Content-Disposition" = String, description = "As for 200"),
            )),
        (status = 304, description = "Not modified: the client's copy (`If-None-Match`, \
            `If-Modified-Since`) is current; no body",
            headers(
                ("ETag" = String, description = "Strong, from the content's SHA-256"),
                ("Cache-Control" = String, description = "`private, max-age=<seconds until the \
                    URL expires>`"),
            )),
        (status = 403, description = "`Invalid signature` (missing, wrong, made under an unknown \
            key, or any parameter changed) or `URL has expired` (with `data.expiresAt` and \
            `data.serverTime`)", body = ErrorResponse),
        (status = 404, description = "`File not found`: deleted, however valid its URL",
            body = ErrorResponse),
        (status = 416, description = "The range starts past the end of the file",
            body = ErrorResponse,
            headers(("Content-Range" = String, description = "`bytes */<size>`"))),
        (status = 503, response = Unavailable),
    )
)]
async fn download(
    state: web::Data<AppState>,
    req: HttpRequest,
    key: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let key = key.into_inner();
    let now = state.clock.now();
    let grant = state
        .signer
        .verify(&key, req.query_string(), now.timestamp())
        .map_err(|err| match err {
            SignatureError::Invalid => {
                state.metrics.rejected(Rejection::Invalid);
                AppError::Forbidden("Invalid signature".into())
            }
            SignatureError::Expired { expires } => {
                state.metrics.rejected(Rejection::Expired);
                AppError::UrlExpired {
                    expires_at: rfc3339(expires),
                    server_time: rfc3339(now.timestamp()),
                }
            }
        })?;
    // A signature can only be made for a key we issued, but check its shape anyway before
    // it goes anywhere near the filesystem.
    if !storage::is_valid_key(&key) {
        return Err(AppError::NotFound("File not found"));
    }
    // Noted before anything is read, so that nothing read from before a delete is kept.
    let mark = state.objects.mark();
    let row = match state.objects.row(&key) {
        Some(row) => row,
        None => {
            let lookup_key = key.clone();
            let row = state
                .db
                .run(move |conn| db::find_object(conn, &lookup_key))
                .await?
                .ok_or(AppError::NotFound("File not found"))?;
            state.objects.insert_row(row, mark)
        }
    };

    let etag = format!("\"{}\"", row.sha256);
    let last_modified = http_date(row.created_at);
    let max_age = grant.expires.saturating_sub(now.timestamp()).max(0);
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::ETAG, etag.as_str()))
        .insert_header((header::LAST_MODIFIED, last_modified.as_str()))
        .insert_header((header::CACHE_CONTROL, format!("private, max-age={max_age}")))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox",
        ))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));

    if not_modified(&req, &etag, row.created_at) {
        return Ok(response.status(StatusCode::NOT_MODIFIED).finish());
    }

    let range_header = header_str(&req, header::RANGE).filter(|_| {
        // If-Range: only honour Range when the client's copy is this exact representation.
        header_str(&req, header::IF_RANGE)
            .is_none_or(|v| v.trim() == etag || v.trim() == last_modified)
    });
    let (status, start, len) = match parse_range(range_header, row.size) {
        RangeRequest::Full => (StatusCode::OK, 0, row.size),
        RangeRequest::Partial { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => return Err(AppError::RangeNotSatisfiable(row.size)),
    };
    let disposition = content_disposition(&row.name, &row.mime, grant.download);
    response
        .status(status)
        .insert_header((header::CONTENT_TYPE, row.mime.as_str()))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CONTENT_DISPOSITION, disposition));
    if status == StatusCode::PARTIAL_CONTENT {
        response.insert_header((
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{}", start + len - 1, row.size),
        ));
    }
    if req.method() == Method::HEAD {
        return Ok(response.body(HeadBody(len)));
    }
    if row.size <= MAX_CACHED_OBJECT {
        let whole = small_object(&state, &row, mark).await?;
        let range = usize::try_from(start).unwrap_or(0)..usize::try_from(start + len).unwrap_or(0);
        state.metrics.downloaded_bytes.inc_by(len);
        return Ok(response.body(Sliced::new(whole.slice(range))));
    }
    body(&state, response, &row, start, len).await
}

/// `If-None-Match` (or, without it, `If-Modified-Since`) says the client's copy is current.
fn not_modified(req: &HttpRequest, etag: &str, created_at: i64) -> bool {
    if let Some(tags) = header_str(req, header::IF_NONE_MATCH) {
        return none_match(tags, etag);
    }
    header_str(req, header::IF_MODIFIED_SINCE)
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|since| since.duration_since(std::time::UNIX_EPOCH).ok())
        .is_some_and(|since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX) >= created_at)
}

/// A small object's bytes, from memory, or read whole (and kept) on first use.
async fn small_object(
    state: &AppState,
    row: &FileRow,
    mark: ObjectMark,
) -> Result<Bytes, AppError> {
    if let Some(bytes) = state.objects.body(&row.object_key) {
        return Ok(bytes);
    }
    let read = state
        .store
        .read(&row.object_key, 0, row.size, row.size)
        .await?
        .collect()
        .await?;
    state
        .objects
        .insert_body(&row.object_key, read.clone(), mark);
    Ok(read)
}

/// The requested bytes of a larger object, sent as they come from the store.
async fn body(
    state: &AppState,
    mut response: HttpResponseBuilder,
    row: &FileRow,
    start: u64,
    len: u64,
) -> Result<HttpResponse, AppError> {
    let sent = state.metrics.downloaded_bytes.clone();
    match state
        .store
        .read(&row.object_key, start, len, row.size)
        .await?
    {
        ObjectBody::Whole(bytes) => {
            // Handed to the connection in one write.
            sent.inc_by(len);
            Ok(response.body(Sliced::new(bytes)))
        }
        ObjectBody::Stream(stream) => {
            // Counted as the chunks go out, so that a client hanging up early counts less.
            let stream = stream.inspect(move |chunk| {
                if let Ok(chunk) = chunk {
                    sent.inc_by(chunk.len() as u64);
                }
            });
            Ok(response.body(SizedStream::new(len, stream)))
        }
    }
}

/// The body of a HEAD response: announces the length a GET would send, sends nothing.
struct HeadBody(u64);

impl MessageBody for HeadBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.0)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeRequest::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(
            parse_range(Some("bytes=0-4"), 10),
            Partial { start: 0, end: 4 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-"), 10),
            Partial { start: 5, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            Partial { start: 7, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=2-100"), 10),
            Partial { start: 2, end: 9 }
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Full);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=a-b"), 10), Full);
        assert_eq!(
            parse_range(Some("bytes=99999999999999999999-"), 10),
            Unsatisfiable
        );
    }

    #[test]
    fn dispositions_carry_an_ascii_fallback_and_the_exact_name() {
        assert_eq!(
            content_disposition("résumé \"final\".pdf", "application/pdf", false),
            "inline; filename=\"r_sum_ _final_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.pdf"
        );
        assert!(content_disposition("a.png", "image/png", true).starts_with("attachment;"));
        assert!(content_disposition("a.svg", "image/svg+xml", false).starts_with("attachment;"));
        assert!(content_disposition("a.html", "text/html", false).starts_with("attachment;"));
        assert!(
            content_disposition("a.txt", "text/plain; charset=utf-8", false).starts_with("inline;")
        );
        assert!(content_disposition("a.mp4", "video/mp4", false).starts_with("inline;"));
    }

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(none_match("\"abc\"", "\"abc\""));
        assert!(none_match("W/\"abc\", \"x\"", "\"abc\""));
        assert!(none_match("*", "\"abc\""));
        assert!(!none_match("\"abd\"", "\"abc\""));
    }
}
