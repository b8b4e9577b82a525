//! `chatfiles check [--repair]`: proves that every file row's bytes are on disk intact, and finds
//! what lies in the storage directory without a row.
//!
//! A plain check only reads (the database is opened read-only, nothing is created) and may run
//! beside the service. `--repair` holds the storage lock, so no upload can race it, and removes
//! only what no row refers to: rows are never deleted, and neither are bytes a row needs.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::storage::{LOCK_FILE, StorageLock, is_valid_key, object_path_in};

/// Objects are hashed through a buffer this large, never read whole.
const HASH_BUFFER: usize = 1 << 20;

/// What is wrong with one file row's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Nothing at the object's path.
    Missing,
    /// The row's key is not one we issue, so it names no object.
    InvalidKey,
    /// Something other than a regular file (a directory, a symlink) at the object's path.
    NotAFile,
    Size {
        actual: u64,
        recorded: i64,
    },
    Sha256Mismatch,
}

/// A file row whose bytes are missing or corrupt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedFile {
    pub id: i64,
    pub chat_id: i64,
    pub object_key: String,
    pub problem: Problem,
}

impl DamagedFile {
    pub fn is_missing(&self) -> bool {
        self.problem == Problem::Missing
    }
}

/// Something in `objects/` or `tmp/` that no row accounts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the storage directory, e.g. `objects/ab/ab12…` or `tmp/x.part`.
    pub path: PathBuf,
    pub is_dir: bool,
    /// Whether `--repair` removed it.
    pub removed: bool,
}

impl Entry {
    fn new(path: PathBuf, is_dir: bool) -> Self {
        Self {
            path,
            is_dir,
            removed: false,
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", escape_controls(&self.path.to_string_lossy()))?;
        if self.is_dir {
            write!(f, "/")?;
        }
        Ok(())
    }
}

/// `text` with control characters escaped: a file name may hold a newline or a terminal escape
/// sequence, and must not forge or garble a report line.
fn escape_controls(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// Everything one run found (and, with `--repair`, did).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub repair: bool,
    /// The service held the storage lock: temp files are uploads in flight, not leftovers.
    pub service_running: bool,
    /// File rows checked, and the bytes they record.
    pub files: u64,
    pub bytes: u64,
    /// `PRAGMA quick_check` lines other than `ok`.
    pub database: Vec<String>,
    pub damaged_files: Vec<DamagedFile>,
    pub orphans: Vec<Entry>,
    pub temp: Vec<Entry>,
    /// Set when `--repair` removed nothing because the database itself is damaged: its rows
    /// cannot be trusted to say which objects are orphans.
    pub repair_withheld: bool,
    /// Repair steps that failed (a removal, a directory sync); the run exits 2.
    pub errors: Vec<String>,
}

impl Report {
    pub fn missing(&self) -> usize {
        self.damaged_files.iter().filter(|f| f.is_missing()).count()
    }

    pub fn corrupt(&self) -> usize {
        self.damaged_files.len() - self.missing()
    }

    /// Temp entries that are leftovers (not uploads in flight).
    fn temp_leftovers(&self) -> usize {
        if self.service_running {
            0
        } else {
            self.temp.len()
        }
    }

    pub fn removed(&self) -> usize {
        self.orphans
            .iter()
            .chain(&self.temp)
            .filter(|e| e.removed)
            .count()
    }

    /// Whether damage remains after this run.
    pub fn is_damaged(&self) -> bool {
        !self.database.is_empty()
            || !self.damaged_files.is_empty()
            || self.orphans.iter().any(|e| !e.removed)
            || (!self.service_running && self.temp.iter().any(|e| !e.removed))
    }
}

fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

fn shown_key(key: &str) -> String {
    if is_valid_key(key) {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.database {
            writeln!(f, "database: {}", escape_controls(line))?;
        }
        for file in &self.damaged_files {
            let kind = if file.is_missing() {
                "missing"
            } else {
                "corrupt"
            };
            write!(
                f,
                "{kind} file {} (chat {}): object {}",
                file.id,
                file.chat_id,
                shown_key(&file.object_key)
            )?;
            match &file.problem {
                Problem::Missing => writeln!(f)?,
                Problem::InvalidKey => writeln!(f, ": not a valid object key")?,
                Problem::NotAFile => writeln!(f, ": not a regular file")?,
                Problem::Size { actual, recorded } => {
                    writeln!(f, ": size {actual} != recorded {recorded}")?;
                }
                Problem::Sha256Mismatch => writeln!(f, ": sha256 mismatch")?,
            }
        }
        for entry in &self.orphans {
            writeln!(f, "orphan {entry}")?;
        }
        let temp_word = if self.service_running {
            "in-flight"
        } else {
            "temp"
        };
        for entry in &self.temp {
            writeln!(f, "{temp_word} {entry}")?;
        }
        for entry in self.orphans.iter().chain(&self.temp) {
            if entry.removed {
                writeln!(f, "removed {entry}")?;
            }
        }
        for error in &self.errors {
            writeln!(f, "{error}")?;
        }
        if self.repair_withheld {
            writeln!(
                f,
                "note: nothing was removed: the database is damaged, so objects that look \
                 orphaned may still be needed"
            )?;
        }
        if !self.damaged_files.is_empty() {
            writeln!(
                f,
                "note: {} missing or corrupt bytes; check never deletes rows: restore the \
                 objects from a backup or delete those files through the API",
                plural(self.damaged_files.len() as u64, "file has", "files have")
            )?;
        }
        let leftovers = self.orphans.len() + self.temp_leftovers();
        if !self.repair && leftovers > 0 {
            let first = if self.service_running {
                "stop chatfiles, then run"
            } else {
                "run"
            };
            writeln!(
                f,
                "note: {first} `chatfiles check --repair` to remove orphans and temp files"
            )?;
        }

        write!(
            f,
            "checked {} ({} bytes): {} missing, {} corrupt, {}, {}",
            plural(self.files, "file", "files"),
            self.bytes,
            self.missing(),
            self.corrupt(),
            plural(self.orphans.len() as u64, "orphan", "orphans"),
            plural(self.temp_leftovers() as u64, "temp file", "temp files"),
        )?;
        if self.service_running && !self.temp.is_empty() {
            write!(f, ", {} in-flight", self.temp.len())?;
        }
        if self.repair {
            write!(f, ", {} removed", self.removed())?;
        }
        if !self.database.is_empty() {
            write!(f, ", database damaged")?;
        }
        let verdict = if self.is_damaged() {
            "damage found"
        } else {
            "ok"
        };
        writeln!(f, ": {verdict}")
    }
}

/// `chatfiles check`: prints the report; exits 0 when clean (or fully repaired), 1 when damage
/// remains, 2 when the check could not run or a repair step failed.
pub fn main(config: &Config, repair: bool) -> ExitCode {
    let report = match check(&config.storage_dir, &config.database_path(), repair) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(2);
        }
    };
    let mut out = io::stdout().lock();
    if let Err(err) = write!(out, "{report}").and_then(|()| out.flush()) {
        eprintln!("error: cannot write the report: {err}");
        return ExitCode::from(2);
    }
    if !report.errors.is_empty() {
        ExitCode::from(2)
    } else if report.is_damaged() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Checks `storage_dir` against `database`; with `repair`, removes orphans and temp files.
///
/// An `Err` means the check could not run (nothing there, I/O error, lock held for repair);
/// damage is never an `Err`.
pub fn check(storage_dir: &Path, database: &Path, repair: bool) -> anyhow::Result<Report> {
    match fs::metadata(storage_dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => bail!("{} is not a directory", storage_dir.display()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            bail!("no storage directory at {}", storage_dir.display())
        }
        Err(err) => {
            return Err(err).with_context(|| {
                format!("cannot read storage directory {}", storage_dir.display())
            });
        }
    }
    match fs::metadata(database) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => bail!("database {} is not a file", database.display()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            bail!("no database at {}", database.display())
        }
        Err(err) => {
            return Err(err)
                .with_context(|| format!("cannot read database {}", database.display()));
        }
    }

    let mut report = Report {
        repair,
        ..Report::default()
    };
    // Held until the repair is done: the service cannot start and write meanwhile.
    let _lock = if repair {
        let lock = StorageLock::acquire(storage_dir, Duration::ZERO)
            .with_context(|| format!("cannot lock storage directory {}", storage_dir.display()))?;
        match lock {
            Some(lock) => Some(lock),
            None => bail!(
                "chatfiles is running on {}; stop it before check --repair",
                storage_dir.display()
            ),
        }
    } else {
        report.service_running = service_running(storage_dir)?;
        None
    };

    let conn = open_read_only(database)?;
    report.database = quick_check(&conn)?;
    let rows = file_rows(&conn)?;
    report.files = rows.len() as u64;
    report.bytes = rows
        .iter()
        .map(|r| u64::try_from(r.size).unwrap_or(0))
        .fold(0, u64::saturating_add);

    let objects = storage_dir.join("objects");
    let mut buffer = vec![0u8; HASH_BUFFER];
    for row in &rows {
        let problem = match object_path_in(&objects, &row.object_key) {
            None => Some(Problem::InvalidKey),
            Some(path) => verify(&path, row.size, &row.sha256, &mut buffer).with_context(|| {
                format!("cannot read {}", relative(storage_dir, &path).display())
            })?,
        };
        if let Some(problem) = problem {
            report.damaged_files.push(DamagedFile {
                id: row.id,
                chat_id: row.chat_id,
                object_key: row.object_key.clone(),
                problem,
            });
        }
    }
    drop(buffer);

    let referenced: HashSet<&str> = rows.iter().map(|r| r.object_key.as_str()).collect();
    report.orphans = orphans(&objects, &referenced)
        .with_context(|| format!("cannot list {}", objects.display()))?;
    let tmp = storage_dir.join("tmp");
    report.temp = temp_entries(&tmp).with_context(|| format!("cannot list {}", tmp.display()))?;

    if !repair {
        // The service may have uploaded or deleted while we looked: drop what settled since.
        settle(&conn, storage_dir, &mut report).context("cannot re-read file rows")?;
        report.service_running = report.service_running || service_running(storage_dir)?;
    } else if !report.database.is_empty() {
        report.repair_withheld = !report.orphans.is_empty() || !report.temp.is_empty();
    } else {
        remove_leftovers(storage_dir, &mut report);
    }
    Ok(report)
}

/// Whether another process (the service) holds the storage lock. Probed and let go at once, so
/// a service starting meanwhile is not held up for the length of the check.
fn service_running(storage_dir: &Path) -> anyhow::Result<bool> {
    // No lock file, no holder; probing would create one, and a plain check writes nothing.
    if !storage_dir.join(LOCK_FILE).exists() {
        return Ok(false);
    }
    let lock = StorageLock::acquire(storage_dir, Duration::ZERO)
        .with_context(|| format!("cannot probe the lock of {}", storage_dir.display()))?;
    Ok(lock.is_none())
}

fn open_read_only(database: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open database {}", database.display()))?;
    // A reader can still meet a lock while the service recovers or checkpoints the WAL.
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

fn quick_check(conn: &Connection) -> anyhow::Result<Vec<String>> {
    let mut stmt = conn
        .prepare("PRAGMA quick_check")
        .context("cannot run PRAGMA quick_check")?;
    let lines = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()
        .context("cannot run PRAGMA quick_check")?;
    Ok(lines.into_iter().filter(|line| line != "ok").collect())
}

struct FileRecord {
    id: i64,
    chat_id: i64,
    object_key: String,
    size: i64,
    sha256: String,
}

/// Every file row, read in one statement (one snapshot) and then let go, so a long hashing run
/// does not pin the WAL while the service writes.
fn file_rows(conn: &Connection) -> anyhow::Result<Vec<FileRecord>> {
    let mut stmt = conn
        .prepare(
            "SELECT id, chat_conversation_id, object_key, size, sha256
             FROM chat_conversation_file ORDER BY id",
        )
        .context("cannot read file rows")?;
    let rows = stmt
        .query_map([], |r| {
            Ok(FileRecord {
                id: r.get(0)?,
                chat_id: r.get(1)?,
                object_key: r.get(2)?,
                size: r.get(3)?,
                sha256: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()
        .context("cannot read file rows")?;
    Ok(rows)
}

fn is_shard_name(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn relative(storage_dir: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(storage_dir).unwrap_or(path).to_path_buf()
}

fn is_gone(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// What, if anything, is wrong with the object at `path` against its row.
fn verify(
    path: &Path,
    recorded_size: i64,
    recorded_sha256: &str,
    buffer: &mut [u8],
) -> io::Result<Option<Problem>> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if is_gone(&err) => return Ok(Some(Problem::Missing)),
        Err(err) => return Err(err),
    };
    // The download route would follow a symlink out of the storage directory.
    if !meta.file_type().is_file() {
        return Ok(Some(Problem::NotAFile));
    }
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if is_gone(&err) => return Ok(Some(Problem::Missing)),
        Err(err) => return Err(err),
    };
    let size_problem = |actual: u64| {
        (u64::try_from(recorded_size).ok() != Some(actual)).then_some(Problem::Size {
            actual,
            recorded: recorded_size,
        })
    };
    if let Some(problem) = size_problem(file.metadata()?.len()) {
        return Ok(Some(problem));
    }
    let mut hasher = Sha256::new();
    let mut read = 0u64;
    loop {
        let n = match file.read(buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        hasher.update(&buffer[..n]);
        read += n as u64;
    }
    // Only a file changing under us gets here: its length at open time no longer holds.
    if let Some(problem) = size_problem(read) {
        return Ok(Some(problem));
    }
    let actual = hex::encode(hasher.finalize());
    Ok((!actual.eq_ignore_ascii_case(recorded_sha256)).then_some(Problem::Sha256Mismatch))
}

/// Sorted entries of `dir`: (name, is a directory, not following symlinks). A missing `dir` is
/// empty: the service creates it, and its absence is damage only if rows need it.
fn sorted_entries(dir: &Path) -> io::Result<Vec<(std::ffi::OsString, bool)>> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut entries = Vec::new();
    for entry in read {
        let entry = entry?;
        entries.push((entry.file_name(), entry.file_type()?.is_dir()));
    }
    entries.sort();
    Ok(entries)
}

/// Everything under `objects/` that is not a referenced object at its exact path. A directory
/// that is not a shard is one orphan, however much it holds; empty shards are normal (the
/// service never removes them).
fn orphans(objects: &Path, referenced: &HashSet<&str>) -> io::Result<Vec<Entry>> {
    let base = Path::new("objects");
    let mut found = Vec::new();
    for (shard, is_dir) in sorted_entries(objects)? {
        let shard_name = shard.to_str().filter(|s| is_shard_name(s));
        let Some(shard_name) = shard_name.filter(|_| is_dir) else {
            found.push(Entry::new(base.join(&shard), is_dir));
            continue;
        };
        for (name, is_dir) in sorted_entries(&objects.join(&shard))? {
            let in_place = name.to_str().is_some_and(|key| {
                referenced.contains(key) && is_valid_key(key) && key.starts_with(shard_name)
            });
            if !in_place {
                found.push(Entry::new(base.join(&shard).join(&name), is_dir));
            }
        }
    }
    Ok(found)
}

fn temp_entries(tmp: &Path) -> io::Result<Vec<Entry>> {
    let base = Path::new("tmp");
    Ok(sorted_entries(tmp)?
        .into_iter()
        .map(|(name, is_dir)| Entry::new(base.join(name), is_dir))
        .collect())
}

/// Re-reads what a running service may have changed since the snapshot: an upload commits its
/// object before its row (a passing orphan), a delete removes its row before its object (a
/// passing missing file), and temp files come and go.
fn settle(conn: &Connection, storage_dir: &Path, report: &mut Report) -> anyhow::Result<()> {
    let exists = |entry: &Entry| fs::symlink_metadata(storage_dir.join(&entry.path)).is_ok();
    let mut referenced =
        conn.prepare("SELECT 1 FROM chat_conversation_file WHERE object_key = ?1")?;
    let mut orphans = Vec::with_capacity(report.orphans.len());
    for entry in std::mem::take(&mut report.orphans) {
        let key = entry.path.file_name().and_then(|n| n.to_str());
        let now_referenced = match key {
            Some(key) if !entry.is_dir && is_valid_key(key) => {
                entry.path == Path::new("objects").join(&key[..2]).join(key)
                    && referenced.exists([key])?
            }
            _ => false,
        };
        if !now_referenced && exists(&entry) {
            orphans.push(entry);
        }
    }
    report.orphans = orphans;
    report.temp.retain(exists);

    let mut still_there =
        conn.prepare("SELECT 1 FROM chat_conversation_file WHERE id = ?1 AND object_key = ?2")?;
    let mut damaged = Vec::with_capacity(report.damaged_files.len());
    for file in std::mem::take(&mut report.damaged_files) {
        if still_there.exists(rusqlite::params![file.id, file.object_key])? {
            damaged.push(file);
        }
    }
    report.damaged_files = damaged;
    Ok(())
}

/// Removes orphans and temp files, then syncs the directories it changed so the removals
/// survive a crash. Failures are recorded, not raised: the report still shows what was done.
fn remove_leftovers(storage_dir: &Path, report: &mut Report) {
    let mut changed = BTreeSet::new();
    for entry in report.orphans.iter_mut().chain(report.temp.iter_mut()) {
        let path = storage_dir.join(&entry.path);
        let result = if entry.is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match result {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                report.errors.push(format!("cannot remove {entry}: {err}"));
                continue;
            }
        }
        entry.removed = true;
        if let Some(parent) = path.parent() {
            changed.insert(parent.to_path_buf());
        }
    }
    for dir in changed {
        if let Err(err) = File::open(&dir).and_then(|d| d.sync_all()) {
            report.errors.push(format!(
                "cannot sync {}: {err}",
                relative(storage_dir, &dir).display()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;
    use crate::storage::{Storage, new_key};
    use rusqlite::params;
    use tempfile::TempDir;

    /// A storage directory with a real database, one user and one chat.
    struct Fixture {
        _dir: TempDir,
        storage_dir: PathBuf,
        database: PathBuf,
        storage: Storage,
        conn: Connection,
    }

    const CHAT: i64 = 1;

    fn fixture() -> Fixture {
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
        fn add(&self, bytes: &[u8]) -> (i64, String) {
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

        fn insert_row(&self, key: &str, size: i64, sha: &str) {
            self.conn
                .execute(
                    "INSERT INTO chat_conversation_file
                         (chat_conversation_id, object_key, name, size, type, sha256, created_at)
                     VALUES (?1, ?2, 'f.bin', ?3, 'application/octet-stream', ?4, 0)",
                    params![CHAT, key, size, sha],
                )
                .unwrap_or_else(|e| panic!("row: {e}"));
        }

        fn path_of(&self, key: &str) -> PathBuf {
            self.storage
                .object_path(key)
                .unwrap_or_else(|| panic!("not a key: {key}"))
        }

        fn write(&self, relative: &str, bytes: &[u8]) {
            let path = self.storage_dir.join(relative);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
            }
            fs::write(path, bytes).unwrap_or_else(|e| panic!("{relative}: {e}"));
        }

        fn check(&self, repair: bool) -> Report {
            check(&self.storage_dir, &self.database, repair)
                .unwrap_or_else(|e| panic!("check did not run: {e:#}"))
        }

        fn lock(&self) -> StorageLock {
            StorageLock::acquire(&self.storage_dir, Duration::ZERO)
                .unwrap_or_else(|e| panic!("lock: {e}"))
                .unwrap_or_else(|| panic!("lock busy"))
        }
    }

    fn lines(report: &Report) -> Vec<String> {
        report.to_string().lines().map(str::to_owned).collect()
    }

    fn last_line(report: &Report) -> String {
        lines(report).pop().unwrap_or_default()
    }

    #[test]
    fn a_clean_store_passes() {
        let fx = fixture();
        fx.add(b"hello");
        fx.add(&vec![7u8; HASH_BUFFER * 2 + 3]);
        fx.add(b"");
        let report = fx.check(false);
        assert!(!report.is_damaged(), "{report}");
        assert_eq!(report.files, 3);
        let bytes = 5 + HASH_BUFFER * 2 + 3;
        assert_eq!(
            lines(&report),
            [format!(
                "checked 3 files ({bytes} bytes): 0 missing, 0 corrupt, 0 orphans, 0 temp files: ok"
            )]
        );
    }

    #[test]
    fn an_empty_store_passes() {
        let fx = fixture();
        let report = fx.check(false);
        assert!(!report.is_damaged());
        assert_eq!(
            last_line(&report),
            "checked 0 files (0 bytes): 0 missing, 0 corrupt, 0 orphans, 0 temp files: ok"
        );
    }

    #[test]
    fn a_missing_object_is_damage() {
        let fx = fixture();
        fx.add(b"kept");
        let (id, key) = fx.add(b"lost");
        fs::remove_file(fx.path_of(&key)).unwrap_or_else(|e| panic!("{e}"));
        let report = fx.check(false);
        assert!(report.is_damaged());
        assert_eq!(
            report.damaged_files,
            [DamagedFile {
                id,
                chat_id: CHAT,
                object_key: key.clone(),
                problem: Problem::Missing
            }]
        );
        let lines = lines(&report);
        assert_eq!(
            lines[0],
            format!("missing file {id} (chat {CHAT}): object {key}")
        );
        assert!(lines[1].starts_with("note: 1 file has missing or corrupt bytes"));
        assert_eq!(
            lines[2],
            "checked 2 files (8 bytes): 1 missing, 0 corrupt, 0 orphans, 0 temp files: damage found"
        );
    }

    #[test]
    fn a_missing_shard_directory_is_a_missing_object() {
        let fx = fixture();
        let (_, key) = fx.add(b"x");
        let shard = fx.path_of(&key).parent().map(Path::to_path_buf);
        fs::remove_dir_all(shard.unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
        let report = fx.check(false);
        assert_eq!(report.missing(), 1, "{report}");
    }

    #[test]
    fn a_truncated_object_is_corrupt() {
        let fx = fixture();
        let (id, key) = fx.add(b"hello");
        fs::write(fx.path_of(&key), b"hel").unwrap_or_else(|e| panic!("{e}"));
        let report = fx.check(false);
        assert!(report.is_damaged());
        assert_eq!(report.corrupt(), 1);
        assert_eq!(
            lines(&report)[0],
            format!("corrupt file {id} (chat {CHAT}): object {key}: size 3 != recorded 5")
        );
        assert!(
            last_line(&report)
                .ends_with("0 missing, 1 corrupt, 0 orphans, 0 temp files: damage found")
        );
    }

    #[test]
    fn changed_bytes_of_the_same_size_are_corrupt() {
        let fx = fixture();
        let (id, key) = fx.add(b"hello");
        fs::write(fx.path_of(&key), b"jello").unwrap_or_else(|e| panic!("{e}"));
        let report = fx.check(false);
        assert_eq!(report.damaged_files[0].problem, Problem::Sha256Mismatch);
        assert_eq!(
            lines(&report)[0],
            format!("corrupt file {id} (chat {CHAT}): object {key}: sha256 mismatch")
        );
    }

    #[test]
    fn a_row_with_a_bad_key_or_a_non_file_is_corrupt() {
        let fx = fixture();
        fx.insert_row("../../etc/passwd", 1, "00");
        let bad_id = fx.conn.last_insert_rowid();
        let key = new_key();
        fs::create_dir_all(fx.path_of(&key)).unwrap_or_else(|e| panic!("{e}"));
        fx.insert_row(&key, 0, &hex::encode(Sha256::digest(b"")));
        let dir_id = fx.conn.last_insert_rowid();
        let report = fx.check(false);
        assert_eq!(report.corrupt(), 2, "{report}");
        assert_eq!(report.orphans, [], "a referenced path is never an orphan");
        let lines = lines(&report);
        assert_eq!(
            lines[0],
            format!(
                "corrupt file {bad_id} (chat {CHAT}): object \"../../etc/passwd\": not a valid object key"
            )
        );
        assert_eq!(
            lines[1],
            format!("corrupt file {dir_id} (chat {CHAT}): object {key}: not a regular file")
        );
    }

    #[test]
    fn unreferenced_entries_under_objects_are_orphans() {
        let fx = fixture();
        fx.add(b"kept");
        let stray = new_key();
        fx.write(&format!("objects/{}/{stray}", &stray[..2]), b"stray");
        fx.write("objects/loose", b"loose");
        fx.write("objects/zz/inner/deep", b"deep");
        // A referenced key in the wrong shard: the row's object is missing, the file an orphan.
        let (id, misplaced) = fx.add(b"moved");
        let wrong_shard = if misplaced.starts_with("00") {
            "01"
        } else {
            "00"
        };
        fx.write(&format!("objects/{wrong_shard}/{misplaced}"), b"moved");
        fs::remove_file(fx.path_of(&misplaced)).unwrap_or_else(|e| panic!("{e}"));

        let report = fx.check(false);
        assert!(report.is_damaged());
        let mut expected = vec![
            format!("orphan objects/{}/{stray}", &stray[..2]),
            "orphan objects/loose".to_owned(),
            "orphan objects/zz/".to_owned(),
            format!("orphan objects/{wrong_shard}/{misplaced}"),
        ];
        expected.sort();
        let orphans: Vec<String> = lines(&report)
            .into_iter()
            .filter(|l| l.starts_with("orphan "))
            .collect();
        assert_eq!(orphans, expected);
        assert_eq!(report.damaged_files.len(), 1);
        assert_eq!(report.damaged_files[0].id, id);
        assert!(
            last_line(&report)
                .ends_with("1 missing, 0 corrupt, 4 orphans, 0 temp files: damage found")
        );
    }

    #[test]
    fn empty_shards_are_not_orphans() {
        let fx = fixture();
        fs::create_dir_all(fx.storage_dir.join("objects/ab")).unwrap_or_else(|e| panic!("{e}"));
        assert!(!fx.check(false).is_damaged());
    }

    #[test]
    fn temp_files_are_damage_unless_the_service_runs() {
        let fx = fixture();
        fx.add(b"kept");
        fx.write("tmp/abc.part", b"partial");
        let report = fx.check(false);
        assert!(report.is_damaged());
        assert!(lines(&report).contains(&"temp tmp/abc.part".to_owned()));
        assert!(last_line(&report).ends_with("0 orphans, 1 temp file: damage found"));

        let _service = fx.lock();
        let report = fx.check(false);
        assert!(report.service_running);
        assert!(!report.is_damaged(), "{report}");
        assert_eq!(lines(&report)[0], "in-flight tmp/abc.part");
        assert!(last_line(&report).ends_with("0 orphans, 0 temp files, 1 in-flight: ok"));

        fx.write("objects/ab/stray", b"x");
        assert!(
            fx.check(false).is_damaged(),
            "orphans count while the service runs"
        );
    }

    #[test]
    fn control_characters_in_names_cannot_forge_lines() {
        let fx = fixture();
        fx.write("tmp/a\nchecked 0 files: ok", b"x");
        let report = fx.check(false);
        assert_eq!(lines(&report)[0], "temp tmp/a\\nchecked 0 files: ok");
    }

    #[test]
    fn repair_is_refused_while_the_service_runs() {
        let fx = fixture();
        fx.write("tmp/abc.part", b"partial");
        let _service = fx.lock();
        let err = check(&fx.storage_dir, &fx.database, true)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert_eq!(
            err,
            format!(
                "chatfiles is running on {}; stop it before check --repair",
                fx.storage_dir.display()
            )
        );
        assert!(fx.storage_dir.join("tmp/abc.part").exists());
    }

    #[test]
    fn repair_removes_orphans_and_temp_files_but_keeps_rows() {
        let fx = fixture();
        let (_, kept) = fx.add(b"kept");
        let (lost_id, lost) = fx.add(b"lost");
        fs::remove_file(fx.path_of(&lost)).unwrap_or_else(|e| panic!("{e}"));
        let stray = new_key();
        let stray_path = format!("objects/{}/{stray}", &stray[..2]);
        fx.write(&stray_path, b"stray");
        fx.write("objects/zz/inner/deep", b"deep");
        fx.write("tmp/abc.part", b"partial");

        let report = fx.check(true);
        assert!(report.is_damaged(), "the missing row remains");
        assert_eq!(report.errors, Vec::<String>::new());
        let lines = lines(&report);
        for line in [
            format!("removed {stray_path}"),
            "removed objects/zz/".to_owned(),
            "removed tmp/abc.part".to_owned(),
            format!("missing file {lost_id} (chat {CHAT}): object {lost}"),
        ] {
            assert!(lines.contains(&line), "no {line:?} in {lines:#?}");
        }
        assert!(
            lines
                .iter()
                .any(|l| l.contains("restore the objects from a backup"))
        );
        assert_eq!(
            lines.last().map(String::as_str),
            Some(
                "checked 2 files (8 bytes): 1 missing, 0 corrupt, 2 orphans, 1 temp file, \
                 3 removed: damage found"
            )
        );
        assert!(!fx.storage_dir.join(&stray_path).exists());
        assert!(!fx.storage_dir.join("objects/zz").exists());
        assert!(!fx.storage_dir.join("tmp/abc.part").exists());
        assert_eq!(fs::read(fx.path_of(&kept)).ok(), Some(b"kept".to_vec()));
        let rows: i64 = fx
            .conn
            .query_row("SELECT count(*) FROM chat_conversation_file", [], |r| {
                r.get(0)
            })
            .unwrap_or_default();
        assert_eq!(rows, 2);

        let again = fx.check(true);
        assert_eq!(again.orphans, []);
        assert_eq!(again.temp, []);
        assert_eq!(again.missing(), 1);
    }

    #[test]
    fn a_full_repair_leaves_a_clean_store() {
        let fx = fixture();
        fx.add(b"kept");
        fx.write("objects/ab/stray", b"x");
        let report = fx.check(true);
        assert!(!report.is_damaged(), "{report}");
        assert_eq!(
            last_line(&report),
            "checked 1 file (4 bytes): 0 missing, 0 corrupt, 1 orphan, 0 temp files, 1 removed: ok"
        );
        assert!(!fx.check(false).is_damaged());
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
        let report =
            check(&fx.storage_dir, &fx.database, false).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(report.is_damaged());
        assert_eq!(listing(&fx.storage_dir), before);
        assert_eq!(fs::read(&fx.database).ok(), Some(database));
        assert!(fx.storage_dir.join("tmp/abc.part").exists());
    }

    #[test]
    fn a_damaged_database_is_damage_and_withholds_repair() {
        let fx = fixture();
        // A NULL in a column that the schema (rewritten behind SQLite's back) says is NOT NULL.
        fx.conn
            .execute_batch(
                "CREATE TABLE junk (x);
                 INSERT INTO junk VALUES (NULL);
                 PRAGMA writable_schema = ON;
                 UPDATE sqlite_schema SET sql = 'CREATE TABLE junk (x NOT NULL)' WHERE name = 'junk';
                 PRAGMA writable_schema = OFF;",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        fx.write("objects/ab/stray", b"x");
        let report = fx.check(true);
        assert!(report.is_damaged());
        assert!(!report.database.is_empty(), "{report}");
        assert!(report.repair_withheld);
        assert!(fx.storage_dir.join("objects/ab/stray").exists());
        let lines = lines(&report);
        assert!(lines[0].starts_with("database: "), "{lines:#?}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("note: nothing was removed"))
        );
        assert_eq!(
            last_line(&report),
            "checked 0 files (0 bytes): 0 missing, 0 corrupt, 1 orphan, 0 temp files, 0 removed, \
             database damaged: damage found"
        );
    }

    #[test]
    fn a_symlink_in_place_of_an_object_is_corrupt() {
        let fx = fixture();
        let (id, key) = fx.add(b"hello");
        let outside = fx.storage_dir.join("outside");
        fs::write(&outside, b"hello").unwrap_or_else(|e| panic!("{e}"));
        fs::remove_file(fx.path_of(&key)).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(&outside, fx.path_of(&key)).unwrap_or_else(|e| panic!("{e}"));
        let report = fx.check(false);
        assert_eq!(
            lines(&report)[0],
            format!("corrupt file {id} (chat {CHAT}): object {key}: not a regular file")
        );
    }

    #[test]
    fn object_paths_match_the_storage_layout() {
        let fx = fixture();
        let key = new_key();
        assert_eq!(
            object_path_in(&fx.storage_dir.join("objects"), &key),
            fx.storage.object_path(&key)
        );
        assert_eq!(
            object_path_in(&fx.storage_dir.join("objects"), "../x"),
            None
        );
    }
}
