//! tus 1.0.0 resumable uploads (`/api/users/{user_id}/chats/{chat_id}/uploads`), by hand over
//! HTTP: OPTIONS, creation (with upload), HEAD, PATCH, completion into an ordinary ChatFile,
//! termination, expiration, restarts, the order of the checks, CORS and the cross-site guard.
//!
//! In-progress bytes live in `<storage>/uploads/<id>` whatever the backend, so these tests look
//! there on every backend; completed files are looked at through `app.stored()`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chatfiles::clock::Clock;
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::Value;

use crate::helpers::{self, TestApp, TestUser, header};

mod access;
mod cors;
mod creation;
mod lifecycle;
mod patching;

const TUS: &str = "1.0.0";
const OFFSET_STREAM: &str = "application/offset+octet-stream";
const FOREIGN: &str = "https://evil.example";

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

fn uploads_path(user: &TestUser, chat: i64) -> String {
    format!("/api/users/{}/chats/{chat}/uploads", user.id)
}

/// A created upload: its `Location` and the id at its end.
struct Upload {
    location: String,
    id: String,
}

async fn send(request: RequestBuilder) -> Response {
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("request failed: {e}"))
}

/// `request` with `Tus-Resumable: 1.0.0`.
fn tus(request: RequestBuilder) -> RequestBuilder {
    request.header("Tus-Resumable", TUS)
}

/// `Upload-Metadata` for `pairs`: each value base64-encoded, with padding.
fn metadata(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| format!("{key} {}", STANDARD.encode(value)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Asserts that `res` carries `Tus-Resumable: 1.0.0`.
fn assert_tus(res: &Response, what: &str) {
    let value = res
        .headers()
        .get("tus-resumable")
        .and_then(|v| v.to_str().ok());
    assert_eq!(
        value,
        Some(TUS),
        "{what} ({}) carries no Tus-Resumable: 1.0.0",
        res.status()
    );
}

/// A numeric response header.
fn number(res: &Response, name: &str) -> u64 {
    let value = header(res, name);
    value
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {value:?}: {e}"))
}

fn creation(app: &TestApp, user: &TestUser, chat: i64, length: u64) -> RequestBuilder {
    tus(user.client.post(app.url(&uploads_path(user, chat)))).header("Upload-Length", length)
}

/// `POST …/uploads` with `Upload-Length: length` and, when given, `Upload-Metadata`.
async fn create(
    app: &TestApp,
    user: &TestUser,
    chat: i64,
    length: u64,
    metadata: Option<&str>,
) -> Response {
    let mut request = creation(app, user, chat, length);
    if let Some(metadata) = metadata {
        request = request.header("Upload-Metadata", metadata);
    }
    send(request).await
}

/// The upload a 201 answer made.
fn created(res: &Response) -> Upload {
    assert_eq!(res.status(), StatusCode::CREATED, "creation");
    assert_tus(res, "creation");
    let location = header(res, "location");
    let id = location.rsplit('/').next().unwrap_or_default().to_owned();
    Upload { location, id }
}

/// Creates an upload that must succeed.
async fn create_ok(
    app: &TestApp,
    user: &TestUser,
    chat: i64,
    length: u64,
    metadata: Option<&str>,
) -> Upload {
    let res = create(app, user, chat, length, metadata).await;
    if res.status() != StatusCode::CREATED {
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        panic!("creation of {length} bytes: {status} {body}");
    }
    let upload = created(&res);
    assert_eq!(number(&res, "upload-offset"), 0);
    upload
}

async fn head(client: &Client, url: &str) -> Response {
    send(tus(client.head(url))).await
}

fn patching(client: &Client, url: &str, offset: u64, bytes: &[u8]) -> RequestBuilder {
    tus(client.patch(url))
        .header("Content-Type", OFFSET_STREAM)
        .header("Upload-Offset", offset)
        .body(bytes.to_vec())
}

async fn patch(client: &Client, url: &str, offset: u64, bytes: &[u8]) -> Response {
    send(patching(client, url, offset, bytes)).await
}

/// A PATCH that must answer 204 with `offset + bytes.len()`.
async fn patch_ok(client: &Client, url: &str, offset: u64, bytes: &[u8]) {
    let res = patch(client, url, offset, bytes).await;
    let status = res.status();
    if status != StatusCode::NO_CONTENT {
        let body = res.text().await.unwrap_or_default();
        panic!(
            "PATCH of {} bytes at {offset}: {status} {body}",
            bytes.len()
        );
    }
    assert_tus(&res, "PATCH");
    assert_eq!(
        number(&res, "upload-offset"),
        offset + bytes.len() as u64,
        "PATCH at {offset}"
    );
}

/// The upload's offset as HEAD reports it (must be 200).
async fn offset_of(client: &Client, url: &str) -> u64 {
    let res = head(client, url).await;
    assert_eq!(res.status(), StatusCode::OK, "HEAD {url}");
    number(&res, "upload-offset")
}

/// `GET …/uploads/{id}` of a complete upload: its `chatFile`.
async fn chat_file(client: &Client, url: &str) -> Value {
    let res = send(client.get(url)).await;
    assert_eq!(res.status(), StatusCode::OK, "GET {url}");
    assert_tus(&res, "GET");
    let body: Value = res.json().await.unwrap_or_default();
    assert_eq!(
        body.as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["chatFile".to_owned()]),
        "{body}"
    );
    body["chatFile"].clone()
}

/// Uploads `bytes` whole in one PATCH after a creation with `metadata`; the file it became.
async fn complete(
    app: &TestApp,
    user: &TestUser,
    chat: i64,
    metadata: Option<&str>,
    bytes: &[u8],
) -> Value {
    let upload = create_ok(app, user, chat, bytes.len() as u64, metadata).await;
    patch_ok(&user.client, &upload.location, 0, bytes).await;
    chat_file(&user.client, &upload.location).await
}

async fn listing(app: &TestApp, user: &TestUser, chat: i64) -> Vec<Value> {
    let res = app.list_files(user, chat).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap_or_default();
    body["chatFiles"].as_array().cloned().unwrap_or_default()
}

/// The bytes a file's `url` serves (ours, or the store's with direct downloads).
async fn download(file: &Value) -> Vec<u8> {
    let url = file["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no url in {file}"));
    let res = send(helpers::client().get(url)).await;
    assert_eq!(res.status(), StatusCode::OK, "download {url}");
    res.bytes().await.unwrap_or_default().to_vec()
}

/// The HTTP date `from_now` after the app's clock.
fn http_date_after(app: &TestApp, from_now: Duration) -> SystemTime {
    let now = u64::try_from(app.clock.unix()).unwrap_or_else(|e| panic!("{e}"));
    UNIX_EPOCH + Duration::from_secs(now) + from_now
}

fn parse_http_date(value: &str) -> SystemTime {
    httpdate::parse_http_date(value).unwrap_or_else(|e| panic!("not an HTTP date: {value:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Part files
// ---------------------------------------------------------------------------------------------

/// `<storage>/uploads`, where in-progress bytes live on every backend.
fn uploads_dir(app: &TestApp) -> PathBuf {
    app.storage_dir().join("uploads")
}

/// The files under `<storage>/uploads`.
fn part_files(app: &TestApp) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(uploads_dir(app))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect();
    found.sort();
    found
}

/// Bytes that differ from one position to the next, so that a misplaced chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i * 7 + i / 251) % 256).unwrap_or_default())
        .collect()
}
