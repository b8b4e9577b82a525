//! Resumable uploads: the tus 1.0.0 protocol with the `creation`, `creation-with-upload`,
//! `termination` and `expiration` extensions, on `/api/users/{user_id}/chats/{chat_id}/uploads`.
//!
//! An upload is created with its length, takes its bytes in any number of PATCHes (each one
//! durable before its 204), and becomes an ordinary chat file with its last byte.

pub mod transfer;

use std::time::{Duration, UNIX_EPOCH};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};

use crate::db;
use crate::db::uploads::{self, Created, NewUpload, UploadRow};
use crate::error::{AppError, TUS_VERSION};
use crate::media_type;
use crate::resumable::metadata;
use crate::routes::files::ChatFileResponse;
use crate::routes::openapi::{ErrorResponse, RequestTimeout, Unauthorized, Unavailable};
use crate::routes::upload::{Limits, sanitize_name};
use crate::routes::{ChatPath, UploadPath, method_not_allowed_after_login};
use crate::state::AppState;
use crate::storage;

/// The one tus version spoken.
pub const TUS_VERSION_VALUE: &str = "1.0.0";
const EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration";
/// The media type of a PATCH body (and of a creation's first chunk).
const OFFSET_STREAM: &str = "application/offset+octet-stream";

pub const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
pub const TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
pub const TUS_MAX_SIZE: HeaderName = HeaderName::from_static("tus-max-size");
pub const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
pub const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
pub const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
pub const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
pub const UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");
pub const UPLOAD_CONCAT: HeaderName = HeaderName::from_static("upload-concat");
pub const X_HTTP_METHOD_OVERRIDE: HeaderName = HeaderName::from_static("x-http-method-override");

/// The request headers a tus client sends (for CORS).
pub const REQUEST_HEADERS: [HeaderName; 7] = [
    TUS_RESUMABLE,
    UPLOAD_LENGTH,
    UPLOAD_OFFSET,
    UPLOAD_METADATA,
    UPLOAD_DEFER_LENGTH,
    UPLOAD_CONCAT,
    X_HTTP_METHOD_OVERRIDE,
];
/// The response headers a tus client reads (for CORS).
pub const RESPONSE_HEADERS: [HeaderName; 9] = [
    header::LOCATION,
    UPLOAD_OFFSET,
    UPLOAD_LENGTH,
    UPLOAD_METADATA,
    UPLOAD_EXPIRES,
    TUS_RESUMABLE,
    TUS_VERSION,
    TUS_EXTENSION,
    TUS_MAX_SIZE,
];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/users/{user_id}/chats/{chat_id}/uploads")
            .route(web::method(Method::OPTIONS).to(describe_uploads))
            .route(web::post().to(create_upload))
            .default_service(method_not_allowed_after_login("OPTIONS, POST")),
    )
    .service(
        web::resource("/users/{user_id}/chats/{chat_id}/uploads/{upload_id}")
            .route(web::method(Method::OPTIONS).to(describe_upload))
            .route(web::head().to(upload_offset))
            .route(web::get().to(get_upload))
            .route(web::patch().to(append_to_upload))
            .route(web::delete().to(terminate_upload))
            .default_service(method_not_allowed_after_login(
                "OPTIONS, HEAD, GET, PATCH, DELETE",
            )),
    );
}

/// Whether `path` is one of the tus routes' (`/api/users/*/chats/*/uploads[/*]`).
fn is_tus_path(path: &str) -> bool {
    let mut segments = path.split('/');
    let fixed = [
        Some(""),
        Some("api"),
        Some("users"),
        None,
        Some("chats"),
        None,
        Some("uploads"),
    ];
    for expected in fixed {
        match (segments.next(), expected) {
            (None, _) => return false,
            (Some(seen), Some(expected)) if seen != expected => return false,
            _ => {}
        }
    }
    segments.count() <= 1
}

/// Puts `Tus-Resumable: 1.0.0` on every answer of the tus routes, refusals by the layers in
/// front of them (401, 403, 503) included, as the protocol wants.
pub async fn mark_tus_responses(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let tus = is_tus_path(req.path());
    let mut res = next.call(req).await?;
    if tus {
        res.headers_mut()
            .insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION_VALUE));
    }
    Ok(res)
}

/// Requests other than OPTIONS and GET must say which tus version they speak.
fn require_tus(req: &HttpRequest) -> Result<(), AppError> {
    match req.headers().get(&TUS_RESUMABLE) {
        Some(v) if v.as_bytes() == TUS_VERSION_VALUE.as_bytes() => Ok(()),
        _ => Err(AppError::TusVersion),
    }
}

/// A header holding a byte count: `None` when absent, 400 when not plain digits.
fn byte_count(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, AppError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    text.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| text.parse::<u64>().ok())
        .flatten()
        .map(Some)
        .ok_or_else(|| AppError::BadRequest(format!("Invalid {}: not a byte count", title(name))))
}

/// A tus header's name as the protocol writes it (`Upload-Offset`).
fn title(name: &HeaderName) -> String {
    name.as_str()
        .split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Whether the request's body is a tus chunk (`application/offset+octet-stream`).
fn is_offset_stream(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(OFFSET_STREAM))
}

/// Whether the request carries a body at all.
fn has_body(req: &HttpRequest) -> bool {
    let headers = req.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

fn content_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// An HTTP date (`Upload-Expires`).
fn http_date(unix: i64) -> String {
    let at = UNIX_EPOCH
        .checked_add(Duration::from_secs(u64::try_from(unix).unwrap_or(0)))
        .unwrap_or(UNIX_EPOCH);
    httpdate::fmt_http_date(at)
}

fn put(builder: &mut HttpResponseBuilder, name: HeaderName, value: impl ToString) {
    if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
        builder.insert_header((name, value));
    }
}

/// The absolute URL of an upload, under `--public-url`.
fn upload_url(state: &AppState, path: ChatPath, id: &str) -> String {
    format!(
        "{}/api/users/{}/chats/{}/uploads/{id}",
        state.public_base, path.user_id, path.chat_id
    )
}

/// An upload of the user's chat that has not expired; 404 `Chat not found` or
/// `Upload not found` otherwise.
async fn find(state: &AppState, path: &UploadPath) -> Result<UploadRow, AppError> {
    let (user_id, chat_id, id) = (path.user_id, path.chat_id, path.upload_id.clone());
    let now = state.clock.unix();
    let found = state
        .db
        .run(move |conn| {
            let upload = uploads::find_upload(conn, user_id, chat_id, &id)?;
            let chat = match upload {
                Some(_) => true,
                None => db::find_chat(conn, user_id, chat_id)?.is_some(),
            };
            Ok((upload, chat))
        })
        .await?;
    match found {
        (Some(upload), _) if upload.expires_at > now => Ok(upload),
        (_, false) => Err(AppError::NotFound("Chat not found")),
        _ => Err(AppError::NotFound("Upload not found")),
    }
}

/// A complete upload's file, made now if an earlier attempt did not get to it.
async fn file_of(
    state: &web::Data<AppState>,
    upload: UploadRow,
) -> Result<Option<db::FileRow>, AppError> {
    if let Some(file_id) = upload.file_id {
        return state
            .db
            .run(move |conn| db::file_by_id(conn, file_id))
            .await;
    }
    if !upload.is_complete() {
        return Ok(None);
    }
    let lock = state
        .uploads
        .lock(&upload.id, state.body_timeout)
        .await
        .ok_or_else(busy)?;
    transfer::finish_to_completion(state, lock, upload)
        .await
        .map(Some)
}

fn busy() -> AppError {
    AppError::Conflict("Another request is writing this upload; try again".into())
}

/// The 204 of OPTIONS: what this server speaks.
fn capabilities(state: &AppState) -> HttpResponse {
    let mut res = HttpResponse::NoContent();
    res.insert_header((TUS_VERSION, HeaderValue::from_static(TUS_VERSION_VALUE)))
        .insert_header((TUS_EXTENSION, HeaderValue::from_static(EXTENSIONS)));
    put(&mut res, TUS_MAX_SIZE, state.max_file_size);
    res.finish()
}

/// What the tus server speaks
///
/// The protocol's discovery request; `Tus-Resumable` is not needed. (A CORS preflight from a
/// `--cors-origins` origin is answered before this, without a cookie.)
#[utoipa::path(
    options,
    path = "/api/users/{user_id}/chats/{chat_id}/uploads",
    tag = "uploads",
    params(ChatPath),
    security(("neptun_session" = [])),
    responses(
        (status = 204, description = "`Tus-Version: 1.0.0`, `Tus-Extension: creation,\
            creation-with-upload,termination,expiration`, `Tus-Max-Size` (`--max-file-size`)"),
        (status = 400, description = "A malformed user or chat id", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`User not found` or `Chat not found`", body = ErrorResponse),
        (status = 503, response = Unavailable),
    )
)]
async fn describe_uploads(
    state: web::Data<AppState>,
    path: ChatPath,
) -> Result<HttpResponse, AppError> {
    let (user_id, chat_id) = (path.user_id, path.chat_id);
    state
        .db
        .run(move |conn| db::find_chat(conn, user_id, chat_id))
        .await?
        .ok_or(AppError::NotFound("Chat not found"))?;
    Ok(capabilities(&state))
}

/// What the tus server speaks
///
/// The same answer as on `…/uploads`, for clients that ask an upload's URL; the upload itself
/// is not looked up.
#[utoipa::path(
    options,
    path = "/api/users/{user_id}/chats/{chat_id}/uploads/{upload_id}",
    tag = "uploads",
    params(UploadPath),
    security(("neptun_session" = [])),
    responses(
        (status = 204, description = "`Tus-Version`, `Tus-Extension`, `Tus-Max-Size`"),
        (status = 400, description = "A malformed user, chat or upload id", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`User not found` or `Chat not found`", body = ErrorResponse),
        (status = 503, response = Unavailable),
    )
)]
async fn describe_upload(
    state: web::Data<AppState>,
    path: UploadPath,
) -> Result<HttpResponse, AppError> {
    describe_uploads(state, path.chat()).await
}

/// Create a resumable upload
///
/// tus `creation` and `creation-with-upload`: `Upload-Length` bytes (required, at most
/// `--max-file-size`, reserved against the quota until the upload is finished or gone), named
/// and typed by `Upload-Metadata` (`filename`/`name`, `filetype`/`type`, base64). A body of
/// type `application/offset+octet-stream` is the first chunk. `Upload-Length: 0` is a finished
/// (empty) file at once.
#[utoipa::path(
    post,
    path = "/api/users/{user_id}/chats/{chat_id}/uploads",
    tag = "uploads",
    params(
        ChatPath,
        ("Tus-Resumable" = String, Header, example = "1.0.0", description = "`1.0.0`"),
        ("Upload-Length" = u64, Header, example = 1048576, description = "The file's size in bytes"),
        ("Upload-Metadata" = Option<String>, Header,
            example = "filename cmVwb3J0LnBkZg==,filetype YXBwbGljYXRpb24vcGRm",
            description = "Comma-separated `key base64value` pairs"),
    ),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream",
        description = "Optional: the first chunk"),
    security(("neptun_session" = [])),
    responses(
        (status = 201, description = "Created: `Location` (absolute URL of the upload), \
            `Upload-Offset` (bytes stored), `Upload-Expires` (HTTP date)"),
        (status = 400, description = "A malformed id, a missing or malformed `Upload-Length`, \
            `Upload-Defer-Length` or `Upload-Concat` (not supported), a malformed \
            `Upload-Metadata`", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 403, description = "A cross-site request", body = ErrorResponse),
        (status = 404, description = "`User not found` or `Chat not found`", body = ErrorResponse),
        (status = 408, response = RequestTimeout),
        (status = 412, description = "`Tus-Resumable` missing or not `1.0.0`; the answer \
            carries `Tus-Version: 1.0.0`", body = ErrorResponse),
        (status = 413, description = "`Upload-Length` over `--max-file-size`, the quota \
            reached, or a first chunk past `Upload-Length`", body = ErrorResponse),
        (status = 415, description = "A body that is not `application/offset+octet-stream`",
            body = ErrorResponse),
        (status = 503, response = Unavailable),
    )
)]
async fn create_upload(
    state: web::Data<AppState>,
    path: ChatPath,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    require_tus(&req)?;
    let headers = req.headers();
    if headers.contains_key(&UPLOAD_DEFER_LENGTH) {
        return Err(AppError::BadRequest(
            "Upload-Defer-Length is not supported: send Upload-Length".into(),
        ));
    }
    if headers.contains_key(&UPLOAD_CONCAT) {
        return Err(AppError::BadRequest(
            "Upload-Concat is not supported (no concatenation extension)".into(),
        ));
    }
    let length = byte_count(headers, &UPLOAD_LENGTH)?
        .ok_or_else(|| AppError::BadRequest("Upload-Length is required".into()))?;
    if length > state.max_file_size {
        return Err(AppError::PayloadTooLarge(format!(
            "File exceeds the maximum size of {} bytes",
            state.max_file_size
        )));
    }
    let raw_metadata = match headers.get(&UPLOAD_METADATA) {
        None => None,
        Some(value) if value.as_bytes().iter().all(u8::is_ascii_whitespace) => None,
        Some(value) => Some(
            value
                .to_str()
                .map(str::to_owned)
                .map_err(|_| AppError::BadRequest("Invalid Upload-Metadata: not ASCII".into()))?,
        ),
    };
    let file = match &raw_metadata {
        Some(raw) => metadata::parse(raw)
            .map_err(|e| AppError::BadRequest(format!("Invalid Upload-Metadata: {e}")))?,
        None => metadata::FileMetadata::default(),
    };
    let with_chunk = is_offset_stream(&req);
    if has_body(&req) && !with_chunk {
        return Err(AppError::UnsupportedMediaType(format!(
            "Content-Type must be {OFFSET_STREAM}"
        )));
    }
    if with_chunk && content_length(&req).is_some_and(|n| n > length) {
        return Err(transfer::past_length(length));
    }
    let name = sanitize_name(file.name.as_deref().unwrap_or_default());
    let declared = file.mime.and_then(|m| m.parse::<mime::Mime>().ok());
    let now = state.clock.unix();
    let expiry = i64::try_from(state.uploads.expiry.as_secs()).unwrap_or(i64::MAX);
    let new = NewUpload {
        id: storage::new_key(),
        mime: media_type::declared_or_guessed(declared.as_ref(), &name),
        name,
        metadata: raw_metadata,
        length,
        created_at: now,
        expires_at: now.saturating_add(expiry),
    };
    let quota = state.user_quota;
    let (user_id, chat_id) = (path.user_id, path.chat_id);
    let created = state
        .db
        .write(move |conn| uploads::create_upload(conn, user_id, chat_id, &new, quota))
        .await?;
    let upload = match created {
        Created::Row(upload) => upload,
        Created::NoChat => return Err(AppError::NotFound("Chat not found")),
        Created::OverQuota => return Err(Limits::quota_exceeded(quota.unwrap_or_default())),
    };
    let parts = state.uploads.parts.clone();
    let id = upload.id.clone();
    if let Err(err) = web::block(move || parts.create(&id))
        .await
        .map_err(AppError::from)
        .and_then(|r| r.map_err(AppError::from))
    {
        drop_upload(&state, path, &upload.id).await;
        return Err(err);
    }
    let lock = state
        .uploads
        .try_lock(&upload.id)
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("a new upload is locked")))?;
    let offset = if length == 0 {
        transfer::finish_to_completion(&state, lock, upload.clone())
            .await
            .map(|_| 0)
    } else if with_chunk {
        transfer::append(&state, lock, upload.clone(), payload).await
    } else {
        Ok(0)
    };
    let offset = match offset {
        Ok(offset) => offset,
        Err(err) => {
            // The client never learns where the upload is: nothing of it may stay.
            drop_upload(&state, path, &upload.id).await;
            return Err(err);
        }
    };
    let mut res = HttpResponse::Created();
    put(
        &mut res,
        header::LOCATION,
        upload_url(&state, path, &upload.id),
    );
    put(&mut res, UPLOAD_OFFSET, offset);
    put(&mut res, UPLOAD_EXPIRES, http_date(upload.expires_at));
    Ok(res.finish())
}

/// Removes an upload and whatever it stored, for a creation that failed.
async fn drop_upload(state: &web::Data<AppState>, path: ChatPath, id: &str) {
    let (user_id, chat_id, owned) = (path.user_id, path.chat_id, id.to_owned());
    let now = state.clock.unix();
    let dropped = AppState::delete_with_objects(state, chat_id, move |conn| {
        Ok(uploads::delete_upload(conn, user_id, chat_id, &owned, now)?
            .map(|key| key.into_iter().collect()))
    })
    .await;
    if let Err(err) = dropped {
        tracing::warn!(upload = %id, error = %err, "could not drop a failed upload; it expires");
    }
    transfer::remove_part(state, id).await;
}

/// The headers HEAD answers with.
fn progress(res: &mut HttpResponseBuilder, upload: &UploadRow) {
    put(res, UPLOAD_OFFSET, upload.received);
    put(res, UPLOAD_LENGTH, upload.length);
    if let Some(metadata) = &upload.metadata {
        put(res, UPLOAD_METADATA, metadata);
    }
    put(res, UPLOAD_EXPIRES, http_date(upload.expires_at));
    res.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
}

/// An upload's offset
///
/// tus HEAD: how many bytes are stored (`Upload-Offset`), of how many (`Upload-Length`), the
/// metadata sent at creation and the expiry. A finished upload answers its length.
#[utoipa::path(
    head,
    path = "/api/users/{user_id}/chats/{chat_id}/uploads/{upload_id}",
    tag = "uploads",
    params(UploadPath, ("Tus-Resumable" = String, Header, example = "1.0.0")),
    security(("neptun_session" = [])),
    responses(
        (status = 200, description = "`Upload-Offset`, `Upload-Length`, `Upload-Metadata`, \
            `Upload-Expires`, `Cache-Control: no-store`"),
        (status = 400, description = "A malformed id"),
        (status = 401, description = "No valid session"),
        (status = 404, description = "`User not found`, `Chat not found` or `Upload not found` \
            (none, another chat's, or expired)"),
        (status = 412, description = "`Tus-Resumable` missing or not `1.0.0`"),
        (status = 503, description = "The database is busy"),
    )
)]
async fn upload_offset(
    state: web::Data<AppState>,
    path: UploadPath,
    req: HttpRequest,
) -> Result<HttpResponse, AppError> {
    require_tus(&req)?;
    let upload = find(&state, &path).await?;
    if upload.is_complete() && upload.file_id.is_none() {
        // Best effort: the bytes are all in, whatever became of the file.
        if let Err(err) = file_of(&state, upload.clone()).await {
            tracing::warn!(upload = %upload.id, error = %err, "could not finish a complete upload");
        }
    }
    let mut res = HttpResponse::Ok();
    progress(&mut res, &upload);
    Ok(res.finish())
}

/// The file an upload became
///
/// Not part of tus: once the last byte is in, `{chatFile}` as `GET …/files/{file_id}` gives it;
/// 409 while bytes are missing.
#[utoipa::path(
    get,
    path = "/api/users/{user_id}/chats/{chat_id}/uploads/{upload_id}",
    tag = "uploads",
    params(UploadPath),
    security(("neptun_session" = [])),
    responses(
        (status = 200, description = "The file", body = ChatFileResponse),
        (status = 400, description = "A malformed id", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`User not found`, `Chat not found` or `Upload not found` \
            (none, another chat's, expired, or its file deleted)", body = ErrorResponse),
        (status = 409, description = "`Upload is not complete: N of M bytes received`",
            body = ErrorResponse),
        (status = 503, response = Unavailable),
    )
)]
async fn get_upload(
    state: web::Data<AppState>,
    path: UploadPath,
) -> Result<HttpResponse, AppError> {
    let upload = find(&state, &path).await?;
    let (received, length) = (upload.received, upload.length);
    let file = file_of(&state, upload).await?.ok_or_else(|| {
        AppError::Conflict(format!(
            "Upload is not complete: {received} of {length} bytes received"
        ))
    })?;
    let file = state.chat_file(file, state.url_expiry(), false);
    Ok(HttpResponse::Ok().json(ChatFileResponse { chat_file: file }))
}

/// Send bytes of an upload
///
/// tus PATCH: the bytes from `Upload-Offset`, which must be the upload's offset. A 204 means
/// they are durable; a body cut off keeps what arrived. A second PATCH of the same upload waits
/// for the first (up to `--body-timeout`). The last byte makes the file (as a multipart upload
/// would) before the answer.
#[utoipa::path(
    patch,
    path = "/api/users/{user_id}/chats/{chat_id}/uploads/{upload_id}",
    tag = "uploads",
    params(
        UploadPath,
        ("Tus-Resumable" = String, Header, example = "1.0.0"),
        ("Upload-Offset" = u64, Header, example = 0, description = "Where these bytes start"),
    ),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    security(("neptun_session" = [])),
    responses(
        (status = 204, description = "Stored, durably: `Upload-Offset` (the new offset), \
            `Upload-Expires`"),
        (status = 400, description = "A malformed id, a missing or malformed `Upload-Offset`",
            body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 403, description = "A cross-site request", body = ErrorResponse),
        (status = 404, description = "`User not found`, `Chat not found` or `Upload not found`",
            body = ErrorResponse),
        (status = 408, response = RequestTimeout),
        (status = 409, description = "`Upload-Offset` is not the upload's offset, or another \
            PATCH kept the upload for longer than `--body-timeout`", body = ErrorResponse),
        (status = 412, description = "`Tus-Resumable` missing or not `1.0.0`", body = ErrorResponse),
        (status = 413, description = "The bytes go past `Upload-Length` (none are kept)",
            body = ErrorResponse),
        (status = 415, description = "The body is not `application/offset+octet-stream`",
            body = ErrorResponse),
        (status = 503, response = Unavailable),
    )
)]
async fn append_to_upload(
    state: web::Data<AppState>,
    path: UploadPath,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    require_tus(&req)?;
    if !is_offset_stream(&req) {
        return Err(AppError::UnsupportedMediaType(format!(
            "Content-Type must be {OFFSET_STREAM}"
        )));
    }
    let offset = byte_count(req.headers(), &UPLOAD_OFFSET)?
        .ok_or_else(|| AppError::BadRequest("Upload-Offset is required".into()))?;
    // Looked up before waiting: a stranger's id never queues behind anyone.
    find(&state, &path).await?;
    let lock = state
        .uploads
        .lock(&path.upload_id, state.body_timeout)
        .await
        .ok_or_else(busy)?;
    let upload = find(&state, &path).await?;
    if offset != upload.received {
        return Err(AppError::Conflict(format!(
            "Upload-Offset {offset} is not the upload's offset, {}",
            upload.received
        )));
    }
    if content_length(&req).is_some_and(|n| offset.saturating_add(n) > upload.length) {
        return Err(transfer::past_length(upload.length));
    }
    let expires_at = upload.expires_at;
    let received = if upload.is_complete() {
        // Nothing more to take; the file is made if it was not yet.
        if has_body(&req) {
            return Err(transfer::past_length(upload.length));
        }
        drop(lock);
        file_of(&state, upload.clone()).await?;
        upload.received
    } else {
        transfer::append(&state, lock, upload, payload).await?
    };
    let mut res = HttpResponse::NoContent();
    put(&mut res, UPLOAD_OFFSET, received);
    put(&mut res, UPLOAD_EXPIRES, http_date(expires_at));
    Ok(res.finish())
}

/// Terminate an upload
///
/// tus termination: its bytes and its record go, and a finished upload's file too. A PATCH
/// writing the upload is waited for (up to `--body-timeout`).
#[utoipa::path(
    delete,
    path = "/api/users/{user_id}/chats/{chat_id}/uploads/{upload_id}",
    tag = "uploads",
    params(UploadPath, ("Tus-Resumable" = String, Header, example = "1.0.0")),
    security(("neptun_session" = [])),
    responses(
        (status = 204, description = "Gone, durably"),
        (status = 400, description = "A malformed id", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 403, description = "A cross-site request", body = ErrorResponse),
        (status = 404, description = "`User not found`, `Chat not found` or `Upload not found`",
            body = ErrorResponse),
        (status = 409, description = "A PATCH kept the upload for longer than `--body-timeout`",
            body = ErrorResponse),
        (status = 412, description = "`Tus-Resumable` missing or not `1.0.0`", body = ErrorResponse),
        (status = 503, response = Unavailable),
    )
)]
async fn terminate_upload(
    state: web::Data<AppState>,
    path: UploadPath,
    req: HttpRequest,
) -> Result<HttpResponse, AppError> {
    require_tus(&req)?;
    find(&state, &path).await?;
    // A PATCH writing the upload ends first (its bytes then go too).
    let _lock = state
        .uploads
        .lock(&path.upload_id, state.body_timeout)
        .await
        .ok_or_else(busy)?;
    let (user_id, chat_id, id) = (path.user_id, path.chat_id, path.upload_id.clone());
    let now = state.clock.unix();
    let deleted = AppState::delete_with_objects(&state, chat_id, move |conn| {
        Ok(uploads::delete_upload(conn, user_id, chat_id, &id, now)?
            .map(|key| key.into_iter().collect()))
    })
    .await?;
    if deleted.is_none() {
        return Err(AppError::NotFound("Upload not found"));
    }
    transfer::remove_part(&state, &path.upload_id).await;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tus_paths_are_recognised() {
        assert!(is_tus_path("/api/users/1/chats/2/uploads"));
        assert!(is_tus_path("/api/users/1/chats/2/uploads/abc"));
        assert!(!is_tus_path("/api/users/1/chats/2/files"));
        assert!(!is_tus_path("/api/users/1/chats/2/uploads/abc/def"));
        assert!(!is_tus_path("/api/users/1/chats"));
    }

    #[test]
    fn header_names_are_titled() {
        assert_eq!(title(&UPLOAD_OFFSET), "Upload-Offset");
        assert_eq!(title(&UPLOAD_LENGTH), "Upload-Length");
    }

    #[test]
    fn expiries_are_http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_710_929_700), "Wed, 20 Mar 2024 10:15:00 GMT");
    }
}
