//! `GET|HEAD /files/{key}`: signed downloads.
//!
//! With direct downloads (S3) a listing's `url` is a presigned URL that the store answers
//! itself; our route still serves our own signed URLs from the bucket. Tests of the route run
//! on [`TestApp::route_url`], which is the listing's URL in the other modes, and check what the
//! store answers to the listing's URL beside it.

use reqwest::{Response, StatusCode};
use serde_json::Value;

use crate::helpers::{self, TestApp, TestUser, assert_error, assert_store_error, header, sha256};

/// Uploads one file into a fresh chat and returns its `ChatFile`.
async fn one_file(app: &TestApp, user: &TestUser, name: &str, mime: &str, bytes: &[u8]) -> Value {
    let chat = app.chat(user, "downloads").await;
    let files = app.upload_ok(user, chat, &[(name, mime, bytes)]).await;
    files
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no file uploaded"))
}

fn url_of(file: &Value) -> String {
    file["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no url in {file}"))
        .to_owned()
}

async fn get(url: &str) -> Response {
    helpers::client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

async fn get_with(url: &str, name: &str, value: &str) -> Response {
    helpers::client()
        .get(url)
        .header(name, value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// `(path, query)` of a URL.
fn split(url: &str) -> (String, String) {
    let parsed = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    (
        format!("{}{}", parsed.origin().ascii_serialization(), parsed.path()),
        parsed.query().unwrap_or_default().to_owned(),
    )
}

/// The query without the parameter `name`.
fn without(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter(|pair| pair.split('=').next() != Some(name))
        .collect::<Vec<_>>()
        .join("&")
}

fn param<'a>(query: &'a str, name: &str) -> &'a str {
    query
        .split('&')
        .find_map(|pair| {
            pair.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
        })
        .unwrap_or_else(|| panic!("no {name} in {query}"))
}

/// An HTTP-date, as `Last-Modified` writes it.
fn http_date(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// The listing's URL and, with direct downloads, our own beside it: the URLs a client may be
/// handed for `file`, which must serve the same bytes.
fn urls_for(app: &TestApp, file: &Value) -> Vec<String> {
    let mut urls = vec![url_of(file)];
    if helpers::direct_downloads() {
        urls.push(app.route_url(file, false));
    }
    urls
}

fn sample(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i * 31 % 251).unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn a_signed_url_serves_the_bytes_with_the_contracts_headers() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let bytes = b"hello, plain text".to_vec();
    let file = one_file(
        &app,
        &user,
        "hello.txt",
        "text/plain; charset=utf-8",
        &bytes,
    )
    .await;
    let res = get(&app.route_url(&file, false)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(header(&res, "content-length"), bytes.len().to_string());
    assert_eq!(header(&res, "accept-ranges"), "bytes");
    assert_eq!(header(&res, "etag"), format!("\"{}\"", sha256(&bytes)));
    let last_modified = header(&res, "last-modified");
    assert_eq!(last_modified, http_date(app.started));
    let cache = header(&res, "cache-control");
    let max_age: u64 = cache
        .strip_prefix("private, max-age=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cache-control {cache}"));
    assert!(max_age > 0 && max_age <= 900, "{cache}");
    assert_eq!(header(&res, "x-content-type-options"), "nosniff");
    assert_eq!(
        header(&res, "content-security-policy"),
        "default-src 'none'; sandbox"
    );
    assert_eq!(header(&res, "referrer-policy"), "no-referrer");
    assert!(!header(&res, "x-request-id").is_empty());
    let disposition = header(&res, "content-disposition");
    assert!(disposition.starts_with("inline"));
    assert_eq!(
        res.bytes().await.unwrap_or_default().as_ref(),
        bytes.as_slice()
    );
    if !helpers::direct_downloads() {
        return;
    }
    // The store answers the listing's URL: the same bytes, with the type and disposition that
    // were signed into it, its own validators, and none of our headers.
    let res = get(&url_of(&file)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(header(&res, "content-length"), bytes.len().to_string());
    assert_eq!(header(&res, "content-disposition"), disposition);
    assert_ne!(header(&res, "etag"), format!("\"{}\"", sha256(&bytes)));
    for ours in [
        "x-content-type-options",
        "content-security-policy",
        "referrer-policy",
        "x-request-id",
    ] {
        assert!(!res.headers().contains_key(ours), "{ours} from the store");
    }
    assert_eq!(
        res.bytes().await.unwrap_or_default().as_ref(),
        bytes.as_slice()
    );
}

#[tokio::test]
async fn images_pdf_and_plain_text_are_inline_while_html_and_svg_are_attachments() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "dispositions").await;
    let files = app
        .upload_ok(
            &user,
            chat,
            &[
                ("a.png", "image/png", b"\x89PNG"),
                ("b.txt", "text/plain", b"text"),
                ("c.pdf", "application/pdf", b"%PDF"),
                ("d.html", "text/html", b"<script>alert(1)</script>"),
                ("e.svg", "image/svg+xml", b"<svg/>"),
            ],
        )
        .await;
    let expected = ["inline", "inline", "inline", "attachment", "attachment"];
    for (file, kind) in files.iter().zip(expected) {
        for url in urls_for(&app, file) {
            let res = get(&url).await;
            assert_eq!(res.status(), StatusCode::OK, "{url}");
            let disposition = header(&res, "content-disposition");
            assert!(
                disposition.starts_with(&format!("{kind};")),
                "{}: {disposition}",
                file["name"]
            );
            assert_eq!(
                header(&res, "content-type"),
                file["type"].as_str().unwrap_or_default()
            );
        }
    }
}

#[tokio::test]
async fn a_download_1_url_is_always_an_attachment() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "download").await;
    let files = app
        .upload_ok(&user, chat, &[("a.png", "image/png", b"\x89PNG")])
        .await;
    let id = files[0]["id"].as_i64().unwrap_or_default();
    let res = user
        .client
        .get(app.url(&format!(
            "/api/users/{}/chats/{chat}/files/{id}?download=1",
            user.id
        )))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let body: Value = res.json().await.unwrap_or_default();
    let mut urls = vec![url_of(&body["chatFile"])];
    if helpers::direct_downloads() {
        urls.push(app.route_url(&body["chatFile"], true));
    }
    for url in urls {
        let res = get(&url).await;
        assert_eq!(res.status(), StatusCode::OK, "{url}");
        assert!(header(&res, "content-disposition").starts_with("attachment;"));
        assert_eq!(header(&res, "content-type"), "image/png");
    }
}

#[tokio::test]
async fn a_non_ascii_name_gets_an_rfc_8187_filename_and_an_ascii_fallback() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let file = one_file(&app, &user, "résumé.pdf", "application/pdf", b"%PDF").await;
    for url in urls_for(&app, &file) {
        let res = get(&url).await;
        assert_eq!(res.status(), StatusCode::OK);
        let disposition = header(&res, "content-disposition");
        assert!(
            disposition.contains("filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"),
            "{disposition}"
        );
        let fallback = disposition
            .split("filename=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no ASCII fallback in {disposition}"));
        assert!(!fallback.is_empty() && fallback.is_ascii(), "{disposition}");
        assert!(fallback.ends_with(".pdf"), "{disposition}");
        assert!(disposition.is_ascii());
    }
}

#[tokio::test]
async fn head_answers_the_same_headers_without_a_body() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let bytes = sample(3000);
    let file = one_file(&app, &user, "data.bin", "application/octet-stream", &bytes).await;
    let head = |url: String| async move {
        helpers::client()
            .head(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    };
    if helpers::direct_downloads() {
        // SigV4 signs the method: a presigned GET is no HEAD. Our own URL answers it (below).
        assert_store_error(head(url_of(&file)).await, StatusCode::FORBIDDEN).await;
    }
    let url = app.route_url(&file, false);
    let got = get(&url).await;
    let head = head(url).await;
    assert_eq!(head.status(), StatusCode::OK);
    for name in [
        "content-type",
        "content-length",
        "accept-ranges",
        "etag",
        "last-modified",
        "cache-control",
        "x-content-type-options",
        "content-security-policy",
        "referrer-policy",
        "content-disposition",
    ] {
        assert_eq!(header(&head, name), header(&got, name), "{name}");
    }
    assert_eq!(header(&head, "content-length"), "3000");
    assert!(!header(&head, "x-request-id").is_empty());
    assert!(head.bytes().await.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn a_range_gives_206_with_exactly_those_bytes() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let bytes = b"0123456789".to_vec();
    let file = one_file(&app, &user, "digits.txt", "text/plain", &bytes).await;
    // The store serves ranges of its own.
    for url in urls_for(&app, &file) {
        let res = get_with(&url, "range", "bytes=2-5").await;
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{url}");
        assert_eq!(header(&res, "content-range"), "bytes 2-5/10");
        assert_eq!(header(&res, "content-length"), "4");
        assert_eq!(res.bytes().await.unwrap_or_default().as_ref(), b"2345");

        let res = get_with(&url, "range", "bytes=-3").await;
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{url}");
        assert_eq!(header(&res, "content-range"), "bytes 7-9/10");
        assert_eq!(res.bytes().await.unwrap_or_default().as_ref(), b"789");
    }
}

#[tokio::test]
async fn a_range_starting_at_the_size_is_not_satisfiable() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let file = one_file(&app, &user, "digits.txt", "text/plain", b"0123456789").await;
    if helpers::direct_downloads() {
        let res = get_with(&url_of(&file), "range", "bytes=10-").await;
        assert_eq!(header(&res, "content-range"), "bytes */10");
        let code = assert_store_error(res, StatusCode::RANGE_NOT_SATISFIABLE).await;
        assert_eq!(code, "InvalidRange");
    }
    let res = get_with(&app.route_url(&file, false), "range", "bytes=10-").await;
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&res, "content-range"), "bytes */10");
    assert_error(res, StatusCode::RANGE_NOT_SATISFIABLE).await;
}

#[tokio::test]
async fn if_none_match_with_the_etag_gives_304_without_a_body() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let bytes = b"cache me".to_vec();
    let file = one_file(&app, &user, "c.txt", "text/plain", &bytes).await;
    // Each with its own ETag: the store's is not our SHA-256.
    for url in urls_for(&app, &file) {
        let etag = header(&get(&url).await, "etag");
        let res = get_with(&url, "if-none-match", &etag).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{url}");
        assert_eq!(header(&res, "etag"), etag);
        assert!(res.bytes().await.unwrap_or_default().is_empty());

        let res = get_with(&url, "if-none-match", "\"something-else\"").await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.bytes().await.unwrap_or_default().as_ref(),
            bytes.as_slice()
        );
    }
}

#[tokio::test]
async fn a_mismatched_if_range_gives_the_full_body() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let bytes = b"0123456789".to_vec();
    let file = one_file(&app, &user, "digits.txt", "text/plain", &bytes).await;
    if helpers::direct_downloads() {
        // The store (SeaweedFS 4.48) ignores If-Range and answers a mismatched one with the
        // range; harmless, since an object never changes under its key. Its own ETag, at least,
        // gets the range.
        let url = url_of(&file);
        let etag = header(&get(&url).await, "etag");
        let res = helpers::client()
            .get(&url)
            .header("range", "bytes=2-5")
            .header("if-range", etag)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(res.bytes().await.unwrap_or_default().as_ref(), b"2345");
    }
    let url = app.route_url(&file, false);
    let res = helpers::client()
        .get(&url)
        .header("range", "bytes=2-5")
        .header("if-range", "\"not-the-etag\"")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("content-range").is_none());
    assert_eq!(
        res.bytes().await.unwrap_or_default().as_ref(),
        bytes.as_slice()
    );

    let etag = format!("\"{}\"", sha256(&bytes));
    let res = helpers::client()
        .get(&url)
        .header("range", "bytes=2-5")
        .header("if-range", etag)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.bytes().await.unwrap_or_default().as_ref(), b"2345");
}

#[tokio::test]
async fn any_change_to_a_signed_url_is_an_invalid_signature() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "tamper").await;
    let files = app
        .upload_ok(
            &user,
            chat,
            &[("a.txt", "text/plain", b"a"), ("b.txt", "text/plain", b"b")],
        )
        .await;
    let id = files[0]["id"].as_i64().unwrap_or_default();
    let res = user
        .client
        .get(app.url(&format!(
            "/api/users/{}/chats/{chat}/files/{id}?download=1",
            user.id
        )))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let body: Value = res.json().await.unwrap_or_default();
    if helpers::direct_downloads() {
        the_store_refuses_any_change_to_a_presigned_url(&files, &body["chatFile"]).await;
    }
    // Our own signatures, whatever the listing hands out.
    let url = app.route_url(&files[0], false);
    let (path, query) = split(&url);
    let (other_path, _) = split(&app.route_url(&files[1], false));
    let download_url = app.route_url(&body["chatFile"], true);
    let (_, download_query) = split(&download_url);
    if !helpers::direct_downloads() {
        assert_eq!(url, url_of(&files[0]), "our URL is the listing's");
        assert_eq!(download_url, url_of(&body["chatFile"]));
    }
    assert_eq!(get(&url).await.status(), StatusCode::OK);
    assert_eq!(get(&download_url).await.status(), StatusCode::OK);

    let signature = param(&query, "signature");
    let tampered_signature = tampered(signature);
    let expires: i64 = param(&query, "expires").parse().unwrap_or_default();
    let kid = param(&query, "kid");

    let variants = [
        (
            "tampered signature",
            format!("{path}?{}", query.replace(signature, &tampered_signature)),
        ),
        (
            "later expires",
            format!(
                "{path}?{}",
                query.replace(
                    &format!("expires={expires}"),
                    &format!("expires={}", expires + 60)
                )
            ),
        ),
        (
            "earlier expires",
            format!(
                "{path}?{}",
                query.replace(
                    &format!("expires={expires}"),
                    &format!("expires={}", expires - 60)
                )
            ),
        ),
        ("download=1 added", format!("{path}?{query}&download=1")),
        (
            "download=1 removed",
            format!("{path}?{}", without(&download_query, "download")),
        ),
        (
            "no signature",
            format!("{path}?{}", without(&query, "signature")),
        ),
        ("no kid", format!("{path}?{}", without(&query, "kid"))),
        (
            "changed kid",
            format!(
                "{path}?{}",
                query.replace(&format!("kid={kid}"), &format!("kid={kid}x"))
            ),
        ),
        ("no query", path.clone()),
        ("another object's key", format!("{other_path}?{query}")),
    ];
    for (what, variant) in variants {
        assert_ne!(variant, url, "{what}");
        let res = get(&variant).await;
        assert_eq!(
            assert_error(res, StatusCode::FORBIDDEN).await,
            "Invalid signature",
            "{what}: {variant}"
        );
    }
}

/// `signature` with its first character changed (base64url or hex alike).
fn tampered(signature: &str) -> String {
    let first = signature.chars().next().unwrap_or('a');
    let swapped = if first == 'a' { 'b' } else { 'a' };
    format!("{swapped}{}", &signature[first.len_utf8()..])
}

/// With direct downloads: the store refuses a presigned URL changed in any way, in its own XML.
async fn the_store_refuses_any_change_to_a_presigned_url(files: &[Value], download: &Value) {
    let url = url_of(&files[0]);
    let (path, query) = split(&url);
    let (other_path, _) = split(&url_of(&files[1]));
    let (_, download_query) = split(&url_of(download));
    assert_eq!(get(&url).await.status(), StatusCode::OK);
    let signature = param(&query, "X-Amz-Signature");
    let date = param(&query, "X-Amz-Date");
    // Signed at a whole minute: `…00Z`.
    let later_date = format!("{}1Z", &date[..date.len() - 2]);
    let content_type = param(&query, "response-content-type");
    let variants = [
        (
            "tampered signature",
            query.replace(signature, &tampered(signature)),
        ),
        (
            "longer validity",
            query.replace("X-Amz-Expires=", "X-Amz-Expires=1"),
        ),
        ("later signing time", query.replace(date, &later_date)),
        ("served as HTML", query.replace(content_type, "text%2Fhtml")),
        (
            "inline instead of attachment",
            download_query.replace("attachment", "inline"),
        ),
        ("no signature", without(&query, "X-Amz-Signature")),
    ];
    let mut refused = Vec::new();
    for (what, variant) in variants {
        assert_ne!(variant, query, "{what}");
        refused.push((what, format!("{path}?{variant}")));
    }
    refused.push(("another object's key", format!("{other_path}?{query}")));
    // The bucket is not public.
    refused.push(("no query", path.clone()));
    for (what, variant) in refused {
        let res = get(&variant).await;
        let status = res.status();
        // 403, or 400 for a presigned request that lacks a part (SeaweedFS: MissingFields).
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::BAD_REQUEST,
            "{what}: {status} for {variant}"
        );
        assert_store_error(res, status).await;
    }
}

/// Asserts that a file's `url` answers 404: in our error shape from our route, in the store's
/// own from a presigned URL.
async fn assert_gone(app: &TestApp, url: &str) {
    let res = get(url).await;
    if url.starts_with(&app.address) {
        assert_error(res, StatusCode::NOT_FOUND).await;
    } else {
        let code = assert_store_error(res, StatusCode::NOT_FOUND).await;
        assert_eq!(code, "NoSuchKey", "{url}");
    }
}

#[tokio::test]
async fn an_expired_url_says_so_with_both_times() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let file = one_file(&app, &user, "a.txt", "text/plain", b"a").await;
    if helpers::direct_downloads() {
        // The store checks presigned URLs against its own clock, which the test cannot move:
        // a service whose clock is a day behind hands out URLs that have expired there already.
        let behind = TestApp::spawn_at(app.started - chrono::Duration::days(1), |_| {}).await;
        let user = behind.user().await;
        let old = one_file(&behind, &user, "old.txt", "text/plain", b"old").await;
        let code = assert_store_error(get(&url_of(&old)).await, StatusCode::FORBIDDEN).await;
        assert_eq!(code, "AccessDenied");
    }
    // Our own URL expires by our clock.
    let url = app.route_url(&file, false);
    app.clock.advance(chrono::Duration::minutes(16));
    let res = get(&url).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.headers().contains_key("x-request-id"));
    let body: Value = res.json().await.unwrap_or_default();
    assert_eq!(body["statusCode"], 403);
    assert_eq!(body["statusMessage"], "Forbidden");
    assert_eq!(body["data"]["message"], "URL has expired", "{body}");
    let expires_at = body["data"]["expiresAt"].as_str().unwrap_or_default();
    let server_time = body["data"]["serverTime"].as_str().unwrap_or_default();
    let at = |minutes| {
        let time = app.started + chrono::Duration::minutes(minutes);
        chatfiles::clock::rfc3339(time.timestamp())
    };
    assert_eq!(expires_at, at(15), "{body}");
    assert_eq!(server_time, at(16), "{body}");
    for time in [expires_at, server_time] {
        assert!(
            chrono::DateTime::parse_from_rfc3339(time).is_ok(),
            "{time} is not RFC 3339"
        );
    }
}

#[tokio::test]
async fn a_deleted_files_valid_url_is_not_found() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "deleted").await;
    let files = app
        .upload_ok(&user, chat, &[("a.txt", "text/plain", b"a")])
        .await;
    let urls = urls_for(&app, &files[0]);
    let id = files[0]["id"].as_i64().unwrap_or_default();
    let res = user
        .client
        .delete(app.url(&format!("/api/users/{}/chats/{chat}/files/{id}", user.id)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for url in &urls {
        assert_gone(&app, url).await;
    }
    // A presigned GET is no HEAD (refused, found or not); our route answers it.
    let head = helpers::client()
        .head(app.route_url(&files[0], false))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_file_downloaded_before_its_delete_is_gone_at_once_after_it() {
    // The download path keeps rows and small objects in memory: a delete must reach them.
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "hot then deleted").await;
    let files = app
        .upload_ok(
            &user,
            chat,
            &[
                ("small.txt", "text/plain", b"small and hot"),
                ("other.txt", "text/plain", b"in the same chat"),
            ],
        )
        .await;
    let (small, other) = (urls_for(&app, &files[0]), urls_for(&app, &files[1]));
    for url in small.iter().chain(&other) {
        for _ in 0..3 {
            assert_eq!(get(url).await.status(), StatusCode::OK, "{url}");
        }
    }
    let id = files[0]["id"].as_i64().unwrap_or_default();
    let res = user
        .client
        .delete(app.url(&format!("/api/users/{}/chats/{chat}/files/{id}", user.id)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for url in &small {
        assert_gone(&app, url).await;
    }
    for url in &other {
        assert_eq!(get(url).await.status(), StatusCode::OK, "{url}");
    }
    // Deleting the whole chat reaches its remaining files too.
    let res = user
        .client
        .delete(app.url(&format!("/api/users/{}/chats/{chat}", user.id)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for url in &other {
        assert_gone(&app, url).await;
    }
}

#[tokio::test]
async fn other_methods_on_a_file_are_405_allowing_get_and_head() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let file = one_file(&app, &user, "a.txt", "text/plain", b"a").await;
    let client = helpers::client();
    let methods = [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ];
    if helpers::direct_downloads() {
        // The store's own refusal: 405 for POST, 403 for what SigV4 did not sign (the method
        // is signed). Above all, nothing is written over or deleted.
        let url = url_of(&file);
        for method in methods.clone() {
            let res = client
                .request(method.clone(), &url)
                .body("overwritten")
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let status = res.status();
            assert!(
                status == StatusCode::FORBIDDEN || status == StatusCode::METHOD_NOT_ALLOWED,
                "{method}: {status}"
            );
            assert_store_error(res, status).await;
        }
        let res = get(&url).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.bytes().await.unwrap_or_default().as_ref(), b"a");
    }
    let url = app.route_url(&file, false);
    for method in methods {
        let res = client
            .request(method.clone(), &url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(header(&res, "allow"), "GET, HEAD", "{method}");
        assert_error(res, StatusCode::METHOD_NOT_ALLOWED).await;
    }
    assert_eq!(get(&url).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn path_traversal_in_the_key_never_serves_anything() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let file = one_file(&app, &user, "a.txt", "text/plain", b"a").await;
    let (_, query) = split(&app.route_url(&file, false));
    let attempts = [
        format!("/files/..%2f..%2fetc%2fpasswd?{query}"),
        "/files/..%2f..%2fetc%2fpasswd?expires=9999999999&kid=x&signature=abc".to_owned(),
        format!("/files/%2e%2e?{query}"),
        "/files/%2e%2e".to_owned(),
        format!("/files/%2e%2e%2fsecret.key?{query}"),
        format!("/files/..%5c..%5csecret.key?{query}"),
        format!("/files/%2e%2e%2f%2e%2e%2fchatfiles.db?{query}"),
    ];
    for attempt in attempts {
        let res = get(&app.url(&attempt)).await;
        let status = res.status();
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
            "{attempt}: {status}"
        );
        assert_error(res, status).await;
    }
}

#[tokio::test]
async fn a_large_streamed_file_downloads_byte_identical_and_serves_ranges() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let bytes = sample(600 * 1024 + 123);
    let file = one_file(&app, &user, "big.bin", "application/octet-stream", &bytes).await;
    for url in urls_for(&app, &file) {
        let res = get(&url).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "content-length"), bytes.len().to_string());
        if url.starts_with(&app.address) {
            assert_eq!(header(&res, "etag"), format!("\"{}\"", sha256(&bytes)));
        }
        let got = res.bytes().await.unwrap_or_default();
        assert_eq!(got.len(), bytes.len());
        assert_eq!(sha256(&got), sha256(&bytes));

        let (start, end) = (100_000usize, 300_000usize);
        let res = get_with(&url, "range", &format!("bytes={start}-{end}")).await;
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            header(&res, "content-range"),
            format!("bytes {start}-{end}/{}", bytes.len())
        );
        let got = res.bytes().await.unwrap_or_default();
        assert_eq!(got.as_ref(), &bytes[start..=end]);
    }
}

/// Ranges of an object over 1 MiB are read from its file, which the service keeps open (and,
/// for the bytes the page cache holds, reads without a blocking-pool trip): every range, again
/// and again, is exactly those bytes, with the memory cache on or off; a delete makes its URLs
/// answer 404 at once.
#[tokio::test]
async fn ranges_of_a_file_over_a_mebibyte_are_exact_every_time_and_gone_after_its_delete() {
    for memory_cache in [32 << 20, 0] {
        let app = TestApp::spawn_with(|c| {
            c.memory_cache = memory_cache;
            c.max_file_size = 8 << 20;
        })
        .await;
        let user = app.user().await;
        let bytes = sample(3 * 1024 * 1024 + 17);
        let file = one_file(&app, &user, "large.bin", "application/octet-stream", &bytes).await;
        let size = bytes.len();
        let ranges = [
            (0, 65_535),
            (2_000_000, 2_065_535),
            (size - 1_048_576, size - 1), // exactly 1 MiB: read at once
            (1, 1_048_577),               // one byte more: streamed
            (size - 1, size - 1),
        ];
        for url in urls_for(&app, &file) {
            for round in 0..3 {
                for (start, end) in ranges {
                    let res = get_with(&url, "range", &format!("bytes={start}-{end}")).await;
                    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{round} {start}");
                    assert_eq!(
                        header(&res, "content-range"),
                        format!("bytes {start}-{end}/{size}")
                    );
                    let got = res.bytes().await.unwrap_or_default();
                    assert!(got.as_ref() == &bytes[start..=end], "{round} {start}-{end}");
                }
            }
            let got = get(&url).await.bytes().await.unwrap_or_default();
            assert_eq!(sha256(&got), sha256(&bytes));
        }
        let id = file["id"].as_i64().unwrap_or_default();
        let chat = file["chat_conversation_id"].as_i64().unwrap_or_default();
        let res = user
            .client
            .delete(app.url(&format!("/api/users/{}/chats/{chat}/files/{id}", user.id)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        for url in urls_for(&app, &file) {
            assert_gone(&app, &url).await;
        }
    }
}

#[tokio::test]
async fn urls_and_cookies_survive_a_restart() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "restart").await;
    let bytes = b"persistent".to_vec();
    let files = app
        .upload_ok(&user, chat, &[("p.txt", "text/plain", &bytes)])
        .await;
    let old_urls = urls_for(&app, &files[0]);
    let old_address = app.address.clone();
    let app = app.restart().await;

    for old_url in old_urls {
        // Ours name the server's address, a new port after the restart; presigned URLs the
        // store, which has not moved.
        let url = if old_url.starts_with(&old_address) {
            app.rebase(&old_url)
        } else {
            old_url
        };
        let res = get(&url).await;
        assert_eq!(res.status(), StatusCode::OK, "{url}");
        assert_eq!(
            res.bytes().await.unwrap_or_default().as_ref(),
            bytes.as_slice()
        );
    }

    let res = app.list_files(&user, chat).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap_or_default();
    assert_eq!(body["chatFiles"][0]["name"], "p.txt");
    assert!(url_of(&body["chatFiles"][0]).starts_with(&app.download_base()));
}
