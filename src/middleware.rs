//! The envelope around every request: a request id, the contract's error shape for errors the
//! framework raises, and one log line.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{HttpMessage, ResponseError};
use futures_util::Stream;
use tokio::time::Sleep;

use crate::error::{AppError, error_response};
use crate::session::LoggedUser;

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

/// A request body that fails with `TimedOut` once the client has sent nothing for `idle`
/// while we were waiting for it (time we spend elsewhere does not count).
struct IdleTimeout {
    inner: Payload,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    waiting: bool,
    done: bool,
}

impl IdleTimeout {
    fn new(inner: Payload, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            done: false,
        }
    }
}

impl Stream for IdleTimeout {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(item) => {
                self.waiting = false;
                Poll::Ready(item)
            }
            Poll::Pending => {
                if !self.waiting {
                    self.waiting = true;
                    let deadline = tokio::time::Instant::now() + self.idle;
                    self.timer.as_mut().reset(deadline);
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.done = true;
                        Poll::Ready(Some(Err(PayloadError::Io(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "request body timed out",
                        )))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// Puts the body timeout on a request that has a body.
fn limit_body_idle(req: &mut ServiceRequest) {
    let Some(idle) = req
        .app_data::<actix_web::web::Data<crate::state::AppState>>()
        .map(|state| state.body_timeout)
    else {
        return;
    };
    match req.take_payload() {
        Payload::None => {}
        payload => req.set_payload(Payload::from(Box::pin(IdleTimeout::new(payload, idle))
            as Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>)),
    }
}

/// Longest request target (path and query) served; signed URLs are far shorter.
const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest header block served (the HTTP layer's own hard cap is 128 KiB).
const MAX_HEADER_BYTES: usize = 32 * 1024;
const LOGGED_PATH_CHARS: usize = 256;

/// The answer, in the contract's shape, to a request whose head is larger than we serve.
fn oversized(req: &ServiceRequest) -> Option<actix_web::HttpResponse> {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI_BYTES {
        return Some(error_response(
            actix_web::http::StatusCode::URI_TOO_LONG,
            "Request URL is too long",
        ));
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    (header_bytes > MAX_HEADER_BYTES).then(|| {
        error_response(
            actix_web::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "Request headers are too large",
        )
    })
}

/// Why something below the handler (the session store, which can only report a bare error)
/// gave up, when the reason is not a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The database was busy: 503 with `Retry-After`.
    Busy,
    /// The disk is full: 507.
    DiskFull,
}

tokio::task_local! {
    static SHED: Cell<Option<Shed>>;
}

/// Records why the current request is failing below the handler, so that it ends in the
/// matching answer rather than a 500.
pub fn note_shed(reason: Shed) {
    let _ = SHED.try_with(|shed| shed.set(Some(reason)));
}

pub async fn envelope(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    limit_body_idle(&mut req);
    let state = req
        .app_data::<actix_web::web::Data<crate::state::AppState>>()
        .cloned();
    let metrics = state.as_ref().map(|state| state.metrics.clone());
    // Kept for the error path below, which builds a fresh response: a listed origin must still
    // be able to read it (a 503 is when a front end most needs to see `Retry-After`).
    let allowed_origin = req
        .headers()
        .get(header::ORIGIN)
        .filter(|origin| {
            state.as_ref().is_some_and(|s| {
                s.cors_origins
                    .iter()
                    .any(|allowed| origin.as_bytes().eq_ignore_ascii_case(allowed.as_bytes()))
            })
        })
        .cloned();
    let method = req.method().clone();
    // The path only: the query string of a download URL holds its signature. Cut, so that a
    // huge URL cannot flood the log.
    let path: String = req.path().chars().take(LOGGED_PATH_CHARS).collect();

    let (result, shed) = match oversized(&req) {
        Some(refusal) => (Ok(req.into_response(refusal)), None),
        None => {
            SHED.scope(Cell::new(None), async {
                let result = next.call(req).await.map(|r| r.map_into_boxed_body());
                (result, SHED.with(Cell::get))
            })
            .await
        }
    };
    let mut res = match result {
        Ok(res) => res,
        Err(err) => {
            // A middleware (the session store) failed before or after the handler. There is no
            // request left to build a ServiceResponse from (cloning it up front would break
            // routing), so hand back an error whose own response is in the contract's shape.
            let mut response = if let Some(reason) = shed {
                tracing::warn!(request_id = %id, %method, %path, error = %err, ?reason, "request shed in middleware");
                match reason {
                    Shed::Busy => AppError::Unavailable.error_response(),
                    Shed::DiskFull => AppError::InsufficientStorage.error_response(),
                }
            } else {
                let status = err.as_response_error().status_code();
                tracing::error!(request_id = %id, %method, %path, status = status.as_u16(), error = %err, "request failed in middleware");
                let message = if status.is_server_error() {
                    "Internal server error"
                } else {
                    status.canonical_reason().unwrap_or("Error")
                };
                error_response(status, message)
            };
            if let Ok(value) = HeaderValue::from_str(&id) {
                response.headers_mut().insert(REQUEST_ID, value);
            }
            if let Some(origin) = allowed_origin {
                let headers = response.headers_mut();
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
                headers.insert(header::VARY, HeaderValue::from_static("Origin"));
            }
            // No route pattern here: the request went down with the middleware that failed.
            let seconds = started.elapsed().as_secs_f64();
            let status = response.status().as_u16();
            if let Some(metrics) = &metrics {
                metrics.observe(None, &method, status, seconds);
            }
            tracing::info!(
                request_id = %id,
                %method,
                route = "unmatched",
                %path,
                status,
                elapsed_ms = format_args!("{:.1}", seconds * 1000.0),
                "request"
            );
            return Err(
                actix_web::error::InternalError::from_response(err.to_string(), response).into(),
            );
        }
    };
    if res.status().as_u16() >= 400 && !is_json(&res) {
        res = reshape(res);
    }

    let status = res.status();
    let elapsed = started.elapsed().as_secs_f64();
    let elapsed_ms = elapsed * 1000.0;
    let route = res.request().match_pattern();
    let user_id = res
        .request()
        .extensions()
        .get::<LoggedUser>()
        .map(|user| user.0);
    if let Some(metrics) = &metrics {
        metrics.observe(route.as_deref(), &method, status.as_u16(), elapsed);
    }
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
        route = %route.as_deref().unwrap_or("unmatched"),
        %path,
        status = status.as_u16(),
        elapsed_ms = format_args!("{elapsed_ms:.1}"),
        user_id,
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

/// Whether a request with a side effect comes from a page of another site, as the browser
/// tells us through `Sec-Fetch-Site` and `Origin`. Requests without either (curl, scripts,
/// mobile apps) are not a browser's cross-site requests and pass.
fn is_cross_site(req: &ServiceRequest, public_origin: Option<&str>, allowed: &[String]) -> bool {
    let headers = req.headers();
    // An origin the operator allowed through CORS (`--cors-origins`) is a friend, whatever
    // site it is on.
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if origin.is_some_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o))) {
        return false;
    }
    let fetch_site = headers
        .get("sec-fetch-site")
        .map(|v| v.as_bytes().to_ascii_lowercase());
    if let Some(site) = fetch_site {
        // `same-site` is another origin too (a sibling subdomain or port): refused as well.
        if site != b"same-origin" && site != b"none" {
            return true;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return true;
    };
    match public_origin {
        Some(own) => !own.eq_ignore_ascii_case(origin),
        // Without a configured public URL, the origin the request itself was sent to (its
        // scheme and Host) is the service's own. `Origin: null` (sandboxed frames, some
        // redirects) never matches.
        None => {
            let info = req.connection_info();
            let own = format!("{}://{}", info.scheme(), info.host());
            !own.eq_ignore_ascii_case(origin)
        }
    }
}

/// Refuses state-changing requests that a browser made for a page of another site (CSRF), with
/// 403 in the contract's shape; safe methods pass untouched.
pub async fn refuse_cross_site(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let safe = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    if !safe {
        let state = req
            .app_data::<actix_web::web::Data<crate::state::AppState>>()
            .cloned();
        let (public_origin, allowed) = state.as_ref().map_or((None, &[][..]), |s| {
            (s.public_origin.as_deref(), s.cors_origins.as_slice())
        });
        if is_cross_site(&req, public_origin, allowed) {
            let err = AppError::Forbidden("Cross-site request refused".into());
            return Ok(req.error_response(err));
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Keeps CORS headers to the origins that were let in. actix-cors adds `Allow-Credentials` and
/// `Expose-Headers` to every answer, matched origin or not; without `Allow-Origin` they only
/// confuse. A refused preflight also gets a message that says why.
pub async fn only_matched_cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut res = next.call(req).await?.map_into_boxed_body();
    if res
        .headers()
        .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    {
        return Ok(res);
    }
    let stray: Vec<HeaderName> = res
        .headers()
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in stray {
        res.headers_mut().remove(name);
    }
    if preflight && res.status().is_client_error() && !is_json(&res) {
        let status = res.status();
        res = res.map_body(|head, _| {
            let refusal = error_response(status, "CORS preflight refused: origin not allowed");
            for (name, value) in refusal.headers() {
                head.headers.insert(name.clone(), value.clone());
            }
            head.headers.remove(header::CONTENT_LENGTH);
            head.headers
                .insert(header::VARY, HeaderValue::from_static("Origin"));
            refusal.into_body()
        });
    }
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
        E::Payload(PayloadError::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {
            AppError::BodyTimeout
        }
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
