//! `chatfiles migrate --to <store>`: copies every stored file's bytes from the configured object
//! store to another (local ↔ S3, or bucket to bucket), verifying each one's size and SHA-256.
//!
//! The service is stopped meanwhile (the storage lock is held). The database is only read: the
//! rows name the same keys in either store, so a start with `--object-store <target>` serves
//! every file. Resumable: an object already in the target with the right bytes is skipped, a
//! wrong or partial one is replaced. The source is left as it was.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};

use crate::config::{Config, StoreTarget};
use crate::storage::{ObjectBody, ObjectStore, StorageLock, StoreError};

/// A progress line every this many files.
const PROGRESS_EVERY: usize = 100;

/// A file row, as far as copying it goes.
struct Row {
    id: i64,
    key: String,
    size: u64,
    sha256: String,
    mime: String,
}

/// What a run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub copied: usize,
    pub already_there: usize,
    /// Files that could not be copied, each with why.
    pub failed: Vec<String>,
    pub bytes_copied: u64,
}

/// Runs the migration and prints progress and a summary: exit 0 when every file is in the
/// target with its bytes, 1 when some could not be copied, 2 when it could not run.
pub async fn main(config: &Config, to: &StoreTarget) -> ExitCode {
    match migrate(config, to, &mut std::io::stdout()).await {
        Ok(summary) if summary.failed.is_empty() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Copies every file of the configured store to `to`, writing progress to `out`.
pub async fn migrate(
    config: &Config,
    to: &StoreTarget,
    out: &mut impl Write,
) -> anyhow::Result<Summary> {
    if *to == config.object_store {
        bail!("--to names the object store already in use; nothing to migrate");
    }
    let database = config.database_path();
    if !database.is_file() {
        bail!("no database at {}", database.display());
    }
    let _lock = StorageLock::acquire(&config.storage_dir, Duration::ZERO)
        .with_context(|| {
            format!(
                "cannot lock storage directory {}",
                config.storage_dir.display()
            )
        })?
        .with_context(|| {
            format!(
                "chatfiles is running on {}; stop it before migrating",
                config.storage_dir.display()
            )
        })?;
    let rows = file_rows(&database)?;
    let source = config
        .open_store(&config.object_store)
        .await
        .context("the source")?;
    let target = config.open_store(to).await.context("the target")?;
    let total: u64 = rows.iter().map(|r| r.size).sum();
    writeln!(
        out,
        "migrating {} files ({total} bytes) from {} to {}",
        rows.len(),
        source.describe(),
        target.describe()
    )?;
    let mut summary = Summary::default();
    for (done, row) in rows.iter().enumerate() {
        match copy(&source, &target, row).await {
            Ok(Copied::Already) => summary.already_there += 1,
            Ok(Copied::Now) => {
                summary.copied += 1;
                summary.bytes_copied += row.size;
            }
            Err(why) => {
                writeln!(out, "failed file {} (object {}): {why}", row.id, row.key)?;
                summary.failed.push(format!("file {}: {why}", row.id));
            }
        }
        if (done + 1) % PROGRESS_EVERY == 0 {
            writeln!(out, "{} of {} files done", done + 1, rows.len())?;
        }
    }
    writeln!(
        out,
        "migrated {} files to {}: {} copied ({} bytes), {} already there, {} failed{}",
        rows.len(),
        target.describe(),
        summary.copied,
        summary.bytes_copied,
        summary.already_there,
        summary.failed.len(),
        if summary.failed.is_empty() {
            "; start chatfiles with --object-store set to the target"
        } else {
            "; run it again once the failures are dealt with"
        }
    )?;
    Ok(summary)
}

fn file_rows(database: &std::path::Path) -> anyhow::Result<Vec<Row>> {
    let conn = Connection::open_with_flags(database, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open database {}", database.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut stmt = conn.prepare(
        "SELECT id, object_key, size, sha256, type FROM chat_conversation_file ORDER BY id",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Row {
                id: r.get(0)?,
                key: r.get(1)?,
                size: r.get(2)?,
                sha256: r.get(3)?,
                mime: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()
        .context("cannot read file rows")?;
    Ok(rows)
}

enum Copied {
    Already,
    Now,
}

/// The SHA-256 of an object of `size` bytes in `store`, or `None` when it is not there.
async fn digest(store: &ObjectStore, key: &str, size: u64) -> Result<Option<String>, StoreError> {
    let body = match store.read(key, 0, size, size).await {
        Ok(body) => body,
        Err(StoreError::NotFound) => return Ok(None),
        // A wrong size is as good as absent: it gets replaced.
        Err(StoreError::Other(_)) => return Ok(Some(String::new())),
        Err(err) => return Err(err),
    };
    let mut hasher = Sha256::new();
    match body {
        ObjectBody::Whole(bytes) => hasher.update(&bytes),
        ObjectBody::Stream(mut stream) => {
            while let Some(chunk) = stream.next().await {
                hasher.update(&chunk.map_err(|e| StoreError::Unavailable(e.to_string()))?);
            }
        }
    }
    Ok(Some(hex::encode(hasher.finalize())))
}

/// Copies one file unless the target has it right, checking the bytes against the row.
async fn copy(source: &ObjectStore, target: &ObjectStore, row: &Row) -> Result<Copied, String> {
    let matches = |sha: &str| sha.eq_ignore_ascii_case(&row.sha256);
    match digest(target, &row.key, row.size).await {
        Ok(Some(sha)) if matches(&sha) => return Ok(Copied::Already),
        Ok(_) => {}
        Err(err) => return Err(format!("cannot read the target: {err}")),
    }
    // Whatever an earlier, interrupted run left under the key (a wrong object, an open
    // multipart upload) goes first.
    target
        .purge(&row.key)
        .await
        .map_err(|e| format!("cannot clear the target: {e}"))?;
    let body = source
        .read(&row.key, 0, row.size, row.size)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => "missing in the source".to_owned(),
            other => format!("cannot read the source: {other}"),
        })?;
    let mut writer = target
        .create(&row.key, &row.mime)
        .await
        .map_err(|e| format!("cannot write the target: {e}"))?;
    let written = async {
        match body {
            ObjectBody::Whole(bytes) => writer.write(bytes).await?,
            ObjectBody::Stream(mut stream) => {
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| StoreError::Unavailable(e.to_string()))?;
                    writer.write(chunk).await?;
                }
            }
        }
        writer.finish().await
    }
    .await;
    let (sha, size) = match written {
        Ok(done) => done,
        Err(err) => {
            writer.discard().await;
            return Err(format!("copy failed: {err}"));
        }
    };
    if size != row.size || !matches(&sha) {
        writer.discard().await;
        return Err(format!(
            "the source's bytes do not match the row (size {size}, sha256 {sha}); not copied"
        ));
    }
    writer
        .commit(&row.mime)
        .await
        .map_err(|e| format!("cannot store in the target: {e}"))?;
    Ok(Copied::Now)
}
