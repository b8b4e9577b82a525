//! Sign-up, login, logout and the session check (`/api/auth/...`).

use std::sync::LazyLock;

use actix_session::Session;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::clock::rfc3339;
use crate::db::{self, Login};
use crate::error::AppError;
use crate::routes::method_not_allowed;
use crate::routes::openapi::{
    ErrorResponse, InsufficientStorage, JsonTooLarge, NotJson, RequestTimeout, TooManyRequests,
    Unauthorized, Unavailable,
};
use crate::session::{self, AuthUser, LoggedUser};
use crate::state::{AppState, to_completion};
use crate::throttle::client_address;

const MIN_PASSWORD_CHARS: usize = 8;
// Argon2 hashes any length, but a megabyte password is only a way to burn our CPU.
const MAX_PASSWORD_BYTES: usize = 1024;
const MAX_EMAIL_BYTES: usize = 254;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/auth/sign-up")
            .route(web::post().to(sign_up))
            .default_service(method_not_allowed("POST")),
    )
    .service(
        web::resource("/auth/login")
            .route(web::post().to(log_in))
            .default_service(method_not_allowed("POST")),
    )
    .service(
        web::resource("/auth/logout")
            .route(web::post().to(log_out))
            .default_service(method_not_allowed("POST")),
    )
    .service(
        web::resource("/auth/password")
            .route(web::post().to(change_password))
            .default_service(method_not_allowed("POST")),
    )
    .service(
        web::resource("/auth/check")
            .route(web::get().to(check))
            .route(web::head().to(check))
            .default_service(method_not_allowed("GET, HEAD")),
    );
}

/// A new account.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"email": "ada@example.com", "password": "correct horse", "confirmPassword": "correct horse"}))]
struct SignUp {
    /// Trimmed and lowercased before it is checked and stored.
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// At least 8 characters, at most 1024 bytes.
    #[schema(min_length = 8)]
    password: String,
    /// The same password again.
    #[schema(min_length = 8)]
    confirm_password: String,
}

/// An email and its password.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"email": "ada@example.com", "password": "correct horse"}))]
struct Credentials {
    email: String,
    password: String,
}

/// A new password, with the current one.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct PasswordChange {
    current_password: String,
    /// At least 8 characters, at most 1024 bytes.
    #[schema(min_length = 8)]
    password: String,
    /// The new password again.
    #[schema(min_length = 8)]
    confirm_password: String,
}

/// `{user}`: the user a session belongs to.
#[derive(Serialize, ToSchema)]
pub struct UserResponse {
    pub user: db::User,
}

/// The answer to a login.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    pub user: db::User,
    /// RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub logged_in_at: String,
}

const THROTTLED: &str = "Too many failed login attempts; try again later";

/// Trimmed and lowercased, as emails are stored.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A deliberately modest syntax check: one `@`, a non-empty local part, a dotted domain of
/// letters, digits and hyphens, and nothing that could smuggle a header or a space.
pub fn is_valid_email(email: &str) -> bool {
    if email.len() > MAX_EMAIL_BYTES {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !"@\"(),:;<>[\\]".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    local_ok && domain_ok
}

pub fn check_new_password(password: &str, confirmation: &str) -> Result<(), AppError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AppError::BadRequest(format!(
            "Password must be at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AppError::BadRequest(format!(
            "Password must be at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    if password != confirmation {
        return Err(AppError::BadRequest("Passwords do not match".into()));
    }
    Ok(())
}

pub fn hash_password(password: &str) -> Result<String, AppError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AppError::Internal(anyhow::anyhow!("password hashing failed: {e}")))
}

/// A hash of nothing anyone knows, verified against when the email does not exist so that
/// a wrong email costs the same time as a wrong password.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(crate::storage::new_key().as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
});

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Computes the dummy hash ahead of the first login, off the request path.
pub fn warm_up() {
    LazyLock::force(&DUMMY_HASH);
}

/// Create an account and log in
///
/// Refused while logged in. Emails are trimmed and stored lowercased.
#[utoipa::path(
    post,
    path = "/api/auth/sign-up",
    tag = "auth",
    request_body = SignUp,
    responses(
        (status = 201, description = "Signed up and logged in", body = UserResponse,
            headers(("Set-Cookie" = String, description = "The new `neptun-session` cookie"))),
        (status = 400, description = "A malformed body, an invalid email, a password under 8 \
            characters or over 1024 bytes, or passwords that do not match", body = ErrorResponse),
        (status = 403, description = "Sign-up is closed, the client is already logged in, or a \
            cross-site request", body = ErrorResponse),
        (status = 408, response = RequestTimeout),
        (status = 409, description = "Email is already taken", body = ErrorResponse),
        (status = 413, response = JsonTooLarge),
        (status = 415, response = NotJson),
        (status = 503, response = Unavailable),
        (status = 507, response = InsufficientStorage),
    )
)]
async fn sign_up(
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    body: web::Json<SignUp>,
) -> Result<HttpResponse, AppError> {
    if !state.signup_open {
        return Err(AppError::Forbidden("Sign-up is closed".into()));
    }
    if session::current_user(&session).is_some() {
        return Err(AppError::Forbidden("Already logged in".into()));
    }
    let SignUp {
        email,
        password,
        confirm_password,
    } = body.into_inner();
    let email = normalize_email(&email);
    if !is_valid_email(&email) {
        return Err(AppError::BadRequest("Invalid email address".into()));
    }
    check_new_password(&password, &confirm_password)?;
    let hash = state.hashing(move || hash_password(&password)).await??;
    let now = state.clock.unix();
    let user = state
        .db
        .write(move |conn| db::insert_user(conn, &email, &hash, now))
        .await?
        .ok_or_else(|| AppError::Conflict("Email is already taken".into()))?;
    session::log_in(&session, user.id, 0)?;
    req.extensions_mut().insert(LoggedUser(user.id));
    Ok(HttpResponse::Created().json(UserResponse { user }))
}

/// Checks `password` against a stored hash (or, for no user, a dummy one so that the answer
/// takes as long), throttled per account and client address.
async fn verify_throttled(
    state: &AppState,
    req: &HttpRequest,
    account: &str,
    found: Option<Login>,
    password: String,
) -> Result<Option<Login>, AppError> {
    let address = client_address(req, &state.trusted_proxies);
    let attempt = state
        .login_throttle
        .begin(account, address, state.clock.unix())
        .map_err(|retry_after| AppError::TooManyRequests {
            message: THROTTLED,
            retry_after,
        })?;
    let user = state
        .hashing(move || match found {
            Some(login) if password.len() <= MAX_PASSWORD_BYTES => {
                verify_password(&password, &login.password_hash).then_some(login)
            }
            _ => {
                verify_password(&password, &DUMMY_HASH);
                None
            }
        })
        .await?;
    state
        .login_throttle
        .finish(attempt, user.is_some(), state.clock.unix());
    if user.is_none() {
        tracing::info!(%address, "failed password check");
    }
    Ok(user)
}

/// Log in
///
/// Issues a new session id. A wrong email and a wrong password get the same answer in about
/// the same time. Throttled per account and client address.
#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "auth",
    request_body = Credentials,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse,
            headers(("Set-Cookie" = String, description = "The new `neptun-session` cookie"))),
        (status = 400, description = "A malformed body", body = ErrorResponse),
        (status = 401, description = "`Invalid email or password`", body = ErrorResponse),
        (status = 403, description = "The account is disabled (said only with the right \
            password), or a cross-site request", body = ErrorResponse),
        (status = 408, response = RequestTimeout),
        (status = 413, response = JsonTooLarge),
        (status = 415, response = NotJson),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
        (status = 507, response = InsufficientStorage),
    )
)]
async fn log_in(
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, AppError> {
    let Credentials { email, password } = body.into_inner();
    let email = normalize_email(&email);
    let lookup = email.clone();
    let found = state
        .db
        .run(move |conn| db::find_login_by_email(conn, &lookup))
        .await?;
    let Login {
        user,
        session_epoch,
        disabled,
        ..
    } = verify_throttled(&state, &req, &email, found, password)
        .await?
        .ok_or(AppError::Unauthorized("Invalid email or password"))?;
    // Said only to someone who knows the password.
    if disabled {
        return Err(AppError::Forbidden("This account is disabled".into()));
    }
    session::log_in(&session, user.id, session_epoch)?;
    req.extensions_mut().insert(LoggedUser(user.id));
    Ok(HttpResponse::Ok().json(LoginResponse {
        user,
        logged_in_at: rfc3339(state.clock.unix()),
    }))
}

/// Sets a new password after checking the current one, and ends every session of the user;
/// this one continues under a new id.
#[utoipa::path(
    post,
    path = "/api/auth/password",
    tag = "auth",
    summary = "Change the password",
    description = "Checks the current password (throttled like a login), sets the new one and \
        ends every other session of the user; this one continues under a new id.",
    request_body = PasswordChange,
    security(("neptun_session" = [])),
    responses(
        (status = 204, description = "Changed; every other session ended",
            headers(("Set-Cookie" = String, description = "This session's new `neptun-session` cookie"))),
        (status = 400, description = "A malformed body, a new password under 8 characters or \
            over 1024 bytes, or passwords that do not match", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`Current password is incorrect`, or a cross-site request",
            body = ErrorResponse),
        (status = 408, response = RequestTimeout),
        (status = 413, response = JsonTooLarge),
        (status = 415, response = NotJson),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
        (status = 507, response = InsufficientStorage),
    )
)]
async fn change_password(
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    user: AuthUser,
    body: web::Json<PasswordChange>,
) -> Result<HttpResponse, AppError> {
    let PasswordChange {
        current_password,
        password,
        confirm_password,
    } = body.into_inner();
    check_new_password(&password, &confirm_password)?;
    let found = state
        .db
        .run(move |conn| db::find_login(conn, user.id))
        .await?
        .ok_or(AppError::Unauthorized("Unauthorized"))?;
    let account = found.user.primary_email.clone();
    verify_throttled(&state, &req, &account, Some(found), current_password)
        .await?
        .ok_or_else(|| AppError::Forbidden("Current password is incorrect".into()))?;
    let hash = state.hashing(move || hash_password(&password)).await??;
    let now = state.clock.unix();
    let changing = state.clone();
    let (epoch, ended) = to_completion(async move {
        let changed = changing
            .db
            .write(move |conn| db::change_password(conn, user.id, &hash, now))
            .await;
        // Whatever came of it (even for a dropped request): the other sessions' rows may be
        // gone, so none of them may be used from memory either.
        changing.sessions.revoked();
        changed
    })
    .await?;
    tracing::info!(
        user_id = user.id,
        sessions_ended = ended,
        "password changed"
    );
    // The row behind this session is gone too; renewing saves its state, at the new epoch,
    // under a fresh id.
    session.renew();
    session::set_epoch(&session, epoch)?;
    Ok(HttpResponse::NoContent().finish())
}

/// Log out
///
/// Deletes the session on the server, so that a copy of the cookie is worthless too.
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "auth",
    security((), ("neptun_session" = [])),
    responses(
        (status = 200, description = "`true` when a session was ended, `false` when there was \
            none", body = bool, content_type = "application/json"),
        (status = 403, description = "A cross-site request", body = ErrorResponse),
        (status = 503, response = Unavailable),
        (status = 507, response = InsufficientStorage),
    )
)]
async fn log_out(session: Session) -> HttpResponse {
    HttpResponse::Ok().json(session::log_out(&session))
}

/// The session's user
///
/// `HEAD` answers the same without a body: a cheap "am I logged in?".
#[utoipa::path(
    method(get, head),
    path = "/api/auth/check",
    tag = "auth",
    security(("neptun_session" = [])),
    responses(
        (status = 200, description = "Logged in", body = UserResponse),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    )
)]
async fn check(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, AppError> {
    let found = state
        .db
        .run(move |conn| db::find_user(conn, user.id))
        .await?;
    let user = found.ok_or(AppError::Unauthorized("Unauthorized"))?;
    Ok(HttpResponse::Ok().json(UserResponse { user }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_modestly() {
        for good in [
            "a@b.co",
            "first.last+tag@mail.example.org",
            "x@xn--bcher-kva.de",
        ] {
            assert!(is_valid_email(good), "{good}");
        }
        for bad in [
            "",
            "a",
            "a@b",
            "@b.co",
            "a@.co",
            "a@b..co",
            "a b@c.de",
            "a@b.co\r\nX: y",
            "a@@b.co",
            "a@-b.co",
        ] {
            assert!(!is_valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn emails_are_normalised() {
        assert_eq!(normalize_email("  Alice@Example.COM "), "alice@example.com");
    }

    #[test]
    fn hashes_verify_only_their_password() -> Result<(), AppError> {
        let hash = hash_password("correct horse")?;
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
        Ok(())
    }
}
