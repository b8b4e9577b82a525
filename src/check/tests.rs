//! Fixtures shared by every check test (a storage directory with a real database), and the
//! tests of the command's entry point: what it refuses and what it leaves untouched.

use super::*;
use crate::db::Db;
use crate::storage::{Storage, new_key};
use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// A storage directory with a real database, one user and one chat.
pub(super) struct Fixture {
    _dir: TempDir,
    pub(super) storage_dir: PathBuf,
    pub(super) database: PathBuf,
    pub(super) storage: Storage,
    pub(super) conn: Connection,
}

pub(super) const CHAT: i64 = 1;

pub(super) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let storage_dir = dir.path().join("storage");
    let storage = Storage::open(&storage_dir).unwrap_or_else(|e| panic!("storage: {e}"));
    let database = storage_dir.join("chatfiles.db");
    drop(Db::open(&database, 1).unwrap_or_else(|e| panic!("database: {e:#}")));
    let conn = Connection::open(&database).unwrap_or_else(|e| panic!("open: {e}"));
    conn.execute_batch(
        "INSERT INTO neptun_user (id, primary_email, password_hash, created_at, updated_at)
             VALUES (1, 'a@example.com', 'x', 0, 0);
         INSERT INTO chat_conversation (id, neptun_user_id, name, created_at, updated_at)
             VALUES (1, 1, 'chat', 0, 0);",
    )
    .unwrap_or_else(|e| panic!("seed: {e}"));
    Fixture {
        _dir: dir,
        storage_dir,
        database,
        storage,
        conn,
    }
}

impl Fixture {
    /// Stores `bytes` as a new object with its row; returns (file id, key).
    pub(super) fn add(&self, bytes: &[u8]) -> (i64, String) {
        let key = new_key();
        let path = self.path_of(&key);
        if let Some(shard) = path.parent() {
            fs::create_dir_all(shard).unwrap_or_else(|e| panic!("shard: {e}"));
        }
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("object: {e}"));
        let sha = hex::encode(Sha256::digest(bytes));
        self.insert_row(&key, bytes.len() as i64, &sha);
        (self.conn.last_insert_rowid(), key)
    }

    pub(super) fn insert_row(&self, key: &str, size: i64, sha: &str) {
        self.conn
            .execute(
                "INSERT INTO chat_conversation_file
                     (chat_conversation_id, object_key, name, size, type, sha256, created_at)
                 VALUES (?1, ?2, 'f.bin', ?3, 'application/octet-stream', ?4, 0)",
                params![CHAT, key, size, sha],
            )
            .unwrap_or_else(|e| panic!("row: {e}"));
    }

    pub(super) fn path_of(&self, key: &str) -> PathBuf {
        self.storage
            .object_path(key)
            .unwrap_or_else(|| panic!("not a key: {key}"))
    }

    pub(super) fn write(&self, relative: &str, bytes: &[u8]) {
        let path = self.storage_dir.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
        }
        fs::write(path, bytes).unwrap_or_else(|e| panic!("{relative}: {e}"));
    }

    pub(super) fn check(&self, repair: bool) -> Report {
        check(&self.storage_dir, &self.database, repair)
            .unwrap_or_else(|e| panic!("check did not run: {e:#}"))
    }

    pub(super) fn lock(&self) -> StorageLock {
        StorageLock::acquire(&self.storage_dir, Duration::ZERO)
            .unwrap_or_else(|e| panic!("lock: {e}"))
            .unwrap_or_else(|| panic!("lock busy"))
    }
}

pub(super) fn lines(report: &Report) -> Vec<String> {
    report.to_string().lines().map(str::to_owned).collect()
}

pub(super) fn last_line(report: &Report) -> String {
    lines(report).pop().unwrap_or_default()
}

#[test]
fn nothing_there_is_an_error_and_nothing_is_created() {
    let fx = fixture();
    let absent = fx.storage_dir.join("absent");
    let err = check(&absent, &fx.database, true)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err,
        Some(format!("no storage directory at {}", absent.display()))
    );
    assert!(!absent.exists());

    let no_db = fx.storage_dir.join("none.db");
    let err = check(&fx.storage_dir, &no_db, false)
        .err()
        .map(|e| e.to_string());
    assert_eq!(err, Some(format!("no database at {}", no_db.display())));
    assert!(!no_db.exists());

    fs::write(&no_db, b"").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        check(&fx.storage_dir, &no_db, false).is_err(),
        "not a chatfiles database"
    );
}

#[test]
fn a_plain_check_writes_nothing() {
    let fx = fixture();
    fx.add(b"kept");
    fx.write("tmp/abc.part", b"partial");
    drop(fx.conn);
    // SQLite needs the -wal and -shm sidecars to read a WAL database, even read-only; the
    // service keeps them there anyway. Anything else would be the check writing.
    let listing = |dir: &Path| {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| !n.ends_with("-wal") && !n.ends_with("-shm"))
            .collect();
        names.sort();
        names
    };
    let before = listing(&fx.storage_dir);
    assert!(!before.iter().any(|n| n == LOCK_FILE));
    let database = fs::read(&fx.database).unwrap_or_else(|e| panic!("{e}"));
    let report = check(&fx.storage_dir, &fx.database, false).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(report.is_damaged());
    assert_eq!(listing(&fx.storage_dir), before);
    assert_eq!(fs::read(&fx.database).ok(), Some(database));
    assert!(fx.storage_dir.join("tmp/abc.part").exists());
}
