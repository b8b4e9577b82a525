//! What an upload holds over its life: its quota from creation, termination, expiry and
//! the background sweep, and restarts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use super::{
    assert_tus, chat_file, complete, create, create_ok, download, head, http_date_after, listing,
    metadata, number, offset_of, parse_http_date, part_files, patch, patch_ok, pattern, send, tus,
    uploads_dir,
};
use crate::helpers::{TestApp, assert_error, header, sha256};

/// Longest a test waits, in real time, for the background sweep.
const SWEEP_WITHIN: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Quota
// ---------------------------------------------------------------------------------------------

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
// Expiry and restarts
// ---------------------------------------------------------------------------------------------

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
