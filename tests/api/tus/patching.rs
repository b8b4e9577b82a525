//! Writing an upload: HEAD, PATCH, completion into a ChatFile, two PATCHes at once, and
//! bodies that stall or are cut off.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chatfiles::clock::Clock;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{
    OFFSET_STREAM, assert_tus, chat_file, create_ok, download, head, http_date_after, listing,
    metadata, number, offset_of, parse_http_date, part_files, patch, patch_ok, patching, pattern,
    send, tus, uploads_dir,
};
use crate::helpers::{TestApp, TestUser, assert_error, header, sha256};

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

/// The file's SHA-256 (its ETag) and charset are those of its bytes, whichever way they came:
/// followed as the PATCHes wrote them (a character split between two PATCHes; bytes that are not
/// UTF-8), with a refused PATCH in between, or with a restart halfway (then they are read once
/// more).
#[tokio::test]
async fn the_etag_and_charset_are_those_of_the_bytes_however_the_patches_went() {
    let text = "caf\u{e9} \u{1f600} ".repeat(4_000).into_bytes();
    let mut not_utf8 = text.clone();
    not_utf8[30_001] = 0xFF;
    let mut app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "digests").await;
    let cases = [
        (&text, false, false),
        (&not_utf8, false, false),
        (&text, true, false),
        (&text, false, true),
    ];
    for (bytes, refused, restart) in cases {
        let upload = create_ok(
            &app,
            &user,
            chat,
            bytes.len() as u64,
            Some(&metadata(&[
                ("filename", "notes.txt"),
                ("filetype", "text/plain"),
            ])),
        )
        .await;
        let mut location = upload.location.clone();
        // "é" is two bytes: the first PATCH ends inside it.
        patch_ok(&user.client, &location, 0, &bytes[..4]).await;
        if refused {
            let res = patch(&user.client, &location, 4, &vec![b'x'; bytes.len()]).await;
            assert_error(res, StatusCode::PAYLOAD_TOO_LARGE).await;
        }
        patch_ok(&user.client, &location, 4, &bytes[4..30_000]).await;
        if restart {
            app = app.restart().await;
            location = app.rebase(&location);
        }
        patch_ok(&user.client, &location, 30_000, &bytes[30_000..]).await;
        let file = chat_file(&user.client, &location).await;
        let charset = if *bytes == text {
            "; charset=utf-8"
        } else {
            ""
        };
        assert_eq!(
            file["type"],
            json!(format!("text/plain{charset}")),
            "{file}"
        );
        let res = send(crate::helpers::client().get(app.route_url(&file, false))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "etag"), format!("\"{}\"", sha256(bytes)));
        assert_eq!(
            sha256(&res.bytes().await.unwrap_or_default()),
            sha256(bytes)
        );
    }
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
