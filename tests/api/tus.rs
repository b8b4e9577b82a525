//! tus 1.0.0 resumable uploads (`/api/users/{user_id}/chats/{chat_id}/uploads`), by hand over
//! HTTP: OPTIONS, creation (with upload), HEAD, PATCH, completion into an ordinary ChatFile,
//! termination, expiration, restarts, the order of the checks, CORS and the cross-site guard.
//!
//! In-progress bytes live in `<storage>/uploads/<id>` whatever the backend, so these tests look
//! there on every backend; completed files are looked at through `app.stored()`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chatfiles::clock::Clock;
use futures_util::StreamExt;
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{self, TestApp, TestUser, assert_error, header, sha256};

const TUS: &str = "1.0.0";
const OFFSET_STREAM: &str = "application/offset+octet-stream";
/// A front end's dev server allowed by `--cors-origins` (nothing listens there).
const ALLOWED: &str = "http://127.0.0.1:5173";
const FOREIGN: &str = "https://evil.example";
const REFUSED: &str = "Cross-site request refused";
/// Longest a test waits, in real time, for the background sweep.
const SWEEP_WITHIN: Duration = Duration::from_secs(20);

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

/// The chat as `GET /api/users/{u}/chats` lists it.
async fn chat_row(app: &TestApp, user: &TestUser, chat: i64) -> Value {
    let res = send(
        user.client
            .get(app.url(&format!("/api/users/{}/chats", user.id))),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap_or_default();
    body["chats"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["id"] == json!(chat))
        .cloned()
        .unwrap_or_else(|| panic!("chat {chat} not in {body}"))
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

/// Waits (real time, bounded) until `<storage>/uploads/<id>` is gone, as the background sweep
/// removes it.
async fn wait_until_swept(app: &TestApp, id: &str) {
    let part = uploads_dir(app).join(id);
    let deadline = Instant::now() + SWEEP_WITHIN;
    while part.exists() {
        assert!(
            Instant::now() < deadline,
            "{} is still there after {SWEEP_WITHIN:?}",
            part.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bytes that differ from one position to the next, so that a misplaced chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i * 7 + i / 251) % 256).unwrap_or_default())
        .collect()
}

async fn spawn_allowing_cors() -> TestApp {
    TestApp::spawn_with(|config| config.cors_origins = vec![ALLOWED.to_owned()]).await
}

// ---------------------------------------------------------------------------------------------
// OPTIONS and creation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn options_answers_204_with_the_tus_version_extensions_and_maximum_size() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "options").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;

    for url in [app.url(&uploads_path(&user, chat)), upload.location.clone()] {
        // No Tus-Resumable in the request: OPTIONS does not need it.
        let res = send(user.client.request(Method::OPTIONS, &url)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT, "OPTIONS {url}");
        assert_tus(&res, "OPTIONS");
        assert_eq!(header(&res, "tus-version"), TUS);
        let extensions: Vec<String> = header(&res, "tus-extension")
            .split(',')
            .map(|e| e.trim().to_owned())
            .collect();
        for extension in [
            "creation",
            "creation-with-upload",
            "termination",
            "expiration",
        ] {
            assert!(
                extensions.iter().any(|e| e == extension),
                "{extension} not in Tus-Extension {extensions:?}"
            );
        }
        assert_eq!(number(&res, "tus-max-size"), app.config.max_file_size);
        assert!(res.bytes().await.unwrap_or_default().is_empty());
    }
}

#[tokio::test]
async fn a_creation_answers_201_with_an_absolute_location_its_expiry_and_offset_zero() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "creation").await;
    assert_eq!(
        app.config.upload_expiry,
        Duration::from_secs(24 * 3600),
        "the default --upload-expiry"
    );

    let res = create(&app, &user, chat, 10, None).await;
    let upload = created(&res);
    let prefix = format!(
        "{}/api/users/{}/chats/{chat}/uploads/",
        app.address, user.id
    );
    assert!(
        upload.location.starts_with(&prefix),
        "Location {} is not under {prefix}",
        upload.location
    );
    assert_eq!(upload.location, format!("{prefix}{}", upload.id));
    assert_eq!(upload.id.len(), 32, "{}", upload.id);
    assert!(
        upload
            .id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{}",
        upload.id
    );
    assert_eq!(number(&res, "upload-offset"), 0);
    let expires = header(&res, "upload-expires");
    assert_eq!(
        parse_http_date(&expires),
        http_date_after(&app, app.config.upload_expiry),
        "Upload-Expires {expires}"
    );
    assert!(res.bytes().await.unwrap_or_default().is_empty());

    // Random ids: another creation gets another.
    let second = create_ok(&app, &user, chat, 10, None).await;
    assert_ne!(second.id, upload.id);

    // The Location answers.
    let res = head(&user.client, &upload.location).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(number(&res, "upload-length"), 10);
}

#[tokio::test]
async fn the_location_of_a_new_upload_is_built_on_the_public_url() {
    let app = TestApp::spawn_with(|c| {
        c.public_url = "https://files.example.com/chat/".parse().ok();
    })
    .await;
    let user = app.user().await;
    let chat = app.chat(&user, "proxied").await;
    let res = create(&app, &user, chat, 10, None).await;
    let upload = created(&res);
    let path = format!("/api/users/{}/chats/{chat}/uploads/{}", user.id, upload.id);
    assert_eq!(
        upload.location,
        format!("https://files.example.com/chat{path}")
    );
    // Behind the proxy the prefix is stripped: the same path works here.
    assert_eq!(offset_of(&user.client, &app.url(&path)).await, 0);
}

#[tokio::test]
async fn a_creation_without_upload_length_or_with_a_deferred_length_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "lengths").await;
    let url = app.url(&uploads_path(&user, chat));

    let res = send(tus(user.client.post(&url))).await;
    assert_tus(&res, "no Upload-Length");
    assert_error(res, StatusCode::BAD_REQUEST).await;

    let res = send(tus(user.client.post(&url)).header("Upload-Defer-Length", "1")).await;
    assert_tus(&res, "Upload-Defer-Length");
    assert_error(res, StatusCode::BAD_REQUEST).await;
    assert_eq!(part_files(&app), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_malformed_upload_length_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "lengths").await;
    let url = app.url(&uploads_path(&user, chat));
    for bad in ["abc", "-1", "1.5", "", "0x10", "1 0", "+5"] {
        let res = send(tus(user.client.post(&url)).header("Upload-Length", bad)).await;
        assert_tus(&res, bad);
        assert_eq!(
            res.status(),
            StatusCode::BAD_REQUEST,
            "Upload-Length {bad:?}"
        );
        assert_error(res, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(part_files(&app), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_malformed_upload_metadata_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "metadata").await;
    for bad in [
        // Not base64.
        "filename !!!not-base64!!!",
        // Three fields in one pair.
        "filename YS50eHQ= extra",
        // An empty pair, so an empty key.
        "filename YS50eHQ=,,filetype dGV4dC9wbGFpbg==",
        // The same key twice.
        "filename YS50eHQ=,filename Yi50eHQ=",
    ] {
        let res = create(&app, &user, chat, 10, Some(bad)).await;
        assert_tus(&res, bad);
        assert_eq!(
            res.status(),
            StatusCode::BAD_REQUEST,
            "Upload-Metadata {bad:?}"
        );
        assert_error(res, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(part_files(&app), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn an_upload_length_over_the_maximum_file_size_is_too_large_and_the_maximum_itself_is_accepted()
 {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "max").await;
    let max = app.config.max_file_size;

    let res = create(&app, &user, chat, max + 1, None).await;
    assert_tus(&res, "over the maximum");
    let message = assert_error(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(
        message,
        format!("File exceeds the maximum size of {max} bytes")
    );
    assert_eq!(part_files(&app), Vec::<PathBuf>::new());

    create_ok(&app, &user, chat, max, None).await;
}

#[tokio::test]
async fn an_incomplete_uploads_full_length_counts_against_the_quota_from_its_creation() {
    let app = TestApp::spawn_with(|c| c.user_quota = 1000).await;
    let user = app.user().await;
    let chat = app.chat(&user, "quota").await;
    let first = create_ok(&app, &user, chat, 800, None).await;
    // Not a byte of it has arrived, yet its 800 bytes are taken.
    assert_eq!(offset_of(&user.client, &first.location).await, 0);

    let res = create(&app, &user, chat, 201, None).await;
    assert_tus(&res, "second creation");
    assert_eq!(
        assert_error(res, StatusCode::PAYLOAD_TOO_LARGE).await,
        "Upload exceeds your storage quota of 1000 bytes"
    );
    let res = app
        .upload(
            &user,
            chat,
            &[("b.bin", "application/octet-stream", &[2; 201])],
        )
        .await;
    assert_eq!(
        assert_error(res, StatusCode::PAYLOAD_TOO_LARGE).await,
        "Upload exceeds your storage quota of 1000 bytes"
    );
    assert!(listing(&app, &user, chat).await.is_empty());

    // Inclusive: exactly what is left fits.
    let second = create_ok(&app, &user, chat, 200, None).await;
    let res = create(&app, &user, chat, 1, None).await;
    assert_error(res, StatusCode::PAYLOAD_TOO_LARGE).await;

    // Other users have their own quota.
    let other = app.user().await;
    let other_chat = app.chat(&other, "mine").await;
    create_ok(&app, &other, other_chat, 1000, None).await;

    // Completing an upload keeps its bytes counted (as a file now).
    patch_ok(&user.client, &second.location, 0, &[3; 200]).await;
    let res = create(&app, &user, chat, 1, None).await;
    assert_error(res, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[tokio::test]
async fn a_finished_upload_counts_once_against_the_quota_and_deleting_its_file_frees_it() {
    let app = TestApp::spawn_with(|c| c.user_quota = 1000).await;
    let user = app.user().await;
    let chat = app.chat(&user, "counted once").await;
    let file = complete(&app, &user, chat, None, &[1; 600]).await;

    // 600 stored: 400 are left, by either route, not less.
    let rest = create_ok(&app, &user, chat, 400, None).await;
    let res = send(tus(user.client.delete(&rest.location))).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    app.upload_ok(
        &user,
        chat,
        &[("rest.bin", "application/octet-stream", &[2; 400])],
    )
    .await;
    assert_error(
        create(&app, &user, chat, 1, None).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    // Deleting the file the upload became (through the files route) frees its 600 bytes.
    let id = file["id"].as_i64().unwrap_or_default();
    let res = send(
        user.client
            .delete(app.url(&format!("/api/users/{}/chats/{chat}/files/{id}", user.id))),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    create_ok(&app, &user, chat, 600, None).await;
}

// ---------------------------------------------------------------------------------------------
// Metadata: name and type
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn metadata_names_and_types_the_file_as_a_multipart_upload_would() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "metadata").await;
    let cases: Vec<(String, &[u8], &str, &str)> = vec![
        (
            metadata(&[("filename", "report.pdf"), ("filetype", "application/pdf")]),
            b"%PDF-1.4 hi",
            "report.pdf",
            "application/pdf",
        ),
        // tus-js-client's keys (`name`, `type`); UTF-8 text gains its charset.
        (
            metadata(&[("name", "notes.txt"), ("type", "text/plain")]),
            "héllo wörld".as_bytes(),
            "notes.txt",
            "text/plain; charset=utf-8",
        ),
        // Reduced to its last component; no type, none guessable.
        (
            metadata(&[("filename", "../../etc/passwd")]),
            b"root:x:0:0",
            "passwd",
            "application/octet-stream",
        ),
        (
            metadata(&[("filename", "..\\..\\evil.txt")]),
            b"evil",
            "evil.txt",
            "text/plain; charset=utf-8",
        ),
        (
            metadata(&[("filename", "invoice\u{202E}fdp.exe")]),
            b"MZ",
            "invoicefdp.exe",
            "application/octet-stream",
        ),
        // application/octet-stream, or an invalid type: guessed from the name.
        (
            metadata(&[
                ("filename", "photo.png"),
                ("filetype", "application/octet-stream"),
            ]),
            b"\x89PNG",
            "photo.png",
            "image/png",
        ),
        (
            metadata(&[("filename", "table.csv"), ("filetype", "text/")]),
            "a,b\né,ü\n".as_bytes(),
            "table.csv",
            "text/csv; charset=utf-8",
        ),
        // Text that is not UTF-8 stays without a charset.
        (
            metadata(&[("filename", "latin1.txt")]),
            b"r\xe9sum\xe9",
            "latin1.txt",
            "text/plain",
        ),
        // Declared types are lowercased, their charset kept as declared.
        (
            metadata(&[
                ("filename", "declared.txt"),
                ("filetype", "Text/Plain; Charset=ISO-8859-1; format=flowed"),
            ]),
            "é".as_bytes(),
            "declared.txt",
            "text/plain; charset=iso-8859-1",
        ),
        (
            metadata(&[("filename", "résumé 履歴書.pdf")]),
            b"%PDF",
            "résumé 履歴書.pdf",
            "application/pdf",
        ),
        // Base64 without padding; a key without a value.
        (
            "filename YS50eHQ,is_confidential".to_owned(),
            b"abc",
            "a.txt",
            "text/plain; charset=utf-8",
        ),
        // No metadata at all.
        (String::new(), b"x", "file", "application/octet-stream"),
    ];
    let mut expected = Vec::new();
    for (metadata, bytes, name, media_type) in &cases {
        let metadata = (!metadata.is_empty()).then_some(metadata.as_str());
        let file = complete(&app, &user, chat, metadata, bytes).await;
        assert_eq!(
            (file["name"].as_str(), file["type"].as_str()),
            (Some(*name), Some(*media_type)),
            "Upload-Metadata {metadata:?}: {file}"
        );
        assert_eq!(file["size"], json!(bytes.len()), "{file}");
        assert_eq!(file["chat_conversation_id"], json!(chat), "{file}");
        expected.push(((*name).to_owned(), (*media_type).to_owned()));
    }
    // Listed in the order they were completed, as they were answered.
    let listed: Vec<(String, String)> = listing(&app, &user, chat)
        .await
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or_default().to_owned(),
                f["type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn head_echoes_the_upload_metadata_as_sent() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "echo").await;
    let sent = "filename cmVwb3J0LnBkZg==,filetype YXBwbGljYXRpb24vcGRm,is_confidential";
    let upload = create_ok(&app, &user, chat, 10, Some(sent)).await;
    let res = head(&user.client, &upload.location).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "upload-metadata"), sent);

    // Without metadata at creation, none on HEAD.
    let bare = create_ok(&app, &user, chat, 10, None).await;
    let res = head(&user.client, &bare.location).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        !res.headers().contains_key("upload-metadata"),
        "{:?}",
        res.headers()
    );
}

// ---------------------------------------------------------------------------------------------
// creation-with-upload
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_creation_with_an_offset_stream_body_stores_it_as_the_first_chunk() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "with upload").await;
    let bytes = pattern(10_000);

    let res = send(
        creation(&app, &user, chat, 10_000)
            .header("Content-Type", OFFSET_STREAM)
            .body(bytes[..4_000].to_vec()),
    )
    .await;
    let upload = created(&res);
    assert_eq!(number(&res, "upload-offset"), 4_000);
    assert_eq!(offset_of(&user.client, &upload.location).await, 4_000);

    patch_ok(&user.client, &upload.location, 4_000, &bytes[4_000..]).await;
    let file = chat_file(&user.client, &upload.location).await;
    assert_eq!(file["size"], json!(10_000));
    assert_eq!(sha256(&download(&file).await), sha256(&bytes));
}

#[tokio::test]
async fn a_creation_whose_body_is_another_media_type_is_refused_with_415_and_nothing_is_kept() {
    let app = TestApp::spawn_with(|c| c.user_quota = 1000).await;
    let user = app.user().await;
    let chat = app.chat(&user, "wrong type").await;
    for media_type in ["application/octet-stream", "text/plain"] {
        let res = send(
            creation(&app, &user, chat, 1000)
                .header("Content-Type", media_type)
                .body(b"hello".to_vec()),
        )
        .await;
        assert_tus(&res, media_type);
        assert_error(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    }
    assert_eq!(part_files(&app), Vec::<PathBuf>::new());
    // Nothing holds quota either.
    create_ok(&app, &user, chat, 1000, None).await;
}

#[tokio::test]
async fn a_whole_file_in_the_creation_request_completes_the_upload() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "whole").await;
    let bytes = pattern(70_000);
    let res = send(
        creation(&app, &user, chat, 70_000)
            .header("Content-Type", OFFSET_STREAM)
            .header("Upload-Metadata", metadata(&[("filename", "whole.bin")]))
            .body(bytes.clone()),
    )
    .await;
    let upload = created(&res);
    assert_eq!(number(&res, "upload-offset"), 70_000);

    let file = chat_file(&user.client, &upload.location).await;
    assert_eq!(file["name"], json!("whole.bin"));
    assert_eq!(file["size"], json!(70_000));
    let listed = listing(&app, &user, chat).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], file["id"]);
    assert_eq!(sha256(&download(&listed[0]).await), sha256(&bytes));
    assert_eq!(part_files(&app), Vec::<PathBuf>::new());
    assert_eq!(app.stored().await.len(), 1, "{:?}", app.stored().await);
}

#[tokio::test]
async fn an_upload_length_of_zero_completes_at_once_as_an_empty_file() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "empty").await;
    let upload = create_ok(
        &app,
        &user,
        chat,
        0,
        Some(&metadata(&[("filename", "empty.txt")])),
    )
    .await;
    let res = head(&user.client, &upload.location).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(number(&res, "upload-offset"), 0);
    assert_eq!(number(&res, "upload-length"), 0);
    let file = chat_file(&user.client, &upload.location).await;
    assert_eq!(file["size"], json!(0));
    assert_eq!(file["name"], json!("empty.txt"));
    // An empty file counts as UTF-8.
    assert_eq!(file["type"], json!("text/plain; charset=utf-8"));
    assert_eq!(listing(&app, &user, chat).await.len(), 1);
    assert!(download(&file).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// HEAD and PATCH
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn head_answers_the_offset_and_length_without_caching() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "head").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;
    patch_ok(&user.client, &upload.location, 0, b"abc").await;

    let res = head(&user.client, &upload.location).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_tus(&res, "HEAD");
    assert_eq!(number(&res, "upload-offset"), 3);
    assert_eq!(number(&res, "upload-length"), 10);
    assert_eq!(header(&res, "cache-control"), "no-store");
    let expires = header(&res, "upload-expires");
    assert_eq!(
        parse_http_date(&expires),
        http_date_after(&app, app.config.upload_expiry),
        "{expires}"
    );
    assert!(res.bytes().await.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn chunks_patched_in_sequence_each_answer_204_with_the_new_offset() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "sequence").await;
    let bytes = pattern(300_000);
    let upload = create_ok(&app, &user, chat, 300_000, None).await;
    let mut offset = 0;
    for chunk in [
        &bytes[..100_000],
        &bytes[100_000..250_001],
        &bytes[250_001..],
    ] {
        let res = patch(&user.client, &upload.location, offset, chunk).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT, "PATCH at {offset}");
        assert_tus(&res, "PATCH");
        offset += chunk.len() as u64;
        assert_eq!(number(&res, "upload-offset"), offset);
        // Still the creation's expiry (the clock has not moved).
        assert_eq!(
            parse_http_date(&header(&res, "upload-expires")),
            http_date_after(&app, app.config.upload_expiry)
        );
        assert!(res.bytes().await.unwrap_or_default().is_empty());
        assert_eq!(offset_of(&user.client, &upload.location).await, offset);
    }
    let file = chat_file(&user.client, &upload.location).await;
    assert_eq!(sha256(&download(&file).await), sha256(&bytes));
}

#[tokio::test]
async fn a_patch_at_the_wrong_offset_is_a_conflict_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "conflict").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;
    patch_ok(&user.client, &upload.location, 0, b"abc").await;
    for wrong in [0, 2, 4, 10] {
        let res = patch(&user.client, &upload.location, wrong, b"def").await;
        assert_tus(&res, "409");
        assert_eq!(res.status(), StatusCode::CONFLICT, "PATCH at {wrong}");
        assert_error(res, StatusCode::CONFLICT).await;
    }
    assert_eq!(offset_of(&user.client, &upload.location).await, 3);
    patch_ok(&user.client, &upload.location, 3, b"defghij").await;
    let file = chat_file(&user.client, &upload.location).await;
    assert_eq!(download(&file).await, b"abcdefghij");
}

#[tokio::test]
async fn a_patch_of_another_media_type_is_unsupported() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "type").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;
    for media_type in [
        "application/octet-stream",
        "text/plain",
        "multipart/form-data",
    ] {
        let res = send(
            tus(user.client.patch(&upload.location))
                .header("Content-Type", media_type)
                .header("Upload-Offset", 0)
                .body(b"abc".to_vec()),
        )
        .await;
        assert_tus(&res, media_type);
        assert_error(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    }
    assert_eq!(offset_of(&user.client, &upload.location).await, 0);
}

#[tokio::test]
async fn a_patch_past_the_upload_length_is_too_large_and_keeps_nothing_of_it() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "past").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;

    let res = patch(&user.client, &upload.location, 0, b"0123456789X").await;
    assert_tus(&res, "413");
    assert_error(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(offset_of(&user.client, &upload.location).await, 0);

    patch_ok(&user.client, &upload.location, 0, b"0123").await;
    let res = patch(&user.client, &upload.location, 4, b"4567890").await;
    assert_error(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(offset_of(&user.client, &upload.location).await, 4);
    let part = uploads_dir(&app).join(&upload.id);
    let kept = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(kept <= 4, "{} holds {kept} bytes", part.display());

    // Without a Content-Length the server counts the bytes as they come.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(b"456".to_vec()), Ok(b"7890".to_vec())];
    let res = send(
        tus(user.client.patch(&upload.location))
            .header("Content-Type", OFFSET_STREAM)
            .header("Upload-Offset", 4)
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            ))),
    )
    .await;
    assert_tus(&res, "413 of a chunked body");
    assert_error(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(offset_of(&user.client, &upload.location).await, 4);

    // The upload goes on from where it was.
    patch_ok(&user.client, &upload.location, 4, b"456789").await;
    let file = chat_file(&user.client, &upload.location).await;
    assert_eq!(download(&file).await, b"0123456789");
}

#[tokio::test]
async fn a_patch_without_a_valid_upload_offset_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "offset").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;

    let res = send(
        tus(user.client.patch(&upload.location))
            .header("Content-Type", OFFSET_STREAM)
            .body(b"abc".to_vec()),
    )
    .await;
    assert_tus(&res, "no Upload-Offset");
    assert_error(res, StatusCode::BAD_REQUEST).await;
    for bad in ["abc", "-1", "1.5", "", "+0"] {
        let res = send(
            tus(user.client.patch(&upload.location))
                .header("Content-Type", OFFSET_STREAM)
                .header("Upload-Offset", bad)
                .body(b"abc".to_vec()),
        )
        .await;
        assert_tus(&res, bad);
        assert_eq!(
            res.status(),
            StatusCode::BAD_REQUEST,
            "Upload-Offset {bad:?}"
        );
        assert_error(res, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(offset_of(&user.client, &upload.location).await, 0);
}

#[tokio::test]
async fn in_progress_bytes_live_in_a_private_part_file_under_uploads() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "part").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;
    patch_ok(&user.client, &upload.location, 0, b"abcd").await;

    let part = uploads_dir(&app).join(&upload.id);
    assert_eq!(part_files(&app), vec![part.clone()]);
    let meta = std::fs::metadata(&part).unwrap_or_else(|e| panic!("{}: {e}", part.display()));
    assert_eq!(meta.len(), 4);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    // Nothing of it is a file yet, anywhere.
    assert_eq!(app.stored().await, Vec::<String>::new());
    assert!(listing(&app, &user, chat).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Completion
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_last_chunk_turns_the_upload_into_a_listed_file_with_exactly_its_bytes() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "complete").await;
    let bytes = pattern(200_000);
    let upload = create_ok(
        &app,
        &user,
        chat,
        200_000,
        Some(&metadata(&[
            ("filename", "data.bin"),
            ("filetype", "application/octet-stream"),
        ])),
    )
    .await;
    patch_ok(&user.client, &upload.location, 0, &bytes[..120_000]).await;
    assert!(listing(&app, &user, chat).await.is_empty());

    app.clock.advance(chrono::TimeDelta::minutes(5));
    patch_ok(&user.client, &upload.location, 120_000, &bytes[120_000..]).await;
    let completed_at = chatfiles::clock::rfc3339(app.clock.unix());

    let listed = listing(&app, &user, chat).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let file = &listed[0];
    assert_eq!(file["name"], json!("data.bin"));
    assert_eq!(file["size"], json!(200_000));
    assert_eq!(file["type"], json!("application/octet-stream"));
    assert_eq!(file["chat_conversation_id"], json!(chat));
    let url = file["url"].as_str().unwrap_or_default();
    assert!(url.starts_with(&app.download_base()), "{url}");
    assert_eq!(sha256(&download(file).await), sha256(&bytes));

    // GET of the upload gives the same ChatFile.
    let got = chat_file(&user.client, &upload.location).await;
    for field in [
        "id",
        "chat_conversation_id",
        "name",
        "size",
        "type",
        "created_at",
    ] {
        assert_eq!(got[field], file[field], "{field}: {got} vs {file}");
    }
    assert_eq!(sha256(&download(&got).await), sha256(&bytes));

    // The chat moved.
    assert_eq!(
        chat_row(&app, &user, chat).await["updated_at"],
        json!(completed_at)
    );

    // Finished: HEAD says so, an empty PATCH at the end is fine, more bytes are not.
    let res = head(&user.client, &upload.location).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(number(&res, "upload-offset"), 200_000);
    assert_eq!(number(&res, "upload-length"), 200_000);
    patch_ok(&user.client, &upload.location, 200_000, b"").await;
    let res = patch(&user.client, &upload.location, 200_000, b"x").await;
    assert!(
        res.status() == StatusCode::PAYLOAD_TOO_LARGE || res.status() == StatusCode::CONFLICT,
        "a byte past a finished upload: {}",
        res.status()
    );
    assert_eq!(listing(&app, &user, chat).await.len(), 1);

    // The part file went; the bytes are one stored object.
    assert_eq!(part_files(&app), Vec::<PathBuf>::new());
    let stored = app.stored().await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(
        stored[0].starts_with("objects/") || stored[0].starts_with("s3:"),
        "{stored:?}"
    );
}

#[tokio::test]
async fn an_incomplete_upload_answers_get_with_409_saying_how_much_arrived() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "incomplete").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;
    patch_ok(&user.client, &upload.location, 0, b"abc").await;
    // No Tus-Resumable needed on GET.
    let res = send(user.client.get(&upload.location)).await;
    assert_tus(&res, "GET");
    assert_eq!(
        assert_error(res, StatusCode::CONFLICT).await,
        "Upload is not complete: 3 of 10 bytes received"
    );
}

// ---------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn two_patches_at_the_same_offset_at_once_store_exactly_one_of_them_whole() {
    const LENGTH: usize = 64 * 1024;
    const CHUNK: usize = 4 * 1024;
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "race").await;
    let upload = create_ok(&app, &user, chat, LENGTH as u64, None).await;
    let slow_bytes = pattern(LENGTH);
    let fast_bytes = vec![b'Z'; LENGTH];

    // The slow PATCH paces its own body: a chunk every 20 ms.
    let yielded = Arc::new(AtomicUsize::new(0));
    let counter = yielded.clone();
    let chunks: Vec<Vec<u8>> = slow_bytes.chunks(CHUNK).map(<[u8]>::to_vec).collect();
    let body = futures_util::stream::iter(chunks).then(move |chunk| {
        let counter = counter.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(chunk)
        }
    });
    let slow = tokio::spawn(
        tus(user.client.patch(&upload.location))
            .header("Content-Type", OFFSET_STREAM)
            .header("Upload-Offset", 0)
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );

    // Once its first bytes are on disk (or a quarter of them sent), the slow one is in flight.
    let part = uploads_dir(&app).join(&upload.id);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let on_disk = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if on_disk > 0 || yielded.load(Ordering::SeqCst) >= LENGTH / CHUNK / 4 {
            break;
        }
        assert!(Instant::now() < deadline, "the slow PATCH never started");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        yielded.load(Ordering::SeqCst) < LENGTH / CHUNK,
        "the slow PATCH was over before the second started"
    );
    let fast = tokio::spawn(patching(&user.client, &upload.location, 0, &fast_bytes).send());

    let slow = slow
        .await
        .unwrap_or_else(|e| panic!("slow PATCH: {e}"))
        .unwrap_or_else(|e| panic!("slow PATCH: {e}"));
    let fast = fast
        .await
        .unwrap_or_else(|e| panic!("fast PATCH: {e}"))
        .unwrap_or_else(|e| panic!("fast PATCH: {e}"));
    assert_tus(&slow, "slow PATCH");
    assert_tus(&fast, "fast PATCH");
    let statuses = (slow.status(), fast.status());
    let (winner, loser, expected) = match statuses {
        (StatusCode::NO_CONTENT, StatusCode::CONFLICT) => (slow, fast, &slow_bytes),
        (StatusCode::CONFLICT, StatusCode::NO_CONTENT) => (fast, slow, &fast_bytes),
        other => panic!("expected one 204 and one 409, got (slow, fast) = {other:?}"),
    };
    assert_eq!(number(&winner, "upload-offset"), LENGTH as u64);
    assert_error(loser, StatusCode::CONFLICT).await;

    assert_eq!(
        offset_of(&user.client, &upload.location).await,
        LENGTH as u64
    );
    let file = chat_file(&user.client, &upload.location).await;
    assert_eq!(file["size"], json!(LENGTH));
    let got = download(&file).await;
    assert!(
        sha256(&got) == sha256(expected),
        "the stored bytes are not the winner's whole: {} of them differ",
        got.iter()
            .zip(expected.iter())
            .filter(|(a, b)| a != b)
            .count()
    );
    assert_eq!(listing(&app, &user, chat).await.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Bodies cut off
// ---------------------------------------------------------------------------------------------

/// A PATCH body that sends `first` and then nothing more until `sender` is dropped.
fn stalling_body(first: Vec<u8>) -> (reqwest::Body, tokio::sync::mpsc::Sender<Vec<u8>>) {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let first = futures_util::stream::iter([Ok::<_, std::io::Error>(first)]);
    let rest = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(chunk), receiver))
    });
    (reqwest::Body::wrap_stream(first.chain(rest)), sender)
}

#[tokio::test]
async fn a_patch_whose_body_stalls_is_408_and_keeps_the_bytes_that_arrived() {
    let app = TestApp::spawn_with(|c| c.body_timeout = Duration::from_millis(500)).await;
    let user = app.user().await;
    let chat = app.chat(&user, "stall").await;
    let bytes = pattern(10_000);
    let upload = create_ok(&app, &user, chat, 10_000, None).await;

    let (body, sender) = stalling_body(bytes[..3_000].to_vec());
    let request = tus(user.client.patch(&upload.location))
        .header("Content-Type", OFFSET_STREAM)
        .header("Upload-Offset", 0)
        .body(body)
        .send();
    // The server's body timeout answers; this bound only keeps a broken server from hanging us.
    let res = tokio::time::timeout(Duration::from_secs(20), request)
        .await
        .unwrap_or_else(|_| panic!("no answer to a stalled PATCH within 20 s"))
        .unwrap_or_else(|e| panic!("stalled PATCH: {e}"));
    drop(sender);
    assert_tus(&res, "408");
    assert_error(res, StatusCode::REQUEST_TIMEOUT).await;

    assert_eq!(offset_of(&user.client, &upload.location).await, 3_000);
    patch_ok(&user.client, &upload.location, 3_000, &bytes[3_000..]).await;
    let file = chat_file(&user.client, &upload.location).await;
    assert_eq!(sha256(&download(&file).await), sha256(&bytes));
}

#[tokio::test]
async fn a_patch_cut_off_by_the_client_keeps_the_bytes_that_arrived() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "cut off").await;
    let bytes = pattern(10_000);
    let upload = create_ok(&app, &user, chat, 10_000, None).await;

    // 3,000 bytes, then the body fails: the client drops the connection.
    let (sent, signal) = tokio::sync::oneshot::channel::<()>();
    let first = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes[..3_000].to_vec())]);
    let failure = futures_util::stream::once(async move {
        // The client paces its own body: the first chunk goes out on the wire before the
        // failure drops the connection.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = sent.send(());
        Err::<Vec<u8>, _>(std::io::Error::other("the client gives up"))
    });
    let res = tus(user.client.patch(&upload.location))
        .header("Content-Type", OFFSET_STREAM)
        .header("Upload-Offset", 0)
        .body(reqwest::Body::wrap_stream(first.chain(failure)))
        .send()
        .await;
    assert!(res.is_err(), "a cut-off PATCH was answered: {res:?}");
    signal
        .await
        .unwrap_or_else(|e| panic!("the body never reached its failure: {e}"));

    // The server notices the cut on its own time: poll HEAD (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = head(&user.client, &upload.location).await;
        assert_eq!(res.status(), StatusCode::OK);
        let offset = number(&res, "upload-offset");
        assert!(offset <= 3_000, "offset {offset}");
        if offset == 3_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HEAD still says {offset} of the 3000 bytes sent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    patch_ok(&user.client, &upload.location, 3_000, &bytes[3_000..]).await;
    let file = chat_file(&user.client, &upload.location).await;
    assert_eq!(sha256(&download(&file).await), sha256(&bytes));
}

// ---------------------------------------------------------------------------------------------
// Termination
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn terminating_an_upload_removes_its_bytes_and_frees_its_quota() {
    let app = TestApp::spawn_with(|c| c.user_quota = 1000).await;
    let user = app.user().await;
    let chat = app.chat(&user, "terminate").await;
    let upload = create_ok(&app, &user, chat, 1000, None).await;
    patch_ok(&user.client, &upload.location, 0, &[1; 300]).await;
    let part = uploads_dir(&app).join(&upload.id);
    assert!(part.exists(), "no {}", part.display());
    assert_error(
        create(&app, &user, chat, 1, None).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    let res = send(tus(user.client.delete(&upload.location))).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_tus(&res, "DELETE");
    assert!(res.bytes().await.unwrap_or_default().is_empty());

    let res = head(&user.client, &upload.location).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_tus(&res, "HEAD after DELETE");
    let res = patch(&user.client, &upload.location, 300, &[1; 10]).await;
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "Upload not found"
    );
    let res = send(tus(user.client.delete(&upload.location))).await;
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "Upload not found"
    );
    assert!(!part.exists(), "{} is still there", part.display());
    assert_eq!(part_files(&app), Vec::<PathBuf>::new());
    assert_eq!(app.stored().await, Vec::<String>::new());

    create_ok(&app, &user, chat, 1000, None).await;
}

#[tokio::test]
async fn terminating_a_finished_upload_deletes_the_file_it_became() {
    let app = TestApp::spawn_with(|c| c.user_quota = 1000).await;
    let user = app.user().await;
    let chat = app.chat(&user, "terminate finished").await;
    let upload = create_ok(&app, &user, chat, 1000, None).await;
    patch_ok(&user.client, &upload.location, 0, &[7; 1000]).await;
    let file = chat_file(&user.client, &upload.location).await;
    assert_eq!(app.stored().await.len(), 1);

    let res = send(tus(user.client.delete(&upload.location))).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(listing(&app, &user, chat).await.is_empty());
    let id = file["id"].as_i64().unwrap_or_default();
    let res = send(
        user.client
            .get(app.url(&format!("/api/users/{}/chats/{chat}/files/{id}", user.id))),
    )
    .await;
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "File not found"
    );
    assert_eq!(app.stored().await, Vec::<String>::new());
    let res = head(&user.client, &upload.location).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    create_ok(&app, &user, chat, 1000, None).await;
}

// ---------------------------------------------------------------------------------------------
// Tus-Resumable
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_missing_or_other_tus_resumable_is_a_precondition_failure_naming_tus_version() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "versions").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;
    patch_ok(&user.client, &upload.location, 0, b"abc").await;
    let collection = app.url(&uploads_path(&user, chat));
    let parts_before = part_files(&app);

    for version in [None, Some("0.2.2"), Some("1.0"), Some("")] {
        let with = |request: RequestBuilder| match version {
            Some(version) => request.header("Tus-Resumable", version),
            None => request,
        };
        let requests = [
            (
                "POST",
                with(user.client.post(&collection)).header("Upload-Length", 10),
            ),
            ("HEAD", with(user.client.head(&upload.location))),
            (
                "PATCH",
                with(user.client.patch(&upload.location))
                    .header("Content-Type", OFFSET_STREAM)
                    .header("Upload-Offset", 3)
                    .body(b"def".to_vec()),
            ),
            ("DELETE", with(user.client.delete(&upload.location))),
        ];
        for (method, request) in requests {
            let what = format!("{method} with Tus-Resumable {version:?}");
            let res = send(request).await;
            assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED, "{what}");
            assert_tus(&res, &what);
            assert_eq!(header(&res, "tus-version"), TUS, "{what}");
            if method != "HEAD" {
                assert_error(res, StatusCode::PRECONDITION_FAILED).await;
            }
        }
    }
    // Nothing was done.
    assert_eq!(part_files(&app), parts_before);
    assert_eq!(offset_of(&user.client, &upload.location).await, 3);
}

#[tokio::test]
async fn every_answer_of_the_tus_routes_carries_tus_resumable() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "headers").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;
    let anonymous = helpers::client();
    let unknown = format!("{}/{}", uploads_path(&user, chat), "0".repeat(32));
    let cases: Vec<(StatusCode, RequestBuilder)> = vec![
        (
            StatusCode::UNAUTHORIZED,
            tus(anonymous.head(&upload.location)),
        ),
        (
            StatusCode::UNAUTHORIZED,
            tus(anonymous.post(app.url(&uploads_path(&user, chat)))).header("Upload-Length", 1),
        ),
        (
            StatusCode::BAD_REQUEST,
            tus(user
                .client
                .head(app.url(&format!("{}/nope", uploads_path(&user, chat))))),
        ),
        (
            StatusCode::BAD_REQUEST,
            tus(user.client.post(app.url(&uploads_path(&user, chat)))),
        ),
        (
            StatusCode::NOT_FOUND,
            tus(user.client.head(app.url(&unknown))),
        ),
        (
            StatusCode::NOT_FOUND,
            tus(user.client.patch(app.url(&unknown)))
                .header("Content-Type", OFFSET_STREAM)
                .header("Upload-Offset", 0)
                .body(b"x".to_vec()),
        ),
        (
            StatusCode::PRECONDITION_FAILED,
            user.client.head(&upload.location),
        ),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            tus(user.client.put(&upload.location)),
        ),
        (
            StatusCode::CONFLICT,
            patching(&user.client, &upload.location, 5, b"x"),
        ),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            patching(&user.client, &upload.location, 0, &[0; 11]),
        ),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            tus(user.client.patch(&upload.location))
                .header("Content-Type", "text/plain")
                .header("Upload-Offset", 0)
                .body(b"x".to_vec()),
        ),
        (StatusCode::CONFLICT, user.client.get(&upload.location)),
        (
            StatusCode::FORBIDDEN,
            patching(&user.client, &upload.location, 0, b"x").header("Origin", FOREIGN),
        ),
        (StatusCode::OK, tus(user.client.head(&upload.location))),
        (
            StatusCode::NO_CONTENT,
            patching(&user.client, &upload.location, 0, b"x"),
        ),
    ];
    for (status, request) in cases {
        // Sent by the client that built it (the anonymous one has no cookie).
        let (client, request) = request.build_split();
        let request = request.unwrap_or_else(|e| panic!("a request: {e}"));
        let what = format!("{} {}", request.method(), request.url().path());
        let res = client
            .execute(request)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(res.status(), status, "{what}");
        assert_tus(&res, &format!("{what} answered {status}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions, ids and owners
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn without_a_session_every_tus_route_is_unauthorized_even_with_a_malformed_id() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "auth").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;
    let parts_before = part_files(&app);
    let anonymous = helpers::client();
    let bad = app.url("/api/users/abc/chats/0/uploads");
    let bad_item = app.url("/api/users/abc/chats/0/uploads/NOT-AN-ID");
    for url in [upload.location.clone(), bad_item] {
        for method in [
            Method::HEAD,
            Method::PATCH,
            Method::DELETE,
            Method::GET,
            Method::OPTIONS,
        ] {
            // With and without Tus-Resumable: the session comes first.
            for request in [
                tus(anonymous.request(method.clone(), &url)),
                anonymous.request(method.clone(), &url),
            ] {
                let res = send(
                    request
                        .header("Content-Type", OFFSET_STREAM)
                        .header("Upload-Offset", 0),
                )
                .await;
                assert_tus(&res, &format!("{method} {url}"));
                if method == Method::HEAD {
                    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "HEAD {url}");
                } else {
                    assert_eq!(
                        assert_error(res, StatusCode::UNAUTHORIZED).await,
                        "Unauthorized",
                        "{method} {url}"
                    );
                }
            }
        }
    }
    for url in [app.url(&uploads_path(&user, chat)), bad] {
        let res = send(tus(anonymous.post(&url)).header("Upload-Length", 10)).await;
        assert_tus(&res, &format!("POST {url}"));
        assert_eq!(
            assert_error(res, StatusCode::UNAUTHORIZED).await,
            "Unauthorized",
            "POST {url}"
        );
    }
    // Nothing was done.
    assert_eq!(offset_of(&user.client, &upload.location).await, 0);
    assert_eq!(part_files(&app), parts_before);
}

#[tokio::test]
async fn malformed_user_chat_and_upload_ids_are_bad_requests() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "ids").await;
    let u = user.id;

    for bad in ["abc", "0", "-1", "+1", "99999999999999999999"] {
        for (path, message) in [
            (
                format!("/api/users/{bad}/chats/{chat}/uploads"),
                "Invalid user id",
            ),
            (
                format!("/api/users/{u}/chats/{bad}/uploads"),
                "Invalid chat id",
            ),
        ] {
            let res = send(tus(user.client.post(app.url(&path))).header("Upload-Length", 1)).await;
            assert_tus(&res, &path);
            assert_eq!(
                assert_error(res, StatusCode::BAD_REQUEST).await,
                message,
                "POST {path}"
            );
        }
    }
    let hex = "0123456789abcdef0123456789abcdef";
    for bad in [
        "abc".to_owned(),
        hex.to_uppercase(),
        hex[..31].to_owned(),
        format!("{hex}0"),
        format!("{}g", &hex[..31]),
        "1".to_owned(),
    ] {
        let url = app.url(&format!("{}/{bad}", uploads_path(&user, chat)));
        let res = head(&user.client, &url).await;
        assert_tus(&res, &format!("HEAD {bad}"));
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "HEAD {bad}");
        for request in [
            patching(&user.client, &url, 0, b"x"),
            tus(user.client.delete(&url)),
            user.client.get(&url),
        ] {
            let res = send(request).await;
            assert_tus(&res, &bad);
            assert_eq!(
                assert_error(res, StatusCode::BAD_REQUEST).await,
                "Invalid upload id",
                "upload id {bad:?}"
            );
        }
    }
}

#[tokio::test]
async fn another_users_chat_or_user_id_is_not_found_and_the_user_comes_before_the_version() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let intruder = app.user().await;
    let chat = app.chat(&owner, "private").await;
    let upload = create_ok(&app, &owner, chat, 10, None).await;

    // The intruder's own user id, the owner's chat.
    let theirs = app.url(&uploads_path(&intruder, chat));
    let res = send(tus(intruder.client.post(&theirs)).header("Upload-Length", 1)).await;
    assert_tus(&res, "another user's chat");
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "Chat not found"
    );
    let item = format!("{theirs}/{}", upload.id);
    for request in [
        patching(&intruder.client, &item, 0, b"abc"),
        tus(intruder.client.delete(&item)),
        intruder.client.get(&item),
    ] {
        let res = send(request).await;
        assert_eq!(
            assert_error(res, StatusCode::NOT_FOUND).await,
            "Chat not found"
        );
    }
    assert_eq!(
        head(&intruder.client, &item).await.status(),
        StatusCode::NOT_FOUND
    );

    // The owner's user id in the path: not the session's user.
    for request in [
        tus(intruder.client.head(&upload.location)),
        patching(&intruder.client, &upload.location, 0, b"abc"),
        tus(intruder.client.delete(&upload.location)),
    ] {
        let (client, request) = request.build_split();
        let request = request.unwrap_or_else(|e| panic!("a request: {e}"));
        let method = request.method().clone();
        let res = client
            .execute(request)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if method == Method::HEAD {
            assert_eq!(res.status(), StatusCode::NOT_FOUND);
        } else {
            assert_eq!(
                assert_error(res, StatusCode::NOT_FOUND).await,
                "User not found",
                "{method}"
            );
        }
    }

    // Precedence: User not found before the version check, the version before the chat.
    let res = send(intruder.client.patch(&upload.location)).await;
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "User not found"
    );
    let res = send(intruder.client.post(&theirs).header("Upload-Length", 1)).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_error(res, StatusCode::PRECONDITION_FAILED).await;

    // Untouched.
    assert_eq!(offset_of(&owner.client, &upload.location).await, 0);
}

#[tokio::test]
async fn an_upload_is_found_only_under_its_own_users_own_chat() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let other = app.user().await;
    let owners_chat = app.chat(&owner, "owner's").await;
    let owners_second_chat = app.chat(&owner, "owner's other").await;
    let others_chat = app.chat(&other, "other's").await;
    let upload = create_ok(&app, &owner, owners_chat, 10, None).await;
    let parts_before = part_files(&app);

    // Another user's upload id under one's own chat; one's own under one's other chat; an id
    // that was never made.
    let never = "0123456789abcdef0123456789abcdef";
    for (client, path) in [
        (
            &other.client,
            format!("{}/{}", uploads_path(&other, others_chat), upload.id),
        ),
        (
            &owner.client,
            format!("{}/{}", uploads_path(&owner, owners_second_chat), upload.id),
        ),
        (
            &owner.client,
            format!("{}/{never}", uploads_path(&owner, owners_chat)),
        ),
    ] {
        let url = app.url(&path);
        let res = head(client, &url).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "HEAD {path}");
        assert_tus(&res, &path);
        for request in [
            patching(client, &url, 0, b"abc"),
            tus(client.delete(&url)),
            client.get(&url),
        ] {
            let res = send(request).await;
            assert_tus(&res, &path);
            assert_eq!(
                assert_error(res, StatusCode::NOT_FOUND).await,
                "Upload not found",
                "{path}"
            );
        }
    }
    assert_eq!(offset_of(&owner.client, &upload.location).await, 0);
    assert_eq!(part_files(&app), parts_before);
}

#[tokio::test]
async fn unsupported_methods_are_405_with_allow() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "methods").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;
    let collection = app.url(&uploads_path(&user, chat));

    for (url, methods, allowed) in [
        (
            collection.clone(),
            vec![Method::PUT, Method::GET, Method::PATCH, Method::DELETE],
            vec!["POST", "OPTIONS"],
        ),
        (
            upload.location.clone(),
            vec![Method::PUT, Method::POST],
            vec!["HEAD", "PATCH", "DELETE", "GET", "OPTIONS"],
        ),
    ] {
        for method in methods {
            let res = send(tus(user.client.request(method.clone(), &url))).await;
            assert_tus(&res, &format!("{method} {url}"));
            let allow = header(&res, "allow").to_ascii_uppercase();
            let allow: Vec<&str> = allow.split(',').map(str::trim).collect();
            for expected in &allowed {
                assert!(allow.contains(expected), "{method} {url}: Allow {allow:?}");
            }
            assert!(
                !allow.contains(&method.as_str()),
                "{method} {url}: Allow {allow:?}"
            );
            assert_error(res, StatusCode::METHOD_NOT_ALLOWED).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Expiry and restarts
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_expired_upload_is_not_found_at_once_and_its_bytes_are_swept_in_the_background() {
    let app = TestApp::spawn_with(|c| c.user_quota = 1000).await;
    let user = app.user().await;
    let chat = app.chat(&user, "expiry").await;
    let upload = create_ok(&app, &user, chat, 1000, None).await;
    patch_ok(&user.client, &upload.location, 0, &[5; 100]).await;
    let part = uploads_dir(&app).join(&upload.id);
    assert!(part.exists(), "no {}", part.display());

    app.clock.advance(chrono::TimeDelta::hours(23));
    assert_eq!(offset_of(&user.client, &upload.location).await, 100);

    app.clock.advance(chrono::TimeDelta::hours(2));
    let res = head(&user.client, &upload.location).await;
    assert_eq!(
        res.status(),
        StatusCode::NOT_FOUND,
        "HEAD of an expired upload"
    );
    assert_tus(&res, "HEAD of an expired upload");
    let res = patch(&user.client, &upload.location, 100, &[5; 100]).await;
    assert_tus(&res, "PATCH of an expired upload");
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "Upload not found"
    );
    let res = send(user.client.get(&upload.location)).await;
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "Upload not found"
    );

    wait_until_swept(&app, &upload.id).await;
    assert_eq!(part_files(&app), Vec::<PathBuf>::new());
    // Its quota is free again.
    create_ok(&app, &user, chat, 1000, None).await;

    let app = app.restart().await;
    assert!(!part.exists(), "{} came back", part.display());
    let res = head(&user.client, &app.rebase(&upload.location)).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_sweep_removes_only_unfinished_uploads_never_the_files_they_became() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "sweep").await;
    let finished = complete(&app, &user, chat, None, b"finished").await;
    let unfinished = create_ok(&app, &user, chat, 10, None).await;
    patch_ok(&user.client, &unfinished.location, 0, b"abc").await;

    app.clock.advance(chrono::TimeDelta::hours(25));
    // Once the unfinished one is swept, the sweep has run.
    wait_until_swept(&app, &unfinished.id).await;
    let listed = listing(&app, &user, chat).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], finished["id"]);
    assert_eq!(download(&listed[0]).await, b"finished");
    assert_eq!(app.stored().await.len(), 1);

    let app = app.restart().await;
    let listed = listing(&app, &user, chat).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(download(&listed[0]).await, b"finished");
}

#[tokio::test]
async fn an_expired_upload_is_gone_after_a_restart_and_its_quota_is_free() {
    let app = TestApp::spawn_with(|c| c.user_quota = 1000).await;
    let user = app.user().await;
    let chat = app.chat(&user, "expiry restart").await;
    let upload = create_ok(&app, &user, chat, 1000, None).await;
    patch_ok(&user.client, &upload.location, 0, &[5; 100]).await;
    let part = uploads_dir(&app).join(&upload.id);

    app.clock.advance(chrono::TimeDelta::hours(25));
    let app = app.restart().await;
    // Swept at start, before the first request.
    assert!(!part.exists(), "{} survived the restart", part.display());
    assert_eq!(part_files(&app), Vec::<PathBuf>::new());
    let res = head(&user.client, &app.rebase(&upload.location)).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    create_ok(&app, &user, chat, 1000, None).await;
}

#[tokio::test]
async fn an_unexpired_upload_survives_a_restart_with_its_offset_and_can_be_completed() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "restart").await;
    let bytes = pattern(50_000);
    let upload = create_ok(
        &app,
        &user,
        chat,
        50_000,
        Some(&metadata(&[
            ("filename", "resumed.txt"),
            ("filetype", "text/plain"),
        ])),
    )
    .await;
    patch_ok(&user.client, &upload.location, 0, &bytes[..20_000]).await;

    app.clock.advance(chrono::TimeDelta::hours(1));
    let app = app.restart().await;
    let location = app.rebase(&upload.location);
    let res = head(&user.client, &location).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(number(&res, "upload-offset"), 20_000);
    assert_eq!(number(&res, "upload-length"), 50_000);
    // The expiry is still the creation's.
    let expires = parse_http_date(&header(&res, "upload-expires"));
    assert!(
        expires <= http_date_after(&app, app.config.upload_expiry),
        "Upload-Expires moved past the creation's"
    );

    patch_ok(&user.client, &location, 20_000, &bytes[20_000..]).await;
    let file = chat_file(&user.client, &location).await;
    assert_eq!(file["name"], json!("resumed.txt"));
    // Not UTF-8 (pattern bytes), so no charset.
    assert_eq!(file["type"], json!("text/plain"));
    assert_eq!(sha256(&download(&file).await), sha256(&bytes));
    assert_eq!(part_files(&app), Vec::<PathBuf>::new());
}

// ---------------------------------------------------------------------------------------------
// CORS and cross-site requests
// ---------------------------------------------------------------------------------------------

/// The comma-separated names of a header, lowercased.
fn names(res: &Response, name: &str) -> Vec<String> {
    header(res, name)
        .split(',')
        .map(|v| v.trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn a_cors_preflight_for_tus_requests_from_an_allowed_origin_is_allowed() {
    let app = spawn_allowing_cors().await;
    let user = app.user().await;
    let chat = app.chat(&user, "preflight").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;

    for (url, method, requested) in [
        (
            upload.location.clone(),
            "PATCH",
            "tus-resumable,upload-offset,content-type",
        ),
        (
            app.url(&uploads_path(&user, chat)),
            "POST",
            "tus-resumable,upload-length,upload-metadata,content-type",
        ),
        (upload.location.clone(), "HEAD", "tus-resumable"),
        (upload.location.clone(), "DELETE", "tus-resumable"),
    ] {
        // Without a cookie, as browsers send preflights.
        let res = send(
            helpers::client()
                .request(Method::OPTIONS, &url)
                .header("Origin", ALLOWED)
                .header("Access-Control-Request-Method", method)
                .header("Access-Control-Request-Headers", requested),
        )
        .await;
        let what = format!("preflight of {method} {url}");
        assert!(res.status().is_success(), "{what}: {}", res.status());
        assert_eq!(
            header(&res, "access-control-allow-origin"),
            ALLOWED,
            "{what}"
        );
        assert_eq!(
            header(&res, "access-control-allow-credentials"),
            "true",
            "{what}"
        );
        let methods: Vec<String> = names(&res, "access-control-allow-methods")
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        for expected in ["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"] {
            assert!(
                methods.iter().any(|m| m == expected),
                "{what}: {expected} not in {methods:?}"
            );
        }
        let headers = names(&res, "access-control-allow-headers");
        for expected in requested.split(',') {
            assert!(
                headers.iter().any(|h| h == expected),
                "{what}: {expected} not in {headers:?}"
            );
        }
    }
}

#[tokio::test]
async fn tus_answers_to_an_allowed_origin_expose_the_tus_headers() {
    let app = spawn_allowing_cors().await;
    let user = app.user().await;
    let chat = app.chat(&user, "exposed").await;
    let assert_exposes = |res: &Response, what: &str, expected: &[&str]| {
        assert_eq!(
            header(res, "access-control-allow-origin"),
            ALLOWED,
            "{what}"
        );
        let exposed = names(res, "access-control-expose-headers");
        for name in expected {
            assert!(
                exposed.iter().any(|e| e == name),
                "{what}: {name} not in Access-Control-Expose-Headers {exposed:?}"
            );
        }
    };

    let res = send(
        creation(&app, &user, chat, 10)
            .header("Origin", ALLOWED)
            .header("Sec-Fetch-Site", "same-site"),
    )
    .await;
    let upload = created(&res);
    assert_exposes(
        &res,
        "POST",
        &[
            "location",
            "upload-offset",
            "upload-expires",
            "tus-resumable",
        ],
    );

    let res = send(
        patching(&user.client, &upload.location, 0, b"abc")
            .header("Origin", ALLOWED)
            .header("Sec-Fetch-Site", "same-site"),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_exposes(
        &res,
        "PATCH",
        &["upload-offset", "upload-expires", "tus-resumable"],
    );

    let res = send(tus(user.client.head(&upload.location)).header("Origin", ALLOWED)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_exposes(
        &res,
        "HEAD",
        &["upload-offset", "upload-length", "tus-resumable"],
    );
}

#[tokio::test]
async fn cross_site_tus_requests_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "cross-site").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;
    patch_ok(&user.client, &upload.location, 0, b"abc").await;
    let parts = part_files(&app);

    let refused = [
        patching(&user.client, &upload.location, 3, b"def").header("Origin", FOREIGN),
        patching(&user.client, &upload.location, 3, b"def").header("Sec-Fetch-Site", "cross-site"),
        // Before the session is looked at.
        patching(&helpers::client(), &upload.location, 3, b"def").header("Origin", FOREIGN),
        creation(&app, &user, chat, 10).header("Origin", FOREIGN),
        tus(user.client.delete(&upload.location)).header("Origin", FOREIGN),
    ];
    for request in refused {
        let res = send(request).await;
        assert_tus(&res, "a cross-site request");
        assert_eq!(assert_error(res, StatusCode::FORBIDDEN).await, REFUSED);
    }
    assert_eq!(offset_of(&user.client, &upload.location).await, 3);
    assert_eq!(part_files(&app), parts);

    // The service's own origin passes.
    patch_ok(&user.client, &upload.location, 3, b"def").await;
    let res =
        send(patching(&user.client, &upload.location, 6, b"ghij").header("Origin", &app.address))
            .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}
