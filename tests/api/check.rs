//! `chatfiles check [--repair]`: the real binary against the storage of a real server.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{CliRun, TestApp, TestUser, chatfiles_cli};

/// `chatfiles check [args] --storage-dir <dir>`, with the database at its default place.
async fn check(storage_dir: &Path, args: &[&str]) -> CliRun {
    let dir = storage_dir
        .to_str()
        .unwrap_or_else(|| panic!("storage path is not UTF-8"));
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--storage-dir", dir]);
    chatfiles_cli(&all, "").await
}

/// A stored file: its id and object key (the last segment of its signed URL's path).
struct Stored {
    id: i64,
    key: String,
}

fn stored(file: &Value) -> Stored {
    let url = file["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no url in {file}"));
    let url = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let key = url
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .unwrap_or_else(|| panic!("no key in {url}"))
        .to_owned();
    Stored {
        id: file["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("no id in {file}")),
        key,
    }
}

fn object_path(app: &TestApp, key: &str) -> std::path::PathBuf {
    app.storage_dir().join("objects").join(&key[..2]).join(key)
}

async fn delete_file(app: &TestApp, user: &TestUser, chat: i64, file: i64) {
    let res = user
        .client
        .delete(app.url(&format!("/api/users/{}/chats/{chat}/files/{file}", user.id)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("delete: {e}"));
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

const TRUNCATED: &[u8] = b"this one gets truncated";
const FLIPPED: &[u8] = b"this one gets a byte flipped";
const DELETED: &[u8] = b"this one disappears";
const HEALTHY: &[u8] = b"this one stays whole";

#[tokio::test]
async fn a_healthy_store_checks_clean_while_the_service_runs() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "check").await;
    app.upload_ok(
        &user,
        chat,
        &[
            ("a.txt", "text/plain", HEALTHY),
            ("b.bin", "application/octet-stream", &[0u8; 70_000]),
        ],
    )
    .await;

    let run = check(&app.storage_dir(), &[]).await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.lines(),
        [format!(
            "checked 2 files ({} bytes): 0 missing, 0 corrupt, 0 orphans, 0 temp files: ok",
            HEALTHY.len() + 70_000
        )]
    );
    assert_eq!(run.stderr, "");
}

#[tokio::test]
async fn check_finds_damage_and_repair_clears_what_no_row_needs() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "check").await;
    let files = app
        .upload_ok(
            &user,
            chat,
            &[
                ("truncated.txt", "text/plain", TRUNCATED),
                ("flipped.txt", "text/plain", FLIPPED),
                ("deleted.txt", "text/plain", DELETED),
                ("healthy.txt", "text/plain", HEALTHY),
            ],
        )
        .await;
    let [truncated, flipped, deleted, _healthy] = [0, 1, 2, 3].map(|i| stored(&files[i]));
    let dir = app.storage_dir();
    let total = TRUNCATED.len() + FLIPPED.len() + DELETED.len() + HEALTHY.len();
    assert_eq!(check(&dir, &[]).await.code, Some(0));

    std::fs::write(object_path(&app, &truncated.key), &TRUNCATED[..4])
        .unwrap_or_else(|e| panic!("truncate: {e}"));
    let mut bytes = FLIPPED.to_vec();
    bytes[0] ^= 0x01;
    std::fs::write(object_path(&app, &flipped.key), bytes).unwrap_or_else(|e| panic!("flip: {e}"));
    std::fs::remove_file(object_path(&app, &deleted.key)).unwrap_or_else(|e| panic!("delete: {e}"));
    let orphan = format!("ab{}", &uuid::Uuid::new_v4().simple().to_string()[..30]);
    std::fs::create_dir_all(dir.join("objects/ab")).unwrap_or_else(|e| panic!("shard: {e}"));
    std::fs::write(dir.join("objects/ab").join(&orphan), b"nobody's")
        .unwrap_or_else(|e| panic!("orphan: {e}"));
    std::fs::write(dir.join("tmp/junk.part"), b"half an upload")
        .unwrap_or_else(|e| panic!("junk: {e}"));

    let damage = [
        format!(
            "corrupt file {} (chat {chat}): object {}: size 4 != recorded {}",
            truncated.id,
            truncated.key,
            TRUNCATED.len()
        ),
        format!(
            "corrupt file {} (chat {chat}): object {}: sha256 mismatch",
            flipped.id, flipped.key
        ),
        format!(
            "missing file {} (chat {chat}): object {}",
            deleted.id, deleted.key
        ),
        format!("orphan objects/ab/{orphan}"),
    ];

    // While the service runs, the temp file may be an upload in flight: listed, not counted.
    let run = check(&dir, &[]).await;
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    for line in &damage {
        run.assert_has(line);
    }
    run.assert_has("in-flight tmp/junk.part");
    assert_eq!(
        run.last_line(),
        format!(
            "checked 4 files ({total} bytes): 1 missing, 2 corrupt, 1 orphan, 0 temp files, \
             1 in-flight: damage found"
        )
    );

    let run = check(&dir, &["--repair"]).await;
    assert_eq!(run.code, Some(2), "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stderr,
        format!(
            "error: chatfiles is running on {}; stop it before check --repair\n",
            dir.display()
        )
    );
    assert_eq!(run.stdout, "");
    assert!(dir.join("tmp/junk.part").exists());

    app.stop().await;
    let run = check(&dir, &["--repair"]).await;
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    for line in &damage {
        run.assert_has(line);
    }
    run.assert_has("temp tmp/junk.part");
    run.assert_has(&format!("removed objects/ab/{orphan}"));
    run.assert_has("removed tmp/junk.part");
    assert!(
        run.stdout
            .contains("restore the objects from a backup or delete those files through the API"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.last_line(),
        format!(
            "checked 4 files ({total} bytes): 1 missing, 2 corrupt, 1 orphan, 1 temp file, \
             2 removed: damage found"
        )
    );
    assert!(!dir.join("objects/ab").join(&orphan).exists());
    assert!(!dir.join("tmp/junk.part").exists());
    assert!(
        object_path(&app, &truncated.key).exists(),
        "rows' bytes stay"
    );

    // The damaged files are the owner's to delete; then nothing is wrong.
    let app = app.restart().await;
    for file in [&truncated, &flipped, &deleted] {
        delete_file(&app, &user, chat, file.id).await;
    }
    let run = check(&dir, &[]).await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.lines(),
        [format!(
            "checked 1 file ({} bytes): 0 missing, 0 corrupt, 0 orphans, 0 temp files: ok",
            HEALTHY.len()
        )]
    );
}

#[tokio::test]
async fn check_without_a_storage_directory_or_database_cannot_run() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let absent = dir.path().join("absent");
    let run = check(&absent, &[]).await;
    assert_eq!(run.code, Some(2));
    assert_eq!(
        run.stderr,
        format!("error: no storage directory at {}\n", absent.display())
    );
    assert!(!absent.exists(), "check created the storage directory");

    let run = check(dir.path(), &["--repair"]).await;
    assert_eq!(run.code, Some(2));
    let database = dir.path().join("chatfiles.db");
    assert_eq!(
        run.stderr,
        format!("error: no database at {}\n", database.display())
    );
    assert!(!database.exists(), "check created a database");
}
