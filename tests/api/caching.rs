//! What the service answers from memory (chat listings, sessions) never outlives a change:
//! uploads and deletes show in the next listing, another user is never answered from the
//! owner's listing, and sessions ended in the database stop working.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, TestUser, assert_error, header};

/// The listing's raw bytes, checked to be a 200 JSON answer.
async fn listing(app: &TestApp, user: &TestUser, chat_id: i64) -> String {
    let res = app.list_files(user, chat_id).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-type"), "application/json");
    res.text()
        .await
        .unwrap_or_else(|e| panic!("listing body: {e}"))
}

fn names(body: &str) -> Vec<String> {
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    body["chatFiles"]
        .as_array()
        .unwrap_or_else(|| panic!("no chatFiles in {body}"))
        .iter()
        .map(|f| f["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn delete(app: &TestApp, user: &TestUser, path: &str) -> StatusCode {
    user.client
        .delete(app.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("delete {path}: {e}"))
        .status()
}

#[tokio::test]
async fn a_listing_follows_every_upload_and_delete_within_the_same_minute() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "notes").await;
    let files = format!("/api/users/{}/chats/{chat}/files", user.id);

    // The clock stands still: every answer below carries the same URL expiry.
    assert!(names(&listing(&app, &user, chat).await).is_empty());
    let a = app
        .upload_ok(&user, chat, &[("a.txt", "text/plain", b"a")])
        .await;
    assert_eq!(names(&listing(&app, &user, chat).await), ["a.txt"]);
    app.upload_ok(&user, chat, &[("b.txt", "text/plain", b"b")])
        .await;
    let both = listing(&app, &user, chat).await;
    assert_eq!(names(&both), ["a.txt", "b.txt"]);
    assert_eq!(listing(&app, &user, chat).await, both, "byte-identical");

    let a_id = a[0]["id"].as_i64().unwrap_or_default();
    assert_eq!(
        delete(&app, &user, &format!("{files}/{a_id}")).await,
        StatusCode::NO_CONTENT
    );
    let b_only = listing(&app, &user, chat).await;
    assert_eq!(names(&b_only), ["b.txt"]);

    // A minute on, the same file comes with a new URL.
    app.clock.advance(chrono::Duration::seconds(60));
    let later = listing(&app, &user, chat).await;
    assert_eq!(names(&later), ["b.txt"]);
    assert_ne!(later, b_only);

    assert_eq!(
        delete(&app, &user, &format!("/api/users/{}/chats/{chat}", user.id)).await,
        StatusCode::NO_CONTENT
    );
    let res = app.list_files(&user, chat).await;
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "Chat not found"
    );
}

#[tokio::test]
async fn another_user_is_never_answered_from_the_owners_listing() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let other = app.user().await;
    let chat = app.chat(&owner, "private").await;
    app.upload_ok(&owner, chat, &[("secret.txt", "text/plain", b"s")])
        .await;
    assert_eq!(
        names(&listing(&app, &owner, chat).await),
        ["secret.txt"],
        "the owner's listing is now at hand"
    );

    // Under the other user's own id (their session's), and under the owner's.
    for user_id in [other.id, owner.id] {
        let res = other
            .client
            .get(app.url(&format!("/api/users/{user_id}/chats/{chat}/files")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("list: {e}"));
        let message = assert_error(res, StatusCode::NOT_FOUND).await;
        assert!(
            ["Chat not found", "User not found"].contains(&message.as_str()),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_session_deleted_from_the_database_by_hand_ends_within_the_revalidation_time() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    assert_eq!(app.check_status(&user).await, StatusCode::OK);

    // Another tool, not chatfiles, deletes every session (no revocation is signalled).
    let conn = rusqlite::Connection::open(app.config.database_path())
        .unwrap_or_else(|e| panic!("open the database: {e}"));
    let deleted = conn
        .execute("DELETE FROM session", [])
        .unwrap_or_else(|e| panic!("delete sessions: {e}"));
    assert!(deleted >= 1);

    app.clock.advance(chrono::Duration::seconds(
        chatfiles::session::REVALIDATE_AFTER,
    ));
    assert_eq!(app.check_status(&user).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_logout_ends_a_remembered_session_at_once_even_for_a_copied_cookie() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let cookie = app.session_cookie(&user).await;
    let copy = |path: &str| {
        crate::helpers::client()
            .get(app.url(path))
            .header("cookie", format!("neptun-session={cookie}"))
            .send()
    };
    let res = copy("/api/auth/check")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), StatusCode::OK, "remembered from now on");

    let res = crate::helpers::client()
        .post(app.url("/api/auth/logout"))
        .header("cookie", format!("neptun-session={cookie}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("logout: {e}"));
    assert!(res.status().is_success(), "{}", res.status());

    let res = copy("/api/auth/check")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_error(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn without_a_memory_cache_every_answer_is_read_afresh_and_the_same() {
    let app = TestApp::spawn_with(|config| config.memory_cache = 0).await;
    let user = app.user().await;
    let chat = app.chat(&user, "plain").await;
    let stored = app
        .upload_ok(&user, chat, &[("a.txt", "text/plain", b"alpha")])
        .await;
    let first = listing(&app, &user, chat).await;
    assert_eq!(names(&first), ["a.txt"]);
    assert_eq!(listing(&app, &user, chat).await, first);

    let url = stored[0]["url"].as_str().unwrap_or_default().to_owned();
    for _ in 0..2 {
        let res = user
            .client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("download: {e}"));
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.bytes().await.unwrap_or_default().as_ref(),
            b"alpha".as_slice()
        );
    }
    let id = stored[0]["id"].as_i64().unwrap_or_default();
    let path = format!("/api/users/{}/chats/{chat}/files/{id}", user.id);
    assert_eq!(delete(&app, &user, &path).await, StatusCode::NO_CONTENT);
    let res = user
        .client
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("download: {e}"));
    assert_error(res, StatusCode::NOT_FOUND).await;
    assert!(names(&listing(&app, &user, chat).await).is_empty());
}

#[tokio::test]
async fn without_the_revocation_counter_sessions_are_read_every_time_and_still_end_at_once() {
    // Something else sits where the counter's file belongs: the service cannot map it.
    let app = TestApp::spawn_with(|config| {
        let counter = chatfiles::revocations::path_for(&config.database_path());
        std::fs::create_dir_all(&counter).unwrap_or_else(|e| panic!("{e}"));
    })
    .await;
    let user = app.user().await;
    assert_eq!(app.check_status(&user).await, StatusCode::OK);

    let storage = app.storage_dir();
    let storage = storage.to_str().unwrap_or_else(|| panic!("storage path"));
    let run = crate::helpers::chatfiles_cli(
        &["user", "disable", &user.email, "--storage-dir", storage],
        "",
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout
            .contains("warning: cannot reach a running service"),
        "{}",
        run.stdout
    );
    assert_eq!(app.check_status(&user).await, StatusCode::UNAUTHORIZED);
}
