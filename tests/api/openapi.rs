//! The OpenAPI document at `GET /api/openapi.json`: 3.1, every route, and the `ChatFile` of
//! Neptun's Chat Files endpoint.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, client, header};

/// Every route the server serves, as (method, OpenAPI path).
const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/auth/sign-up"),
    ("post", "/api/auth/login"),
    ("post", "/api/auth/logout"),
    ("post", "/api/auth/password"),
    ("get", "/api/auth/check"),
    ("head", "/api/auth/check"),
    ("get", "/api/users/{user_id}/chats"),
    ("post", "/api/users/{user_id}/chats"),
    ("delete", "/api/users/{user_id}/chats/{chat_id}"),
    ("get", "/api/users/{user_id}/chats/{chat_id}/files"),
    ("post", "/api/users/{user_id}/chats/{chat_id}/files"),
    (
        "get",
        "/api/users/{user_id}/chats/{chat_id}/files/{file_id}",
    ),
    (
        "delete",
        "/api/users/{user_id}/chats/{chat_id}/files/{file_id}",
    ),
    ("options", "/api/users/{user_id}/chats/{chat_id}/uploads"),
    ("post", "/api/users/{user_id}/chats/{chat_id}/uploads"),
    (
        "options",
        "/api/users/{user_id}/chats/{chat_id}/uploads/{upload_id}",
    ),
    (
        "head",
        "/api/users/{user_id}/chats/{chat_id}/uploads/{upload_id}",
    ),
    (
        "get",
        "/api/users/{user_id}/chats/{chat_id}/uploads/{upload_id}",
    ),
    (
        "patch",
        "/api/users/{user_id}/chats/{chat_id}/uploads/{upload_id}",
    ),
    (
        "delete",
        "/api/users/{user_id}/chats/{chat_id}/uploads/{upload_id}",
    ),
    ("get", "/files/{key}"),
    ("head", "/files/{key}"),
    ("get", "/health"),
    ("head", "/health"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The `ChatFile` of Neptun's documentation page of its Chat Files endpoint: field, JSON type,
/// format.
const NEPTUN_CHAT_FILE: &[(&str, &str, Option<&str>)] = &[
    ("id", "integer", None),
    ("chat_conversation_id", "integer", None),
    ("name", "string", None),
    ("size", "integer", None),
    ("type", "string", None),
    ("created_at", "string", Some("date-time")),
    ("url", "string", Some("uri")),
];

async fn document(app: &TestApp) -> Value {
    let res = client()
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("openapi.json: {e}"));
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = header(&res, "content-type");
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type}"
    );
    res.json()
        .await
        .unwrap_or_else(|e| panic!("openapi.json is not JSON: {e}"))
}

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .unwrap_or_else(|| panic!("no paths in the document"))
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|method| item.get(**method).is_some())
                .map(|method| ((*method).to_owned(), path.clone()))
        })
        .collect()
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "no schema {name}");
    schema
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_needs_no_session() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "openapi {version}");
    assert_eq!(doc["info"]["title"], json!("chatfiles"));
}

#[tokio::test]
async fn every_route_of_the_server_is_in_the_document_and_nothing_else() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(operations(&doc), expected);
}

#[tokio::test]
async fn chat_file_has_exactly_the_fields_and_types_of_neptuns_chat_file() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let chat_file = schema(&doc, "ChatFile");
    let properties = chat_file["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("ChatFile has no properties"));
    let names: BTreeSet<&str> = properties.keys().map(String::as_str).collect();
    let neptun: BTreeSet<&str> = NEPTUN_CHAT_FILE.iter().map(|(name, _, _)| *name).collect();
    assert_eq!(names, neptun);
    let required: BTreeSet<&str> = chat_file["required"]
        .as_array()
        .unwrap_or_else(|| panic!("ChatFile has no required list"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        required, neptun,
        "every field of Neptun's ChatFile is always sent"
    );
    for (name, kind, format) in NEPTUN_CHAT_FILE {
        assert_eq!(properties[*name]["type"], json!(kind), "{name}");
        if let Some(format) = format {
            assert_eq!(properties[*name]["format"], json!(format), "{name}");
        }
    }
    // Neptun's Chat Files endpoint answers `{chatFiles: [ChatFile]}`.
    let listing = &doc["paths"]["/api/users/{user_id}/chats/{chat_id}/files"]["get"];
    let reference = &listing["responses"]["200"]["content"]["application/json"]["schema"]["$ref"];
    let name = reference
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .unwrap_or_else(|| panic!("the listing's 200 has no schema reference: {listing}"));
    assert_eq!(
        schema(&doc, name)["properties"]["chatFiles"]["items"]["$ref"],
        json!("#/components/schemas/ChatFile")
    );
}

#[tokio::test]
async fn a_real_chat_file_has_the_documented_properties() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let user = app.user().await;
    let chat_id = app.chat(&user, "Documented").await;
    let files = app
        .upload_ok(
            &user,
            chat_id,
            &[("notes.txt", "text/plain", b"hello".as_slice())],
        )
        .await;
    let file = files
        .first()
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no file in the upload's answer"));
    let sent: BTreeSet<&str> = file.keys().map(String::as_str).collect();
    let properties = schema(&doc, "ChatFile")["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("ChatFile has no properties"));
    let documented: BTreeSet<&str> = properties.keys().map(String::as_str).collect();
    assert_eq!(sent, documented);
    for (name, value) in file {
        let kind = match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::String(_) => "string",
            other => panic!("{name} is {other}"),
        };
        assert_eq!(properties[name]["type"], json!(kind), "{name}");
    }
}

#[tokio::test]
async fn user_routes_declare_the_session_cookie() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let scheme = &doc["components"]["securitySchemes"]["neptun_session"];
    assert_eq!(scheme["type"], json!("apiKey"));
    assert_eq!(scheme["in"], json!("cookie"));
    assert_eq!(scheme["name"], json!("neptun-session"));
    for (method, path) in operations(&doc) {
        let operation = &doc["paths"][&path][&method];
        let needs_session = path.starts_with("/api/users/")
            || path == "/api/auth/check"
            || path == "/api/auth/password";
        if needs_session {
            assert_eq!(
                operation["security"],
                json!([{"neptun_session": []}]),
                "{method} {path}"
            );
            assert!(
                operation["responses"]["401"].is_object(),
                "{method} {path} documents no 401"
            );
        }
    }
}

#[tokio::test]
async fn every_error_response_has_the_contract_error_shape() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let error = schema(&doc, "ErrorResponse");
    let required: BTreeSet<&str> = error["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        required,
        BTreeSet::from(["statusCode", "statusMessage", "data"])
    );
    let shared = &doc["components"]["responses"];
    for (method, path) in operations(&doc) {
        let responses = doc["paths"][&path][&method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} has no responses"));
        for (status, response) in responses {
            if !status.starts_with('4') && !status.starts_with('5') {
                continue;
            }
            let response = match response["$ref"].as_str() {
                Some(reference) => {
                    let name = reference.trim_start_matches("#/components/responses/");
                    &shared[name]
                }
                None => response,
            };
            let schema = &response["content"]["application/json"]["schema"]["$ref"];
            if method == "head" {
                assert!(
                    response.get("content").is_none(),
                    "{method} {path} {status} documents a body"
                );
            } else {
                assert_eq!(
                    schema,
                    &json!("#/components/schemas/ErrorResponse"),
                    "{method} {path} {status}"
                );
            }
        }
    }
}
