//! The one error type of the service, and the contract's JSON error shape.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// Every way a request can fail. Its `ResponseError` writes
/// `{"statusCode", "statusMessage", "data": {"message"}}`.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("Method not allowed")]
    MethodNotAllowed(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// A tus request without `Tus-Resumable: 1.0.0`.
    #[error("Tus-Resumable must be 1.0.0, the only tus version this server speaks")]
    TusVersion,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("Requested range not satisfiable")]
    RangeNotSatisfiable(u64),
    #[error("URL has expired")]
    UrlExpired {
        expires_at: String,
        server_time: String,
    },
    #[error("{message}")]
    TooManyRequests {
        message: &'static str,
        retry_after: u64,
    },
    #[error("Service unavailable")]
    Unavailable,
    /// The object store does not answer (or refuses us): bytes can be neither stored nor read.
    #[error("Object store unavailable")]
    StoreUnavailable,
    /// A part the service needs is down (the health check's answer).
    #[error("{0}")]
    Unhealthy(&'static str),
    /// The disk (or the database) is full.
    #[error("Not enough storage space on the server")]
    InsufficientStorage,
    /// A request body that stalled for longer than the body timeout.
    #[error("Request body timed out")]
    BodyTimeout,
    /// Anything unexpected; its cause is logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The tus versions a server speaks, named in a 412 (and in answers to OPTIONS).
pub const TUS_VERSION: header::HeaderName = header::HeaderName::from_static("tus-version");

/// The body of every error response of `/api/*` and `/files/*` (Neptun's error shape).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(
    as = ErrorResponse,
    example = json!({"statusCode": 404, "statusMessage": "Not Found", "data": {"message": "Chat not found"}})
)]
pub struct ErrorBody<'a> {
    /// The HTTP status code, repeated.
    #[serde(rename = "statusCode")]
    #[schema(minimum = 400, maximum = 599)]
    pub status_code: u16,
    /// The status code's canonical reason phrase, e.g. `Not Found`.
    #[serde(rename = "statusMessage")]
    pub status_message: &'a str,
    pub data: ErrorData<'a>,
}

/// What went wrong, in words a client may show.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorData<'a> {
    /// E.g. `Chat not found`, `Invalid signature`, `URL has expired`.
    pub message: &'a str,
    /// An expired download URL's expiry (RFC 3339), sent with `URL has expired` only.
    #[serde(rename = "expiresAt", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, format = DateTime, required = false)]
    pub expires_at: Option<&'a str>,
    /// The server's clock when it refused an expired URL (RFC 3339), beside `expiresAt`.
    #[serde(rename = "serverTime", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, format = DateTime, required = false)]
    pub server_time: Option<&'a str>,
}

/// Builds a response in the contract's error shape.
pub fn error_response(status: StatusCode, message: &str) -> HttpResponse {
    json_error(status, message, None)
}

fn json_error(status: StatusCode, message: &str, expiry: Option<(&str, &str)>) -> HttpResponse {
    let body = ErrorBody {
        status_code: status.as_u16(),
        status_message: status.canonical_reason().unwrap_or(""),
        data: ErrorData {
            message,
            expires_at: expiry.map(|(e, _)| e),
            server_time: expiry.map(|(_, s)| s),
        },
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    HttpResponse::build(status)
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .body(bytes)
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::UrlExpired { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TusVersion => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable | Self::StoreUnavailable | Self::Unhealthy(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            Self::Internal(_) => error_response(status, "Internal server error"),
            Self::UrlExpired {
                expires_at,
                server_time,
            } => json_error(
                status,
                "URL has expired",
                Some((expires_at.as_str(), server_time.as_str())),
            ),
            Self::MethodNotAllowed(allow) => {
                let mut response = error_response(status, "Method not allowed");
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                response
            }
            Self::RangeNotSatisfiable(size) => {
                let mut response = error_response(status, "Requested range not satisfiable");
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, value);
                }
                response
            }
            Self::TooManyRequests {
                message,
                retry_after,
            } => {
                let mut response = error_response(status, message);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
                response
            }
            Self::Unavailable => {
                let mut response = error_response(status, "Service temporarily unavailable");
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
            Self::StoreUnavailable => {
                let mut response = error_response(status, "Object store unavailable");
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                response
            }
            Self::TusVersion => {
                let mut response = error_response(status, &self.to_string());
                response
                    .headers_mut()
                    .insert(TUS_VERSION, HeaderValue::from_static("1.0.0"));
                response
            }
            Self::BodyTimeout => {
                let mut response = error_response(status, "Request body timed out");
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            }
            other => error_response(status, &other.to_string()),
        }
    }
}

impl From<actix_web::error::BlockingError> for AppError {
    fn from(err: actix_web::error::BlockingError) -> Self {
        Self::Internal(anyhow::anyhow!("blocking task failed: {err}"))
    }
}

impl From<r2d2::Error> for AppError {
    fn from(err: r2d2::Error) -> Self {
        // Every connection busy for the whole pool timeout: a load problem, not a bug.
        tracing::warn!(error = %err, "database pool exhausted");
        Self::Unavailable
    }
}

impl From<rusqlite::Error> for AppError {
    fn from(err: rusqlite::Error) -> Self {
        match err.sqlite_error_code() {
            // Another writer held the database for the whole busy timeout (a backup, the
            // sqlite3 shell, a burst of writes): a load problem the client can retry.
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                tracing::warn!(error = %err, "database busy");
                Self::Unavailable
            }
            Some(rusqlite::ErrorCode::DiskFull) => {
                tracing::error!(error = %err, "database disk full");
                Self::InsufficientStorage
            }
            _ => Self::Internal(err.into()),
        }
    }
}

impl From<std::io::Error> for AppError {
    fn from(err: std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                tracing::error!(error = %err, "storage full");
                Self::InsufficientStorage
            }
            _ => Self::Internal(err.into()),
        }
    }
}
