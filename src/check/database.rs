//! The database side: opened read-only, its integrity (`PRAGMA quick_check`), the file rows,
//! and the re-read that settles what a running service changed meanwhile.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};

use super::{Entry, Report};
use crate::storage::is_valid_key;

pub(super) fn open_read_only(database: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open database {}", database.display()))?;
    // A reader can still meet a lock while the service recovers or checkpoints the WAL.
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

pub(super) fn quick_check(conn: &Connection) -> anyhow::Result<Vec<String>> {
    let mut stmt = conn
        .prepare("PRAGMA quick_check")
        .context("cannot run PRAGMA quick_check")?;
    let lines = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()
        .context("cannot run PRAGMA quick_check")?;
    Ok(lines.into_iter().filter(|line| line != "ok").collect())
}

pub(super) struct FileRecord {
    pub(super) id: i64,
    pub(super) chat_id: i64,
    pub(super) object_key: String,
    pub(super) size: i64,
    pub(super) sha256: String,
}

/// Every file row, read in one statement (one snapshot) and then let go, so a long hashing run
/// does not pin the WAL while the service writes.
pub(super) fn file_rows(conn: &Connection) -> anyhow::Result<Vec<FileRecord>> {
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

/// Re-reads what a running service may have changed since the snapshot: an upload commits its
/// object before its row (a passing orphan), a delete removes its row before its object (a
/// passing missing file), and temp files come and go.
pub(super) fn settle(
    conn: &Connection,
    storage_dir: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
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

    drop_deleted_damage(conn, report)
}

/// Keeps only the damaged files whose rows are still there: a delete removes its row before its
/// object, so a file caught in between was never damage.
pub(super) fn drop_deleted_damage(conn: &Connection, report: &mut Report) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use crate::check::tests::{fixture, last_line, lines};

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
}
