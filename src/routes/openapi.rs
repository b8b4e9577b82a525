//! `GET /api/openapi.json`: the OpenAPI 3.1 document of the whole service, generated from the
//! handlers' `#[utoipa::path]` annotations and the types they send and receive.

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use utoipa::openapi::header::Header;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response, Schema};
use utoipa::{Modify, OpenApi, ToResponse};

use crate::error::AppError;
use crate::routes::{auth, chats, downloads, files, health, method_not_allowed, tus};
use crate::session::SESSION_COOKIE;

/// The name of the cookie security scheme in the document (the handlers' `security(...)` spell
/// it out, as the macro wants a literal).
pub const SESSION_SCHEME: &str = "neptun_session";

/// The contract's error shape, as the handlers' `responses(...)` name it.
pub type ErrorResponse = crate::error::ErrorBody<'static>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chatfiles",
        description = "Files attached to chat conversations, handed back through time-limited \
            signed URLs; Neptun's Chat Files API (`GET /api/users/{user_id}/chats/{chat_id}/files`) \
            and everything around it.\n\n\
            Every response carries `X-Request-Id`. Every error of `/api/*` and `/files/*` has \
            the `ErrorResponse` shape. A method a path does not document answers 405 with \
            `Allow` (the `MethodNotAllowed` response; under `/api/users/` a missing session \
            answers 401 first); a request target over 8 KiB answers 414 and a header block over \
            32 KiB answers 431, on every path. An answer to HEAD never has a body."
    ),
    paths(
        auth::sign_up,
        auth::log_in,
        auth::log_out,
        auth::change_password,
        auth::check,
        chats::list_chats,
        chats::create_chat,
        chats::delete_chat,
        files::list_chat_files,
        files::upload_chat_files,
        files::get_chat_file,
        files::delete_chat_file,
        tus::describe_uploads,
        tus::describe_upload,
        tus::create_upload,
        tus::upload_offset,
        tus::get_upload,
        tus::append_to_upload,
        tus::terminate_upload,
        downloads::download,
        health::health,
        crate::metrics::metrics,
        openapi_json,
    ),
    components(responses(
        Unauthorized,
        MethodNotAllowed,
        RequestTimeout,
        JsonTooLarge,
        NotJson,
        TooManyRequests,
        InternalError,
        Unavailable,
        InsufficientStorage,
    )),
    modifiers(&SessionCookie, &RequestIdHeader, &HeadAnswers),
    tags(
        (name = "auth", description = "Sign-up, login, logout, password change and the session check"),
        (name = "chats", description = "A user's chats"),
        (name = "files", description = "A chat's files: Neptun's Chat Files endpoint, uploads, one file, deletes"),
        (name = "uploads", description = "Resumable uploads (tus 1.0.0 with creation, \
            creation-with-upload, termination and expiration): every request but OPTIONS and GET \
            sends `Tus-Resumable: 1.0.0`, and every answer carries it"),
        (name = "downloads", description = "The bytes behind a signed URL (no cookie needed)"),
        (name = "operations", description = "Health, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// The document, serialized once.
static DOCUMENT: LazyLock<Result<String, String>> =
    LazyLock::new(|| ApiDoc::openapi().to_json().map_err(|e| e.to_string()));

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/openapi.json")
            .route(web::get().to(openapi_json))
            .default_service(method_not_allowed("GET")),
    );
}

/// The OpenAPI 3.1 document of this service
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "This document", content_type = "application/json", body = Object),
    )
)]
async fn openapi_json() -> Result<HttpResponse, AppError> {
    let document = DOCUMENT.as_ref().map_err(|e| {
        AppError::Internal(anyhow::anyhow!(
            "cannot serialize the OpenAPI document: {e}"
        ))
    })?;
    Ok(HttpResponse::Ok()
        .content_type(mime::APPLICATION_JSON)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(document.clone()))
}

// ---- reusable error responses ------------------------------------------------------------

fn integer_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
        .into()
}

fn string_schema() -> Schema {
    ObjectBuilder::new().schema_type(Type::String).into()
}

/// A response whose body is the contract's error shape.
pub fn error_body(description: &str) -> Response {
    let mut response = Response::new(description);
    response.content.insert(
        "application/json".to_owned(),
        Content::new(Some(Ref::from_schema_name("ErrorResponse"))),
    );
    response
}

/// Reusable error responses, each a `components/responses` entry that operations refer to.
macro_rules! error_responses {
    ($($(#[doc = $doc:literal])* $name:ident = $description:literal $(, $header:literal: $schema:expr => $header_doc:literal)*;)*) => {$(
        $(#[doc = $doc])*
        pub struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                #[allow(unused_mut)]
                let mut response = error_body($description);
                $(
                    let mut header = Header::new($schema);
                    header.description = Some($header_doc.to_owned());
                    response.headers.insert($header.to_owned(), header);
                )*
                (stringify!($name), RefOr::T(response))
            }
        }
    )*};
}

error_responses! {
    /// 401 on routes that need a session.
    Unauthorized = "No valid session: no `neptun-session` cookie, an expired or ended session, \
        or a cookie made under another secret (`Unauthorized`)";
    /// 405, with the methods the path serves.
    MethodNotAllowed = "The path does not serve this method",
        "Allow": string_schema() => "The methods the path serves, e.g. `GET, HEAD`";
    /// 408 when a request body stalls.
    RequestTimeout = "The request body stalled for longer than `--body-timeout`; the connection \
        is closed",
        "Connection": string_schema() => "`close`";
    /// 413 for JSON bodies.
    JsonTooLarge = "The JSON body is larger than 16 KiB";
    /// 415 for JSON routes.
    NotJson = "The body is not JSON (`application/json`, `*/json` or `*+json`)";
    /// 429 from the login throttle.
    TooManyRequests = "Too many failed password checks for this account or client address; no \
        password was checked",
        "Retry-After": integer_schema() => "Seconds until a check is allowed again";
    /// 500, never with internals.
    InternalError = "Something unexpected failed; the cause is in the server log under this \
        response's `X-Request-Id` (message `Internal server error`)";
    /// 503 when the service sheds load, or the object store does not answer.
    Unavailable = "`Service temporarily unavailable`: the service is shedding load (the \
        database busy or locked, every hasher busy); or `Object store unavailable`: the S3 \
        bucket does not answer or refuses the credentials (uploads, proxied downloads). Retry \
        later",
        "Retry-After": integer_schema() => "Seconds to wait before retrying";
    /// 507 when the disk or the database is full.
    InsufficientStorage = "The disk or the database is full; nothing of the request was kept";
}

// ---- modifiers ---------------------------------------------------------------------------

/// The `neptun-session` cookie as a security scheme.
struct SessionCookie;

impl Modify for SessionCookie {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SESSION_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SESSION_COOKIE,
                "The session cookie set by sign-up and login: an opaque random id, \
                 `HttpOnly; SameSite=Lax; Path=/`",
            ))),
        );
    }
}

/// A handler that serves GET and HEAD is documented once with `method(get, head)`; its HEAD
/// operation gets its own id and answers without bodies (the headers stay).
struct HeadAnswers;

impl Modify for HeadAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let shared = openapi
            .components
            .as_ref()
            .map(|c| c.responses.clone())
            .unwrap_or_default();
        for item in openapi.paths.paths.values_mut() {
            let Some(head) = item.head.as_mut() else {
                continue;
            };
            if let Some(id) = head.operation_id.as_mut() {
                id.push_str("_head");
            }
            for response in head.responses.responses.values_mut() {
                if let RefOr::Ref(reference) = response {
                    let name = reference
                        .ref_location
                        .trim_start_matches("#/components/responses/");
                    if let Some(resolved) = shared.get(name) {
                        *response = resolved.clone();
                    }
                }
                if let RefOr::T(response) = response {
                    response.content.clear();
                }
            }
        }
    }
}

/// Every response carries `X-Request-Id`.
struct RequestIdHeader;

impl RequestIdHeader {
    fn add(response: &mut RefOr<Response>) {
        if let RefOr::T(response) = response {
            let mut header = Header::new(string_schema());
            header.description = Some("The request's id, as in the server's log".to_owned());
            response.headers.insert("X-Request-Id".to_owned(), header);
        }
    }

    fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
        [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
            item.options.as_mut(),
            item.head.as_mut(),
            item.patch.as_mut(),
            item.trace.as_mut(),
        ]
        .into_iter()
        .flatten()
    }
}

impl Modify for RequestIdHeader {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in Self::operations(item) {
                operation
                    .responses
                    .responses
                    .entry("500".to_owned())
                    .or_insert_with(|| RefOr::Ref(Ref::from_response_name("InternalError")));
                operation
                    .responses
                    .responses
                    .values_mut()
                    .for_each(Self::add);
            }
        }
        if let Some(components) = openapi.components.as_mut() {
            components.responses.values_mut().for_each(Self::add);
        }
    }
}
