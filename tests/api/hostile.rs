//! Hostile clients: cross-site requests, wrong media types, oversized and malformed bodies,
//! headers and URLs, slow connections, evil file names and traversal in download keys.
//!
//! Where the exact status is the framework's choice (400 or 431, say) the tests accept the range,
//! but never a 5xx and never a hang. Requests that an HTTP client library would refuse or
//! normalise are written by hand on a raw TCP connection.

use std::time::{Duration, Instant};

use percent_encoding::percent_decode_str;
use reqwest::header::{CONTENT_TYPE, COOKIE};
use reqwest::multipart::{Form, Part};
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{self, PASSWORD, TestApp, TestUser, assert_error};

const BOUNDARY: &str = "hostileTestBoundary0123456789abcdef";
const REFUSED: &str = "Cross-site request refused";
/// How long any single exchange may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 on a TCP connection
// ---------------------------------------------------------------------------------------------

/// What came back on a raw connection.
struct Raw {
    bytes: Vec<u8>,
    /// The server closed (or reset) the connection before the deadline.
    closed: bool,
    elapsed: Duration,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Raw {
    fn head(&self) -> String {
        let end = find(&self.bytes, b"\r\n\r\n").unwrap_or(self.bytes.len());
        String::from_utf8_lossy(&self.bytes[..end]).into_owned()
    }

    /// The status of the first response, if one was written.
    fn status(&self) -> Option<u16> {
        let head = self.head();
        let mut words = head.lines().next()?.split(' ');
        if !words.next()?.starts_with("HTTP/1.") {
            return None;
        }
        words.next()?.parse().ok()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head().lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    /// The first response's body (by `Content-Length`, else everything after the head).
    fn body(&self) -> &[u8] {
        let Some(start) = find(&self.bytes, b"\r\n\r\n").map(|i| i + 4) else {
            return &[];
        };
        let rest = &self.bytes[start..];
        match self
            .header("content-length")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(len) => &rest[..len.min(rest.len())],
            None => rest,
        }
    }

    /// A one-line description for failure messages.
    fn describe(&self) -> String {
        let body = String::from_utf8_lossy(self.body());
        let body: String = body.chars().take(200).collect();
        format!(
            "status {:?}, closed {}, after {:?}, body {body:?}",
            self.status(),
            self.closed,
            self.elapsed
        )
    }
}

fn host(app: &TestApp) -> &str {
    app.address.trim_start_matches("http://")
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(host(app))
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", app.address))
}

/// Reads until the server closes the connection or `wait` has passed since `started`.
async fn read_until_closed(stream: &mut TcpStream, started: Instant, wait: Duration) -> Raw {
    let deadline = tokio::time::Instant::from_std(started + wait);
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    };
    Raw {
        bytes,
        closed,
        elapsed: started.elapsed(),
    }
}

/// Writes `request` (a server that answers early may stop reading: write errors are ignored)
/// and reads whatever comes back until the connection closes or [`HANG`] passes.
async fn exchange(app: &TestApp, request: &[u8]) -> Raw {
    let started = Instant::now();
    let mut stream = connect(app).await;
    let _ = tokio::time::timeout(HANG, stream.write_all(request)).await;
    read_until_closed(&mut stream, started, HANG).await
}

/// A complete HTTP/1.1 request with `Host`, `Connection: close` and, when there is a body,
/// `Content-Length`.
fn request(
    app: &TestApp,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        host(app)
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

async fn raw_get(app: &TestApp, target: &str, headers: &[(&str, String)]) -> Raw {
    exchange(app, &request(app, "GET", target, headers, b"")).await
}

/// Checks the contract's error shape on a raw response; returns `data.message`.
fn raw_error(raw: &Raw) -> Result<String, String> {
    let status = raw
        .status()
        .ok_or_else(|| format!("no response: {}", raw.describe()))?;
    if raw.header("x-request-id").is_none() {
        return Err(format!("no X-Request-Id: {}", raw.describe()));
    }
    let content_type = raw.header("content-type").unwrap_or_default();
    if !content_type.starts_with("application/json") {
        return Err(format!("content type {content_type:?}: {}", raw.describe()));
    }
    let body: Value = serde_json::from_slice(raw.body())
        .map_err(|e| format!("body is not JSON ({e}): {}", raw.describe()))?;
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or_default();
    if body["statusCode"] != json!(status) || body["statusMessage"] != json!(reason) {
        return Err(format!("not the contract's error shape: {body}"));
    }
    body["data"]["message"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no data.message in {body}"))
}

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// A multipart body whose parts are (headers, bytes), exactly as given.
fn raw_multipart(parts: &[(Vec<u8>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (headers, bytes) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        body.extend_from_slice(headers);
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// The headers of a `file` part whose filename parameter holds `wire` byte for byte.
fn file_part_headers(wire: &[u8], mime: &str) -> Vec<u8> {
    let mut headers = b"Content-Disposition: form-data; name=\"file\"; filename=\"".to_vec();
    headers.extend_from_slice(wire);
    headers.extend_from_slice(format!("\"\r\nContent-Type: {mime}").as_bytes());
    headers
}

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

fn files_path(user: &TestUser, chat: i64) -> String {
    format!("/api/users/{}/chats/{chat}/files", user.id)
}

async fn post_multipart(app: &TestApp, user: &TestUser, chat: i64, body: Vec<u8>) -> Response {
    user.client
        .post(app.url(&files_path(user, chat)))
        .header(CONTENT_TYPE, multipart_type())
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("upload: {e}"))
}

async fn json_of(res: Response) -> Value {
    res.json()
        .await
        .unwrap_or_else(|e| panic!("body is not JSON: {e}"))
}

async fn listing(app: &TestApp, user: &TestUser, chat: i64) -> Vec<Value> {
    let res = app.list_files(user, chat).await;
    assert_eq!(res.status(), StatusCode::OK, "listing chat {chat}");
    json_of(res).await["chatFiles"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn chat_ids(app: &TestApp, user: &TestUser) -> Vec<i64> {
    let res = user
        .client
        .get(app.url(&format!("/api/users/{}/chats", user.id)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("list chats: {e}"));
    assert_eq!(res.status(), StatusCode::OK, "listing chats");
    json_of(res).await["chats"]
        .as_array()
        .map(|chats| chats.iter().filter_map(|c| c["id"].as_i64()).collect())
        .unwrap_or_default()
}

fn str_field<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string in {value}"))
}

fn id_of(value: &Value) -> i64 {
    value["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no id in {value}"))
}

/// Polls until the storage holds exactly `expected` things ([`TestApp::stored`]: files on disk,
/// objects and open uploads in a bucket), or a few seconds pass; returns what is there at the
/// end.
async fn settled_storage(app: &TestApp, expected: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let stored = app.stored().await;
        if stored.len() == expected || Instant::now() >= deadline {
            return stored;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A user with one chat holding one file, and the raw value of a session cookie.
struct Fixture {
    user: TestUser,
    chat: i64,
    file: Value,
    /// Our own signed `/files/{key}` URL of the file: the listing's, except with direct
    /// downloads, whose presigned URLs the store answers (the tests here are about our server).
    route_url: String,
    cookie: String,
}

impl Fixture {
    async fn new(app: &TestApp, content: &[u8]) -> Fixture {
        let user = app.user().await;
        let chat = app.chat(&user, "fixture").await;
        let file = app
            .upload_ok(&user, chat, &[("fixture.txt", "text/plain", content)])
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no file uploaded"));
        let cookie = app.session_cookie(&user).await;
        let route_url = app.route_url(&file, false);
        Fixture {
            user,
            chat,
            file,
            route_url,
            cookie,
        }
    }

    fn file_id(&self) -> i64 {
        id_of(&self.file)
    }

    /// Our signed URL of the file.
    fn url(&self) -> &str {
        &self.route_url
    }

    /// `(path, query)` of our signed URL.
    fn signed(&self) -> (String, String) {
        let url = reqwest::Url::parse(self.url()).unwrap_or_else(|e| panic!("{e}"));
        (
            url.path().to_owned(),
            url.query().unwrap_or_default().to_owned(),
        )
    }

    fn key(&self) -> String {
        let (path, _) = self.signed();
        path.trim_start_matches("/files/").to_owned()
    }

    fn cookie_header(&self) -> (&'static str, String) {
        ("Cookie", format!("neptun-session={}", self.cookie))
    }
}

fn unique_email() -> String {
    format!("hostile-{}@example.com", uuid::Uuid::new_v4())
}

// ---------------------------------------------------------------------------------------------
// 1. Cross-site requests
// ---------------------------------------------------------------------------------------------

const NEW_PASSWORD: &str = "another horse battery";

/// The state-changing routes, by name.
const STATE_CHANGING: [&str; 8] = [
    "sign-up",
    "login",
    "logout",
    "create chat",
    "delete chat",
    "upload",
    "delete file",
    "change password",
];

/// A fresh request to the named state-changing route, acting on the fixture.
fn state_changing(app: &TestApp, fx: &Fixture, route: &str, signup_email: &str) -> RequestBuilder {
    let user = &fx.user;
    let chats = format!("/api/users/{}/chats", user.id);
    match route {
        "sign-up" => helpers::client().post(app.url("/api/auth/sign-up")).json(
            &json!({"email": signup_email, "password": PASSWORD, "confirmPassword": PASSWORD}),
        ),
        "login" => helpers::client()
            .post(app.url("/api/auth/login"))
            .json(&json!({"email": user.email, "password": PASSWORD})),
        "logout" => user.client.post(app.url("/api/auth/logout")),
        "create chat" => user
            .client
            .post(app.url(&chats))
            .json(&json!({"name": "csrf"})),
        "delete chat" => user.client.delete(app.url(&format!("{chats}/{}", fx.chat))),
        "upload" => {
            let part = Part::bytes(b"csrf".to_vec()).file_name("csrf.txt");
            user.client
                .post(app.url(&files_path(user, fx.chat)))
                .multipart(Form::new().part("file", part))
        }
        "delete file" => {
            user.client
                .delete(app.url(&format!("{chats}/{}/files/{}", fx.chat, fx.file_id())))
        }
        "change password" => user
            .client
            .post(app.url("/api/auth/password"))
            .json(&json!({
                "currentPassword": PASSWORD,
                "password": NEW_PASSWORD,
                "confirmPassword": NEW_PASSWORD,
            })),
        other => panic!("unknown route {other}"),
    }
}

/// Whether `res` is the contract's 403 for a cross-site request.
async fn refusal(res: Response, fresh_client: bool) -> Result<(), String> {
    let status = res.status();
    let had_cookie = res.cookies().any(|c| c.name() == "neptun-session");
    let has_id = res.headers().contains_key("x-request-id");
    let body = res.text().await.unwrap_or_default();
    if status != StatusCode::FORBIDDEN {
        return Err(format!("answered {status} {body}"));
    }
    let value: Value = serde_json::from_str(&body).map_err(|_| format!("403 body {body}"))?;
    let shaped = value["statusCode"] == json!(403)
        && value["statusMessage"] == json!("Forbidden")
        && value["data"]["message"] == json!(REFUSED);
    if !shaped || !has_id {
        return Err(format!("403 but not the expected refusal: {body}"));
    }
    if had_cookie && fresh_client {
        return Err("a refused request set a session cookie".into());
    }
    Ok(())
}

/// Header sets that show a browser request from a page that is not this service.
fn cross_site_headers(app: &TestApp) -> Vec<Vec<(&'static str, String)>> {
    let port = host(app).rsplit(':').next().unwrap_or_default().to_owned();
    vec![
        vec![("Sec-Fetch-Site", "cross-site".into())],
        vec![("Sec-Fetch-Site", "same-site".into())],
        vec![("Sec-Fetch-Site", "CROSS-SITE".into())],
        // A matching Origin does not excuse what Sec-Fetch-Site says.
        vec![
            ("Sec-Fetch-Site", "cross-site".into()),
            ("Origin", app.address.clone()),
        ],
        vec![("Origin", "https://evil.example".into())],
        vec![("Origin", "null".into())],
        // Another host name for the same machine is another origin.
        vec![("Origin", format!("http://localhost:{port}"))],
        // Another port, another scheme.
        vec![("Origin", "http://127.0.0.1:1".into())],
        vec![("Origin", format!("https://127.0.0.1:{port}"))],
        // Prefix and suffix tricks on the real origin.
        vec![("Origin", format!("{}.evil.example", app.address))],
        vec![("Origin", format!("http://evil.example/{}", host(app)))],
        vec![("Origin", format!("http://evil@{}", host(app)))],
    ]
}

#[tokio::test]
async fn every_state_changing_route_refuses_a_cross_site_request_with_403_and_does_nothing() {
    let app = TestApp::spawn().await;
    let fx = Fixture::new(&app, b"keep me").await;
    let signup_email = unique_email();
    let mut failures = Vec::new();
    for headers in cross_site_headers(&app) {
        for route in STATE_CHANGING {
            let mut req = state_changing(&app, &fx, route, &signup_email);
            for (name, value) in &headers {
                req = req.header(*name, value);
            }
            let res = req.send().await.unwrap_or_else(|e| panic!("{route}: {e}"));
            if let Err(why) = refusal(res, matches!(route, "sign-up" | "login")).await {
                failures.push(format!("{route} with {headers:?}: {why}"));
            }
        }
    }

    // Nothing happened: still logged in, the chat and its one file are there, nothing else was
    // stored, the password is unchanged and the refused sign-up's email is still free.
    let res = fx
        .user
        .client
        .get(app.url("/api/auth/check"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("check: {e}"));
    if res.status() != StatusCode::OK {
        failures.push(format!(
            "a refused logout ended the session ({})",
            res.status()
        ));
    }
    // Look through a fresh login in case the fixture's session is gone.
    let mut observer = None;
    for password in [PASSWORD, NEW_PASSWORD] {
        let client = helpers::client();
        let res = client
            .post(app.url("/api/auth/login"))
            .json(&json!({"email": fx.user.email, "password": password}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("login: {e}"));
        if res.status() == StatusCode::OK {
            observer = Some(TestUser {
                id: fx.user.id,
                email: fx.user.email.clone(),
                client,
            });
            break;
        }
        failures.push(format!(
            "password {password:?} does not log in ({})",
            res.status()
        ));
    }
    let observer = observer.unwrap_or_else(|| panic!("cannot log in: {failures:#?}"));
    let chats = chat_ids(&app, &observer).await;
    if chats != [fx.chat] {
        failures.push(format!("chats changed: {chats:?}"));
    }
    if chats.contains(&fx.chat) {
        let files = listing(&app, &observer, fx.chat).await;
        if files.iter().map(id_of).collect::<Vec<_>>() != [fx.file_id()] {
            failures.push(format!("files changed: {files:?}"));
        }
    }
    let stored = app.stored().await;
    if stored.len() != 1 {
        failures.push(format!("stored files: {stored:?}"));
    }
    let res = helpers::client()
        .post(app.url("/api/auth/sign-up"))
        .json(&json!({"email": signup_email, "password": PASSWORD, "confirmPassword": PASSWORD}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("sign-up: {e}"));
    if res.status() != StatusCode::CREATED {
        failures.push(format!(
            "a refused sign-up took the email ({})",
            res.status()
        ));
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_refused_cross_site_login_sets_no_cookie_and_does_not_log_in() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let client = helpers::client();
    let res = client
        .post(app.url("/api/auth/login"))
        .header("Origin", "https://evil.example")
        .json(&json!({"email": user.email, "password": PASSWORD}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("login: {e}"));
    assert!(
        !res.cookies().any(|c| c.name() == "neptun-session"),
        "a refused login set a session cookie"
    );
    assert_eq!(assert_error(res, StatusCode::FORBIDDEN).await, REFUSED);
    let res = client
        .get(app.url("/api/auth/check"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("check: {e}"));
    assert_error(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn a_refused_cross_site_upload_leaves_nothing_on_disk() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "csrf").await;
    let body = raw_multipart(&[(
        file_part_headers(b"big.bin", "application/octet-stream"),
        &vec![7u8; 300 * 1024],
    )]);
    for (name, value) in [("Sec-Fetch-Site", "cross-site"), ("Origin", "null")] {
        let res = user
            .client
            .post(app.url(&files_path(&user, chat)))
            .header(CONTENT_TYPE, multipart_type())
            .header(name, value)
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("upload: {e}"));
        assert_eq!(
            assert_error(res, StatusCode::FORBIDDEN).await,
            REFUSED,
            "{name}"
        );
    }
    let stored = app.stored().await;
    assert!(stored.is_empty(), "{stored:?}");
    assert!(listing(&app, &user, chat).await.is_empty());
}

/// Header sets a same-origin page, a typed-in URL or a non-browser client sends.
fn same_origin_headers(app: &TestApp) -> Vec<Vec<(&'static str, String)>> {
    vec![
        vec![],
        vec![("Sec-Fetch-Site", "same-origin".into())],
        vec![("Sec-Fetch-Site", "none".into())],
        vec![("Origin", app.address.clone())],
        vec![
            ("Sec-Fetch-Site", "same-origin".into()),
            ("Origin", app.address.clone()),
        ],
    ]
}

fn expect(
    failures: &mut Vec<String>,
    headers: &[(&str, String)],
    what: &str,
    res: &Response,
    expected: StatusCode,
) {
    if res.status() != expected {
        failures.push(format!(
            "{what} with {headers:?}: {} (expected {expected})",
            res.status()
        ));
    }
}

async fn send_with(req: RequestBuilder, headers: &[(&'static str, String)]) -> Response {
    let mut req = req;
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("request with {headers:?}: {e}"))
}

#[tokio::test]
async fn same_origin_requests_and_clients_without_fetch_headers_pass_on_every_route() {
    let app = TestApp::spawn().await;
    let mut failures = Vec::new();
    for headers in same_origin_headers(&app) {
        let client = helpers::client();
        let email = unique_email();
        let res = send_with(
            client
                .post(app.url("/api/auth/sign-up"))
                .json(&json!({"email": email, "password": PASSWORD, "confirmPassword": PASSWORD})),
            &headers,
        )
        .await;
        expect(
            &mut failures,
            &headers,
            "sign-up",
            &res,
            StatusCode::CREATED,
        );
        let user_id = json_of(res).await["user"]["id"]
            .as_i64()
            .unwrap_or_default();
        let res = send_with(
            client
                .post(app.url("/api/auth/login"))
                .json(&json!({"email": email, "password": PASSWORD})),
            &headers,
        )
        .await;
        expect(&mut failures, &headers, "login", &res, StatusCode::OK);
        let chats = format!("/api/users/{user_id}/chats");
        let res = send_with(
            client.post(app.url(&chats)).json(&json!({"name": "mine"})),
            &headers,
        )
        .await;
        expect(
            &mut failures,
            &headers,
            "create chat",
            &res,
            StatusCode::CREATED,
        );
        let chat = json_of(res).await["chat"]["id"]
            .as_i64()
            .unwrap_or_default();
        let part = Part::bytes(b"ok".to_vec()).file_name("ok.txt");
        let res = send_with(
            client
                .post(app.url(&format!("{chats}/{chat}/files")))
                .multipart(Form::new().part("file", part)),
            &headers,
        )
        .await;
        expect(&mut failures, &headers, "upload", &res, StatusCode::CREATED);
        let file = json_of(res).await["chatFiles"][0]["id"]
            .as_i64()
            .unwrap_or_default();
        let res = send_with(
            client.delete(app.url(&format!("{chats}/{chat}/files/{file}"))),
            &headers,
        )
        .await;
        expect(
            &mut failures,
            &headers,
            "delete file",
            &res,
            StatusCode::NO_CONTENT,
        );
        let res = send_with(client.delete(app.url(&format!("{chats}/{chat}"))), &headers).await;
        expect(
            &mut failures,
            &headers,
            "delete chat",
            &res,
            StatusCode::NO_CONTENT,
        );
        let res = send_with(
            client.post(app.url("/api/auth/password")).json(&json!({
                "currentPassword": PASSWORD,
                "password": NEW_PASSWORD,
                "confirmPassword": NEW_PASSWORD,
            })),
            &headers,
        )
        .await;
        if !res.status().is_success() {
            failures.push(format!(
                "change password with {headers:?}: {}",
                res.status()
            ));
        }
        let res = send_with(client.post(app.url("/api/auth/logout")), &headers).await;
        expect(&mut failures, &headers, "logout", &res, StatusCode::OK);
        let body = json_of(res).await;
        if body != json!(true) {
            failures.push(format!("logout with {headers:?} answered {body}"));
        }
    }
    let stored = app.stored().await;
    assert!(stored.is_empty(), "{stored:?}");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn reads_are_never_refused_as_cross_site() {
    let app = TestApp::spawn().await;
    let fx = Fixture::new(&app, b"readable").await;
    let user = &fx.user;
    let reads = [
        format!("/api/users/{}/chats", user.id),
        files_path(user, fx.chat),
        format!("{}/{}", files_path(user, fx.chat), fx.file_id()),
        "/api/auth/check".to_owned(),
    ];
    let foreign = [
        ("Sec-Fetch-Site", "cross-site"),
        ("Origin", "https://evil.example"),
    ];
    for path in &reads {
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            let mut req = user.client.request(method.clone(), app.url(path));
            for (name, value) in foreign {
                req = req.header(name, value);
            }
            let res = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
            if method == reqwest::Method::HEAD && path.contains("/chats") {
                // HEAD on the API's listing routes is not in the contract: only no refusal.
                assert_ne!(res.status(), StatusCode::FORBIDDEN, "HEAD {path}");
                continue;
            }
            assert_eq!(res.status(), StatusCode::OK, "{method} {path}");
        }
    }
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let mut req = helpers::client().request(method.clone(), fx.url());
        for (name, value) in foreign {
            req = req.header(name, value);
        }
        let res = req.send().await.unwrap_or_else(|e| panic!("download: {e}"));
        assert_eq!(res.status(), StatusCode::OK, "{method} download");
    }
}

#[tokio::test]
async fn with_a_public_url_its_origin_is_the_services_own() {
    let public = "https://chat.example.com/prefix/";
    let app = TestApp::spawn_with(|c| {
        c.public_url = Some(reqwest::Url::parse(public).unwrap_or_else(|e| panic!("{e}")));
    })
    .await;
    let user = app.user().await;
    // The cookie is Secure now, so a cookie store would not send it over plain http.
    let cookie = format!("neptun-session={}", app.session_cookie(&user).await);
    let create = |origin: &str| {
        helpers::client()
            .post(app.url(&format!("/api/users/{}/chats", user.id)))
            .header(COOKIE, &cookie)
            .header("Origin", origin)
            .json(&json!({"name": "proxied"}))
            .send()
    };
    let res = create("https://chat.example.com")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "the public origin is refused"
    );
    for foreign in [
        "https://chat.example.com:8443",
        "http://chat.example.com",
        "https://evil.example",
        "https://chat.example.com.evil.example",
        "null",
    ] {
        let res = create(foreign).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            assert_error(res, StatusCode::FORBIDDEN).await,
            REFUSED,
            "{foreign}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. JSON routes: media type, size, syntax
// ---------------------------------------------------------------------------------------------

/// The JSON routes: (name, client, path, a valid body).
fn json_routes(app: &TestApp, user: &TestUser) -> Vec<(&'static str, Client, String, Value)> {
    vec![
        (
            "sign-up",
            helpers::client(),
            app.url("/api/auth/sign-up"),
            json!({"email": unique_email(), "password": PASSWORD, "confirmPassword": PASSWORD}),
        ),
        (
            "login",
            helpers::client(),
            app.url("/api/auth/login"),
            json!({"email": user.email, "password": PASSWORD}),
        ),
        (
            "create chat",
            user.client.clone(),
            app.url(&format!("/api/users/{}/chats", user.id)),
            json!({"name": "json"}),
        ),
        (
            "change password",
            user.client.clone(),
            app.url("/api/auth/password"),
            json!({"currentPassword": PASSWORD, "password": NEW_PASSWORD, "confirmPassword": NEW_PASSWORD}),
        ),
    ]
}

async fn post_body(
    client: &Client,
    url: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Response {
    let mut req = client.post(url).body(body);
    if let Some(content_type) = content_type {
        req = req.header(CONTENT_TYPE, content_type);
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// Checks the contract's error shape with `expected` status, for collecting failures.
async fn shaped(res: Response, expected: StatusCode) -> Result<String, String> {
    let status = res.status();
    let has_id = res.headers().contains_key("x-request-id");
    let content_type = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = res.text().await.unwrap_or_default();
    if status != expected {
        return Err(format!("answered {status} {body}"));
    }
    let value: Value = serde_json::from_str(&body).map_err(|_| format!("body {body:?}"))?;
    if !has_id
        || !content_type.starts_with("application/json")
        || value["statusCode"] != json!(expected.as_u16())
    {
        return Err(format!(
            "not the contract's error shape: {content_type} {body}"
        ));
    }
    Ok(value["data"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

#[tokio::test]
async fn json_routes_refuse_other_media_types_with_415() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let mut failures = Vec::new();
    for (route, client, url, body) in json_routes(&app, &user) {
        let json_bytes = serde_json::to_vec(&body).unwrap_or_default();
        let form = "email=a%40example.com&password=correct+horse+battery"
            .as_bytes()
            .to_vec();
        let multipart = multipart_type();
        let attempts: [(Option<&str>, Vec<u8>); 6] = [
            (Some("text/plain"), json_bytes.clone()),
            (Some("text/plain;charset=UTF-8"), json_bytes.clone()),
            (Some("application/x-www-form-urlencoded"), form),
            (Some(&multipart), json_bytes.clone()),
            (Some("application/jsonp"), json_bytes.clone()),
            (None, json_bytes.clone()),
        ];
        for (content_type, bytes) in attempts {
            let res = post_body(&client, &url, content_type, bytes).await;
            if let Err(why) = shaped(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await {
                failures.push(format!("{route} with {content_type:?}: {why}"));
            }
        }
    }
    assert!(app.stored().await.is_empty());
    assert_eq!(
        chat_ids(&app, &user).await,
        Vec::<i64>::new(),
        "a chat was created"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_charset_parameter_on_application_json_is_accepted() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    for content_type in [
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
    ] {
        let body = serde_json::to_vec(&json!({"name": "charset"})).unwrap_or_default();
        let res = post_body(
            &user.client,
            &app.url(&format!("/api/users/{}/chats", user.id)),
            Some(content_type),
            body,
        )
        .await;
        assert_eq!(res.status(), StatusCode::CREATED, "{content_type}");
        let body = serde_json::to_vec(&json!({"email": user.email, "password": PASSWORD}))
            .unwrap_or_default();
        let res = post_body(
            &helpers::client(),
            &app.url("/api/auth/login"),
            Some(content_type),
            body,
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK, "{content_type}");
    }
}

#[tokio::test]
async fn a_json_body_over_16_kib_is_413_whether_or_not_its_length_is_announced() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let mut failures = Vec::new();
    let padding = "a".repeat(16 * 1024 + 1);
    for (route, client, url, mut body) in json_routes(&app, &user) {
        if let Some(object) = body.as_object_mut() {
            object.insert("padding".into(), json!(padding));
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let res = post_body(&client, &url, Some("application/json"), bytes.clone()).await;
        if let Err(why) = shaped(res, StatusCode::PAYLOAD_TOO_LARGE).await {
            failures.push(format!("{route} with Content-Length: {why}"));
        }
        // Chunked: the size is only found out while reading.
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = bytes
            .chunks(4096)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let stream = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
        let res = post_body(&client, &url, Some("application/json"), stream).await;
        if let Err(why) = shaped(res, StatusCode::PAYLOAD_TOO_LARGE).await {
            failures.push(format!("{route} chunked: {why}"));
        }
    }
    // A body of exactly 16 KiB is still fine.
    let name_len = 16 * 1024 - r#"{"name":"x","pad":""}"#.len();
    let body = format!(r#"{{"name":"x","pad":"{}"}}"#, "b".repeat(name_len));
    assert_eq!(body.len(), 16 * 1024);
    let res = post_body(
        &user.client,
        &app.url(&format!("/api/users/{}/chats", user.id)),
        Some("application/json"),
        body,
    )
    .await;
    if res.status() != StatusCode::CREATED {
        failures.push(format!("a 16 KiB body answered {}", res.status()));
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn malformed_json_is_400_in_the_error_shape() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let mut failures = Vec::new();
    let deep = format!("{}{}", "[".repeat(8000), "]".repeat(8000));
    let bodies = [
        "{\"email\":".to_owned(),
        "not json".to_owned(),
        "{\"name\": \"x\"}}".to_owned(),
        "\u{feff}{}".to_owned(),
        "{\"name\": \"\\ud800\"}".to_owned(),
        "{\"name\": \"a\u{0}b\"}".to_owned(),
        "[]".to_owned(),
        String::new(),
        deep,
    ];
    for (route, client, url, _) in json_routes(&app, &user) {
        for body in &bodies {
            let res = post_body(&client, &url, Some("application/json"), body.clone()).await;
            if let Err(why) = shaped(res, StatusCode::BAD_REQUEST).await {
                let shown: String = body.chars().take(40).collect();
                failures.push(format!("{route} with {shown:?}: {why}"));
            }
        }
    }
    assert_eq!(
        chat_ids(&app, &user).await,
        Vec::<i64>::new(),
        "a chat was created"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Bounds on uploads
// ---------------------------------------------------------------------------------------------

fn tiny_file_parts(count: usize) -> Vec<(Vec<u8>, &'static [u8])> {
    (0..count)
        .map(|i| {
            (
                file_part_headers(format!("f{i}.txt").as_bytes(), "text/plain"),
                &b"x"[..],
            )
        })
        .collect()
}

#[tokio::test]
async fn exactly_100_parts_are_accepted() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "hundred").await;
    let res = post_multipart(&app, &user, chat, raw_multipart(&tiny_file_parts(100))).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(listing(&app, &user, chat).await.len(), 100);
    assert_eq!(app.stored().await.len(), 100);
}

#[tokio::test]
async fn more_than_100_parts_is_413_mentioning_parts_and_keeps_nothing() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "too many").await;
    let mut failures = Vec::new();

    let files_101 = raw_multipart(&tiny_file_parts(101));
    let fields: Vec<(Vec<u8>, &[u8])> = (0..101)
        .map(|i| {
            (
                format!("Content-Disposition: form-data; name=\"note{i}\"").into_bytes(),
                &b"n"[..],
            )
        })
        .collect();
    let fields_101 = raw_multipart(&fields);
    let mut mixed: Vec<(Vec<u8>, &[u8])> = tiny_file_parts(50);
    mixed.extend(fields.into_iter().take(51));
    let mixed_101 = raw_multipart(&mixed);
    let thousands = raw_multipart(&tiny_file_parts(5000));

    for (what, body) in [
        ("101 file parts", files_101),
        ("101 form fields", fields_101),
        ("50 files and 51 fields", mixed_101),
        ("5000 tiny file parts", thousands),
    ] {
        let res = post_multipart(&app, &user, chat, body).await;
        match shaped(res, StatusCode::PAYLOAD_TOO_LARGE).await {
            Ok(message) if message.to_lowercase().contains("part") => {}
            Ok(message) => failures.push(format!(
                "{what}: message {message:?} does not mention parts"
            )),
            Err(why) => failures.push(format!("{what}: {why}")),
        }
        let stored = app.stored().await;
        if !stored.is_empty() {
            failures.push(format!("{what}: left {stored:?}"));
        }
    }
    assert!(
        listing(&app, &user, chat).await.is_empty(),
        "files were listed"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_100_kib_file_name_is_cut_to_255_bytes_or_refused_never_a_server_error() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "long names").await;
    let ascii = format!("{}.pdf", "n".repeat(100 * 1024));
    let wide = format!("{}.txt", "界".repeat(100 * 1024 / 3));
    for (raw, expected) in [
        (ascii, format!("{}.pdf", "n".repeat(251))),
        (wide, format!("{}.txt", "界".repeat(83))),
    ] {
        let before = app.stored().await.len();
        let body = raw_multipart(&[(file_part_headers(raw.as_bytes(), "text/plain"), b"long")]);
        let res = post_multipart(&app, &user, chat, body).await;
        let status = res.status();
        eprintln!("a {} byte file name: {status}", raw.len());
        assert!(!status.is_server_error(), "{status}");
        if status == StatusCode::CREATED {
            let body = json_of(res).await;
            let name = str_field(&body["chatFiles"][0], "name");
            assert!(name.len() <= 255, "{} bytes", name.len());
            assert_eq!(name, expected);
            assert_eq!(app.stored().await.len(), before + 1);
        } else {
            assert_error(res, StatusCode::BAD_REQUEST).await;
            assert_eq!(app.stored().await.len(), before);
        }
    }
}

/// The head of a raw multipart upload with the fixture's cookie; the body is the caller's.
fn upload_head(app: &TestApp, fx: &Fixture, framing: &str) -> Vec<u8> {
    let (cookie, value) = fx.cookie_header();
    format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\n{cookie}: {value}\r\nContent-Type: {}\r\n{framing}\r\n\r\n",
        files_path(&fx.user, fx.chat),
        host(app),
        multipart_type()
    )
    .into_bytes()
}

/// A part's opening and `len` bytes of its content, with no closing boundary.
fn open_part(len: usize) -> Vec<u8> {
    let mut body = format!("--{BOUNDARY}\r\n").into_bytes();
    body.extend_from_slice(&file_part_headers(b"cut.bin", "application/octet-stream"));
    body.extend_from_slice(b"\r\n\r\n");
    body.extend(std::iter::repeat_n(b'z', len));
    body
}

/// After a refused or abandoned upload: 400 in the contract's shape or no answer at all.
fn bad_request_or_closed(what: &str, raw: &Raw, failures: &mut Vec<String>) {
    eprintln!("{what}: {}", raw.describe());
    match raw.status() {
        None if raw.closed => {}
        None => failures.push(format!(
            "{what}: no answer and not closed: {}",
            raw.describe()
        )),
        Some(400) => {
            if let Err(why) = raw_error(raw) {
                failures.push(format!("{what}: {why}"));
            }
        }
        Some(_) => failures.push(format!("{what}: {}", raw.describe())),
    }
}

#[tokio::test]
async fn a_truncated_multipart_body_is_400_or_dropped_and_leaves_nothing_behind() {
    // In a bucket, a file goes up part by part (8 MiB) while it arrives and nothing shows
    // before the first part is full: a part of 9 MiB leaves a multipart upload open there, as
    // a temp file is on disk, for the server to abort.
    let in_bucket = !matches!(helpers::backend(), helpers::Backend::Local);
    let app = TestApp::spawn_with(|config| {
        if in_bucket {
            config.max_file_size = 16 * 1024 * 1024;
        }
    })
    .await;
    let fx = Fixture::new(&app, b"already here").await;
    let mut failures = Vec::new();
    let part = open_part(if in_bucket { 9 << 20 } else { 200 << 10 });
    let mut promised = upload_head(
        &app,
        &fx,
        &format!("Content-Length: {}", part.len() + 1024 * 1024),
    );
    promised.extend_from_slice(&part);

    // The client vanishes mid-part, once the server has started storing it.
    let mut stream = connect(&app).await;
    let _ = stream.write_all(&promised).await;
    let started = settled_storage(&app, 2).await;
    drop(stream);
    eprintln!(
        "vanished mid-part: {} files in storage while the part was open",
        started.len()
    );

    // The HTTP body is complete but the multipart inside it never closes.
    let mut req = upload_head(
        &app,
        &fx,
        &format!("Content-Length: {}\r\nConnection: close", part.len()),
    );
    req.extend_from_slice(&part);
    let raw = exchange(&app, &req).await;
    bad_request_or_closed("no closing boundary", &raw, &mut failures);
    if raw.status().is_none() {
        failures.push(format!(
            "no closing boundary: a complete HTTP body got no answer: {}",
            raw.describe()
        ));
    }

    // The same, chunked.
    let mut req = upload_head(&app, &fx, "Transfer-Encoding: chunked\r\nConnection: close");
    for chunk in part.chunks(8192) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let raw = exchange(&app, &req).await;
    bad_request_or_closed("chunked, no closing boundary", &raw, &mut failures);

    // Fewer bytes than Content-Length promised, then the client stops writing.
    let started = Instant::now();
    let mut stream = connect(&app).await;
    let _ = stream.write_all(&promised).await;
    let _ = stream.shutdown().await;
    let raw = read_until_closed(&mut stream, started, HANG).await;
    bad_request_or_closed("half-closed mid-part", &raw, &mut failures);

    let stored = settled_storage(&app, 1).await;
    if stored.len() != 1 {
        failures.push(format!("left behind: {stored:?}"));
    }
    assert_eq!(
        listing(&app, &fx.user, fx.chat).await.len(),
        1,
        "a truncated upload was listed"
    );
    // The server is still well, and nothing turned up late.
    app.upload_ok(&fx.user, fx.chat, &[("after.txt", "text/plain", b"fine")])
        .await;
    let stored = app.stored().await;
    if stored.len() != 2 {
        failures.push(format!("after one more upload: {stored:?}"));
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_part_header_that_never_ends_is_refused_in_time_and_keeps_nothing() {
    let app = TestApp::spawn().await;
    let fx = Fixture::new(&app, b"before").await;
    // 16 MiB of file name and no blank line: the server must give up on it, not buffer it all.
    let mut body =
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"")
            .into_bytes();
    body.extend(std::iter::repeat_n(b'a', 16 * 1024 * 1024));
    let mut req = upload_head(
        &app,
        &fx,
        &format!("Content-Length: {}\r\nConnection: close", body.len()),
    );
    req.extend_from_slice(&body);
    let raw = exchange(&app, &req).await;
    eprintln!("endless part header: {}", raw.describe());
    match raw.status() {
        Some(400 | 413) => {
            raw_error(&raw).unwrap_or_else(|why| panic!("{why}"));
        }
        None if raw.closed => {}
        _ => panic!("endless part header: {}", raw.describe()),
    }
    assert_eq!(settled_storage(&app, 1).await.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 4. Headers and URLs
// ---------------------------------------------------------------------------------------------

/// 4xx in `allowed`, in time; never a 5xx, never silence.
fn one_of(what: &str, raw: &Raw, allowed: &[u16], failures: &mut Vec<String>) {
    eprintln!("{what}: {}", raw.describe());
    match raw.status() {
        Some(status) if allowed.contains(&status) => {}
        _ => failures.push(format!("{what}: {}", raw.describe())),
    }
}

#[tokio::test]
async fn oversized_or_too_many_headers_are_a_4xx_not_a_hang() {
    let app = TestApp::spawn().await;
    let fx = Fixture::new(&app, b"headers").await;
    let (path, query) = fx.signed();
    let target = format!("{path}?{query}");
    let mut failures = Vec::new();

    // Sanity: the same request with ordinary headers is served.
    let raw = raw_get(&app, &target, &[]).await;
    assert_eq!(raw.status(), Some(200), "{}", raw.describe());

    let big = "a".repeat(64 * 1024);
    let raw = raw_get(&app, &target, &[("X-Padding", big.clone())]).await;
    one_of("one 64 KiB header", &raw, &[400, 431], &mut failures);

    let raw = raw_get(
        &app,
        &target,
        &[("Cookie", format!("neptun-session={big}"))],
    )
    .await;
    one_of("a 64 KiB cookie", &raw, &[400, 431], &mut failures);

    let many: Vec<(&str, String)> = (0..200).map(|_| ("X-Many", "v".to_owned())).collect();
    let raw = raw_get(&app, &target, &many).await;
    one_of("200 headers", &raw, &[400, 431], &mut failures);

    let raw = raw_get(&app, &target, &[("X-Padding", "b".repeat(256 * 1024))]).await;
    one_of("one 256 KiB header", &raw, &[400, 431], &mut failures);

    // An API route with a valid session, too.
    let (cookie, value) = fx.cookie_header();
    let api = format!("/api/users/{}/chats", fx.user.id);
    let raw = raw_get(&app, &api, &[(cookie, value.clone()), ("X-Padding", big)]).await;
    one_of("64 KiB header on the API", &raw, &[400, 431], &mut failures);

    // And the server still answers afterwards.
    let raw = raw_get(&app, &target, &[]).await;
    assert_eq!(raw.status(), Some(200), "{}", raw.describe());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_100_kib_path_or_query_is_a_4xx_never_a_server_error() {
    let app = TestApp::spawn().await;
    let fx = Fixture::new(&app, b"urls").await;
    let (path, query) = fx.signed();
    let (cookie, value) = fx.cookie_header();
    let with_cookie = [(cookie, value)];
    let long = "a".repeat(100 * 1024);
    let digits = "1".repeat(100 * 1024);
    let api = format!("/api/users/{}/chats", fx.user.id);
    let url_limits = [400, 404, 414, 431];
    let download_limits = [400, 403, 404, 414, 431];
    let mut failures = Vec::new();

    let cases: Vec<(&str, String, &[u16], bool)> = vec![
        (
            "long key",
            format!("/files/{long}?{query}"),
            &download_limits,
            false,
        ),
        (
            "long query on a download",
            format!("{path}?{query}&pad={long}"),
            &download_limits,
            false,
        ),
        ("long path", format!("/{long}"), &url_limits, false),
        ("long API path", format!("/api/{long}"), &url_limits, true),
        (
            "long id",
            format!("/api/users/{digits}/chats"),
            &url_limits,
            true,
        ),
        (
            "long query on the chats listing",
            format!("{api}?pad={long}"),
            &url_limits,
            true,
        ),
        (
            "long query on the Chat Files listing",
            format!("{}?{long}", files_path(&fx.user, fx.chat)),
            &url_limits,
            true,
        ),
    ];
    for (what, target, allowed, logged_in) in cases {
        let headers: &[(&str, String)] = if logged_in { &with_cookie } else { &[] };
        let raw = raw_get(&app, &target, headers).await;
        one_of(what, &raw, allowed, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Slow clients
// ---------------------------------------------------------------------------------------------

async fn impatient_app() -> TestApp {
    TestApp::spawn_with(|c| {
        c.request_timeout = Duration::from_millis(500);
        c.body_timeout = Duration::from_millis(500);
        c.keep_alive = Duration::from_millis(500);
    })
    .await
}

/// A 408 (in the contract's shape when it has a JSON body) or a closed connection, in time.
fn timed_out(what: &str, raw: &Raw, failures: &mut Vec<String>) {
    eprintln!("{what}: {}", raw.describe());
    if !raw.closed {
        failures.push(format!(
            "{what}: still open after {HANG:?}: {}",
            raw.describe()
        ));
    }
    match raw.status() {
        None => {}
        Some(408) => {
            let json = raw
                .header("content-type")
                .is_some_and(|t| t.starts_with("application/json"));
            if json && let Err(why) = raw_error(raw) {
                failures.push(format!("{what}: {why}"));
            }
        }
        Some(_) => failures.push(format!("{what}: {}", raw.describe())),
    }
}

#[tokio::test]
async fn a_client_that_stops_sending_its_headers_gets_408_or_is_disconnected() {
    let app = impatient_app().await;
    let started = Instant::now();
    let mut stream = connect(&app).await;
    let partial = format!(
        "GET /api/auth/check HTTP/1.1\r\nHost: {}\r\nX-Slow: ",
        host(&app)
    );
    stream
        .write_all(partial.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let raw = read_until_closed(&mut stream, started, HANG).await;
    let mut failures = Vec::new();
    timed_out("partial headers", &raw, &mut failures);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_client_that_trickles_its_headers_is_cut_off_by_the_request_timeout() {
    let app = impatient_app().await;
    let started = Instant::now();
    let mut stream = connect(&app).await;
    let head = format!(
        "GET /api/auth/check HTTP/1.1\r\nHost: {}\r\nX-Trickle: ",
        host(&app)
    );
    stream
        .write_all(head.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    // One header byte every 100 ms: never idle for long, never finished.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 4096];
    let closed = loop {
        if started.elapsed() > HANG {
            break false;
        }
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break true,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick() => {
                if stream.write_all(b"y").await.is_err() {
                    let raw = read_until_closed(&mut stream, started, HANG).await;
                    bytes.extend_from_slice(&raw.bytes);
                    break true;
                }
            }
        }
    };
    let raw = Raw {
        bytes,
        closed,
        elapsed: started.elapsed(),
    };
    let mut failures = Vec::new();
    timed_out("trickled headers", &raw, &mut failures);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn an_upload_that_stalls_mid_part_gets_408_or_is_disconnected_and_keeps_nothing() {
    let app = impatient_app().await;
    let fx = Fixture::new(&app, b"before the stall").await;
    let part = open_part(64 * 1024);
    let started = Instant::now();
    let mut stream = connect(&app).await;
    let mut req = upload_head(
        &app,
        &fx,
        &format!("Content-Length: {}", part.len() + 1024 * 1024),
    );
    req.extend_from_slice(&part);
    stream
        .write_all(&req)
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    // Then nothing, with the connection held open.
    let raw = read_until_closed(&mut stream, started, HANG).await;
    let mut failures = Vec::new();
    timed_out("stalled body", &raw, &mut failures);
    let stored = settled_storage(&app, 1).await;
    if stored.len() != 1 {
        failures.push(format!("left behind: {stored:?}"));
    }
    drop(stream);
    assert_eq!(listing(&app, &fx.user, fx.chat).await.len(), 1);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Reads one response whose length is given by `Content-Length`.
async fn read_one_response(stream: &mut TcpStream) -> Raw {
    let started = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let raw = Raw {
            bytes: bytes.clone(),
            closed: false,
            elapsed: started.elapsed(),
        };
        if let Some(end) = find(&bytes, b"\r\n\r\n") {
            let len = raw
                .header("content-length")
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            if bytes.len() >= end + 4 + len {
                return raw;
            }
        }
        match tokio::time::timeout(HANG, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => bytes.extend_from_slice(&buf[..n]),
            _ => {
                return Raw {
                    bytes,
                    closed: true,
                    elapsed: started.elapsed(),
                };
            }
        }
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_by_the_server() {
    let app = impatient_app().await;
    let mut stream = connect(&app).await;
    let req = format!(
        "GET /api/auth/check HTTP/1.1\r\nHost: {}\r\n\r\n",
        host(&app)
    );
    for round in 0..2 {
        // The connection is kept alive between two prompt requests...
        stream
            .write_all(req.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("write {round}: {e}"));
        let raw = read_one_response(&mut stream).await;
        assert_eq!(raw.status(), Some(401), "round {round}: {}", raw.describe());
    }
    // ...and closed once it has been idle for longer than the keep-alive.
    let started = Instant::now();
    let raw = read_until_closed(&mut stream, started, HANG).await;
    assert!(
        raw.closed,
        "the idle connection is still open after {HANG:?}"
    );
    assert!(
        raw.bytes.is_empty() || raw.status() == Some(408),
        "{}",
        raw.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Hostile file names
// ---------------------------------------------------------------------------------------------

fn has_control(name: &str) -> bool {
    name.chars()
        .any(|c| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
}

/// A file name as sent: the bytes of the quoted `filename` parameter, what the stored name must
/// be, and whether a 400 is acceptable (bytes that an HTTP header cannot carry).
struct NameCase {
    wire: Vec<u8>,
    expected: String,
    may_refuse: bool,
}

fn case(wire: impl Into<Vec<u8>>, expected: &str, may_refuse: bool) -> NameCase {
    NameCase {
        wire: wire.into(),
        expected: expected.to_owned(),
        may_refuse,
    }
}

fn name_cases() -> Vec<NameCase> {
    let long_ascii = format!("{}.txt", "a".repeat(1000));
    let long_wide = format!("{}.pdf", "é".repeat(600));
    vec![
        case(b"report\x00.pdf".to_vec(), "report.pdf", true),
        case(b"a\r\nb.txt".to_vec(), "ab.txt", true),
        case(b"line\nfeed.txt".to_vec(), "linefeed.txt", true),
        case(b"carriage\rreturn.txt".to_vec(), "carriagereturn.txt", true),
        case(b"bell\x07esc\x1b.txt".to_vec(), "bellesc.txt", true),
        case(b"del\x7f.txt".to_vec(), "del.txt", true),
        case(
            b"evil.html\"\r\nContent-Type: text/html\r\nX-A: \"".to_vec(),
            "evil.html",
            true,
        ),
        case("tab\there.txt", "tabhere.txt", false),
        case("invoice\u{202E}fdp.exe", "invoicefdp.exe", false),
        case("\u{202A}\u{202B}\u{202C}\u{202D}x.txt", "x.txt", false),
        case(
            "\u{2066}a\u{2067}b\u{2068}c\u{2069}d.txt",
            "abcd.txt",
            false,
        ),
        case("c1\u{80}\u{85}\u{9b}\u{9f}.txt", "c1.txt", false),
        case("../../etc/passwd", "passwd", false),
        case("/etc/shadow", "shadow", false),
        // A quoted-string escapes its backslashes; this is `..\..\boot.ini`.
        case(r"..\\..\\boot.ini", "boot.ini", false),
        case(r"C:\\Windows\\system32\\cmd.exe", "cmd.exe", false),
        case(".", "file", false),
        case("..", "file", false),
        case(".....", "file", false),
        case("", "file", false),
        case("   ", "file", false),
        case("dir/..", "file", false),
        case("..\u{202E}", "file", false),
        case("\u{202E}\u{2066}", "file", false),
        case("  padded.txt \t", "padded.txt", false),
        case(long_ascii, &format!("{}.txt", "a".repeat(251)), false),
        case(long_wide, &format!("{}.pdf", "é".repeat(125)), false),
        // Raw backslashes, as browsers send them (they escape nothing but `"`, CR and LF), are
        // path separators too.
        case(br"..\..\boot.ini".to_vec(), "boot.ini", false),
        case(br"C:\Users\me\report.pdf".to_vec(), "report.pdf", false),
        // Browsers percent-encode CR, LF and quotes in multipart file names.
        case(b"a%0D%0Ab%22.txt".to_vec(), "ab\".txt", false),
        case(b"say %22hi%22.txt".to_vec(), "say \"hi\".txt", false),
    ]
}

/// Checks a `Content-Disposition` header for control characters and for its `filename*`.
fn check_disposition(raw: &[u8], name: &str) -> Result<(), String> {
    if raw.iter().any(|b| *b < 0x20 || *b == 0x7f) {
        return Err(format!("control bytes in {raw:?}"));
    }
    let text = std::str::from_utf8(raw).map_err(|_| format!("not UTF-8: {raw:?}"))?;
    let encoded = text
        .split("filename*=UTF-8''")
        .nth(1)
        .map(|rest| rest.split(';').next().unwrap_or_default().trim())
        .ok_or_else(|| format!("no filename* in {text}"))?;
    let decoded = percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|e| format!("filename* is not UTF-8: {e}"))?;
    if has_control(&decoded) {
        return Err(format!(
            "filename* decodes to control characters: {decoded:?}"
        ));
    }
    if decoded != name {
        return Err(format!("filename* is {decoded:?}, the name {name:?}"));
    }
    Ok(())
}

#[tokio::test]
async fn hostile_file_names_are_sanitised_and_their_downloads_carry_no_control_characters() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "names").await;
    let mut failures = Vec::new();
    let mut kept = 0;
    for (i, case) in name_cases().into_iter().enumerate() {
        let shown = String::from_utf8_lossy(&case.wire);
        let shown: String = shown.chars().take(60).collect();
        let content = format!("content {i}").into_bytes();
        let body = raw_multipart(&[(file_part_headers(&case.wire, "text/plain"), &content)]);
        let res = post_multipart(&app, &user, chat, body).await;
        let status = res.status();
        eprintln!("hostile name {shown:?}: {status}");
        if status == StatusCode::BAD_REQUEST && case.may_refuse {
            if let Err(why) = shaped(res, StatusCode::BAD_REQUEST).await {
                failures.push(format!("{shown:?}: {why}"));
            }
            continue;
        }
        if status != StatusCode::CREATED {
            let body = res.text().await.unwrap_or_default();
            failures.push(format!("{shown:?}: {status} {body}"));
            continue;
        }
        kept += 1;
        let file = json_of(res).await["chatFiles"][0].clone();
        let name = str_field(&file, "name").to_owned();
        eprintln!("    stored as {name:?}");
        if name != case.expected {
            failures.push(format!(
                "{shown:?}: stored as {name:?}, expected {:?}",
                case.expected
            ));
        }
        let general = name.is_empty()
            || name.len() > 255
            || has_control(&name)
            || name.contains(['/', '\\'])
            || name.chars().all(|c| c == '.')
            || name.trim() != name;
        if general {
            failures.push(format!("{shown:?}: stored as {name:?}"));
        }
        // With direct downloads the store writes the disposition signed into the listing's
        // URL; our own URL must be as clean.
        let mut urls = vec![str_field(&file, "url").to_owned()];
        if helpers::direct_downloads() {
            urls.push(app.route_url(&file, false));
        }
        for url in urls {
            let res = helpers::client()
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("download: {e}"));
            if res.status() != StatusCode::OK {
                failures.push(format!("{shown:?}: {url} answered {}", res.status()));
                continue;
            }
            let disposition = res
                .headers()
                .get("content-disposition")
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            if let Err(why) = check_disposition(&disposition, &name) {
                failures.push(format!("{shown:?}: {url}: {why}"));
            }
            let bytes = res.bytes().await.unwrap_or_default();
            if bytes.as_ref() != content.as_slice() {
                failures.push(format!("{shown:?}: {url} downloaded other bytes"));
            }
        }
    }
    assert_eq!(listing(&app, &user, chat).await.len(), kept);
    assert_eq!(app.stored().await.len(), kept);
    // Nothing was written outside the storage directory under a chosen name.
    for sneaky in [
        "etc/passwd",
        "passwd",
        "shadow",
        "boot.ini",
        "cmd.exe",
        "storage/passwd",
    ] {
        assert!(!app.dir.path().join(sneaky).exists(), "{sneaky} exists");
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Traversal and junk in URLs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn traversal_and_junk_in_download_keys_never_serve_another_file_or_fail() {
    let app = TestApp::spawn().await;
    let secret = b"the one signed file".to_vec();
    let fx = Fixture::new(&app, &secret).await;
    // A second object on disk that a confused server might hand out instead.
    app.upload_ok(
        &fx.user,
        fx.chat,
        &[("other.txt", "text/plain", b"another file")],
    )
    .await;
    let key = fx.key();
    let (_, query) = fx.signed();
    let upper = key.to_uppercase();
    let spelled: String = key.bytes().map(|b| format!("%{b:02x}")).collect();
    let long = "a".repeat(10 * 1024);
    let shard = &key[..2];
    let keys = [
        "..%2f..%2fetc%2fpasswd".to_owned(),
        "%2e%2e/%2e%2e/etc/passwd".to_owned(),
        "..;/x".to_owned(),
        "..;".to_owned(),
        "%2e%2e%2f".to_owned(),
        "%2e%2e".to_owned(),
        "..".to_owned(),
        "%252e%252e%252f".to_owned(),
        "..%2f..%2fchatfiles.db".to_owned(),
        "..%2f..%2fsecret.key".to_owned(),
        "..%5c..%5csecret.key".to_owned(),
        "%c0%ae%c0%ae%c0%af".to_owned(),
        "/etc/passwd".to_owned(),
        format!("{key}%00"),
        format!("{key}%00.txt"),
        format!("{key}/.."),
        format!("{key}/../{key}"),
        format!("{key}%2f.."),
        format!("{key};"),
        format!("{key}%20"),
        format!("%20{key}"),
        format!("{key}a"),
        key[..31].to_owned(),
        format!("{shard}%2f{key}"),
        format!("{shard}/{key}"),
        format!("..%2f{shard}%2f{key}"),
        upper,
        spelled,
        long,
    ];
    let mut failures = Vec::new();
    for hostile in &keys {
        for suffix in [String::new(), format!("?{query}"), format!("?{query}&x=1")] {
            let target = format!("/files/{hostile}{suffix}");
            let raw = raw_get(&app, &target, &[]).await;
            let shown: String = target.chars().take(90).collect();
            match raw.status() {
                // 414 for the 10 KiB key.
                Some(400 | 403 | 404 | 414) => {
                    if let Err(why) = raw_error(&raw) {
                        failures.push(format!("{shown}: {why}"));
                    }
                }
                // An equivalent spelling of the signed key may serve it, and only it.
                Some(200) if raw.body() == secret.as_slice() => {}
                _ => failures.push(format!("{shown}: {}", raw.describe())),
            }
        }
    }
    // The real URL still works, unchanged.
    let raw = raw_get(&app, &format!("/files/{key}?{query}"), &[]).await;
    assert_eq!(raw.status(), Some(200), "{}", raw.describe());
    assert_eq!(raw.body(), secret.as_slice());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn traversal_and_junk_in_api_ids_are_400_or_404_and_change_nothing() {
    let app = TestApp::spawn().await;
    let fx = Fixture::new(&app, b"api ids").await;
    let other = Fixture::new(&app, b"someone else's").await;
    let (u, c, f) = (fx.user.id, fx.chat, fx.file_id());
    let (ou, oc, of) = (other.user.id, other.chat, other.file_id());
    let digits = "9".repeat(10 * 1024);
    let targets = [
        format!("/api/users/..%2f{u}/chats"),
        "/api/users/%2e%2e/chats".to_owned(),
        format!("/api/users/{u}%00/chats"),
        format!("/api/users/{u}%2f..%2f{ou}/chats"),
        format!("/api/users/{u}/chats/..%2f{c}/files"),
        format!("/api/users/{u}/chats/{c}%2f..%2f{oc}/files"),
        format!("/api/users/{u}/chats/{oc}/files"),
        format!("/api/users/{u}/chats/{c}/files/..%2f{f}"),
        format!("/api/users/{u}/chats/{c}/files/{f}%00"),
        format!("/api/users/{u}/chats/{c}/files/{f};x"),
        format!("/api/users/{u}/chats/{c}/files/%2e%2e"),
        format!("/api/users/{u}/chats/{c}/files/{f}/.."),
        format!("/api/users/{u}/chats/{c}/files/{f}/../{of}"),
        format!("/api/users/{u}/chats/{c}/files/{of}"),
        format!("/api/users/{u}/chats/{c}/files/0x{f:x}"),
        format!("/api/users/{u}/chats/{c}/files/-{f}"),
        format!("/api/users/{u}/chats/{c}/files/{f}.0"),
        format!("/api/users/{u}/chats/{c}/files/{digits}"),
        format!("/api/users/{digits}/chats"),
        format!("/api/users/{u}/chats/{c}/files/%ff%fe"),
    ];
    let (cookie, value) = fx.cookie_header();
    let headers = [(cookie, value)];
    let mut failures = Vec::new();
    for target in &targets {
        for method in ["GET", "DELETE"] {
            let raw = exchange(&app, &request(&app, method, target, &headers, b"")).await;
            let shown: String = target.chars().take(90).collect();
            // 405: a wrong method on an existing route (DELETE on a listing).
            // 414 for the 10 KiB ids.
            let allowed: &[u16] = if method == "DELETE" {
                &[400, 404, 405, 414]
            } else {
                &[400, 404, 414]
            };
            match raw.status() {
                Some(status) if allowed.contains(&status) => {
                    if let Err(why) = raw_error(&raw) {
                        failures.push(format!("{method} {shown}: {why}"));
                    }
                }
                _ => failures.push(format!("{method} {shown}: {}", raw.describe())),
            }
        }
    }
    // Nothing was deleted, mine or theirs.
    assert_eq!(listing(&app, &fx.user, c).await.len(), 1);
    assert_eq!(listing(&app, &other.user, oc).await.len(), 1);
    assert_eq!(chat_ids(&app, &fx.user).await, [c]);
    assert_eq!(chat_ids(&app, &other.user).await, [oc]);
    assert_eq!(app.stored().await.len(), 2);
    let res = helpers::client()
        .get(fx.url())
        .send()
        .await
        .unwrap_or_else(|e| panic!("download: {e}"));
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap_or_default().as_ref(), b"api ids");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
