//! Browsers on another origin (`--cors-origins`): the CORS headers over plain HTTP, and a real
//! headless Chromium running a page from a second local origin that logs in and lists a chat's
//! files with `getChatFiles`, the TypeScript client from Neptun's documentation page of its Chat
//! Files endpoint.

use actix_web::dev::ServerHandle;
use actix_web::web;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use crate::chromium::{self, between, unescape};
use crate::helpers::{self, PASSWORD, TestApp, TestUser, assert_error, header, sha256};
use crate::tools;

/// The front end's dev server in the HTTP-level tests (no server listens there: only the
/// `Origin` header matters).
const ALLOWED: &str = "http://127.0.0.1:5173";
/// Same site as `ALLOWED` (another port) but not in the list.
const SIBLING: &str = "http://127.0.0.1:5174";
const FOREIGN: &str = "https://evil.example";
const REFUSED: &str = "Cross-site request refused";

/// The page Chromium loads.
const PAGE: &str = include_str!("browser/page.html");

async fn spawn_allowing(origins: &[&str]) -> TestApp {
    let origins: Vec<String> = origins.iter().map(|o| (*o).to_owned()).collect();
    TestApp::spawn_with(move |config| config.cors_origins = origins).await
}

/// `Access-Control-*` headers of a response, as `name: value`.
fn cors_headers(res: &Response) -> Vec<String> {
    res.headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("access-control-"))
        .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("<binary>")))
        .collect()
}

fn assert_no_cors_headers(res: &Response, what: &str) {
    let found = cors_headers(res);
    assert!(
        found.is_empty(),
        "{what} ({}) carries CORS headers: {found:?}",
        res.status()
    );
}

/// Asserts that `res` lets a page of `origin` read it with credentials.
fn assert_allows(res: &Response, origin: &str, what: &str) {
    let found = cors_headers(res);
    let get = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what} ({}): no {name}; got {found:?}", res.status()))
            .to_owned()
    };
    assert_eq!(
        get("access-control-allow-origin"),
        origin,
        "{what}: {found:?}"
    );
    assert_eq!(
        get("access-control-allow-credentials"),
        "true",
        "{what}: {found:?}"
    );
    // The answer depends on Origin: shared caches must keep one copy per origin.
    let vary = get("vary").to_ascii_lowercase();
    assert!(
        vary.split(',').any(|v| v.trim() == "origin"),
        "{what}: Vary is {vary:?}"
    );
}

/// A CORS preflight for a JSON POST, as Chromium sends it before `fetch(..., {method: 'POST',
/// headers: {'Content-Type': 'application/json'}})`.
fn preflight(app: &TestApp, path: &str, origin: &str) -> RequestBuilder {
    helpers::client()
        .request(Method::OPTIONS, app.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
}

async fn send(request: RequestBuilder) -> Response {
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("request failed: {e}"))
}

fn files_path(user: &TestUser, chat: i64) -> String {
    format!("/api/users/{}/chats/{chat}/files", user.id)
}

fn login_body(user: &TestUser) -> Value {
    json!({"email": user.email, "password": PASSWORD})
}

// ---------------------------------------------------------------------------------------------
// CORS over plain HTTP
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_with_the_origin_and_credentials() {
    let app = spawn_allowing(&[ALLOWED]).await;
    let user = app.user().await;
    let chat = app.chat(&user, "preflight").await;

    for path in ["/api/auth/login".to_owned(), files_path(&user, chat)] {
        let res = send(preflight(&app, &path, ALLOWED)).await;
        assert!(
            res.status().is_success(),
            "preflight of {path}: {}",
            res.status()
        );
        assert_allows(&res, ALLOWED, &format!("preflight of {path}"));
        let methods = header(&res, "access-control-allow-methods").to_ascii_uppercase();
        for method in ["GET", "POST", "DELETE"] {
            assert!(
                methods.split(',').any(|m| m.trim() == method),
                "preflight of {path}: {method} not in Access-Control-Allow-Methods {methods:?}"
            );
        }
        let headers = header(&res, "access-control-allow-headers").to_ascii_lowercase();
        assert!(
            headers.split(',').any(|h| h.trim() == "content-type"),
            "preflight of {path}: content-type not in Access-Control-Allow-Headers {headers:?}"
        );
    }
}

#[tokio::test]
async fn requests_from_an_allowed_origin_carry_the_origin_and_credentials_headers() {
    let app = spawn_allowing(&[ALLOWED]).await;
    let user = app.user().await;
    let chat = app.chat(&user, "cors").await;
    app.upload_ok(&user, chat, &[("a.txt", "text/plain", b"a")])
        .await;

    let login = send(
        helpers::client()
            .post(app.url("/api/auth/login"))
            .header("Origin", ALLOWED)
            .header("Sec-Fetch-Site", "same-site")
            .json(&login_body(&user)),
    )
    .await;
    assert_eq!(login.status(), StatusCode::OK, "login from {ALLOWED}");
    assert_allows(&login, ALLOWED, "login");

    let listing = send(
        user.client
            .get(app.url(&files_path(&user, chat)))
            .header("Origin", ALLOWED)
            .header("Sec-Fetch-Site", "same-site"),
    )
    .await;
    assert_eq!(listing.status(), StatusCode::OK);
    assert_allows(&listing, ALLOWED, "listing");

    // The page must be able to read an error's status and body too.
    let missing = send(
        user.client
            .get(app.url(&files_path(&user, 987_654)))
            .header("Origin", ALLOWED),
    )
    .await;
    assert_allows(&missing, ALLOWED, "404 listing");
    assert_eq!(
        assert_error(missing, StatusCode::NOT_FOUND).await,
        "Chat not found"
    );
}

#[tokio::test]
async fn an_origin_not_in_the_list_gets_no_cors_headers() {
    let app = spawn_allowing(&[ALLOWED]).await;
    let user = app.user().await;
    let chat = app.chat(&user, "foreign").await;

    for origin in [SIBLING, FOREIGN, "http://localhost:5173", "null"] {
        for path in ["/api/auth/login".to_owned(), files_path(&user, chat)] {
            let res = send(preflight(&app, &path, origin)).await;
            assert!(
                !res.status().is_success(),
                "preflight of {path} from {origin}: {}",
                res.status()
            );
            assert_no_cors_headers(&res, &format!("preflight of {path} from {origin}"));
        }

        let listing = send(
            user.client
                .get(app.url(&files_path(&user, chat)))
                .header("Origin", origin),
        )
        .await;
        assert_no_cors_headers(&listing, &format!("listing from {origin}"));

        let login = send(
            helpers::client()
                .post(app.url("/api/auth/login"))
                .header("Origin", origin)
                .json(&login_body(&user)),
        )
        .await;
        assert_no_cors_headers(&login, &format!("login from {origin}"));
        assert_eq!(
            assert_error(login, StatusCode::FORBIDDEN).await,
            REFUSED,
            "login from {origin}"
        );
    }
}

#[tokio::test]
async fn without_cors_origins_nothing_gets_cors_headers() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "no cors").await;

    for origin in [ALLOWED, FOREIGN, app.address.as_str()] {
        let res = send(preflight(&app, "/api/auth/login", origin)).await;
        assert!(
            !res.status().is_success(),
            "preflight from {origin}: {}",
            res.status()
        );
        assert_no_cors_headers(&res, &format!("preflight from {origin}"));

        let listing = send(
            user.client
                .get(app.url(&files_path(&user, chat)))
                .header("Origin", origin),
        )
        .await;
        assert_eq!(listing.status(), StatusCode::OK, "listing from {origin}");
        assert_no_cors_headers(&listing, &format!("listing from {origin}"));
    }
    let plain = app.list_files(&user, chat).await;
    assert_no_cors_headers(&plain, "listing without Origin");
    let health = send(helpers::client().get(app.url("/health"))).await;
    assert_no_cors_headers(&health, "/health");
}

#[tokio::test]
async fn a_same_site_post_from_an_allowed_origin_passes_the_cross_site_guard_and_from_another_is_refused()
 {
    let app = spawn_allowing(&[ALLOWED]).await;
    let user = app.user().await;
    let chats = format!("/api/users/{}/chats", user.id);

    let create = |origin: &str| {
        user.client
            .post(app.url(&chats))
            .header("Origin", origin)
            .header("Sec-Fetch-Site", "same-site")
            .json(&json!({"name": format!("from {origin}")}))
    };

    let allowed = send(create(ALLOWED)).await;
    assert_eq!(
        allowed.status(),
        StatusCode::CREATED,
        "POST from {ALLOWED} with Sec-Fetch-Site: same-site"
    );
    assert_allows(&allowed, ALLOWED, "chat creation");
    let body: Value = allowed.json().await.unwrap_or_default();
    let chat = body["chat"]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no chat id in {body}"));

    for origin in [SIBLING, FOREIGN] {
        let refused = send(create(origin)).await;
        assert_no_cors_headers(&refused, &format!("POST from {origin}"));
        assert_eq!(
            assert_error(refused, StatusCode::FORBIDDEN).await,
            REFUSED,
            "POST from {origin}"
        );
    }

    // DELETE, the other state-changing method a page of the allowed origin uses.
    let deleted = send(
        user.client
            .delete(app.url(&format!("{chats}/{chat}")))
            .header("Origin", ALLOWED)
            .header("Sec-Fetch-Site", "same-site"),
    )
    .await;
    assert_eq!(
        deleted.status(),
        StatusCode::NO_CONTENT,
        "DELETE from {ALLOWED}"
    );
    assert_allows(&deleted, ALLOWED, "chat deletion");

    let listed: Value = send(user.client.get(app.url(&chats)))
        .await
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(
        listed["chats"],
        json!([]),
        "only the allowed origin's chat was made"
    );
}

// ---------------------------------------------------------------------------------------------
// A real browser
// ---------------------------------------------------------------------------------------------

/// A second local origin serving the page: `(its origin, a handle to stop it)`.
fn serve_page() -> (String, ServerHandle) {
    chromium::serve_origin(vec![(
        "/",
        "text/html; charset=utf-8",
        web::Bytes::from_static(PAGE.as_bytes()),
    )])
}

/// What the page rendered: its status, the 404 it was given, and `(name, href)` per file.
struct Rendered {
    status: String,
    missing: String,
    files: Vec<(String, String)>,
}

fn parse_rendered(dom: &str) -> Rendered {
    let text = |id: &str| {
        let start = format!("id=\"{id}\">");
        between(dom, &start, "</p>")
            .map(unescape)
            .unwrap_or_else(|| panic!("no #{id} in the DOM:\n{dom}"))
    };
    let list = between(dom, "<ul id=\"files\">", "</ul>")
        .unwrap_or_else(|| panic!("no #files in the DOM:\n{dom}"));
    let files = list
        .split("<li class=\"file\">")
        .skip(1)
        .map(|item| {
            let name = between(item, "<span class=\"name\">", "</span>")
                .unwrap_or_else(|| panic!("a list item without a name: {item}"));
            let href = between(item, "href=\"", "\"")
                .unwrap_or_else(|| panic!("a list item without a link: {item}"));
            (unescape(name), unescape(href))
        })
        .collect();
    Rendered {
        status: text("status"),
        missing: text("missing"),
        files,
    }
}

#[tokio::test]
async fn a_page_on_another_local_origin_logs_in_and_lists_a_chats_files_in_headless_chromium() {
    // Before any set-up: without the browser, the test skips (or fails when strict).
    let Some(binary) = tools::require(chromium::chromium()) else {
        return;
    };
    let (page_origin, page_server) = serve_page();
    let app = spawn_allowing(&[&page_origin]).await;

    let user = app.user().await;
    let chat = app.chat(&user, "browser").await;
    let files: [(&str, &str, &[u8]); 3] = [
        (
            "document.pdf",
            "application/pdf",
            b"%PDF-1.4 read in a browser",
        ),
        (
            "notes & <ideas>.txt",
            "text/plain",
            b"escaped twice, read once",
        ),
        (
            "caf\u{e9} menu.png",
            "image/png",
            b"\x89PNG\r\n\x1a\n not really",
        ),
    ];
    let uploaded = app.upload_ok(&user, chat, &files).await;
    assert_eq!(uploaded.len(), files.len(), "{uploaded:?}");
    // What a non-browser client lists, to compare the page's links with.
    let listing: Value = app
        .list_files(&user, chat)
        .await
        .json()
        .await
        .unwrap_or_default();
    let expected_urls: Vec<String> = listing["chatFiles"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| f["url"].as_str().unwrap_or_default().to_owned())
        .collect();

    let page = reqwest::Url::parse_with_params(
        &format!("{page_origin}/"),
        [
            ("api", app.address.as_str()),
            ("email", user.email.as_str()),
            ("password", PASSWORD),
            ("user", &user.id.to_string()),
            ("chat", &chat.to_string()),
            ("missing", "987654"),
        ],
    )
    .unwrap_or_else(|e| panic!("page URL: {e}"));

    let dom = chromium::dump_dom(&binary, page.as_str()).await;
    page_server.stop(true).await;
    let rendered = parse_rendered(&dom);

    assert_eq!(rendered.status, "done", "the page did not finish:\n{dom}");
    let names: Vec<&str> = rendered.files.iter().map(|(n, _)| n.as_str()).collect();
    let uploaded_names: Vec<&str> = files.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(names, uploaded_names, "rendered names:\n{dom}");
    let hrefs: Vec<&str> = rendered.files.iter().map(|(_, h)| h.as_str()).collect();
    assert_eq!(hrefs, expected_urls, "rendered links:\n{dom}");
    assert_eq!(
        rendered.missing, "HTTP error! status: 404",
        "getChatFiles on a missing chat:\n{dom}"
    );

    // Follow one link, as a click would: no cookie needed.
    let (name, href) = &rendered.files[1];
    let res = send(helpers::client().get(href)).await;
    assert_eq!(res.status(), StatusCode::OK, "following the link of {name}");
    let body = res
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("download of {name}: {e}"));
    assert_eq!(sha256(&body), sha256(files[1].2), "bytes of {name}");
}

#[test]
fn the_dom_parser_reads_escaped_names_and_links() {
    let dom = concat!(
        "<html><body><ul id=\"files\"><li class=\"file\"><span class=\"name\">a &amp; &lt;b&gt;",
        "</span> <a class=\"link\" href=\"http://x/files/k?expires=1&amp;signature=s\">download</a>",
        "</li></ul><p id=\"missing\">HTTP error! status: 404</p><p id=\"status\">done</p>",
        "</body></html>"
    );
    let rendered = parse_rendered(dom);
    assert_eq!(rendered.status, "done");
    assert_eq!(rendered.missing, "HTTP error! status: 404");
    assert_eq!(
        rendered.files,
        vec![(
            "a & <b>".to_owned(),
            "http://x/files/k?expires=1&signature=s".to_owned()
        )]
    );
}
