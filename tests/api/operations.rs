//! What an operator watches: `/health`, `chatfiles healthcheck` and `/metrics`.

use std::collections::HashMap;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, chatfiles_cli, client, header};

async fn get(url: &str) -> reqwest::Response {
    client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Moves the temp area aside and puts a plain file in its place, so that no upload (and no
/// health probe) can create a file there; `unbreak_storage` puts it back.
fn break_storage(app: &TestApp) {
    let tmp = app.storage_dir().join("tmp");
    std::fs::rename(&tmp, app.storage_dir().join("tmp.aside"))
        .unwrap_or_else(|e| panic!("rename: {e}"));
    std::fs::write(&tmp, b"not a directory").unwrap_or_else(|e| panic!("write: {e}"));
}

fn unbreak_storage(app: &TestApp) {
    let tmp = app.storage_dir().join("tmp");
    std::fs::remove_file(&tmp).unwrap_or_else(|e| panic!("remove: {e}"));
    std::fs::rename(app.storage_dir().join("tmp.aside"), &tmp)
        .unwrap_or_else(|e| panic!("rename: {e}"));
}

#[tokio::test]
async fn health_is_ok_while_the_database_answers_and_storage_takes_writes() {
    let app = TestApp::spawn().await;
    let res = get(&app.url("/health")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "cache-control"), "no-store");
    let body: Value = res.json().await.unwrap_or_default();
    assert_eq!(body, json!({"status": "ok"}));
    let res = client()
        .head(app.url("/health"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("HEAD: {e}"));
    assert_eq!(res.status(), StatusCode::OK);
    let res = client()
        .post(app.url("/health"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST: {e}"));
    assert_eq!(header(&res, "allow"), "GET, HEAD");
    assert_error(res, StatusCode::METHOD_NOT_ALLOWED).await;
    assert!(
        app.stored_files().is_empty(),
        "the probe leaves nothing behind"
    );
}

#[tokio::test]
async fn health_is_503_while_storage_refuses_writes_and_recovers() {
    let app = TestApp::spawn().await;
    break_storage(&app);
    let res = get(&app.url("/health")).await;
    assert_eq!(
        assert_error(res, StatusCode::SERVICE_UNAVAILABLE).await,
        "Storage is not writable"
    );
    unbreak_storage(&app);
    assert_eq!(get(&app.url("/health")).await.status(), StatusCode::OK);

    // The objects area counts too: a shard that cannot take a new entry.
    let shard = app.storage_dir().join("objects").join("00");
    std::fs::remove_dir(&shard).unwrap_or_else(|e| panic!("remove shard: {e}"));
    std::fs::write(&shard, b"not a directory").unwrap_or_else(|e| panic!("write: {e}"));
    let res = get(&app.url("/health")).await;
    assert_error(res, StatusCode::SERVICE_UNAVAILABLE).await;
    std::fs::remove_file(&shard).unwrap_or_else(|e| panic!("remove: {e}"));
    std::fs::create_dir(&shard).unwrap_or_else(|e| panic!("mkdir: {e}"));
    assert_eq!(get(&app.url("/health")).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_healthcheck_command_exits_0_only_for_a_healthy_service() {
    let app = TestApp::spawn().await;
    let bind = app.address.trim_start_matches("http://").to_owned();
    let run = chatfiles_cli(&["healthcheck", "--bind", &bind], "").await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);

    break_storage(&app);
    let run = chatfiles_cli(&["healthcheck", "--bind", &bind], "").await;
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("503"), "{}", run.stderr);
    unbreak_storage(&app);

    // Nothing listens on a port we just let go of.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let run = chatfiles_cli(&["healthcheck", "--bind", &free.to_string()], "").await;
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("cannot reach"), "{}", run.stderr);
}

/// Every sample of a Prometheus text exposition: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(url: &str) -> HashMap<String, f64> {
    let res = get(url).await;
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = header(&res, "content-type");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    samples(&res.text().await.unwrap_or_default())
}

fn value(samples: &HashMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

const LISTING: &str = "chatfiles_http_requests_total{method=\"GET\",route=\"/api/users/{user_id}/chats/{chat_id}/files\",status=\"200\"}";

#[tokio::test]
async fn metrics_move_with_requests_bytes_and_rejections() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "metrics").await;
    let before = scrape(&app.url("/metrics")).await;

    let content = vec![42u8; 3000];
    let files = app
        .upload_ok(
            &user,
            chat,
            &[("m.bin", "application/octet-stream", &content)],
        )
        .await;
    let url = files[0]["url"].as_str().unwrap_or_default().to_owned();
    for _ in 0..2 {
        assert_eq!(app.list_files(&user, chat).await.status(), StatusCode::OK);
    }
    assert_eq!(
        get(&url).await.bytes().await.unwrap_or_default().len(),
        3000
    );
    let tampered = url.replace("signature=", "signature=x");
    assert_eq!(get(&tampered).await.status(), StatusCode::FORBIDDEN);
    app.clock.advance(chrono::Duration::hours(1));
    assert_eq!(get(&url).await.status(), StatusCode::FORBIDDEN);

    let after = scrape(&app.url("/metrics")).await;
    let delta = |name: &str| value(&after, name) - value(&before, name);
    assert_eq!(delta(LISTING), 2.0, "{after:?}");
    assert_eq!(delta("chatfiles_uploaded_bytes_total"), 3000.0);
    assert_eq!(delta("chatfiles_downloaded_bytes_total"), 3000.0);
    assert_eq!(
        delta("chatfiles_signature_rejections_total{reason=\"invalid\"}"),
        1.0
    );
    assert_eq!(
        delta("chatfiles_signature_rejections_total{reason=\"expired\"}"),
        1.0
    );
    assert!(
        delta(
            "chatfiles_http_request_duration_seconds_count{method=\"GET\",route=\"/api/users/{user_id}/chats/{chat_id}/files\"}"
        ) >= 2.0
    );
    assert!(value(&after, "chatfiles_sessions_active") >= 1.0);
    assert!(value(&after, "chatfiles_db_pool_connections") >= 1.0);
    assert!(after.contains_key("chatfiles_db_pool_connections_in_use"));
    // Raw paths never become labels: unknown routes share one.
    get(&app.url("/no/such/path/123")).await;
    let last = scrape(&app.url("/metrics")).await;
    assert!(last.keys().all(|k| !k.contains("/no/such/path")));
    assert!(
        value(
            &last,
            "chatfiles_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"
        ) >= 1.0
    );
}

#[tokio::test]
async fn metrics_can_live_on_their_own_address() {
    let app = TestApp::spawn_with(|config| {
        config.metrics_bind = Some("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")));
    })
    .await;
    let res = get(&app.url("/metrics")).await;
    assert_error(res, StatusCode::NOT_FOUND).await;
    let metrics = app
        .metrics_address
        .clone()
        .unwrap_or_else(|| panic!("no metrics address"));
    assert_eq!(
        app.list_files(&app.user().await, 999).await.status(),
        StatusCode::NOT_FOUND
    );
    let samples = scrape(&format!("{metrics}/metrics")).await;
    assert!(
        samples
            .keys()
            .any(|k| k.starts_with("chatfiles_http_requests_total"))
    );
}
