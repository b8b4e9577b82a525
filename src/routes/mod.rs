//! HTTP routes, one module per concern, each with a `configure()`; and what they share.

pub mod auth;
pub mod body;
pub mod chats;
pub mod downloads;
pub mod files;
pub mod health;
pub mod listing;
pub mod openapi;
pub mod tus;
pub mod upload;

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, Route, web};
use serde::Serialize;
use utoipa::IntoParams;

use crate::clock::rfc3339;
use crate::db::FileRow;
use crate::error::AppError;
use crate::media_type::content_disposition;
use crate::session::AuthUser;
use crate::state::AppState;

/// Parses a path id: a positive integer that fits in an i64, written in plain digits.
pub fn parse_id(raw: &str, what: &'static str) -> Result<i64, AppError> {
    raw.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| raw.parse::<i64>().ok())
        .flatten()
        .filter(|id| *id > 0)
        .ok_or_else(|| AppError::BadRequest(format!("Invalid {what} id")))
}

/// The ids of a `/api/users/{user_id}/…` path, checked in the contract's order: a live
/// session (401), well-formed ids (400), the session's own user (404).
fn owned_ids<const N: usize>(
    req: &HttpRequest,
    names: [(&str, &'static str); N],
) -> Result<[i64; N], AppError> {
    owned_ids_then(req, names, |_| Ok(()))
}

/// [`owned_ids`], with more of the path checked (400) by `check` before the user is matched.
fn owned_ids_then<const N: usize>(
    req: &HttpRequest,
    names: [(&str, &'static str); N],
    check: impl FnOnce(&HttpRequest) -> Result<(), AppError>,
) -> Result<[i64; N], AppError> {
    let user = AuthUser::extract(req).into_inner()?;
    let mut ids = [0i64; N];
    for (slot, (param, what)) in ids.iter_mut().zip(names) {
        *slot = parse_id(req.match_info().get(param).unwrap_or_default(), what)?;
    }
    check(req)?;
    if ids.first() != Some(&user.id) {
        return Err(AppError::NotFound("User not found"));
    }
    Ok(ids)
}

// The structs document their path parameters too (`params(ChatPath)` in the OpenAPI paths).

/// `/api/users/{user_id}` of the logged-in user.
#[derive(Debug, Clone, Copy, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// The session's own user id
    #[param(minimum = 1)]
    pub user_id: i64,
}

/// `/api/users/{user_id}/chats/{chat_id}` of the logged-in user (the chat itself unchecked).
#[derive(Debug, Clone, Copy, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChatPath {
    /// The session's own user id
    #[param(minimum = 1)]
    pub user_id: i64,
    /// The chat
    #[param(minimum = 1)]
    pub chat_id: i64,
}

/// `/api/users/{user_id}/chats/{chat_id}/files/{file_id}` of the logged-in user.
#[derive(Debug, Clone, Copy, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FilePath {
    /// The session's own user id
    #[param(minimum = 1)]
    pub user_id: i64,
    /// The chat
    #[param(minimum = 1)]
    pub chat_id: i64,
    /// The file
    #[param(minimum = 1)]
    pub file_id: i64,
}

/// `/api/users/{user_id}/chats/{chat_id}/uploads/{upload_id}` of the logged-in user (the chat
/// and the upload themselves unchecked).
#[derive(Debug, Clone, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UploadPath {
    /// The session's own user id
    #[param(minimum = 1)]
    pub user_id: i64,
    /// The chat
    #[param(minimum = 1)]
    pub chat_id: i64,
    /// The upload: 32 lowercase hex digits, from the `Location` of its creation
    #[param(pattern = "^[0-9a-f]{32}$")]
    pub upload_id: String,
}

impl UploadPath {
    /// The chat part of the path.
    pub fn chat(&self) -> ChatPath {
        ChatPath {
            user_id: self.user_id,
            chat_id: self.chat_id,
        }
    }
}

impl FromRequest for UploadPath {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let upload_id = req.match_info().get("upload_id").unwrap_or_default();
        ready(
            owned_ids_then(req, [("user_id", "user"), ("chat_id", "chat")], |_| {
                if crate::storage::is_valid_key(upload_id) {
                    Ok(())
                } else {
                    Err(AppError::BadRequest("Invalid upload id".into()))
                }
            })
            .map(|[user_id, chat_id]| Self {
                user_id,
                chat_id,
                upload_id: upload_id.to_owned(),
            }),
        )
    }
}

impl FromRequest for UserPath {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(owned_ids(req, [("user_id", "user")]).map(|[user_id]| Self { user_id }))
    }
}

impl FromRequest for ChatPath {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            owned_ids(req, [("user_id", "user"), ("chat_id", "chat")])
                .map(|[user_id, chat_id]| Self { user_id, chat_id }),
        )
    }
}

impl FromRequest for FilePath {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            owned_ids(
                req,
                [
                    ("user_id", "user"),
                    ("chat_id", "chat"),
                    ("file_id", "file"),
                ],
            )
            .map(|[user_id, chat_id, file_id]| Self {
                user_id,
                chat_id,
                file_id,
            }),
        )
    }
}

/// A file as Neptun's Chat Files endpoint shows it (Neptun's `ChatFile`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "id": 1,
    "chat_conversation_id": 123,
    "name": "document.pdf",
    "size": 1024,
    "type": "application/pdf",
    "created_at": "2024-03-20T10:00:00Z",
    "url": "https://files.example.com/files/9f86d081884c7d659a2feaa0c55ad015?expires=1710929700&kid=5e1f3a09&signature=PlWm6o1p2wbEPQ5mhY9aFwQ8cUw0hC1QkHRhQ2vZQqs"
}))]
pub struct ChatFile {
    /// The file id.
    pub id: i64,
    /// The chat it belongs to.
    pub chat_conversation_id: i64,
    /// The uploaded file name, sanitised: last path component, no control or bidi
    /// characters, at most 255 bytes.
    pub name: String,
    /// Bytes stored.
    pub size: u64,
    /// MIME type, e.g. `application/pdf`.
    #[serde(rename = "type")]
    pub mime: String,
    /// RFC 3339 UTC to the second, e.g. `2024-03-20T10:00:00Z`.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Absolute, time-limited signed URL of the bytes: `GET /files/{key}`, or with S3 storage
    /// in direct mode a presigned URL straight to the object store.
    #[schema(format = "uri")]
    pub url: String,
}

impl AppState {
    /// The API view of a stored file, with a URL valid until `expires`: presigned straight to
    /// the object store when downloads go direct, else our own signed `/files/{key}`.
    pub fn chat_file(&self, row: FileRow, expires: i64, download: bool) -> ChatFile {
        let direct = self.store.direct_url(
            &row.object_key,
            &row.mime,
            || content_disposition(&row.name, &row.mime, download),
            expires,
            self.url_ttl_secs,
        );
        let url = direct.unwrap_or_else(|| {
            // Sized for the whole URL: the query adds some 90 bytes.
            let mut url =
                String::with_capacity(self.public_base.len() + row.object_key.len() + 128);
            url.push_str(&self.public_base);
            url.push_str("/files/");
            url.push_str(&row.object_key);
            url.push('?');
            self.signer
                .push_query(&mut url, &row.object_key, expires, download);
            url
        });
        ChatFile {
            id: row.id,
            chat_conversation_id: row.chat_id,
            name: row.name,
            size: row.size,
            mime: row.mime,
            created_at: rfc3339(row.created_at),
            url,
        }
    }

    /// The expiry to put in URLs handed out now.
    pub fn url_expiry(&self) -> i64 {
        crate::signing::expiry(self.clock.unix(), self.url_ttl_secs)
    }
}

/// A resource's answer to a method it does not serve: 405 with `Allow`.
pub fn method_not_allowed(allow: &'static str) -> Route {
    web::to(move || ready(Err::<(), _>(AppError::MethodNotAllowed(allow))))
}

/// Like [`method_not_allowed`], on routes where a missing session answers 401 first.
pub fn method_not_allowed_after_login(allow: &'static str) -> Route {
    web::to(move |_: AuthUser| ready(Err::<(), _>(AppError::MethodNotAllowed(allow))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive_plain_integers() {
        assert_eq!(parse_id("42", "chat").ok(), Some(42));
        assert_eq!(parse_id("9223372036854775807", "chat").ok(), Some(i64::MAX));
        for bad in [
            "0",
            "-1",
            "+1",
            "abc",
            "",
            "1.5",
            " 1",
            "9223372036854775808",
            "0x10",
        ] {
            assert!(parse_id(bad, "chat").is_err(), "{bad}");
        }
    }
}
