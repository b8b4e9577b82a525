//! A user's chats: list, create, delete (`/api/users/{user_id}/chats`).

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::db;
use crate::error::AppError;
use crate::routes::{ChatPath, UserPath, method_not_allowed_after_login};
use crate::startup::AppState;

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

#[derive(Deserialize)]
struct NewChat {
    name: String,
    model: Option<String>,
}

async fn list_chats(state: web::Data<AppState>, path: UserPath) -> Result<HttpResponse, AppError> {
    let chats = state
        .db
        .run(move |conn| db::list_chats(conn, path.user_id))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "chats": chats })))
}

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
    Ok(HttpResponse::Created().json(json!({ "chat": chat })))
}

async fn delete_chat(state: web::Data<AppState>, path: ChatPath) -> Result<HttpResponse, AppError> {
    AppState::delete_with_objects(&state, move |conn| {
        db::delete_chat(conn, path.user_id, path.chat_id)
    })
    .await?
    .ok_or(AppError::NotFound("Chat not found"))?;
    Ok(HttpResponse::NoContent().finish())
}
