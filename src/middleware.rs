//! The envelope around every request: a request id, the contract's error shape for errors the
//! framework raises, and one log line.

use std::time::Instant;

use actix_web::HttpMessage;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;

use crate::error::{AppError, error_response};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request being handled, as sent in `X-Request-Id`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A proxy's id is kept when it is short and plain; anything else is replaced, so that no
/// client can put arbitrary text into our logs.
fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

fn is_json(res: &ServiceResponse<BoxBody>) -> bool {
    res.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Rewrites an error response that is not already in the contract's shape (one raised by the
/// framework or a middleware), keeping its status and headers such as `Allow`.
fn reshape(res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let status = res.status();
    let message = if status.is_server_error() {
        "Internal server error".to_owned()
    } else {
        status.canonical_reason().unwrap_or("Error").to_owned()
    };
    res.map_body(|head, _| {
        let replacement = error_response(status, &message);
        for (name, value) in replacement.headers() {
            head.headers.insert(name.clone(), value.clone());
        }
        head.headers.remove(header::CONTENT_LENGTH);
        replacement.into_body()
    })
}

pub async fn envelope(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    // The path only: the query string of a download URL holds its signature.
    let path = req.path().to_owned();

    let mut res = match next.call(req).await {
        Ok(res) => res.map_into_boxed_body(),
        Err(err) => {
            // A middleware (the session store) failed before a handler answered. There is no
            // request left to build a ServiceResponse from (cloning it up front would break
            // routing), so hand back an error whose own response is in the contract's shape.
            let status = err.as_response_error().status_code();
            tracing::error!(request_id = %id, %method, %path, status = status.as_u16(), error = %err, "request failed in middleware");
            let message = if status.is_server_error() {
                "Internal server error"
            } else {
                status.canonical_reason().unwrap_or("Error")
            };
            let mut response = error_response(status, message);
            if let Ok(value) = HeaderValue::from_str(&id) {
                response.headers_mut().insert(REQUEST_ID, value);
            }
            return Err(
                actix_web::error::InternalError::from_response(err.to_string(), response).into(),
            );
        }
    };
    if res.status().as_u16() >= 400 && !is_json(&res) {
        res = reshape(res);
    }

    let status = res.status();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    if status.is_server_error() {
        let cause = res
            .response()
            .error()
            .map(|e| match e.as_error::<AppError>() {
                Some(AppError::Internal(inner)) => format!("{inner:#}"),
                _ => e.to_string(),
            })
            .unwrap_or_default();
        tracing::error!(request_id = %id, %method, %path, status = status.as_u16(), error = %cause, "request failed");
    }
    tracing::info!(
        request_id = %id,
        %method,
        %path,
        status = status.as_u16(),
        elapsed_ms = format_args!("{elapsed_ms:.1}"),
        "request"
    );

    let headers = res.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, value);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(res)
}

/// The answer for a path no route matches.
pub async fn not_found() -> Result<(), AppError> {
    Err(AppError::NotFound("Not found"))
}

/// Maps the framework's JSON extractor errors onto the contract's codes.
pub fn json_error(
    err: actix_web::error::JsonPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let app = match &err {
        E::ContentType => {
            AppError::UnsupportedMediaType("Content-Type must be application/json".into())
        }
        E::Overflow { .. } | E::OverflowKnownLength { .. } => {
            AppError::PayloadTooLarge("Request body is too large".into())
        }
        E::Deserialize(e) => AppError::BadRequest(format!("Invalid JSON body: {e}")),
        other => AppError::BadRequest(format!("Invalid request body: {other}")),
    };
    app.into()
}

/// Maps query string errors onto 400.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    AppError::BadRequest(format!("Invalid query string: {err}")).into()
}
