//! A chat's files: the seed listing, uploads, one file, deletes
//! (`/api/users/{user_id}/chats/{chat_id}/files`).

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::db;
use crate::error::AppError;
use crate::routes::upload::{self, Limits, receive_files};
use crate::routes::{ChatPath, FilePath, method_not_allowed_after_login};
use crate::startup::AppState;

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

async fn list_chat_files(
    state: web::Data<AppState>,
    path: ChatPath,
) -> Result<HttpResponse, AppError> {
    let rows = state
        .db
        .run(move |conn| db::list_files(conn, path.user_id, path.chat_id))
        .await?
        .ok_or(AppError::NotFound("Chat not found"))?;
    let expires = state.url_expiry();
    let files: Vec<_> = rows
        .into_iter()
        .map(|row| state.chat_file(row, expires, false))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "chatFiles": files })))
}

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
    Ok(HttpResponse::Created().json(json!({ "chatFiles": files })))
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
    Ok(HttpResponse::Ok().json(json!({ "chatFile": file })))
}

async fn delete_chat_file(
    state: web::Data<AppState>,
    path: FilePath,
) -> Result<HttpResponse, AppError> {
    let now = state.clock.unix();
    let deleted = AppState::delete_with_objects(&state, move |conn| {
        let key = db::delete_file(conn, path.user_id, path.chat_id, path.file_id, now)?;
        Ok(key.map(|key| vec![key]))
    })
    .await?;
    if deleted.is_none() {
        return Err(not_found(&state, path).await);
    }
    Ok(HttpResponse::NoContent().finish())
}
