//! Receiving uploads: each `file` part is streamed into a new object of the store while hashed
//! and counted, then all of a request's files are committed together, or none.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use actix_multipart::{Field, Multipart, MultipartError};
use actix_web::error::PayloadError;
use actix_web::http::header::HeaderMap;
use actix_web::web;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::db::{self, FileRow, Inserted, NewFile};
use crate::error::AppError;
use crate::media_type::{self, Utf8Stream};
use crate::state::{AppState, to_completion};
use crate::storage::{self, ObjectWriter};
/// Parts of any name in one request.
const MAX_PARTS: usize = 100;
/// Bytes of a part that is not a file (ignored, but read).
const MAX_OTHER_PART: usize = 64 * 1024;
/// After refusing a request as too large, how much more of its body we read (and throw away)
/// so that the client sees the 413 instead of a reset connection.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
/// Body bytes the multipart parser may take in without handing us anything: it buffers a part's
/// headers whole, so a part header that never ends would otherwise grow without bound. Well
/// above what the HTTP layer buffers for a slow reader (about 200 KiB), so that a busy server
/// never mistakes a backlog of file data for one.
const MAX_UNPRODUCTIVE: usize = 1024 * 1024;
const MAX_NAME_BYTES: usize = 255;
const MAX_EXTENSION_BYTES: usize = 16;
const FALLBACK_NAME: &str = "file";

/// A file received into the store, not yet committed (its key pending in the journal).
pub struct Received {
    object: ObjectWriter,
    name: String,
    mime: String,
    sha256: String,
    size: u64,
}

/// What one upload request may store: the per-file limit, and what is left of the user's quota.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_file_size: u64,
    /// `(quota, bytes in use)`, or `None` without a quota.
    pub quota: Option<(u64, u64)>,
}

impl Limits {
    pub fn quota_exceeded(quota: u64) -> AppError {
        AppError::PayloadTooLarge(format!(
            "Upload exceeds your storage quota of {quota} bytes"
        ))
    }
}

/// Bytes each user is uploading right now, not yet stored. They count against the quota as
/// they arrive, so that uploads sent in parallel cannot each stream the whole remaining quota
/// into temp files.
#[derive(Debug, Default)]
pub struct InFlight(parking_lot::Mutex<HashMap<i64, u64>>);

impl InFlight {
    /// Adds `bytes` to the user's uploads in flight if they all still fit in `room`.
    fn reserve(&self, user_id: i64, bytes: u64, room: u64) -> bool {
        let mut map = self.0.lock();
        let current = map.entry(user_id).or_default();
        if current.saturating_add(bytes) > room {
            return false;
        }
        *current += bytes;
        true
    }

    fn release(&self, user_id: i64, bytes: u64) {
        let mut map = self.0.lock();
        if let Some(current) = map.get_mut(&user_id) {
            *current = current.saturating_sub(bytes);
            if *current == 0 {
                map.remove(&user_id);
            }
        }
    }
}

/// One request's share of [`InFlight`], given back when dropped (stored, refused or abandoned).
#[derive(Debug)]
pub struct QuotaHold {
    ledger: Arc<InFlight>,
    user_id: i64,
    bytes: u64,
}

impl QuotaHold {
    fn grow(&mut self, bytes: u64, room: u64) -> bool {
        let fits = self.ledger.reserve(self.user_id, bytes, room);
        if fits {
            self.bytes += bytes;
        }
        fits
    }
}

impl Drop for QuotaHold {
    fn drop(&mut self) {
        self.ledger.release(self.user_id, self.bytes);
    }
}

/// The request body as the multipart parser sees it, cut off when the parser keeps consuming
/// without producing (see [`MAX_UNPRODUCTIVE`]).
struct Guarded<S> {
    inner: S,
    unproductive: Arc<AtomicUsize>,
}

impl<S: Stream<Item = Result<Bytes, PayloadError>> + Unpin> Stream for Guarded<S> {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            let seen = self.unproductive.fetch_add(chunk.len(), Ordering::Relaxed) + chunk.len();
            if seen > MAX_UNPRODUCTIVE {
                return Poll::Ready(Some(Err(PayloadError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "part headers are too large",
                )))));
            }
        }
        polled
    }
}

/// A multipart reader over `payload` whose parser cannot buffer without bound.
pub fn multipart(headers: &HeaderMap, payload: web::Payload) -> (Multipart, Arc<AtomicUsize>) {
    let unproductive = Arc::new(AtomicUsize::new(0));
    let guarded = Guarded {
        inner: payload,
        unproductive: unproductive.clone(),
    };
    (Multipart::new(headers, guarded), unproductive)
}

fn multipart_error(err: MultipartError) -> AppError {
    match err {
        MultipartError::ContentTypeMissing
        | MultipartError::ContentTypeParse
        | MultipartError::ContentTypeIncompatible => {
            AppError::UnsupportedMediaType("Content-Type must be multipart/form-data".into())
        }
        MultipartError::Nested => {
            AppError::BadRequest("Nested multipart parts are not supported".into())
        }
        MultipartError::Payload(PayloadError::Overflow) => {
            AppError::PayloadTooLarge("Request body is too large".into())
        }
        MultipartError::Payload(PayloadError::Io(err)) if err.kind() == io::ErrorKind::TimedOut => {
            AppError::BodyTimeout
        }
        MultipartError::Payload(PayloadError::Io(err))
            if err.kind() == io::ErrorKind::InvalidData =>
        {
            AppError::BadRequest(format!("Malformed multipart body: {err}"))
        }
        other => AppError::BadRequest(format!("Malformed multipart body: {other}")),
    }
}

/// The file name in a part's `Content-Disposition`, read the way clients write it: an RFC 8187
/// `filename*` first; else `filename`, where browsers (and curl) escape `"`, CR and LF as `%22`,
/// `%0D`, `%0A` and leave backslashes alone, so a Windows path keeps its separators. (The
/// framework's parser treats a backslash as an escape and would turn `..\..\x` into `....x`.)
fn part_filename(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(actix_web::http::header::CONTENT_DISPOSITION)?;
    let raw = String::from_utf8_lossy(raw.as_bytes());
    let mut rest = &raw[raw.find(';')? + 1..];
    let (mut plain, mut extended) = (None, None);
    while let Some(eq) = rest.find('=') {
        let param = rest[..eq].trim().to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let value = if let Some(quoted) = rest.strip_prefix('"') {
            let (value, after) = quoted_value(quoted);
            rest = after;
            value
        } else {
            let end = rest.find(';').unwrap_or(rest.len());
            let value = rest[..end].trim().to_owned();
            rest = &rest[end..];
            value
        };
        match param.as_str() {
            "filename" => plain = Some(value),
            "filename*" => extended = decode_extended(&value),
            _ => {}
        }
        match rest.find(';') {
            Some(semicolon) => rest = &rest[semicolon + 1..],
            None => break,
        }
    }
    extended.or_else(|| {
        plain.map(|name| {
            name.replace("%22", "\"")
                .replace("%0D", "\r")
                .replace("%0A", "\n")
        })
    })
}

/// A quoted parameter value (after its opening quote) and what follows its closing quote. Only
/// `\"` is an escape: every other backslash is the file name's own.
fn quoted_value(quoted: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = quoted.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(|&(_, next)| next == '"') => {
                value.push('"');
                chars.next();
            }
            '"' => return (value, &quoted[at + 1..]),
            c => value.push(c),
        }
    }
    (value, "")
}

/// An RFC 8187 `UTF-8''percent-encoded` value; other charsets are not trusted.
fn decode_extended(value: &str) -> Option<String> {
    let mut pieces = value.splitn(3, '\'');
    let charset = pieces.next()?;
    let _language = pieces.next()?;
    let encoded = pieces.next()?;
    if !charset.eq_ignore_ascii_case("utf-8") {
        return None;
    }
    percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .ok()
        .map(|name| name.into_owned())
}

/// Whether `c` is one of the bidirectional controls that can make `evil.exe` look like `exe.pdf`.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The stored name for an uploaded file name: its last path component (`/` or `\`), without
/// control or bidi characters, trimmed, at most 255 bytes (shortened in the stem, keeping an
/// extension of up to 16 bytes); `file` when nothing (or only dots) is left.
pub fn sanitize_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
        .collect();
    let name = cleaned.trim();
    if name.chars().all(|c| c == '.') {
        return FALLBACK_NAME.to_owned();
    }
    if name.len() <= MAX_NAME_BYTES {
        return name.to_owned();
    }
    let extension = name
        .rfind('.')
        .filter(|&dot| dot > 0 && name.len() - dot <= MAX_EXTENSION_BYTES)
        .map_or("", |dot| &name[dot..]);
    let stem = &name[..name.len() - extension.len()];
    let mut cut = MAX_NAME_BYTES - extension.len();
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{extension}", stem[..cut].trim_end())
}

/// What reading the parts keeps track of.
struct Reader<'a> {
    state: &'a AppState,
    limits: Limits,
    unproductive: Arc<AtomicUsize>,
    /// This request's file bytes so far, counted against the quota (when there is one).
    hold: Option<QuotaHold>,
}

impl Reader<'_> {
    /// The parser produced something: its input so far was put to use.
    fn progress(&self) {
        self.unproductive.store(0, Ordering::Relaxed);
    }
}

/// Reads every part of the request. On any failure nothing it wrote stays behind.
/// The files come back with the request's hold on the quota, to keep until they are stored.
pub async fn receive_files(
    state: &AppState,
    user_id: i64,
    (mut multipart, unproductive): (Multipart, Arc<AtomicUsize>),
    limits: Limits,
) -> Result<(Vec<Received>, Option<QuotaHold>), AppError> {
    let mut received = Vec::new();
    let mut current = None;
    let mut reader = Reader {
        state,
        limits,
        unproductive,
        hold: limits.quota.map(|_| QuotaHold {
            ledger: state.uploads_in_flight.clone(),
            user_id,
            bytes: 0,
        }),
    };
    let result = read_parts(&mut reader, &mut multipart, &mut received, &mut current).await;
    match result {
        Ok(()) if received.is_empty() => Err(AppError::BadRequest(
            "The request has no part named \"file\"".into(),
        )),
        Ok(()) => Ok((received, reader.hold.take())),
        Err(err) => {
            discard(state, received, current).await;
            // Reading the rest lets the client see our answer rather than a reset connection.
            if matches!(
                err,
                AppError::PayloadTooLarge(_) | AppError::InsufficientStorage
            ) {
                drain(&reader, &mut multipart).await;
            }
            Err(err)
        }
    }
}

/// Gives up received objects (and the one being written) without leaving anything behind, and
/// forgets their keys; a key whose object may remain stays pending for the next start.
async fn discard(state: &AppState, received: Vec<Received>, current: Option<ObjectWriter>) {
    let mut gone = Vec::new();
    for object in received.into_iter().map(|r| r.object).chain(current) {
        let key = object.key().to_owned();
        if object.discard().await {
            gone.push(key);
        }
    }
    if gone.is_empty() {
        return;
    }
    if let Err(err) = state
        .db
        .write(move |conn| db::clear_pending(conn, &gone))
        .await
    {
        tracing::warn!(error = %err, "could not clear discarded uploads from the journal");
    }
}

async fn read_parts(
    reader: &mut Reader<'_>,
    multipart: &mut Multipart,
    received: &mut Vec<Received>,
    current: &mut Option<ObjectWriter>,
) -> Result<(), AppError> {
    let mut parts = 0;
    while let Some(field) = multipart.next().await {
        let mut field = field.map_err(multipart_error)?;
        reader.progress();
        parts += 1;
        if parts > MAX_PARTS {
            return Err(AppError::PayloadTooLarge(format!(
                "A request may carry at most {MAX_PARTS} parts"
            )));
        }
        if field.name() != Some("file") {
            skip_part(reader, &mut field).await?;
            continue;
        }
        let raw_name = part_filename(field.headers()).unwrap_or_default();
        let name = sanitize_name(&raw_name);
        let mime = media_type::declared_or_guessed(field.content_type(), &name);
        let mut utf8 = media_type::wants_charset(&mime).then(Utf8Stream::default);
        let (sha256, size) =
            receive_part(reader, &mut field, &mime, current, utf8.as_mut()).await?;
        if let Some(object) = current.take() {
            received.push(Received {
                object,
                name,
                mime: media_type::with_charset(mime, utf8.is_some_and(|u| u.is_utf8())),
                sha256,
                size,
            });
        }
    }
    Ok(())
}

async fn skip_part(reader: &Reader<'_>, field: &mut Field) -> Result<(), AppError> {
    let mut seen = 0;
    while let Some(chunk) = field.next().await {
        seen += chunk.map_err(multipart_error)?.len();
        reader.progress();
        if seen > MAX_OTHER_PART {
            return Err(AppError::PayloadTooLarge(
                "A form field is too large".into(),
            ));
        }
    }
    Ok(())
}

/// Streams one part into a new object left in `current` (its key recorded as pending first);
/// returns its hash and size, and tells `utf8` (when given) every byte.
async fn receive_part(
    reader: &mut Reader<'_>,
    field: &mut Field,
    mime: &str,
    current: &mut Option<ObjectWriter>,
    mut utf8: Option<&mut Utf8Stream>,
) -> Result<(String, u64), AppError> {
    let state = reader.state;
    let key = storage::new_key();
    let pending = vec![key.clone()];
    let now = state.clock.unix();
    state
        .db
        .write(move |conn| db::record_pending(conn, &pending, now))
        .await?;
    *current = Some(state.store.create(&key, mime).await?);
    let limit = reader.limits.max_file_size;
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(multipart_error)?;
        reader.progress();
        let object = current
            .as_mut()
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("upload lost its object")))?;
        if object.size() + chunk.len() as u64 > limit {
            return Err(AppError::PayloadTooLarge(format!(
                "File exceeds the maximum size of {limit} bytes"
            )));
        }
        if let (Some((quota, used)), Some(hold)) = (reader.limits.quota, reader.hold.as_mut())
            && !hold.grow(chunk.len() as u64, quota.saturating_sub(used))
        {
            return Err(Limits::quota_exceeded(quota));
        }
        if let Some(utf8) = utf8.as_deref_mut() {
            utf8.update(&chunk);
        }
        object.write(chunk).await?;
    }
    let object = current
        .as_mut()
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("upload lost its object")))?;
    Ok(object.finish().await?)
}

/// Reads and discards what is left of a refused body, up to [`DRAIN_LIMIT`].
async fn drain(reader: &Reader<'_>, multipart: &mut Multipart) {
    let mut drained = 0;
    reader.progress();
    while let Some(Ok(mut field)) = multipart.next().await {
        reader.progress();
        while let Some(Ok(chunk)) = field.next().await {
            reader.progress();
            drained += chunk.len();
            if drained > DRAIN_LIMIT {
                return;
            }
        }
    }
}

/// Commits received files: each object made visible (durably), then every row in one
/// transaction, which also clears their keys from the journal. If an object cannot be stored,
/// or the rows cannot be written (or the chat vanished meanwhile), the objects are removed
/// again, even if the request is dropped meanwhile; a crash in between leaves pending keys that
/// the next start sweeps.
pub async fn store_uploads(
    state: &web::Data<AppState>,
    user_id: i64,
    chat_id: i64,
    (received, hold): (Vec<Received>, Option<QuotaHold>),
    limits: Limits,
) -> Result<Vec<FileRow>, AppError> {
    let state = state.clone();
    to_completion(async move {
        // Held until the rows are in (or the bytes gone again).
        let _hold = hold;
        let mut files: Vec<NewFile> = Vec::with_capacity(received.len());
        let mut pending = received.into_iter();
        while let Some(item) = pending.next() {
            let key = item.object.key().to_owned();
            if let Err(err) = item.object.commit(&item.mime).await {
                discard(&state, pending.collect(), None).await;
                state
                    .remove_objects(files.into_iter().map(|f| f.object_key).collect())
                    .await;
                return Err(err.into());
            }
            files.push(NewFile {
                object_key: key,
                name: item.name,
                size: item.size,
                mime: item.mime,
                sha256: item.sha256,
            });
        }
        // Crash tests stop here: bytes in place, rows not yet written.
        #[cfg(feature = "failpoints")]
        web::block(|| fail::fail_point!("upload-after-commit")).await?;
        let keys: Vec<String> = files.iter().map(|f| f.object_key.clone()).collect();
        let now = state.clock.unix();
        let quota = limits.quota.map(|(quota, _)| quota);
        let inserted = state
            .db
            .write(move |conn| db::insert_files(conn, user_id, chat_id, &files, now, quota))
            .await;
        // Whatever came of it, before the answer: the next listing reads the chat afresh.
        state.listings.forget(chat_id);
        match inserted {
            Ok(Inserted::Rows(rows)) => {
                state
                    .metrics
                    .uploaded_bytes
                    .inc_by(rows.iter().map(|r| r.size).sum());
                Ok(rows)
            }
            Ok(Inserted::NoChat) => {
                state.remove_objects(keys).await;
                Err(AppError::NotFound("Chat not found"))
            }
            Ok(Inserted::OverQuota) => {
                state.remove_objects(keys).await;
                Err(Limits::quota_exceeded(quota.unwrap_or_default()))
            }
            Err(err) => {
                state.remove_objects(keys).await;
                Err(err)
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disposition(value: &str) -> Option<String> {
        let mut headers = HeaderMap::new();
        let value = actix_web::http::header::HeaderValue::from_str(value).ok()?;
        headers.insert(actix_web::http::header::CONTENT_DISPOSITION, value);
        part_filename(&headers)
    }

    #[test]
    fn file_names_are_read_as_clients_write_them() {
        let read = |v: &str| disposition(v).unwrap_or_else(|| "<none>".into());
        assert_eq!(read(r#"form-data; name="file"; filename="a.txt""#), "a.txt");
        assert_eq!(
            read(r#"form-data; name="file"; filename="..\..\boot.ini""#),
            "..\\..\\boot.ini"
        );
        assert_eq!(
            read(r#"form-data; name="file"; filename="C:\Users\me\r.pdf""#),
            "C:\\Users\\me\\r.pdf"
        );
        assert_eq!(
            read(r#"form-data; name="file"; filename="say %22hi%22.txt""#),
            "say \"hi\".txt"
        );
        assert_eq!(
            read(r#"form-data; name="file"; filename="old \"curl\".txt""#),
            "old \"curl\".txt"
        );
        assert_eq!(
            read(r#"form-data; filename="x;y=z.txt"; name="file""#),
            "x;y=z.txt"
        );
        assert_eq!(
            read("form-data; name=file; filename=plain.txt"),
            "plain.txt"
        );
        assert_eq!(
            read(
                "form-data; name=\"file\"; filename=\"fallback.txt\"; filename*=UTF-8''na%C3%AFve%20caf%C3%A9.txt"
            ),
            "naïve café.txt"
        );
        assert_eq!(
            read("form-data; name=\"file\"; filename=\"kept.txt\"; filename*=ISO-8859-1''x%E9.txt"),
            "kept.txt"
        );
        assert_eq!(
            read(r#"form-data; name="file"; filename="unterminated"#),
            "unterminated"
        );
        assert_eq!(read(r#"form-data; name="file""#), "<none>");
        assert_eq!(read("form-data"), "<none>");
        assert_eq!(
            sanitize_name(&read(r#"form-data; filename="..\..\boot.ini""#)),
            "boot.ini"
        );
    }

    #[test]
    fn names_lose_their_paths() {
        assert_eq!(sanitize_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_name("..\\evil.txt"), "evil.txt");
        assert_eq!(sanitize_name("C:\\Users\\me\\report.pdf"), "report.pdf");
        assert_eq!(sanitize_name("dir/"), "file");
    }

    #[test]
    fn names_lose_control_and_bidi_characters() {
        assert_eq!(sanitize_name("a\u{0}b\r\nc.txt"), "abc.txt");
        assert_eq!(sanitize_name("invoice\u{202E}fdp.exe"), "invoicefdp.exe");
        assert_eq!(sanitize_name("\u{2066}x\u{2069}"), "x");
        assert_eq!(sanitize_name("  spaced.txt  "), "spaced.txt");
    }

    #[test]
    fn empty_or_dot_names_become_file() {
        for raw in ["", "   ", ".", "..", "...", "\u{0}", "a/.."] {
            assert_eq!(sanitize_name(raw), "file", "{raw:?}");
        }
        assert_eq!(sanitize_name(".bashrc"), ".bashrc");
        assert_eq!(sanitize_name("naïve café.txt"), "naïve café.txt");
    }

    #[test]
    fn long_names_are_cut_in_the_stem_on_a_char_boundary() {
        let long = format!("{}.pdf", "é".repeat(300));
        let cut = sanitize_name(&long);
        assert!(cut.len() <= 255);
        assert!(cut.ends_with("é.pdf"), "{cut}");
        let no_ext = "x".repeat(400);
        assert_eq!(sanitize_name(&no_ext).len(), 255);
        let long_ext = format!("{}.{}", "a".repeat(300), "b".repeat(40));
        assert_eq!(sanitize_name(&long_ext).len(), 255);
        assert!(sanitize_name(&long_ext).starts_with("aaa"));
        let exactly = "y".repeat(255);
        assert_eq!(sanitize_name(&exactly), exactly);
    }
}
