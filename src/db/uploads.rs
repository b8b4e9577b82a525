//! Resumable uploads' rows (table `upload`, see `schema.sql`): created with their full length
//! reserved against the quota, advanced as bytes are acknowledged, turned into a file row when
//! complete, and swept once expired.

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::{FileRow, NewFile, chat_exists, insert_file, record_pending, user_usage};
use crate::error::AppError;

/// An upload's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    pub id: String,
    pub chat_id: i64,
    pub name: String,
    pub mime: String,
    pub metadata: Option<String>,
    pub length: u64,
    /// Bytes acknowledged so far (the tus offset).
    pub received: u64,
    /// The file it became, once complete.
    pub file_id: Option<i64>,
    pub created_at: i64,
    pub expires_at: i64,
}

impl UploadRow {
    /// Every byte is in (the file may not be made yet).
    pub fn is_complete(&self) -> bool {
        self.received == self.length
    }
}

/// What creating an upload records.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub id: String,
    pub name: String,
    pub mime: String,
    pub metadata: Option<String>,
    pub length: u64,
    pub created_at: i64,
    pub expires_at: i64,
}

/// The outcome of [`create_upload`].
#[derive(Debug)]
pub enum Created {
    Row(UploadRow),
    /// The chat is not the user's.
    NoChat,
    /// The upload's length would take the user past `quota` bytes (or it is full already).
    OverQuota,
}

const UPLOAD_COLUMNS: &str = "u.id, u.chat_conversation_id, u.name, u.type, u.metadata, u.length, \
     u.received, u.file_id, u.created_at, u.expires_at";

fn upload_from_row(r: &Row<'_>) -> rusqlite::Result<UploadRow> {
    Ok(UploadRow {
        id: r.get(0)?,
        chat_id: r.get(1)?,
        name: r.get(2)?,
        mime: r.get(3)?,
        metadata: r.get(4)?,
        length: r.get(5)?,
        received: r.get(6)?,
        file_id: r.get(7)?,
        created_at: r.get(8)?,
        expires_at: r.get(9)?,
    })
}

/// Records a new upload in one of the user's chats, its length reserved against `quota`
/// (checked inside the transaction, so that creations racing each other cannot both fit).
pub fn create_upload(
    conn: &mut Connection,
    user_id: i64,
    chat_id: i64,
    upload: &NewUpload,
    quota: Option<u64>,
) -> Result<Created, AppError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !chat_exists(&tx, user_id, chat_id)? {
        return Ok(Created::NoChat);
    }
    if let Some(quota) = quota {
        let used = user_usage(&tx, user_id)?;
        if used >= quota || used.saturating_add(upload.length) > quota {
            return Ok(Created::OverQuota);
        }
    }
    tx.execute(
        "INSERT INTO upload (id, chat_conversation_id, name, type, metadata, length, created_at,
                             expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            upload.id,
            chat_id,
            upload.name,
            upload.mime,
            upload.metadata,
            upload.length,
            upload.created_at,
            upload.expires_at
        ],
    )?;
    tx.commit()?;
    Ok(Created::Row(UploadRow {
        id: upload.id.clone(),
        chat_id,
        name: upload.name.clone(),
        mime: upload.mime.clone(),
        metadata: upload.metadata.clone(),
        length: upload.length,
        received: 0,
        file_id: None,
        created_at: upload.created_at,
        expires_at: upload.expires_at,
    }))
}

/// One upload of one of the user's chats, expired or not.
pub fn find_upload(
    conn: &Connection,
    user_id: i64,
    chat_id: i64,
    id: &str,
) -> Result<Option<UploadRow>, AppError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {UPLOAD_COLUMNS} FROM upload u
         JOIN chat_conversation c ON c.id = u.chat_conversation_id
         WHERE u.id = ?1 AND u.chat_conversation_id = ?2 AND c.neptun_user_id = ?3"
    ))?;
    Ok(stmt
        .query_row(params![id, chat_id, user_id], upload_from_row)
        .optional()?)
}

/// Any upload by id (housekeeping).
pub fn upload_by_id(conn: &Connection, id: &str) -> Result<Option<UploadRow>, AppError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {UPLOAD_COLUMNS} FROM upload u WHERE u.id = ?1"
    ))?;
    Ok(stmt.query_row([id], upload_from_row).optional()?)
}

/// Moves an unfinished upload's acknowledged offset; false when it is gone (expired,
/// terminated, its chat deleted) or already finished.
pub fn set_received(conn: &Connection, id: &str, received: u64) -> Result<bool, AppError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE upload SET received = ?2 WHERE id = ?1 AND file_id IS NULL AND ?2 <= length",
    )?;
    Ok(stmt.execute(params![id, received])? == 1)
}

/// Turns a complete upload into a file row in one transaction: the row inserted (its key no
/// longer pending), the upload pointing at it, the chat touched. `None` when the upload is gone
/// or was finished meanwhile; nothing is written then.
pub fn complete_upload(
    conn: &mut Connection,
    id: &str,
    file: &NewFile,
    now: i64,
) -> Result<Option<FileRow>, AppError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let chat_id: Option<i64> = tx
        .query_row(
            "SELECT chat_conversation_id FROM upload
             WHERE id = ?1 AND file_id IS NULL AND received = length",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(chat_id) = chat_id else {
        return Ok(None);
    };
    let row = insert_file(&tx, chat_id, file, now)?;
    tx.execute(
        "UPDATE upload SET file_id = ?2 WHERE id = ?1",
        params![id, row.id],
    )?;
    tx.execute(
        "UPDATE chat_conversation SET updated_at = ?1 WHERE id = ?2",
        params![now, chat_id],
    )?;
    tx.commit()?;
    Ok(Some(row))
}

/// Terminates one of the user's uploads: its row goes and, when it had become a file, that file
/// too (its key recorded as pending until removed, the chat touched). `None` when there is no
/// such upload; else the removed file's object key, if any.
pub fn delete_upload(
    conn: &mut Connection,
    user_id: i64,
    chat_id: i64,
    id: &str,
    now: i64,
) -> Result<Option<Option<String>>, AppError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(upload) = find_upload(&tx, user_id, chat_id, id)? else {
        return Ok(None);
    };
    let mut key = None;
    if let Some(file_id) = upload.file_id {
        key = tx
            .query_row(
                "DELETE FROM chat_conversation_file WHERE id = ?1 RETURNING object_key",
                [file_id],
                |r| r.get::<_, String>(0),
            )
            .optional()?;
        if let Some(key) = &key {
            record_pending(&tx, std::slice::from_ref(key), now)?;
            tx.execute(
                "UPDATE chat_conversation SET updated_at = ?1 WHERE id = ?2",
                params![now, chat_id],
            )?;
        }
    }
    tx.execute("DELETE FROM upload WHERE id = ?1", [id])?;
    tx.commit()?;
    Ok(Some(key))
}

/// Whether some upload's time is up (read before writing, so that the periodic sweep writes
/// nothing when there is nothing to do).
pub fn any_expired_upload(conn: &Connection, now: i64) -> Result<bool, AppError> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM upload WHERE expires_at <= ?1 LIMIT 1")?;
    Ok(stmt.exists([now])?)
}

/// Deletes the rows of uploads whose time is up; returns their ids.
pub fn delete_expired_uploads(conn: &Connection, now: i64) -> Result<Vec<String>, AppError> {
    let mut stmt = conn.prepare_cached("DELETE FROM upload WHERE expires_at <= ?1 RETURNING id")?;
    let ids = stmt
        .query_map([now], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids)
}

/// Forgets an unfinished upload whose bytes are lost.
pub fn forget_upload(conn: &Connection, id: &str) -> Result<(), AppError> {
    conn.execute("DELETE FROM upload WHERE id = ?1 AND file_id IS NULL", [id])?;
    Ok(())
}

/// Every unfinished upload: `(id, received, length)`.
pub fn unfinished_uploads(conn: &Connection) -> Result<Vec<(String, u64, u64)>, AppError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, received, length FROM upload WHERE file_id IS NULL ORDER BY created_at, id",
    )?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}
