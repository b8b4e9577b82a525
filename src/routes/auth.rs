//! Sign-up, login, logout and the session check (`/api/auth/...`).

use std::sync::LazyLock;

use actix_session::Session;
use actix_web::{HttpRequest, HttpResponse, web};
use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use serde::Deserialize;
use serde_json::json;

use crate::clock::rfc3339;
use crate::db::{self, Login};
use crate::error::AppError;
use crate::routes::method_not_allowed;
use crate::session::{self, AuthUser};
use crate::startup::AppState;
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignUp {
    email: String,
    password: String,
    confirm_password: String,
}

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PasswordChange {
    current_password: String,
    password: String,
    confirm_password: String,
}

const THROTTLED: &str = "Too many failed login attempts; try again later";

/// Trimmed and lowercased, as emails are stored.
fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A deliberately modest syntax check: one `@`, a non-empty local part, a dotted domain of
/// letters, digits and hyphens, and nothing that could smuggle a header or a space.
fn is_valid_email(email: &str) -> bool {
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

fn check_new_password(password: &str, confirmation: &str) -> Result<(), AppError> {
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

fn hash_password(password: &str) -> Result<String, AppError> {
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

async fn sign_up(
    state: web::Data<AppState>,
    session: Session,
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
    Ok(HttpResponse::Created().json(json!({ "user": user })))
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
        ..
    } = verify_throttled(&state, &req, &email, found, password)
        .await?
        .ok_or(AppError::Unauthorized("Invalid email or password"))?;
    session::log_in(&session, user.id, session_epoch)?;
    Ok(HttpResponse::Ok().json(json!({
        "user": user,
        "loggedInAt": rfc3339(state.clock.unix()),
    })))
}

/// Sets a new password after checking the current one, and ends every session of the user;
/// this one continues under a new id.
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
    let (epoch, ended) = state
        .db
        .write(move |conn| db::change_password(conn, user.id, &hash, now))
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

async fn log_out(session: Session) -> HttpResponse {
    HttpResponse::Ok().json(session::log_out(&session))
}

async fn check(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, AppError> {
    let found = state
        .db
        .run(move |conn| db::find_user(conn, user.id))
        .await?;
    let user = found.ok_or(AppError::Unauthorized("Unauthorized"))?;
    Ok(HttpResponse::Ok().json(json!({ "user": user })))
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
