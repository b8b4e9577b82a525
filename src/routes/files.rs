//! A chat's files: Neptun's Chat Files listing, uploads, one file, deletes
//! (`/api/users/{user_id}/chats/{chat_id}/files`).

use actix_web::http::header::ContentType;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::cache::Listing;
use crate::db;
use crate::error::AppError;
use crate::routes::body::Sliced;
use crate::routes::listing::ListingWriter;
use crate::routes::openapi::{
    ErrorResponse, InsufficientStorage, RequestTimeout, Unauthorized, Unavailable,
};
use crate::routes::upload::{self, Limits, receive_files};
use crate::routes::{ChatFile, ChatPath, FilePath, method_not_allowed_after_login};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/users/{user_id}/chats/{chat_id}/files")
            .route(web::get().to(list_chat_files))
            .route(web::post().to(upload_chat_files))
            .default_service(method_not_allowed_after_login("GET, POST")),
    )
    .service(
        web::resource("/users/{user_id}/chats/{chat_id}/files/{file_id}")
            .route(web::get().to(get_chat_file))
            .route(web::delete().to(delete_chat_file))
            .default_service(method_not_allowed_after_login("GET, DELETE")),
    );
}

/// `{chatFiles}`: the answer of Neptun's Chat Files endpoint (also an upload's, in upload order).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetChatFilesResponse {
    pub chat_files: Vec<ChatFile>,
}

/// `{chatFile}`: one file.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatFileResponse {
    pub chat_file: ChatFile,
}

/// An upload: one or more parts named `file` (other parts are ignored).
#[derive(ToSchema)]
pub struct UploadForm {
    /// The files. Each part's filename (sanitised) becomes the file's `name`; its Content-Type,
    /// when a valid `type/subtype` other than `application/octet-stream`, its `type` (else
    /// guessed from the name); text found to be UTF-8 gets `; charset=utf-8`. A part of type
    /// `multipart/*` is refused.
    #[schema(value_type = Vec<String>, format = Binary, min_items = 1, max_items = 100)]
    pub file: Vec<Vec<u8>>,
}

/// A chat's files (Neptun's Chat Files endpoint)
///
/// Oldest first (`created_at`, then `id`); an empty chat gives `{"chatFiles": []}`. Each `url`
/// is absolute and signed, valid for `--url-ttl`; listing twice within a minute gives the same
/// URLs.
#[utoipa::path(
    get,
    path = "/api/users/{user_id}/chats/{chat_id}/files",
    tag = "files",
    params(
        ChatPath,
    ),
    security(("neptun_session" = [])),
    responses(
        (status = 200, description = "The chat's files", body = GetChatFilesResponse),
        (status = 400, description = "A malformed user or chat id (not a positive 64-bit integer)",
            body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`User not found` (not the session's user) or `Chat not \
            found` (none, or another user's)", body = ErrorResponse),
        (status = 503, response = Unavailable),
    )
)]
async fn list_chat_files(
    state: web::Data<AppState>,
    path: ChatPath,
) -> Result<HttpResponse, AppError> {
    let expires = state.url_expiry();
    let listings = &state.listings;
    if let Some(body) = listings.get(path.chat_id, path.user_id, expires) {
        return Ok(json_bytes(body));
    }
    // Noted before the read, so that a listing read from before an upload or delete is not kept.
    let mark = listings.mark();
    // Written on the blocking thread, straight from the rows (`routes::listing`).
    let writer_state = state.clone();
    let body = state
        .db
        .run(move |conn| {
            let listing = db::each_file(
                conn,
                path.user_id,
                path.chat_id,
                |files| ListingWriter::new(&writer_state, expires, files),
                ListingWriter::push,
            )?;
            Ok(listing.map(ListingWriter::finish))
        })
        .await?
        .ok_or(AppError::NotFound("Chat not found"))?;
    let body = Bytes::from(body);
    let listing = Listing {
        user_id: path.user_id,
        expires,
        body: body.clone(),
    };
    listings.insert(path.chat_id, listing, mark);
    Ok(json_bytes(body))
}

/// A 200 carrying JSON that is already serialised.
fn json_bytes(body: Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(Sliced::new(body))
}

/// Upload files to a chat
///
/// Streamed to disk part by part. A 201 means the bytes and the rows are durable; any refusal
/// keeps nothing of the request.
#[utoipa::path(
    post,
    path = "/api/users/{user_id}/chats/{chat_id}/files",
    tag = "files",
    params(
        ChatPath,
    ),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    security(("neptun_session" = [])),
    responses(
        (status = 201, description = "Stored, in upload order", body = GetChatFilesResponse),
        (status = 400, description = "A malformed user or chat id, no part named `file`, a part \
            of type `multipart/*`, or a malformed multipart body", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 403, description = "A cross-site request", body = ErrorResponse),
        (status = 404, description = "`User not found` (not the session's user) or `Chat not \
            found` (none, or another user's)", body = ErrorResponse),
        (status = 408, response = RequestTimeout),
        (status = 413, description = "A file over `--max-file-size`, the user's quota reached, or \
            more than 100 parts", body = ErrorResponse),
        (status = 415, description = "The body is not `multipart/form-data`", body = ErrorResponse),
        (status = 503, response = Unavailable),
        (status = 507, response = InsufficientStorage),
    )
)]
async fn upload_chat_files(
    state: web::Data<AppState>,
    path: ChatPath,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let is_form_data = req
        .mime_type()
        .ok()
        .flatten()
        .is_some_and(|m| m.essence_str() == "multipart/form-data");
    if !is_form_data {
        return Err(AppError::UnsupportedMediaType(
            "Content-Type must be multipart/form-data".into(),
        ));
    }
    let quota = state.user_quota;
    let used = state
        .db
        .run(move |conn| {
            let Some(_) = db::find_chat(conn, path.user_id, path.chat_id)? else {
                return Ok(None);
            };
            let used = match quota {
                Some(_) => db::user_usage(conn, path.user_id)?,
                None => 0,
            };
            Ok(Some(used))
        })
        .await?
        .ok_or(AppError::NotFound("Chat not found"))?;
    let limits = Limits {
        max_file_size: state.max_file_size,
        quota: quota.map(|quota| (quota, used)),
    };
    if let Some((quota, used)) = limits.quota {
        // A full quota takes no more files (not even empty ones): say so before reading a
        // byte of the body.
        if used >= quota {
            return Err(Limits::quota_exceeded(quota));
        }
    }
    let received = receive_files(
        &state,
        path.user_id,
        upload::multipart(req.headers(), payload),
        limits,
    )
    .await?;
    let rows = upload::store_uploads(&state, path.user_id, path.chat_id, received, limits).await?;
    let expires = state.url_expiry();
    let files: Vec<_> = rows
        .into_iter()
        .map(|row| state.chat_file(row, expires, false))
        .collect();
    Ok(HttpResponse::Created().json(GetChatFilesResponse { chat_files: files }))
}

#[derive(Deserialize)]
struct FileQuery {
    download: Option<String>,
}

/// Distinguishes "no such chat" from "no such file in it" once a lookup has failed.
async fn not_found(state: &AppState, path: FilePath) -> AppError {
    let chat = state
        .db
        .run(move |conn| db::find_chat(conn, path.user_id, path.chat_id))
        .await;
    match chat {
        Ok(Some(_)) => AppError::NotFound("File not found"),
        Ok(None) => AppError::NotFound("Chat not found"),
        Err(err) => err,
    }
}

/// One file of a chat
///
/// With `?download=1` its `url` forces a download (`Content-Disposition: attachment`).
#[utoipa::path(
    get,
    path = "/api/users/{user_id}/chats/{chat_id}/files/{file_id}",
    tag = "files",
    params(
        FilePath,
        ("download" = Option<String>, Query, example = "1",
            description = "`1` (or `true`): the URL is for an attachment download; anything \
                else is ignored"),
    ),
    security(("neptun_session" = [])),
    responses(
        (status = 200, description = "The file", body = ChatFileResponse),
        (status = 400, description = "A malformed user, chat or file id (not a positive 64-bit \
            integer), or a malformed query string", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`User not found`, `Chat not found` or `File not found`",
            body = ErrorResponse),
        (status = 503, response = Unavailable),
    )
)]
async fn get_chat_file(
    state: web::Data<AppState>,
    path: FilePath,
    query: web::Query<FileQuery>,
) -> Result<HttpResponse, AppError> {
    let download = matches!(query.download.as_deref(), Some("1" | "true"));
    let row = state
        .db
        .run(move |conn| db::find_file(conn, path.user_id, path.chat_id, path.file_id))
        .await?;
    let Some(row) = row else {
        return Err(not_found(&state, path).await);
    };
    let file = state.chat_file(row, state.url_expiry(), download);
    Ok(HttpResponse::Ok().json(ChatFileResponse { chat_file: file }))
}

/// Delete a file
///
/// Touches the chat's `updated_at`; the file's URL answers 404 from now on.
#[utoipa::path(
    delete,
    path = "/api/users/{user_id}/chats/{chat_id}/files/{file_id}",
    tag = "files",
    params(
        FilePath,
    ),
    security(("neptun_session" = [])),
    responses(
        (status = 204, description = "Deleted, durably"),
        (status = 400, description = "A malformed user, chat or file id (not a positive 64-bit \
            integer)", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 403, description = "A cross-site request", body = ErrorResponse),
        (status = 404, description = "`User not found`, `Chat not found` or `File not found`",
            body = ErrorResponse),
        (status = 503, response = Unavailable),
        (status = 507, response = InsufficientStorage),
    )
)]
async fn delete_chat_file(
    state: web::Data<AppState>,
    path: FilePath,
) -> Result<HttpResponse, AppError> {
    let now = state.clock.unix();
    let deleted = AppState::delete_with_objects(&state, path.chat_id, move |conn| {
        let key = db::delete_file(conn, path.user_id, path.chat_id, path.file_id, now)?;
        Ok(key.map(|key| vec![key]))
    })
    .await?;
    if deleted.is_none() {
        return Err(not_found(&state, path).await);
    }
    Ok(HttpResponse::NoContent().finish())
}
