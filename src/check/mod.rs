//! `chatfiles check [--repair]`: proves that every file row's bytes are in the object store
//! intact, and finds what lies there without a row: in the storage directory, or in the bucket
//! (under the prefix) with its unfinished multipart uploads.
//!
//! A plain check only reads (the database is opened read-only, nothing is created) and may run
//! beside the service. `--repair` holds the storage lock, so no upload can race it, and removes
//! only what no row refers to: rows are never deleted, and neither are bytes a row needs.

mod bucket;
mod database;
mod objects;
mod repair;
mod report;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::Config;
use crate::storage::{LOCK_FILE, S3Store, StorageLock, object_path_in};

use database::{file_rows, open_read_only, quick_check, settle};
use objects::{HASH_BUFFER, orphans, temp_entries, verify};
use repair::remove_leftovers;
pub use report::{DamagedFile, Entry, Problem, Report};

/// `chatfiles check`: prints the report; exits 0 when clean (or fully repaired), 1 when damage
/// remains, 2 when the check could not run or a repair step failed.
pub async fn main(config: &Config, repair: bool) -> ExitCode {
    let checked = match config.s3_settings(&config.object_store) {
        None => check(&config.storage_dir, &config.database_path(), repair),
        Some(settings) => match S3Store::new(&settings, config.max_file_size) {
            Ok(store) => {
                check_bucket(&config.storage_dir, &config.database_path(), &store, repair).await
            }
            Err(err) => Err(err.into()),
        },
    };
    let report = match checked {
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
    let (mut report, _lock) = begin(storage_dir, database, repair)?;
    let (conn, rows) = read_rows(database, &mut report)?;

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

/// The start of every check: the storage directory and database exist; with `repair`, the
/// storage lock is held (returned, to keep until the repair is done), else whether the service
/// runs is noted.
fn begin(
    storage_dir: &Path,
    database: &Path,
    repair: bool,
) -> anyhow::Result<(Report, Option<StorageLock>)> {
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
    let lock = if repair {
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
    Ok((report, lock))
}

/// The database's integrity and its file rows (the connection stays open for the re-read).
fn read_rows(
    database: &Path,
    report: &mut Report,
) -> anyhow::Result<(rusqlite::Connection, Vec<database::FileRecord>)> {
    let conn = open_read_only(database)?;
    report.database = quick_check(&conn)?;
    let rows = file_rows(&conn)?;
    report.files = rows.len() as u64;
    report.bytes = rows
        .iter()
        .map(|r| u64::try_from(r.size).unwrap_or(0))
        .fold(0, u64::saturating_add);
    Ok((conn, rows))
}

/// [`check`] for objects in an S3 bucket; `--repair` removes orphans and aborts unfinished
/// uploads.
pub async fn check_bucket(
    storage_dir: &Path,
    database: &Path,
    store: &S3Store,
    repair: bool,
) -> anyhow::Result<Report> {
    let (mut report, _lock) = begin(storage_dir, database, repair)?;
    report.bucket = Some(store.describe());
    let (conn, rows) = read_rows(database, &mut report)?;
    bucket::verify(store, &rows, &mut report).await?;
    if !repair {
        bucket::settle(&conn, &mut report).context("cannot re-read file rows")?;
        report.service_running = report.service_running || service_running(storage_dir)?;
    } else if !report.database.is_empty() {
        report.repair_withheld = !report.orphans.is_empty() || !report.temp.is_empty();
    } else {
        bucket::remove_leftovers(store, &mut report).await;
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

fn relative(storage_dir: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(storage_dir).unwrap_or(path).to_path_buf()
}
