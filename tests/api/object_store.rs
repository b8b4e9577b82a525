//! S3 storage against a real SeaweedFS node: uploads land in the bucket, listings hand out
//! presigned URLs that the store itself checks (direct) or our own (proxy), deletes reach the
//! bucket, an interrupted run is cleaned up from the journal, and a bad setup stops the start.

use std::sync::Arc;

use chatfiles::config::{Config, StoreTarget};
use chatfiles::startup::Application;
use chatfiles::storage::{Downloads, S3Credentials};
use chrono::{DurationRound, TimeDelta, Utc};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::Value;

use crate::helpers::{TestApp, client, header, sha256};
use crate::seaweed::{self, SeaweedNode};
use crate::tools::require;

/// The prefix the tests keep their objects under, so that the probe object and the bucket's
/// other contents stay apart.
const PREFIX: &str = "chatfiles/";

/// Points `config` at the node's bucket.
pub(crate) fn use_bucket(config: &mut Config, node: &SeaweedNode, downloads: Downloads) {
    config.object_store = StoreTarget::S3 {
        bucket: node.bucket.clone(),
        prefix: PREFIX.into(),
    };
    config.s3.endpoint = Some(node.endpoint.parse().unwrap_or_else(|e| panic!("{e}")));
    config.s3.region = node.region.clone();
    config.s3.path_style = true;
    config.s3.downloads = downloads;
    // Room for files of several parts.
    config.max_file_size = 64 * 1024 * 1024;
    config.s3.credentials = Some(S3Credentials {
        access_key_id: node.access_key.clone(),
        secret_access_key: SecretString::from(node.secret_key.clone()),
        session_token: None,
    });
}

/// A server on the node's bucket whose clock reads the real time (the store checks presigned
/// URLs against its own clock), to the minute.
pub(crate) async fn spawn_on(node: &SeaweedNode, downloads: Downloads) -> TestApp {
    let now = Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap_or_else(|e| panic!("{e}"));
    TestApp::spawn_at(now, |config| use_bucket(config, node, downloads)).await
}

/// The names of the objects in the node's bucket under [`PREFIX`], read with a presigned
/// listing of our own (not through chatfiles).
async fn bucket_keys(app: &TestApp) -> Vec<String> {
    let chatfiles::storage::ObjectStore::S3(store) = open(app).await else {
        panic!("not an S3 store");
    };
    let mut names: Vec<String> = store
        .list()
        .await
        .unwrap_or_else(|e| panic!("listing the bucket: {e}"))
        .into_iter()
        .map(|o| o.name)
        .filter(|name| chatfiles::storage::is_valid_key(name))
        .collect();
    names.sort();
    names
}

async fn open(app: &TestApp) -> chatfiles::storage::ObjectStore {
    app.config
        .open_store(&app.config.object_store)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Stores `bytes` under `key` straight through the store, as an upload would, with no row.
async fn put_object(store: &chatfiles::storage::ObjectStore, key: &str, bytes: &'static [u8]) {
    let mut writer = store
        .create(key, "text/plain")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    writer
        .write(bytes::Bytes::from_static(bytes))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    writer.finish().await.unwrap_or_else(|e| panic!("{e}"));
    writer
        .commit("text/plain")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

async fn get(url: &str) -> reqwest::Response {
    client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

fn url_of(file: &Value) -> String {
    file["url"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn files_round_trip_through_the_bucket_in_both_download_modes() {
    let Some(node) = require(seaweed::start().await) else {
        return;
    };
    for downloads in [Downloads::Direct, Downloads::Proxy] {
        let app = spawn_on(&node, downloads).await;
        let user = app.user().await;
        let chat = app.chat(&user, "s3").await;
        let small = b"hello, bucket".to_vec();
        // Over one part (8 MiB): sent as a multipart upload.
        let large: Vec<u8> = (0..9 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
        let files = app
            .upload_ok(
                &user,
                chat,
                &[
                    ("note.txt", "text/plain", &small),
                    ("big.bin", "application/octet-stream", &large),
                ],
            )
            .await;
        assert_eq!(files.len(), 2);
        for (file, bytes) in files.iter().zip([&small, &large]) {
            let url = url_of(file);
            match downloads {
                Downloads::Direct => assert!(url.starts_with(&node.endpoint), "{url}"),
                Downloads::Proxy => assert!(url.starts_with(&app.address), "{url}"),
            }
            let res = get(&url).await;
            assert_eq!(res.status(), StatusCode::OK, "{url}");
            assert_eq!(res.bytes().await.unwrap_or_default().as_ref(), &bytes[..]);
        }
        let res = get(&url_of(&files[0])).await;
        assert_eq!(header(&res, "content-type"), "text/plain; charset=utf-8");
        assert_eq!(
            header(&res, "content-disposition"),
            "inline; filename=\"note.txt\"; filename*=UTF-8''note.txt"
        );
        let listed = app.list_files(&user, chat).await;
        let listed: Value = listed.json().await.unwrap_or_default();
        for file in listed["chatFiles"].as_array().cloned().unwrap_or_default() {
            let body = get(&url_of(&file)).await.bytes().await.unwrap_or_default();
            assert_eq!(sha256(&body).len(), 64);
            assert_eq!(body.len() as u64, file["size"].as_u64().unwrap_or_default());
        }
        let keys = bucket_keys(&app).await;
        assert!(keys.len() >= 2, "{keys:?}");
        app.stop().await;
    }
}

#[tokio::test]
async fn direct_urls_are_byte_identical_within_a_minute_and_the_store_refuses_changed_ones() {
    let Some(node) = require(seaweed::start().await) else {
        return;
    };
    let app = spawn_on(&node, Downloads::Direct).await;
    let user = app.user().await;
    let chat = app.chat(&user, "direct").await;
    app.upload_ok(&user, chat, &[("a.png", "image/png", b"\x89PNG....")])
        .await;
    let listing = || async {
        let res = app.list_files(&user, chat).await;
        let body: Value = res.json().await.unwrap_or_default();
        url_of(&body["chatFiles"][0])
    };
    // Two listings 30 s apart within one expiry minute (a minute's first second starts a new
    // one).
    app.clock.advance(TimeDelta::seconds(5));
    let first = listing().await;
    app.clock.advance(TimeDelta::seconds(30));
    assert_eq!(first, listing().await, "same expiry minute, same URL");
    assert!(first.contains("X-Amz-Signature="), "{first}");
    assert!(!first.contains("secret"), "{first}");

    let tampered = first.replace("a.png", "b.png");
    assert_ne!(tampered, first);
    assert_eq!(get(&tampered).await.status(), StatusCode::FORBIDDEN);
    let resigned = first.replace("X-Amz-Signature=", "X-Amz-Signature=0");
    assert_eq!(get(&resigned).await.status(), StatusCode::FORBIDDEN);

    // download=1 always answers as an attachment, from the store.
    let file_id = {
        let res = app.list_files(&user, chat).await;
        let body: Value = res.json().await.unwrap_or_default();
        body["chatFiles"][0]["id"].as_i64().unwrap_or_default()
    };
    let res = user
        .client
        .get(app.url(&format!(
            "/api/users/{}/chats/{chat}/files/{file_id}?download=1",
            user.id
        )))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let body: Value = res.json().await.unwrap_or_default();
    let attachment = get(&url_of(&body["chatFile"])).await;
    assert_eq!(attachment.status(), StatusCode::OK);
    assert!(
        header(&attachment, "content-disposition").starts_with("attachment;"),
        "{}",
        header(&attachment, "content-disposition")
    );
    assert_eq!(header(&attachment, "content-type"), "image/png");

    // Deleted: the store answers 404 at once, however valid the URL.
    let res = user
        .client
        .delete(app.url(&format!(
            "/api/users/{}/chats/{chat}/files/{file_id}",
            user.id
        )))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(get(&first).await.status(), StatusCode::NOT_FOUND);
    assert!(bucket_keys(&app).await.is_empty());
}

#[tokio::test]
async fn an_expired_direct_url_is_refused_by_the_store() {
    let Some(node) = require(seaweed::start().await) else {
        return;
    };
    // The service's clock a day behind the store's: what it signs for 15 minutes has expired.
    let yesterday = Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap_or_else(|e| panic!("{e}"))
        - TimeDelta::days(1);
    let app = TestApp::spawn_at(yesterday, |config| {
        use_bucket(config, &node, Downloads::Direct)
    })
    .await;
    let user = app.user().await;
    let chat = app.chat(&user, "expired").await;
    let files = app
        .upload_ok(&user, chat, &[("a.txt", "text/plain", b"old news")])
        .await;
    assert_eq!(
        get(&url_of(&files[0])).await.status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_bad_setup_stops_the_start_with_one_line_naming_the_problem() {
    let Some(node) = require(seaweed::start().await) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let build = |adjust: &dyn Fn(&mut Config)| {
        let mut config = Config::with_storage_dir(dir.path().join("storage"));
        config.bind = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
        use_bucket(&mut config, &node, Downloads::Direct);
        adjust(&mut config);
        async move {
            let clock = Arc::new(chatfiles::clock::SystemClock);
            match Application::build(&config, clock).await {
                Ok(_) => panic!("the start was not refused"),
                Err(err) => format!("{err:#}"),
            }
        }
    };
    let wrong_key = build(&|config| {
        if let Some(credentials) = config.s3.credentials.as_mut() {
            credentials.secret_access_key = SecretString::from("not-the-secret".to_owned());
        }
    })
    .await;
    assert!(wrong_key.contains("refused the credentials"), "{wrong_key}");
    assert!(!wrong_key.contains(&node.secret_key), "{wrong_key}");

    let no_bucket = build(&|config| {
        config.object_store = StoreTarget::S3 {
            bucket: "no-such-bucket".into(),
            prefix: String::new(),
        }
    })
    .await;
    assert!(no_bucket.contains("bucket does not exist"), "{no_bucket}");

    let down = build(&|config| {
        // A port nothing listens on.
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("{e}"));
        config.s3.endpoint = Some(
            format!("http://{free}")
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
        );
    })
    .await;
    assert!(down.contains("object store"), "{down}");
    assert_eq!(down.lines().count(), 1, "{down}");
}

#[tokio::test]
async fn what_an_interrupted_run_left_in_the_bucket_is_removed_at_the_next_start() {
    let Some(node) = require(seaweed::start().await) else {
        return;
    };
    let app = spawn_on(&node, Downloads::Proxy).await;
    let user = app.user().await;
    let chat = app.chat(&user, "journal").await;
    let kept = app
        .upload_ok(&user, chat, &[("kept.txt", "text/plain", b"kept")])
        .await;
    let store = open(&app).await;
    // An upload that died after its object was stored and before its row: its key pending.
    let key = chatfiles::storage::new_key();
    put_object(&store, &key, b"orphan").await;
    // One that died mid-way through a multipart upload.
    let unfinished = chatfiles::storage::new_key();
    let mut big = store
        .create(&unfinished, "application/octet-stream")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    big.write(bytes::Bytes::from(vec![1u8; 9 * 1024 * 1024]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    std::mem::forget(big);
    let db =
        rusqlite::Connection::open(app.config.database_path()).unwrap_or_else(|e| panic!("{e}"));
    for pending in [&key, &unfinished] {
        db.execute(
            "INSERT INTO pending_object (object_key, since) VALUES (?1, 0)",
            [pending],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let chatfiles::storage::ObjectStore::S3(s3) = &store else {
        panic!("not S3");
    };
    assert_eq!(
        s3.unfinished().await.map(|u| u.len()).unwrap_or_default(),
        1
    );
    assert_eq!(bucket_keys(&app).await.len(), 2);

    let app = app.restart().await;
    let listed = app.list_files(&user, chat).await;
    let listed: Value = listed.json().await.unwrap_or_default();
    let kept_key = url_of(&kept[0]);
    assert_eq!(listed["chatFiles"].as_array().map(Vec::len), Some(1));
    let remaining = bucket_keys(&app).await;
    assert_eq!(remaining.len(), 1, "{remaining:?}");
    assert!(
        kept_key.contains(&remaining[0]),
        "{kept_key} vs {remaining:?}"
    );
    assert!(s3.unfinished().await.unwrap_or_default().is_empty());
    // The keys stay in the journal until the first housekeeping pass (5 s after the start) has
    // removed their objects once more: a request of the stopped run may land late.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let pending = loop {
        let pending: i64 = db
            .query_row("SELECT COUNT(*) FROM pending_object", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        if pending == 0 || std::time::Instant::now() > deadline {
            break pending;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(pending, 0);
    assert_eq!(bucket_keys(&app).await.len(), 1);
}

#[tokio::test]
async fn check_catches_an_object_deleted_behind_its_back_and_repair_clears_leftovers() {
    let Some(node) = require(seaweed::start().await) else {
        return;
    };
    let app = spawn_on(&node, Downloads::Proxy).await;
    let user = app.user().await;
    let chat = app.chat(&user, "check").await;
    let files = app
        .upload_ok(
            &user,
            chat,
            &[
                ("a.txt", "text/plain", b"first"),
                ("b.txt", "text/plain", b"second"),
            ],
        )
        .await;
    let chatfiles::storage::ObjectStore::S3(s3) = open(&app).await else {
        panic!("not S3");
    };
    let check = |repair| {
        let (dir, db, s3) = (app.storage_dir(), app.config.database_path(), s3.clone());
        async move {
            chatfiles::check::check_bucket(&dir, &db, &s3, repair)
                .await
                .unwrap_or_else(|e| panic!("{e:#}"))
        }
    };
    let clean = check(false).await;
    assert!(!clean.is_damaged(), "{clean}");
    assert_eq!(clean.files, 2);

    // Behind chatfiles' back: one file's object deleted, a stray object and an open upload.
    let gone = bucket_keys(&app)
        .await
        .into_iter()
        .find(|key| url_of(&files[0]).contains(key.as_str()))
        .unwrap_or_else(|| panic!("no object for {}", url_of(&files[0])));
    s3.remove(&gone).await.unwrap_or_else(|e| panic!("{e}"));
    let store = chatfiles::storage::ObjectStore::S3(s3.clone());
    let stray = chatfiles::storage::new_key();
    put_object(&store, &stray, b"stray").await;
    let mut open_upload = store
        .create(&chatfiles::storage::new_key(), "application/octet-stream")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    open_upload
        .write(bytes::Bytes::from(vec![0u8; 9 * 1024 * 1024]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    std::mem::forget(open_upload);

    let damaged = check(false).await;
    assert!(damaged.is_damaged());
    assert_eq!(damaged.missing(), 1, "{damaged}");
    assert_eq!(damaged.damaged_files[0].object_key, gone);
    assert_eq!(damaged.orphans.len(), 1, "{damaged}");
    assert_eq!(damaged.temp.len(), 1, "{damaged}");
    let text = damaged.to_string();
    assert!(text.contains(&format!("orphan {stray}")), "{text}");
    // The service runs: an open upload may be one in flight.
    assert!(text.contains(", 1 in-flight"), "{text}");

    app.stop().await;
    let stopped = check(false).await.to_string();
    assert!(
        stopped.contains("1 orphan, 1 unfinished upload"),
        "{stopped}"
    );
    let repaired = check(true).await;
    assert_eq!(repaired.removed(), 2, "{repaired}");
    assert!(repaired.errors.is_empty(), "{repaired}");
    // The missing file stays reported: check never deletes rows.
    let after = check(false).await;
    assert_eq!(after.missing(), 1, "{after}");
    assert!(after.orphans.is_empty() && after.temp.is_empty(), "{after}");
    assert!(s3.unfinished().await.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn migrate_copies_every_file_to_the_bucket_and_back_with_its_bytes() {
    let Some(node) = require(seaweed::start().await) else {
        return;
    };
    let now = Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap_or_else(|e| panic!("{e}"));
    let app = TestApp::spawn_at(now, |config| config.max_file_size = 64 * 1024 * 1024).await;
    let user = app.user().await;
    let chat = app.chat(&user, "migrate").await;
    let large: Vec<u8> = (0..9 * 1024 * 1024 + 5).map(|i| (i % 241) as u8).collect();
    let contents: [&[u8]; 3] = [b"one", b"", &large];
    app.upload_ok(
        &user,
        chat,
        &[
            ("one.txt", "text/plain", contents[0]),
            ("empty.bin", "application/octet-stream", contents[1]),
            ("large.bin", "application/octet-stream", contents[2]),
        ],
    )
    .await;
    let expected: Vec<String> = contents.iter().map(|c| sha256(c)).collect();
    app.stop().await;

    let mut to_s3 = app.config.clone();
    use_bucket(&mut to_s3, &node, Downloads::Proxy);
    let bucket = to_s3.object_store.clone();
    // Local storage, with the S3 flags for the target.
    let mut config = app.config.clone();
    config.s3 = to_s3.s3.clone();
    let mut out = Vec::new();
    let first = chatfiles::migrate::migrate(&config, &bucket, &mut out)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let printed = String::from_utf8_lossy(&out).into_owned();
    assert_eq!((first.copied, first.already_there), (3, 0), "{printed}");
    assert!(first.failed.is_empty(), "{printed}");
    assert!(printed.contains("3 copied"), "{printed}");
    // Again: resumable, nothing to do.
    let again = chatfiles::migrate::migrate(&config, &bucket, &mut Vec::new())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!((again.copied, again.already_there), (0, 3));

    // Served from the bucket, and back: the local objects gone first, so they must come back.
    let app = app
        .restart_with(|config| use_bucket(config, &node, Downloads::Proxy))
        .await;
    let downloaded = |app: &TestApp| {
        let address = app.address.clone();
        let list = app.url(&format!("/api/users/{}/chats/{chat}/files", user.id));
        let client = user.client.clone();
        async move {
            let res = client
                .get(list)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let body: Value = res.json().await.unwrap_or_default();
            let mut shas = Vec::new();
            for file in body["chatFiles"].as_array().cloned().unwrap_or_default() {
                let url = url_of(&file);
                assert!(url.starts_with(&address), "{url}");
                let bytes = get(&url).await.bytes().await.unwrap_or_default();
                shas.push(sha256(&bytes));
            }
            shas
        }
    };
    assert_eq!(downloaded(&app).await, expected);
    app.stop().await;
    std::fs::remove_dir_all(app.storage_dir().join("objects")).unwrap_or_else(|e| panic!("{e}"));
    let back = chatfiles::migrate::migrate(&app.config, &StoreTarget::Local, &mut Vec::new())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!((back.copied, back.failed.len()), (3, 0));
    let app = app
        .restart_with(|config| config.object_store = StoreTarget::Local)
        .await;
    assert_eq!(downloaded(&app).await, expected);
}
