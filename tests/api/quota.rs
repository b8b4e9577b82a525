//! The per-user storage quota (`--user-quota`): counted from stored sizes, 413 past it, nothing
//! kept of a refused upload.

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, assert_error};

const QUOTA: u64 = 1000;

async fn app_with_quota(quota: u64) -> TestApp {
    TestApp::spawn_with(|config| config.user_quota = quota).await
}

#[tokio::test]
async fn uploads_past_the_quota_are_refused_and_leave_nothing() {
    let app = app_with_quota(QUOTA).await;
    let user = app.user().await;
    let chat = app.chat(&user, "quota").await;
    app.upload_ok(
        &user,
        chat,
        &[("a.bin", "application/octet-stream", &[1; 600])],
    )
    .await;
    let stored = app.stored_files().len();

    let res = app
        .upload(
            &user,
            chat,
            &[("b.bin", "application/octet-stream", &[2; 401])],
        )
        .await;
    let message = assert_error(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(message.contains("quota"), "{message}");
    assert_eq!(app.stored_files().len(), stored);

    // Several files in one request count together: all of them or none.
    let res = app
        .upload(
            &user,
            chat,
            &[
                ("c.bin", "application/octet-stream", &[3; 300]),
                ("d.bin", "application/octet-stream", &[4; 300]),
            ],
        )
        .await;
    assert_error(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(app.stored_files().len(), stored);

    // The quota is inclusive, like the file size limit.
    app.upload_ok(
        &user,
        chat,
        &[("e.bin", "application/octet-stream", &[5; 400])],
    )
    .await;
    let res = app
        .upload(
            &user,
            chat,
            &[("f.bin", "application/octet-stream", &[6; 1])],
        )
        .await;
    assert_error(res, StatusCode::PAYLOAD_TOO_LARGE).await;

    let res = app.list_files(&user, chat).await;
    let body: Value = res.json().await.unwrap_or_default();
    let sizes: Vec<u64> = body["chatFiles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["size"].as_u64())
        .collect();
    assert_eq!(sizes, [600, 400]);
}

#[tokio::test]
async fn deleting_files_frees_quota_and_other_users_have_their_own() {
    let app = app_with_quota(QUOTA).await;
    let user = app.user().await;
    let chat = app.chat(&user, "quota").await;
    let files = app
        .upload_ok(
            &user,
            chat,
            &[("full.bin", "application/octet-stream", &[7; 1000])],
        )
        .await;
    let res = app
        .upload(
            &user,
            chat,
            &[("more.bin", "application/octet-stream", &[8; 10])],
        )
        .await;
    assert_error(res, StatusCode::PAYLOAD_TOO_LARGE).await;

    let other = app.user().await;
    let other_chat = app.chat(&other, "mine").await;
    app.upload_ok(
        &other,
        other_chat,
        &[("x.bin", "application/octet-stream", &[9; 1000])],
    )
    .await;

    let id = files[0]["id"].as_i64().unwrap_or_default();
    let res = user
        .client
        .delete(app.url(&format!("/api/users/{}/chats/{chat}/files/{id}", user.id)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("delete: {e}"));
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    app.upload_ok(
        &user,
        chat,
        &[("again.bin", "application/octet-stream", &[1; 1000])],
    )
    .await;
}

#[tokio::test]
async fn concurrent_uploads_cannot_slip_past_the_quota_together() {
    let app = app_with_quota(QUOTA).await;
    let user = app.user().await;
    let chat = app.chat(&user, "race").await;
    let data = vec![0x5a; 300];
    let uploads = (0..10).map(|i| {
        let name = format!("part-{i}.bin");
        let app = &app;
        let user = &user;
        let data = &data;
        async move {
            app.upload(user, chat, &[(&name, "application/octet-stream", data)])
                .await
                .status()
        }
    });
    let statuses = join_all(uploads).await;
    let accepted = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::PAYLOAD_TOO_LARGE),
        "{statuses:?}"
    );
    assert_eq!(accepted, 3, "{statuses:?}");
    // Refused uploads leave no bytes: one object per accepted file.
    let objects = app
        .stored_files()
        .iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "objects"))
        .count();
    assert_eq!(objects, accepted);
}

#[tokio::test]
async fn a_quota_of_zero_means_no_quota() {
    let app = app_with_quota(0).await;
    let user = app.user().await;
    let chat = app.chat(&user, "unlimited").await;
    let big = vec![1u8; 1024 * 1024];
    for i in 0..3 {
        let name = format!("big-{i}.bin");
        app.upload_ok(&user, chat, &[(&name, "application/octet-stream", &big)])
            .await;
    }
}

#[tokio::test]
async fn bytes_still_streaming_in_count_against_the_quota() {
    const KIB: usize = 1024;
    let app = app_with_quota(1024 * 1024).await;
    let user = app.user().await;
    let chat = app.chat(&user, "in flight").await;

    // Upload A sends 300 KiB of its 400 KiB and stalls.
    let boundary = "in-flight-boundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let (sender, receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(chunk), receiver))
    });
    let request = user
        .client
        .post(app.url(&format!("/api/users/{}/chats/{chat}/files", user.id)))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let upload_a = tokio::spawn(request);
    let mut first = head.into_bytes();
    first.extend(vec![1u8; 300 * KIB]);
    sender
        .send(first)
        .await
        .unwrap_or_else(|e| panic!("send: {e}"));

    // Once the server has written A's first batch to its temp file, A holds those bytes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let written: u64 = app
            .stored_files()
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "part"))
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        if written >= 256 * KIB as u64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "A never reached the disk"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // B would fit the quota on its own, but not beside A's 300 KiB in flight.
    let b = vec![2u8; 800 * KIB];
    let res = app
        .upload(&user, chat, &[("b.bin", "application/octet-stream", &b)])
        .await;
    assert_error(res, StatusCode::PAYLOAD_TOO_LARGE).await;

    let mut rest = vec![1u8; 100 * KIB];
    rest.extend(tail.into_bytes());
    sender
        .send(rest)
        .await
        .unwrap_or_else(|e| panic!("send: {e}"));
    drop(sender);
    let res = upload_a
        .await
        .unwrap_or_else(|e| panic!("upload A: {e}"))
        .unwrap_or_else(|e| panic!("upload A: {e}"));
    assert_eq!(res.status(), StatusCode::CREATED);

    // A is stored (400 KiB) and holds nothing in flight any more: 600 KiB fits.
    let c = vec![3u8; 600 * KIB];
    app.upload_ok(&user, chat, &[("c.bin", "application/octet-stream", &c)])
        .await;
}
