//! A user's chats: list, create, delete (`/api/users/{user_id}/chats`).

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db;
use crate::error::AppError;
use crate::routes::openapi::{
    ErrorResponse, InsufficientStorage, JsonTooLarge, NotJson, RequestTimeout, Unauthorized,
    Unavailable,
};
use crate::routes::{ChatPath, UserPath, method_not_allowed_after_login};
use crate::state::AppState;

const MAX_NAME_CHARS: usize = 255;
const MAX_MODEL_CHARS: usize = 100;
const DEFAULT_MODEL: &str = "default";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/users/{user_id}/chats")
            .route(web::get().to(list_chats))
            .route(web::post().to(create_chat))
            .default_service(method_not_allowed_after_login("GET, POST")),
    )
    .service(
        web::resource("/users/{user_id}/chats/{chat_id}")
            .route(web::delete().to(delete_chat))
            .default_service(method_not_allowed_after_login("DELETE")),
    );
}

/// A new chat.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"name": "Trip planning", "model": "default"}))]
struct NewChat {
    /// 1 to 255 characters after trimming, no control characters.
    #[schema(min_length = 1, max_length = 255)]
    name: String,
    /// Free text up to 100 characters after trimming; absent, null or blank gives `default`.
    #[schema(max_length = 100)]
    model: Option<String>,
}

/// `{chats}`: a user's chats, most recently updated first.
#[derive(Serialize, ToSchema)]
pub struct ChatsResponse {
    pub chats: Vec<db::Chat>,
}

/// `{chat}`: one chat.
#[derive(Serialize, ToSchema)]
pub struct ChatResponse {
    pub chat: db::Chat,
}

/// A user's chats
///
/// Most recently updated first; equal `updated_at`, higher `id` first.
#[utoipa::path(
    get,
    path = "/api/users/{user_id}/chats",
    tag = "chats",
    params(UserPath),
    security(("neptun_session" = [])),
    responses(
        (status = 200, description = "The chats", body = ChatsResponse),
        (status = 400, description = "A malformed user id (not a positive 64-bit integer)",
            body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`User not found`: not the session's user", body = ErrorResponse),
        (status = 503, response = Unavailable),
    )
)]
async fn list_chats(state: web::Data<AppState>, path: UserPath) -> Result<HttpResponse, AppError> {
    let chats = state
        .db
        .run(move |conn| db::list_chats(conn, path.user_id))
        .await?;
    Ok(HttpResponse::Ok().json(ChatsResponse { chats }))
}

/// Create a chat
#[utoipa::path(
    post,
    path = "/api/users/{user_id}/chats",
    tag = "chats",
    params(UserPath),
    request_body = NewChat,
    security(("neptun_session" = [])),
    responses(
        (status = 201, description = "Created", body = ChatResponse),
        (status = 400, description = "A malformed user id or body, a name that is empty or over \
            255 characters or has control characters, or a model over 100 characters",
            body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 403, description = "A cross-site request", body = ErrorResponse),
        (status = 404, description = "`User not found`: not the session's user", body = ErrorResponse),
        (status = 408, response = RequestTimeout),
        (status = 413, response = JsonTooLarge),
        (status = 415, response = NotJson),
        (status = 503, response = Unavailable),
        (status = 507, response = InsufficientStorage),
    )
)]
async fn create_chat(
    state: web::Data<AppState>,
    path: UserPath,
    body: web::Json<NewChat>,
) -> Result<HttpResponse, AppError> {
    let NewChat { name, model } = body.into_inner();
    let name = name.trim().to_owned();
    let name_chars = name.chars().count();
    if name_chars == 0 || name_chars > MAX_NAME_CHARS {
        return Err(AppError::BadRequest(format!(
            "Chat name must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(AppError::BadRequest(
            "Chat name must not contain control characters".into(),
        ));
    }
    let model = model
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| DEFAULT_MODEL.to_owned());
    if model.chars().count() > MAX_MODEL_CHARS {
        return Err(AppError::BadRequest(format!(
            "Model must be at most {MAX_MODEL_CHARS} characters"
        )));
    }
    let now = state.clock.unix();
    let chat = state
        .db
        .write(move |conn| db::insert_chat(conn, path.user_id, &name, &model, now))
        .await?;
    Ok(HttpResponse::Created().json(ChatResponse { chat }))
}

/// Delete a chat and its files
///
/// The files' rows and stored bytes go too.
#[utoipa::path(
    delete,
    path = "/api/users/{user_id}/chats/{chat_id}",
    tag = "chats",
    params(
        ChatPath,
    ),
    security(("neptun_session" = [])),
    responses(
        (status = 204, description = "Deleted, durably"),
        (status = 400, description = "A malformed user or chat id (not a positive 64-bit integer)",
            body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 403, description = "A cross-site request", body = ErrorResponse),
        (status = 404, description = "`User not found` (not the session's user) or `Chat not \
            found` (none, or another user's)", body = ErrorResponse),
        (status = 503, response = Unavailable),
        (status = 507, response = InsufficientStorage),
    )
)]
async fn delete_chat(state: web::Data<AppState>, path: ChatPath) -> Result<HttpResponse, AppError> {
    let now = state.clock.unix();
    AppState::delete_with_objects(&state, path.chat_id, move |conn| {
        db::delete_chat(conn, path.user_id, path.chat_id, now)
    })
    .await?
    .ok_or(AppError::NotFound("Chat not found"))?;
    Ok(HttpResponse::NoContent().finish())
}
