//! Moving a resumable upload's bytes: a PATCH body appended to the part file and made durable,
//! the last byte turning the upload into a file of the object store, and the sweep of what
//! expired or was left behind.

use actix_web::error::PayloadError;
use actix_web::web;
use bytes::BytesMut;
use futures_util::StreamExt;

use crate::db::uploads::{self, UploadRow};
use crate::db::{self, FileRow, NewFile};
use crate::error::AppError;
use crate::resumable::parts::PartDigest;
use crate::resumable::{PartWriter, UploadLock};
use crate::state::{AppState, to_completion};
use crate::storage;

/// Body bytes gathered before one trip to the blocking pool to write them.
const WRITE_BATCH: usize = 256 * 1024;

/// How a PATCH body ended.
enum BodyEnd {
    /// All of it arrived.
    Whole,
    /// It was cut off (or stalled): what arrived is kept, then the error is the answer.
    Cut(AppError),
    /// It goes past the upload's length: nothing of it is kept.
    TooLong,
}

/// Appends `body` to `upload` from its acknowledged offset, holding its `lock`; returns the
/// new offset, durable. When the body is cut off, the bytes that did arrive are kept (and
/// acknowledged) before the error is returned; when it goes past the upload's length, none
/// are. The last byte makes the upload a file before this returns. Runs to the end even if
/// the client goes away.
pub async fn append(
    state: &web::Data<AppState>,
    lock: UploadLock,
    upload: UploadRow,
    body: web::Payload,
) -> Result<u64, AppError> {
    let state = state.clone();
    to_completion(async move {
        let _lock = lock;
        let mut body = body;
        let start = upload.received;
        let mut writer = open_at(&state, &upload.id, start).await?;
        let mut batch = BytesMut::new();
        let end = loop {
            match body.next().await {
                None => break BodyEnd::Whole,
                Some(Err(err)) => break BodyEnd::Cut(payload_error(err)),
                Some(Ok(chunk)) => {
                    let arrived = writer.offset() + (batch.len() + chunk.len()) as u64;
                    if arrived > upload.length {
                        break BodyEnd::TooLong;
                    }
                    batch.extend_from_slice(&chunk);
                    if batch.len() >= WRITE_BATCH {
                        writer = write(writer, &mut batch).await?;
                    }
                }
            }
        };
        if let BodyEnd::TooLong = end {
            web::block(move || writer.rewind(start)).await??;
            return Err(past_length(upload.length));
        }
        let mut writer = write(writer, &mut batch).await?;
        let received = web::block(move || writer.sync()).await??;
        // Crash tests stop here: bytes durable, their offset not yet recorded.
        #[cfg(feature = "failpoints")]
        web::block(|| fail::fail_point!("tus-after-sync")).await?;
        if received != start {
            let id = upload.id.clone();
            let recorded = state
                .db
                .write(move |conn| uploads::set_received(conn, &id, received))
                .await?;
            if !recorded {
                return Err(AppError::NotFound("Upload not found"));
            }
        }
        if let BodyEnd::Cut(err) = end {
            return Err(err);
        }
        if received == upload.length {
            let complete = UploadRow { received, ..upload };
            finish(&state, &complete).await?;
        }
        Ok(received)
    })
    .await
}

/// The 413 of bytes past an upload's length.
pub fn past_length(length: u64) -> AppError {
    AppError::PayloadTooLarge(format!(
        "The bytes go past the upload's Upload-Length of {length}"
    ))
}

/// Opens the part file at `offset`; a part file that lost acknowledged bytes (a disk restored
/// without it) ends the upload, which then answers 404.
async fn open_at(state: &AppState, id: &str, offset: u64) -> Result<PartWriter, AppError> {
    let parts = state.uploads.parts.clone();
    let owned = id.to_owned();
    match web::block(move || parts.append_at(&owned, offset)).await? {
        Ok(writer) => Ok(writer),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(upload = %id, error = %err, "an upload's bytes are lost; forgetting it");
            let owned = id.to_owned();
            state
                .db
                .write(move |conn| uploads::forget_upload(conn, &owned))
                .await?;
            Err(AppError::NotFound("Upload not found"))
        }
        Err(err) => Err(err.into()),
    }
}

/// Writes the batch on the blocking pool.
async fn write(mut writer: PartWriter, batch: &mut BytesMut) -> Result<PartWriter, AppError> {
    if batch.is_empty() {
        return Ok(writer);
    }
    let data = batch.split().freeze();
    Ok(web::block(move || writer.write(&data).map(|()| writer)).await??)
}

fn payload_error(err: PayloadError) -> AppError {
    match err {
        PayloadError::Io(err) if err.kind() == std::io::ErrorKind::TimedOut => {
            AppError::BodyTimeout
        }
        other => AppError::BadRequest(format!("The request body was cut off: {other}")),
    }
}

/// Turns a complete upload into a file: its bytes stored as a new object (durably, hashed, the
/// charset decided), then the file row and the upload's link to it in one transaction, then
/// the part file removed. Its caller holds the upload's lock (or it is new). A crash in between
/// leaves a pending key (swept at start) and the complete upload, finished again then.
pub async fn finish(state: &AppState, upload: &UploadRow) -> Result<FileRow, AppError> {
    let key = storage::new_key();
    let pending = vec![key.clone()];
    let now = state.clock.unix();
    state
        .db
        .write(move |conn| db::record_pending(conn, &pending, now))
        .await?;
    let path = state
        .uploads
        .parts
        .path(&upload.id)
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("an upload id is not a key")))?;
    // What the PATCHes that wrote the bytes found them to be, when this process saw them all.
    let known = state
        .uploads
        .parts
        .take_digest(&upload.id, upload.length)
        .map(PartDigest::finish);
    let stored = match state
        .store
        .store_file(&key, &path, &upload.mime, known)
        .await
    {
        Ok(stored) if stored.size == upload.length => stored,
        Ok(stored) => {
            state.remove_objects(vec![key]).await;
            return Err(AppError::Internal(anyhow::anyhow!(
                "upload {} has {} bytes on disk, {} expected",
                upload.id,
                stored.size,
                upload.length
            )));
        }
        Err(err) => {
            state.remove_objects(vec![key]).await;
            return Err(err.into());
        }
    };
    // Crash tests stop here: the object stored, the file row not yet written.
    #[cfg(feature = "failpoints")]
    web::block(|| fail::fail_point!("tus-after-store")).await?;
    let file = NewFile {
        object_key: key.clone(),
        name: upload.name.clone(),
        size: stored.size,
        mime: stored.mime,
        sha256: stored.sha256,
    };
    let id = upload.id.clone();
    let now = state.clock.unix();
    let completed = state
        .db
        .write(move |conn| uploads::complete_upload(conn, &id, &file, now))
        .await;
    // Whatever came of it, before the answer: the next listing reads the chat afresh.
    state.listings.forget(upload.chat_id);
    match completed {
        Ok(Some(row)) => {
            state.metrics.uploaded_bytes.inc_by(row.size);
            remove_part(state, &upload.id).await;
            Ok(row)
        }
        Ok(None) => {
            state.remove_objects(vec![key]).await;
            Err(AppError::NotFound("Upload not found"))
        }
        Err(err) => {
            state.remove_objects(vec![key]).await;
            Err(err)
        }
    }
}

/// [`finish`], run to the end even if the request that asked is dropped.
pub async fn finish_to_completion(
    state: &web::Data<AppState>,
    lock: UploadLock,
    upload: UploadRow,
) -> Result<FileRow, AppError> {
    let state = state.clone();
    to_completion(async move {
        let _lock = lock;
        finish(&state, &upload).await
    })
    .await
}

/// Removes an upload's part file; a failure leaves it to the sweep.
pub async fn remove_part(state: &AppState, id: &str) {
    let parts = state.uploads.parts.clone();
    let owned = id.to_owned();
    let removed = web::block(move || parts.remove(&owned)).await;
    if let Err(err) = removed
        .map_err(AppError::from)
        .and_then(|r| r.map_err(AppError::from))
    {
        tracing::warn!(upload = %id, error = %err, "could not remove an upload's part file; the sweep will");
    }
}

/// Removes expired uploads (rows and bytes) and part files that no unfinished upload owns, and
/// finishes complete uploads whose file was not made (the object store was down, or the
/// service stopped halfway). `at_start`, before any request is served, it also forgets uploads
/// whose part file is gone and puts back what a part file lost.
pub async fn sweep(state: &web::Data<AppState>, at_start: bool) -> Result<(), AppError> {
    let now = state.clock.unix();
    let expired = if state
        .db
        .run(move |conn| uploads::any_expired_upload(conn, now))
        .await?
    {
        state
            .db
            .write(move |conn| uploads::delete_expired_uploads(conn, now))
            .await?
    } else {
        Vec::new()
    };
    for id in &expired {
        remove_part(state, id).await;
    }
    // The directory before the rows: a part file is only ever made after its row, so one that
    // was listed has its row in the list read after.
    let parts = state.uploads.parts.clone();
    let entries = web::block(move || parts.list()).await??;
    let unfinished = state
        .db
        .run(|conn| uploads::unfinished_uploads(conn))
        .await?;
    let owned: std::collections::HashMap<&str, (u64, u64)> = unfinished
        .iter()
        .map(|(id, received, length)| (id.as_str(), (*received, *length)))
        .collect();
    // Only unfinished uploads need the digest of their bytes.
    state
        .uploads
        .parts
        .retain_digests(|id| owned.contains_key(id));
    let mut removed = 0usize;
    for (name, len) in &entries {
        if len.is_some() && owned.contains_key(name.as_str()) {
            continue;
        }
        let parts = state.uploads.parts.clone();
        let name = name.clone();
        match web::block(move || parts.remove_entry(&name)).await? {
            Ok(()) => removed += 1,
            Err(err) => tracing::warn!(error = %err, "could not remove a stray part file"),
        }
    }
    if removed + expired.len() > 0 {
        tracing::info!(
            expired = expired.len(),
            stray = removed,
            "swept resumable uploads"
        );
    }
    let found: std::collections::HashMap<&str, u64> = entries
        .iter()
        .filter_map(|(name, len)| len.map(|len| (name.as_str(), len)))
        .collect();
    for (id, (received, length)) in owned {
        if at_start {
            match found.get(id) {
                None => {
                    tracing::warn!(upload = %id, "an upload's part file is gone; forgetting it");
                    let id = id.to_owned();
                    state
                        .db
                        .write(move |conn| uploads::forget_upload(conn, &id))
                        .await?;
                    continue;
                }
                Some(&len) if len < received => {
                    tracing::warn!(upload = %id, acknowledged = received, on_disk = len, "an upload's part file lost acknowledged bytes; resuming from what is there");
                    let id = id.to_owned();
                    state
                        .db
                        .write(move |conn| uploads::set_received(conn, &id, len).map(|_| ()))
                        .await?;
                    continue;
                }
                Some(_) => {}
            }
        }
        if received == length {
            finish_left_over(state, id).await;
        }
    }
    Ok(())
}

/// Finishes a complete upload that has no file yet, unless a request is working on it. (Not a
/// request's work: nothing drops it halfway but the end of the process.)
async fn finish_left_over(state: &AppState, id: &str) {
    let Some(_lock) = state.uploads.try_lock(id) else {
        return;
    };
    let owned = id.to_owned();
    let upload = match state
        .db
        .run(move |conn| uploads::upload_by_id(conn, &owned))
        .await
    {
        Ok(Some(upload)) if upload.is_complete() && upload.file_id.is_none() => upload,
        Ok(_) => return,
        Err(err) => {
            tracing::warn!(upload = %id, error = %err, "could not read a complete upload");
            return;
        }
    };
    match finish(state, &upload).await {
        Ok(file) => tracing::info!(upload = %id, file = file.id, "finished a complete upload"),
        Err(err) => {
            tracing::warn!(upload = %id, error = %err, "could not finish a complete upload; retrying later")
        }
    }
}
