//! `chatfiles user add|list|disable|enable`, run as the real binary beside a running service on
//! the same storage.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{CliRun, PASSWORD, TestApp, assert_error, chatfiles_cli, client};

async fn user_cli(app: &TestApp, args: &[&str], stdin: &str) -> CliRun {
    let storage = app.storage_dir();
    let storage = storage.to_str().unwrap_or_else(|| panic!("storage path"));
    let mut all = vec!["user"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--storage-dir", storage]);
    chatfiles_cli(&all, stdin).await
}

async fn login_status(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    client()
        .post(app.url("/api/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("login: {e}"))
}

#[tokio::test]
async fn an_operator_adds_an_account_with_the_password_on_stdin() {
    let app = TestApp::spawn_with(|config| config.signup = chatfiles::config::Signup::Closed).await;
    let run = user_cli(&app, &["add", "Ops@Example.com"], &format!("{PASSWORD}\n")).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.starts_with("created user "), "{}", run.stdout);
    assert!(!run.stdout.contains(PASSWORD) && !run.stderr.contains(PASSWORD));
    let res = login_status(&app, "ops@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);

    let list = user_cli(&app, &["list"], "").await;
    assert_eq!(list.code, Some(0));
    let line = list
        .stdout
        .lines()
        .find(|l| l.contains("ops@example.com"))
        .unwrap_or_else(|| panic!("not listed:\n{}", list.stdout));
    assert!(line.contains("active"), "{line}");

    // Taken, badly formed, too short, or a password as a flag: refused.
    let run = user_cli(&app, &["add", "ops@example.com"], &format!("{PASSWORD}\n")).await;
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("already taken"), "{}", run.stderr);
    let run = user_cli(&app, &["add", "not-an-email"], &format!("{PASSWORD}\n")).await;
    assert_eq!(run.code, Some(1));
    let run = user_cli(&app, &["add", "short@example.com"], "short\n").await;
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("at least 8"), "{}", run.stderr);
    let run = user_cli(&app, &["add", "empty@example.com"], "").await;
    assert_eq!(run.code, Some(1), "no password at all is a short one");
    let run = user_cli(
        &app,
        &["add", "flag@example.com", "--password", PASSWORD],
        "",
    )
    .await;
    assert_eq!(run.code, Some(2), "a password is never a flag");
    assert!(run.stderr.contains("standard input"), "{}", run.stderr);
}

#[tokio::test]
async fn a_disabled_account_loses_its_sessions_and_cannot_log_in_until_enabled() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let check = || user.client.get(app.url("/api/auth/check")).send();
    assert_eq!(
        check().await.unwrap_or_else(|e| panic!("{e}")).status(),
        StatusCode::OK
    );

    let run = user_cli(&app, &["disable", &user.email], "").await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("ended 1 session"), "{}", run.stdout);
    let res = check().await.unwrap_or_else(|e| panic!("{e}"));
    assert_error(res, StatusCode::UNAUTHORIZED).await;
    let res = login_status(&app, &user.email, PASSWORD).await;
    assert_eq!(
        assert_error(res, StatusCode::FORBIDDEN).await,
        "This account is disabled"
    );
    // The wrong password still gets the usual answer: nothing is said of the account.
    let res = login_status(&app, &user.email, "not the password").await;
    assert_error(res, StatusCode::UNAUTHORIZED).await;
    let list = user_cli(&app, &["list"], "").await;
    assert!(
        list.stdout
            .lines()
            .any(|l| l.contains(&user.email) && l.contains("disabled")),
        "{}",
        list.stdout
    );

    let run = user_cli(&app, &["enable", &user.email], "").await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let res = login_status(&app, &user.email, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);

    let run = user_cli(&app, &["disable", "nobody@example.com"], "").await;
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("no user"), "{}", run.stderr);
}

#[tokio::test]
async fn a_mistyped_storage_directory_is_refused_not_created() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let missing = dir.path().join("no-such-storage");
    let missing = missing.to_str().unwrap_or_else(|| panic!("path"));
    for action in [&["list"][..], &["disable", "a@example.com"][..]] {
        let mut args = vec!["user"];
        args.extend_from_slice(action);
        args.extend_from_slice(&["--storage-dir", missing]);
        let run = chatfiles_cli(&args, "").await;
        // It could not run (2), which is not the same as a refused action (1).
        assert_eq!(run.code, Some(2), "{action:?}");
        assert!(run.stderr.contains("no database"), "{}", run.stderr);
    }
    assert!(!std::path::Path::new(missing).exists());
}
