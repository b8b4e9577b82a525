//! What an operator watches and reads: `/health`, `chatfiles healthcheck`, `/metrics`, the
//! command line's help and errors, exit statuses and the start-up log.

use std::collections::HashMap;
use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{CliRun, TestApp, assert_error, chatfiles_cli, client, header};

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

/// A master secret for the binary's runs (64 hex digits).
const SECRET: &str = "5f0c6a1e9b2d4c7f8a3e6b1d0c9f2a5e7b4d1c8f3a6e9b2d5c0f7a4e1b8d3c6f";

/// Runs the real `chatfiles` binary with `args` and exactly `env` of the `CHATFILES_*`
/// variables (none of the test's own leak in), standard input closed.
async fn chatfiles_with_env(args: &[&str], env: &[(&str, &str)]) -> CliRun {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatfiles"));
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("CHATFILES_")) {
        command.env_remove(name);
    }
    let output = command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run chatfiles: {e}"));
    CliRun {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Asserts a run that could not start: exit 2 and one line on standard error; returns it.
fn refused_line(run: &CliRun) -> &str {
    assert_eq!(run.code, Some(2), "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stderr.lines().count(),
        1,
        "not one line: {}",
        run.stderr
    );
    run.stderr.trim_end()
}

#[tokio::test]
async fn help_says_what_each_command_takes_and_what_only_the_environment_sets() {
    // A value in the environment is never echoed into the help.
    let env = [("CHATFILES_BIND", "10.9.8.7:6543")];
    let top = chatfiles_with_env(&["--help"], &env).await;
    assert_eq!(top.code, Some(0), "{}", top.stderr);
    for text in [
        "CHATFILES_SECRET",
        "CHATFILES_PREVIOUS_SECRETS",
        "RUST_LOG",
        "openssl rand -hex 32",
        "--url-ttl",
        "--storage-dir",
        "[env: CHATFILES_PUBLIC_URL] [default: http://<bind>]",
        "[env: CHATFILES_URL_TTL] [default: 15m]",
    ] {
        assert!(top.stdout.contains(text), "no {text:?} in:\n{}", top.stdout);
    }
    assert!(!top.stdout.contains("10.9.8.7"), "{}", top.stdout);

    for args in [
        &["user", "--help"][..],
        &["user", "add", "--help"],
        &["check", "--help"],
    ] {
        let run = chatfiles_with_env(args, &env).await;
        assert_eq!(run.code, Some(0), "{args:?}: {}", run.stderr);
        assert!(
            run.stdout.contains("--storage-dir"),
            "{args:?}:\n{}",
            run.stdout
        );
        for server_flag in ["--url-ttl", "--cors-origins", "--bind", "--max-file-size"] {
            assert!(
                !run.stdout.contains(server_flag),
                "{args:?} lists {server_flag}:\n{}",
                run.stdout
            );
        }
    }
    let add = chatfiles_with_env(&["user", "add", "--help"], &[]).await;
    assert!(add.stdout.contains("standard input"), "{}", add.stdout);
    let list = chatfiles_with_env(&["user", "list", "--help"], &[]).await;
    assert!(
        list.stdout.contains("id, email, created"),
        "{}",
        list.stdout
    );
    let probe = chatfiles_with_env(&["healthcheck", "--help"], &env).await;
    assert!(
        probe.stdout.contains("--bind") && !probe.stdout.contains("--url-ttl"),
        "{}",
        probe.stdout
    );
}

#[tokio::test]
async fn a_refused_value_names_its_flag_or_variable_and_exits_2() {
    let run = chatfiles_with_env(&["--url-ttl", "9d"], &[]).await;
    assert_eq!(
        refused_line(&run),
        "error: invalid value '9d' for --url-ttl: expected a duration such as 90s, 15m or 7d, \
         between 1s and 7d"
    );
    let run = chatfiles_with_env(&["serve"], &[("CHATFILES_REQUEST_TIMEOUT", "5ns")]).await;
    assert_eq!(
        refused_line(&run),
        "error: invalid value '5ns' in CHATFILES_REQUEST_TIMEOUT (for --request-timeout): \
         expected a duration such as 500ms, 10s or 2m, between 100ms and 1h"
    );
    let run = chatfiles_with_env(&["--max-file-size", "25 MegaBytes"], &[]).await;
    let line = refused_line(&run);
    assert!(
        line.contains("--max-file-size") && line.contains("KiB") && line.contains("MB"),
        "{line}"
    );
    // A server flag before the command would lose to the command's own: refused.
    let run = chatfiles_with_env(&["--bind", "127.0.0.1:0", "serve"], &[]).await;
    assert!(
        refused_line(&run).contains("--bind goes after `serve`"),
        "{}",
        run.stderr
    );
    let run = chatfiles_with_env(&["user", "list", "--url-ttl", "5m"], &[]).await;
    assert!(refused_line(&run).contains("server flag"), "{}", run.stderr);
}

#[tokio::test]
async fn a_bad_secret_states_the_rule_never_the_value_and_exits_2() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let storage = dir.path().join("storage");
    let storage = storage.to_str().unwrap_or_else(|| panic!("path"));
    let args = ["--bind", "127.0.0.1:0", "--storage-dir", storage];
    let short = "deadbeefdeadbeef";
    let run = chatfiles_with_env(&args, &[("CHATFILES_SECRET", short)]).await;
    assert_eq!(
        refused_line(&run),
        "error: CHATFILES_SECRET is invalid (it decodes to only 8 bytes): it must be at least \
         32 bytes once decoded, written as hex or base64 (make one with: openssl rand -hex 32)"
    );
    let previous = format!("{SECRET},{short}");
    let env = [
        ("CHATFILES_SECRET", SECRET),
        ("CHATFILES_PREVIOUS_SECRETS", previous.as_str()),
    ];
    let run = chatfiles_with_env(&args, &env).await;
    let line = refused_line(&run);
    assert!(
        line.starts_with("error: CHATFILES_PREVIOUS_SECRETS entry 2 of 2 is invalid"),
        "{line}"
    );
    assert!(!run.stderr.contains(short) && !run.stderr.contains(SECRET));
}

#[tokio::test]
async fn commands_run_under_the_images_environment() {
    let app = TestApp::spawn().await;
    let storage = app.storage_dir();
    let storage = storage.to_str().unwrap_or_else(|| panic!("path"));
    let bind = app.address.trim_start_matches("http://").to_owned();
    // What the Dockerfile and compose.yaml set, and a server variable no command needs.
    let mut env = vec![
        ("CHATFILES_BIND", bind.as_str()),
        ("CHATFILES_STORAGE_DIR", storage),
        ("CHATFILES_PUBLIC_URL", "https://files.example.com"),
        ("CHATFILES_TRUSTED_PROXIES", "172.16.0.0/12"),
        ("CHATFILES_SECRET", SECRET),
        ("CHATFILES_LOG_FORMAT", "json"),
        ("CHATFILES_URL_TTL", "1h"),
        ("RUST_LOG", "info"),
    ];
    for args in [&["user", "list"][..], &["check"], &["healthcheck"]] {
        let run = chatfiles_with_env(args, &env).await;
        assert_eq!(run.code, Some(0), "{args:?}: {}{}", run.stdout, run.stderr);
    }
    // Even a server variable that `serve` would refuse does not stop the other commands.
    env.push(("CHATFILES_MAX_FILE_SIZE", "lots"));
    for args in [&["user", "list"][..], &["check"]] {
        let run = chatfiles_with_env(args, &env).await;
        assert_eq!(run.code, Some(0), "{args:?}: {}{}", run.stdout, run.stderr);
    }
    let run = chatfiles_with_env(&["serve"], &env).await;
    assert!(
        refused_line(&run).contains("CHATFILES_MAX_FILE_SIZE"),
        "{}",
        run.stderr
    );
    env.pop();

    // `serve` takes the environment too; this storage is the running server's: it cannot start.
    env[0] = ("CHATFILES_BIND", "127.0.0.1:0");
    let run = chatfiles_with_env(&["serve"], &env).await;
    let line = refused_line(&run);
    assert!(line.contains("another chatfiles process"), "{line}");
}

#[tokio::test]
async fn the_service_logs_its_limits_at_start_and_exits_0_on_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatfiles"));
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("CHATFILES_")) {
        command.env_remove(name);
    }
    let mut child = command
        .args([
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--signup",
            "closed",
        ])
        .args([
            "--user-quota",
            "0",
            "--memory-cache",
            "1GiB",
            "--max-file-size",
            "1000",
        ])
        .arg("--storage-dir")
        .arg(dir.path().join("storage"))
        .env("CHATFILES_SECRET", SECRET)
        .env("CHATFILES_SESSION_TTL", "30d")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start chatfiles: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let started = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let listening = line.contains("chatfiles listening");
            seen.push(line);
            if listening {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(started.ok(), Some(true), "did not start: {seen:#?}");
    let limits = seen
        .iter()
        .find(|l| l.contains("chatfiles limits"))
        .unwrap_or_else(|| panic!("no limits line in {seen:#?}"));
    assert!(
        limits.ends_with(
            "chatfiles limits max_file_size=1000B url_ttl=15m session_ttl=30d upload_expiry=1d \
             user_quota=none memory_cache=1GiB signup=closed workers=2"
        ),
        "{limits}"
    );

    let pid = child.id().unwrap_or_else(|| panic!("no pid"));
    let pid = libc::pid_t::try_from(pid).unwrap_or_else(|e| panic!("pid {pid}: {e}"));
    // SAFETY: kill(2) only sends a signal, to the child this test started and still owns.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0, "kill: {}", std::io::Error::last_os_error());
    let output = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("chatfiles did not stop"))
        .unwrap_or_else(|e| panic!("wait: {e}"));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
