//! The objects in an S3 bucket: each row's object listed, of its recorded size, and of its
//! recorded SHA-256 when read back whole; what lies under the prefix without a row; multipart
//! uploads never completed. `--repair` removes those two.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use anyhow::Context;
use futures_util::StreamExt;
use rusqlite::Connection;
use sha2::{Digest, Sha256};

use super::database::FileRecord;
use super::{DamagedFile, Entry, Problem, Report};
use crate::storage::{ObjectBody, S3Store, StoreError, is_valid_key};

/// Compares the rows with the bucket's listing, hashing every listed object of the right size.
pub(super) async fn verify(
    store: &S3Store,
    rows: &[FileRecord],
    report: &mut Report,
) -> anyhow::Result<()> {
    let listed: HashMap<String, u64> = store
        .list()
        .await
        .with_context(|| format!("cannot list {}", store.describe()))?
        .into_iter()
        .map(|o| (o.name, o.size))
        .collect();
    for row in rows {
        let recorded = u64::try_from(row.size).ok();
        let problem = if !is_valid_key(&row.object_key) {
            Some(Problem::InvalidKey)
        } else {
            match listed.get(&row.object_key) {
                None => Some(Problem::Missing),
                Some(&actual) if Some(actual) != recorded => Some(Problem::Size {
                    actual,
                    recorded: row.size,
                }),
                Some(&actual) => hash(store, &row.object_key, actual, &row.sha256)
                    .await
                    .with_context(|| format!("cannot read object {}", row.object_key))?,
            }
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
    let referenced: HashSet<&str> = rows.iter().map(|r| r.object_key.as_str()).collect();
    // Only names the service could have written: anything else under the prefix (a database
    // replica sharing the bucket, say) is not ours to report or remove.
    let mut orphans: Vec<&String> = listed
        .keys()
        .filter(|name| is_valid_key(name) && !referenced.contains(name.as_str()))
        .collect();
    orphans.sort();
    report.orphans = orphans
        .into_iter()
        .map(|name| Entry::new(PathBuf::from(name), false))
        .collect();
    let mut unfinished = store
        .unfinished()
        .await
        .with_context(|| format!("cannot list the multipart uploads of {}", store.describe()))?;
    unfinished.sort_by(|a, b| (&a.name, &a.upload_id).cmp(&(&b.name, &b.upload_id)));
    report.temp = unfinished
        .into_iter()
        .map(|upload| Entry::upload(PathBuf::from(upload.name), upload.upload_id))
        .collect();
    Ok(())
}

/// Whether the object's bytes hash to `recorded`: `Some(problem)` when not.
async fn hash(
    store: &S3Store,
    key: &str,
    size: u64,
    recorded: &str,
) -> Result<Option<Problem>, StoreError> {
    let mut hasher = Sha256::new();
    let mut read = 0u64;
    match store.read(key, 0, size, size).await? {
        ObjectBody::Whole(bytes) => {
            hasher.update(&bytes);
            read = bytes.len() as u64;
        }
        ObjectBody::Stream(mut stream) => {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| StoreError::Unavailable(e.to_string()))?;
                hasher.update(&chunk);
                read += chunk.len() as u64;
            }
        }
    }
    if read != size {
        return Ok(Some(Problem::Size {
            actual: read,
            recorded: i64::try_from(size).unwrap_or(i64::MAX),
        }));
    }
    let actual = hex::encode(hasher.finalize());
    Ok((!actual.eq_ignore_ascii_case(recorded)).then_some(Problem::Sha256Mismatch))
}

/// Drops what a running service settled while we looked: an orphan whose row has since been
/// committed, a damaged file whose row has since been deleted.
pub(super) fn settle(conn: &Connection, report: &mut Report) -> anyhow::Result<()> {
    let mut referenced =
        conn.prepare("SELECT 1 FROM chat_conversation_file WHERE object_key = ?1")?;
    let mut orphans = Vec::with_capacity(report.orphans.len());
    for entry in std::mem::take(&mut report.orphans) {
        let name = entry.path.to_string_lossy().into_owned();
        if !referenced.exists([&name])? {
            orphans.push(entry);
        }
    }
    report.orphans = orphans;
    super::database::drop_deleted_damage(conn, report)
}

/// Removes the orphans and aborts the unfinished uploads found; failures are recorded.
pub(super) async fn remove_leftovers(store: &S3Store, report: &mut Report) {
    for entry in &mut report.orphans {
        let name = entry.path.to_string_lossy().into_owned();
        match store.remove_named(&name).await {
            Ok(()) => entry.removed = true,
            Err(err) => report.errors.push(format!("cannot remove {entry}: {err}")),
        }
    }
    for entry in &mut report.temp {
        let Some(upload_id) = entry.upload_id.clone() else {
            continue;
        };
        let upload = crate::storage::s3::Unfinished {
            name: entry.path.to_string_lossy().into_owned(),
            upload_id,
        };
        match store.abort(&upload).await {
            Ok(()) => entry.removed = true,
            Err(err) => report.errors.push(format!("cannot abort {entry}: {err}")),
        }
    }
}
