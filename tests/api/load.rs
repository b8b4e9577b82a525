//! Load and contention: many concurrent uploads while others list and download, and a database
//! held by another process. Nothing is lost, nothing is left over, and overload is a 503 with
//! `Retry-After`, never a 500 or a hang.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::{Rng, RngCore};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::helpers::{self, TestApp, TestUser, assert_error, header, sha256};

const USERS: usize = 20;
const UPLOADS: usize = 240;
const READERS: usize = 6;
const MAX_SIZE: usize = 200 * 1024;

/// A file the server acknowledged with 201.
#[derive(Clone)]
struct Uploaded {
    user: usize,
    chat: i64,
    id: i64,
    size: usize,
    sha256: String,
    url: String,
}

/// What every task shares.
struct Shared {
    app: TestApp,
    users: Vec<(TestUser, i64)>,
    uploaded: Mutex<Vec<Uploaded>>,
    failures: Mutex<Vec<String>>,
    shed: AtomicUsize,
    reads: AtomicUsize,
    done: AtomicBool,
}

impl Shared {
    fn fail(&self, what: String) {
        self.failures.lock().push(what);
    }
}

/// A size between 1 byte and [`MAX_SIZE`], spread evenly over orders of magnitude; the first
/// uploads take the extremes.
fn size_for(n: usize) -> usize {
    match n {
        0 => 1,
        1 => MAX_SIZE,
        _ => {
            let exponent = rand::thread_rng().gen_range(0.0..(MAX_SIZE as f64).ln());
            (exponent.exp() as usize).clamp(1, MAX_SIZE)
        }
    }
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

async fn body_text(res: Response) -> String {
    res.text().await.unwrap_or_default()
}

async fn upload_one(shared: Arc<Shared>, n: usize) {
    let user_index = n % USERS;
    let (user, chat) = &shared.users[user_index];
    let bytes = random_bytes(size_for(n));
    let name = format!("load-{n}.bin");
    let res = shared
        .app
        .upload(user, *chat, &[(&name, "application/octet-stream", &bytes)])
        .await;
    let status = res.status();
    if status == StatusCode::CREATED {
        let body: Value = res.json().await.unwrap_or_default();
        let file = &body["chatFiles"][0];
        let (Some(id), Some(url)) = (file["id"].as_i64(), file["url"].as_str()) else {
            shared.fail(format!("upload {n}: 201 without a file: {body}"));
            return;
        };
        if file["size"] != json!(bytes.len()) {
            shared.fail(format!(
                "upload {n}: size {} for {} bytes",
                file["size"],
                bytes.len()
            ));
        }
        shared.uploaded.lock().push(Uploaded {
            user: user_index,
            chat: *chat,
            id,
            size: bytes.len(),
            sha256: sha256(&bytes),
            url: url.to_owned(),
        });
    } else if status == StatusCode::SERVICE_UNAVAILABLE && res.headers().contains_key("retry-after")
    {
        shared.shed.fetch_add(1, Ordering::Relaxed);
    } else {
        let body = body_text(res).await;
        shared.fail(format!("upload {n}: {status} {body}"));
    }
}

/// Lists chats and downloads acknowledged files until the uploads are over.
async fn read_continuously(shared: Arc<Shared>, reader: usize) {
    let mut round = reader;
    while !shared.done.load(Ordering::Relaxed) {
        round += 1;
        let (user, chat) = &shared.users[round % USERS];
        let res = shared.app.list_files(user, *chat).await;
        shared.reads.fetch_add(1, Ordering::Relaxed);
        if res.status() != StatusCode::OK {
            let status = res.status();
            let body = body_text(res).await;
            shared.fail(format!("listing chat {chat} during load: {status} {body}"));
        }
        let pick = {
            let uploaded = shared.uploaded.lock();
            (!uploaded.is_empty()).then(|| uploaded[round * 7919 % uploaded.len()].clone())
        };
        let Some(file) = pick else {
            tokio::task::yield_now().await;
            continue;
        };
        let res = helpers::client()
            .get(&file.url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("download: {e}"));
        shared.reads.fetch_add(1, Ordering::Relaxed);
        let status = res.status();
        if status != StatusCode::OK {
            let body = body_text(res).await;
            shared.fail(format!(
                "download of file {} during load: {status} {body}",
                file.id
            ));
            continue;
        }
        let bytes = res.bytes().await.unwrap_or_default();
        if sha256(&bytes) != file.sha256 {
            shared.fail(format!(
                "download of file {} during load: other bytes",
                file.id
            ));
        }
    }
}

/// Regular files under `dir`, recursively.
fn files_under(dir: PathBuf) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

fn count_rows(app: &TestApp) -> i64 {
    let conn = rusqlite::Connection::open(app.storage_dir().join("chatfiles.db"))
        .unwrap_or_else(|e| panic!("open the database: {e}"));
    conn.query_row("SELECT count(*) FROM chat_conversation_file", [], |r| {
        r.get(0)
    })
    .unwrap_or_else(|e| panic!("count rows: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_from_twenty_users_with_listings_and_downloads_lose_nothing() {
    let app = TestApp::spawn_with(|c| c.max_file_size = 1024 * 1024).await;
    let mut users = Vec::with_capacity(USERS);
    for i in 0..USERS {
        let user = app.user().await;
        let chat = app.chat(&user, &format!("load {i}")).await;
        users.push((user, chat));
    }
    let shared = Arc::new(Shared {
        app,
        users,
        uploaded: Mutex::new(Vec::new()),
        failures: Mutex::new(Vec::new()),
        shed: AtomicUsize::new(0),
        reads: AtomicUsize::new(0),
        done: AtomicBool::new(false),
    });

    let started = Instant::now();
    let mut readers = JoinSet::new();
    for reader in 0..READERS {
        readers.spawn(read_continuously(shared.clone(), reader));
    }
    let mut uploads = JoinSet::new();
    for n in 0..UPLOADS {
        uploads.spawn(upload_one(shared.clone(), n));
    }
    while let Some(joined) = uploads.join_next().await {
        if let Err(err) = joined {
            shared.fail(format!("an upload task failed: {err}"));
        }
    }
    shared.done.store(true, Ordering::Relaxed);
    while let Some(joined) = readers.join_next().await {
        if let Err(err) = joined {
            shared.fail(format!("a reader task failed: {err}"));
        }
    }
    let under_load = started.elapsed();

    let uploaded = shared.uploaded.lock().clone();
    let shed = shared.shed.load(Ordering::Relaxed);
    eprintln!(
        "load: {} uploads acknowledged, {shed} shed with 503, {} reads, in {under_load:?}",
        uploaded.len(),
        shared.reads.load(Ordering::Relaxed),
    );

    // Every acknowledged file is listed exactly once, in its chat, with its size; nothing else is.
    let app = &shared.app;
    let mut expected: HashMap<i64, &Uploaded> = uploaded.iter().map(|f| (f.id, f)).collect();
    assert_eq!(
        expected.len(),
        uploaded.len(),
        "two uploads got the same id"
    );
    let mut listed_total = 0;
    for (index, (user, chat)) in shared.users.iter().enumerate() {
        let res = app.list_files(user, *chat).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap_or_default();
        let files = body["chatFiles"].as_array().cloned().unwrap_or_default();
        listed_total += files.len();
        for file in &files {
            let id = file["id"].as_i64().unwrap_or_default();
            match expected.remove(&id) {
                Some(up) if up.user == index && up.chat == *chat => {
                    if file["size"] != json!(up.size) {
                        shared.fail(format!(
                            "file {id} listed with size {}, uploaded {}",
                            file["size"], up.size
                        ));
                    }
                }
                Some(_) => shared.fail(format!("file {id} listed in the wrong chat {chat}")),
                None => shared.fail(format!(
                    "file {id} listed twice or never acknowledged: {file}"
                )),
            }
        }
    }
    for missing in expected.keys() {
        shared.fail(format!("acknowledged file {missing} is not listed"));
    }

    // Every acknowledged file downloads with its bytes.
    let client = helpers::client();
    for file in &uploaded {
        let res = client
            .get(&file.url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("download: {e}"));
        if res.status() != StatusCode::OK {
            shared.fail(format!("download of file {}: {}", file.id, res.status()));
            continue;
        }
        let bytes = res.bytes().await.unwrap_or_default();
        if sha256(&bytes) != file.sha256 {
            shared.fail(format!("download of file {}: other bytes", file.id));
        }
    }

    // On disk: one object per row, nothing in the temp area.
    let objects = files_under(app.storage_dir().join("objects"));
    let temps = files_under(app.storage_dir().join("tmp"));
    let rows = count_rows(app);
    assert_eq!(usize::try_from(rows).unwrap_or_default(), listed_total);
    if objects.len() != listed_total || !temps.is_empty() {
        shared.fail(format!(
            "{} objects and {} temp files on disk for {listed_total} rows",
            objects.len(),
            temps.len()
        ));
    }
    let failures = shared.failures.lock().clone();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(shed, 0, "uploads were shed with 503");
}

/// Holds `BEGIN EXCLUSIVE` on the database from another connection until told to let go.
struct ExclusiveLock {
    release: std::sync::mpsc::Sender<()>,
    holder: tokio::task::JoinHandle<()>,
}

impl ExclusiveLock {
    async fn take(app: &TestApp) -> ExclusiveLock {
        let path = app.storage_dir().join("chatfiles.db");
        let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open(&path)
                .unwrap_or_else(|e| panic!("open the database: {e}"));
            conn.busy_timeout(Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("busy timeout: {e}"));
            conn.execute_batch("BEGIN EXCLUSIVE")
                .unwrap_or_else(|e| panic!("BEGIN EXCLUSIVE: {e}"));
            let _ = locked_tx.send(());
            let _ = release_rx.recv();
            conn.execute_batch("ROLLBACK")
                .unwrap_or_else(|e| panic!("ROLLBACK: {e}"));
        });
        locked_rx
            .await
            .unwrap_or_else(|e| panic!("the lock was not taken: {e}"));
        ExclusiveLock { release, holder }
    }

    async fn release(self) {
        let _ = self.release.send(());
        self.holder
            .await
            .unwrap_or_else(|e| panic!("the lock holder failed: {e}"));
    }
}

/// A generous bound on any answer while the database is locked: the server's lock wait is
/// about 5 s, and writers queue behind each other for at most 10 s.
const LOCKED_ANSWER_WITHIN: Duration = Duration::from_secs(25);

async fn create_chat(app: &TestApp, user: &TestUser, name: &str) -> Response {
    let send = user
        .client
        .post(app.url(&format!("/api/users/{}/chats", user.id)))
        .json(&json!({"name": name}))
        .send();
    tokio::time::timeout(LOCKED_ANSWER_WITHIN, send)
        .await
        .unwrap_or_else(|_| panic!("creating a chat hung for {LOCKED_ANSWER_WITHIN:?}"))
        .unwrap_or_else(|e| panic!("create chat: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_behind_an_exclusive_database_lock_answer_503_with_retry_after_and_recover() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "before the lock").await;
    let files = app
        .upload_ok(&user, chat, &[("kept.txt", "text/plain", b"kept")])
        .await;
    let url = files[0]["url"].as_str().unwrap_or_default().to_owned();
    let stored_before = app.stored_files().len();

    let lock = ExclusiveLock::take(&app).await;
    let started = Instant::now();
    let created = create_chat(&app, &user, "during the lock").await;
    let create_took = started.elapsed();
    let started = Instant::now();
    let uploaded = tokio::time::timeout(
        LOCKED_ANSWER_WITHIN,
        app.upload(&user, chat, &[("blocked.txt", "text/plain", b"blocked")]),
    )
    .await
    .unwrap_or_else(|_| panic!("an upload hung for {LOCKED_ANSWER_WITHIN:?}"));
    let upload_took = started.elapsed();
    eprintln!(
        "contention: creating a chat was answered {} after {create_took:?}, uploading {} after {upload_took:?}",
        created.status(),
        uploaded.status()
    );

    // Reads go on meanwhile (WAL).
    let started = Instant::now();
    let listed = app.list_files(&user, chat).await;
    let listed_status = listed.status();
    let list_took = started.elapsed();
    let started = Instant::now();
    let download = helpers::client()
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("download: {e}"));
    let download_status = download.status();
    let download_took = started.elapsed();
    eprintln!(
        "contention: listing answered {listed_status} after {list_took:?}, downloading {download_status} after {download_took:?}"
    );
    let stored_during = app.stored_files().len();
    lock.release().await;

    assert_eq!(
        created.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "creating a chat"
    );
    assert!(!header(&created, "retry-after").is_empty());
    assert_error(created, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(
        uploaded.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "uploading"
    );
    assert!(!header(&uploaded, "retry-after").is_empty());
    assert_error(uploaded, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(listed_status, StatusCode::OK, "listing during the lock");
    assert_eq!(
        download_status,
        StatusCode::OK,
        "downloading during the lock"
    );
    assert_eq!(
        stored_during, stored_before,
        "a refused upload left bytes behind"
    );

    // Once the lock is gone, writes succeed again.
    let res = create_chat(&app, &user, "after the lock").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    app.upload_ok(&user, chat, &[("after.txt", "text/plain", b"after")])
        .await;
    let res = app.list_files(&user, chat).await;
    let body: Value = res.json().await.unwrap_or_default();
    let names: Vec<&str> = body["chatFiles"]
        .as_array()
        .map(|files| files.iter().filter_map(|f| f["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["kept.txt", "after.txt"]);
    assert_eq!(app.stored_files().len(), stored_before + 1);
    // Last, as it is about latency: a read must not wait out the lock (about 5 s) for a write
    // it does not need, such as extending the session.
    assert!(
        list_took < Duration::from_millis(2500),
        "listing during the lock took {list_took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writers_queued_behind_a_locked_database_are_all_answered_with_503_in_time() {
    let app = Arc::new(TestApp::spawn().await);
    let user = Arc::new(app.user().await);
    let lock = ExclusiveLock::take(&app).await;
    let started = Instant::now();
    let mut writers = JoinSet::new();
    for i in 0..12 {
        let (app, user) = (app.clone(), user.clone());
        writers.spawn(async move {
            let res = create_chat(&app, &user, &format!("queued {i}")).await;
            let status = res.status();
            let retry = res.headers().contains_key("retry-after");
            (status, retry, body_text(res).await)
        });
    }
    let mut answers = Vec::new();
    while let Some(joined) = writers.join_next().await {
        answers.push(joined.unwrap_or_else(|e| panic!("a writer failed: {e}")));
    }
    let waited = started.elapsed();
    lock.release().await;
    eprintln!("contention: 12 queued writers answered within {waited:?}");
    for (status, retry, body) in &answers {
        assert!(
            *status == StatusCode::SERVICE_UNAVAILABLE && *retry,
            "{status} (Retry-After: {retry}) {body}"
        );
    }
    let res = create_chat(&app, &user, "after").await;
    assert_eq!(res.status(), StatusCode::CREATED);
}
