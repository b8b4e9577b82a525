//! The SQLite pool (pragmas, schema) and plain query functions that take a `&Connection`.
//!
//! Every function here blocks; handlers call them through [`Db::run`], which moves the work off
//! the async workers.

use std::collections::HashSet;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};
use serde::Serialize;
use tokio::sync::{Mutex, OwnedMutexGuard, Semaphore};

use crate::clock::rfc3339;
use crate::error::AppError;

pub mod uploads;

/// The whole schema; applied at every start.
pub const SCHEMA: &str = include_str!("../schema.sql");
/// Bumped, with a migration step in [`migrate`], whenever `schema.sql` changes shape.
pub const SCHEMA_VERSION: i64 = 5;

/// Steps from each older version to the next, applied before `schema.sql` (which then only
/// adds what is missing). Index `i` takes version `i + 1` to `i + 2`.
const MIGRATIONS: &[&str] = &[
    // 1 → 2: session epochs, so that a password change ends sessions saved by racing logins.
    "ALTER TABLE neptun_user ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE session ADD COLUMN user_epoch INTEGER NOT NULL DEFAULT 0;",
    // 2 → 3: accounts an operator disabled (`chatfiles user disable`).
    "ALTER TABLE neptun_user ADD COLUMN disabled_at INTEGER;",
    // 3 → 4: the pending-object journal, a new table that schema.sql creates.
    "",
    // 4 → 5: resumable uploads, a new table that schema.sql creates.
    "",
];

// synchronous=FULL makes every commit fsync the WAL, so a 201 or 204 survives power loss.
// busy_timeout lets a writer wait for another instead of failing with SQLITE_BUSY.
const CONNECTION_PRAGMAS: &str = "PRAGMA foreign_keys = ON;
    PRAGMA busy_timeout = 5000;
    PRAGMA synchronous = FULL;";

pub type Pool = r2d2::Pool<SqliteConnectionManager>;

/// How long a write waits for its turn before the request is shed with 503.
const WRITE_WAIT: Duration = Duration::from_secs(10);
/// How long a read waits for a connection before the request is shed with 503 (the pool's own
/// connection timeout, which the readers' queue now waits out instead).
const READ_WAIT: Duration = Duration::from_secs(10);

/// The connection pool, and the one way handlers reach it.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    /// SQLite has one writer at a time. Queueing writers here, in order, beats having them
    /// spin in SQLite's busy handler, and bounds the wait.
    writer: Arc<Mutex<()>>,
    /// Reads wait for a connection here, in order of arrival, rather than on a blocking thread
    /// inside the pool: no thread is parked for them, and under load each waits its turn (the
    /// pool wakes waiters in no fixed order, which left some listings waiting many times longer
    /// than the rest). One connection is left over for the writer.
    readers: Arc<Semaphore>,
}

impl Db {
    /// Opens (creating if needed) the database, applies the schema and builds the pool.
    pub fn open(path: &Path, max_connections: u32) -> anyhow::Result<Self> {
        create_private(path)?;
        let mut conn = Connection::open(path)
            .with_context(|| format!("cannot open database {}", path.display()))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!("the database refused WAL mode (got {mode})");
        }
        conn.execute_batch(CONNECTION_PRAGMAS)?;
        migrate(&mut conn)?;
        drop(conn);

        let manager = SqliteConnectionManager::file(path)
            .with_init(|conn| conn.execute_batch(CONNECTION_PRAGMAS));
        let pool = r2d2::Pool::builder()
            .max_size(max_connections)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .build(manager)
            .context("cannot build the database pool")?;
        let readers = usize::try_from(max_connections.saturating_sub(1).max(1)).unwrap_or(1);
        Ok(Self {
            pool,
            writer: Arc::new(Mutex::new(())),
            readers: Arc::new(Semaphore::new(readers)),
        })
    }

    /// Runs `f` with a pooled connection on the blocking thread pool, once one of the readers'
    /// connections is free (first come, first served); 503 when none is within [`READ_WAIT`].
    pub async fn run<T, F>(&self, f: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, AppError> + Send + 'static,
    {
        let turn = match tokio::time::timeout(READ_WAIT, self.readers.clone().acquire_owned()).await
        {
            Ok(Ok(turn)) => turn,
            Ok(Err(_closed)) => return Err(AppError::Unavailable),
            Err(_) => {
                tracing::warn!("reads are queued for longer than {READ_WAIT:?}");
                return Err(AppError::Unavailable);
            }
        };
        let pool = self.pool.clone();
        actix_web::web::block(move || {
            let _turn = turn;
            let mut conn = pool.get()?;
            f(&mut conn)
        })
        .await?
    }

    /// Runs `f`, which writes, with a pooled connection on the blocking thread pool, after the
    /// writes queued before it (first come, first served); 503 when its turn does not come
    /// within [`WRITE_WAIT`]. The turn is awaited here, not on a blocking thread.
    pub async fn write<T, F>(&self, f: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, AppError> + Send + 'static,
    {
        let turn = tokio::time::timeout(WRITE_WAIT, self.writer.clone().lock_owned())
            .await
            .map_err(|_| {
                tracing::warn!("writes are queued for longer than {WRITE_WAIT:?}");
                AppError::Unavailable
            })?;
        self.write_with(turn, f).await
    }

    /// Like [`Db::write`], but only if no other write is running or queued: `Ok(None)` then.
    /// For writes that may as well happen on a later request.
    pub async fn try_write<T, F>(&self, f: F) -> Result<Option<T>, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, AppError> + Send + 'static,
    {
        match self.writer.clone().try_lock_owned() {
            Ok(turn) => self.write_with(turn, f).await.map(Some),
            Err(_) => Ok(None),
        }
    }

    async fn write_with<T, F>(&self, turn: OwnedMutexGuard<()>, f: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, AppError> + Send + 'static,
    {
        let pool = self.pool.clone();
        actix_web::web::block(move || {
            let _turn = turn;
            let mut conn = pool.get()?;
            f(&mut conn)
        })
        .await?
    }

    /// Connections open and idle in the pool.
    pub fn pool_state(&self) -> r2d2::State {
        self.pool.state()
    }

    /// A connection for start-up and maintenance work outside request handling.
    pub fn get(&self) -> Result<r2d2::PooledConnection<SqliteConnectionManager>, AppError> {
        Ok(self.pool.get()?)
    }
}

/// Creates the database file 0600 unless it exists: it holds password and session hashes, and
/// SQLite gives its `-wal` and `-shm` files the database file's mode. An existing file keeps its
/// mode (an operator may have chosen it), with a warning when others may read it.
fn create_private(path: &Path) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open database {}", path.display()))?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", mode & 0o777),
            "the database file is readable by others, and it holds password and session hashes; chmod 600 it"
        );
    }
    Ok(())
}

/// Applies `schema.sql` idempotently and records the version, refusing a newer database.
pub fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        bail!(
            "the database has schema version {version}, newer than this binary's {SCHEMA_VERSION}"
        );
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Version 0 is a new database: schema.sql creates it whole.
    if version > 0 {
        for (step, sql) in MIGRATIONS.iter().enumerate().skip((version - 1) as usize) {
            tx.execute_batch(sql)
                .with_context(|| format!("cannot migrate the database to version {}", step + 2))?;
        }
    }
    tx.execute_batch(SCHEMA)
        .context("cannot apply schema.sql")?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

fn as_rfc3339<S: serde::Serializer>(unix: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&rfc3339(*unix))
}

fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(e, _) if e.code == ErrorCode::ConstraintViolation)
}

// ---- users -------------------------------------------------------------------------------

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": 1, "primary_email": "ada@example.com"}))]
pub struct User {
    pub id: i64,
    /// Trimmed and lowercased.
    pub primary_email: String,
}

/// Creates a user; `None` when the email is taken.
pub fn insert_user(
    conn: &Connection,
    email: &str,
    password_hash: &str,
    now: i64,
) -> Result<Option<User>, AppError> {
    let inserted = conn.execute(
        "INSERT INTO neptun_user (primary_email, password_hash, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?3)",
        params![email, password_hash, now],
    );
    match inserted {
        Ok(_) => Ok(Some(User {
            id: conn.last_insert_rowid(),
            primary_email: email.to_owned(),
        })),
        Err(err) if is_unique_violation(&err) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// What a password check needs to know about a user.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: User,
    pub password_hash: String,
    /// Bumped whenever all of the user's sessions must end (a new password): a session made
    /// under an older epoch is dead, even one saved after the change by a racing login.
    pub session_epoch: i64,
    /// An operator disabled the account: no logins.
    pub disabled: bool,
}

const LOGIN_COLUMNS: &str =
    "id, primary_email, password_hash, session_epoch, disabled_at IS NOT NULL";

fn login_from_row(r: &Row<'_>) -> rusqlite::Result<Login> {
    Ok(Login {
        user: User {
            id: r.get(0)?,
            primary_email: r.get(1)?,
        },
        password_hash: r.get(2)?,
        session_epoch: r.get(3)?,
        disabled: r.get(4)?,
    })
}

/// A user's login data, by (normalised) email.
pub fn find_login_by_email(conn: &Connection, email: &str) -> Result<Option<Login>, AppError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {LOGIN_COLUMNS} FROM neptun_user WHERE primary_email = ?1"
    ))?;
    Ok(stmt.query_row([email], login_from_row).optional()?)
}

/// A user's login data, by id.
pub fn find_login(conn: &Connection, id: i64) -> Result<Option<Login>, AppError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {LOGIN_COLUMNS} FROM neptun_user WHERE id = ?1"
    ))?;
    Ok(stmt.query_row([id], login_from_row).optional()?)
}

/// Replaces a user's password hash, moves them to a new session epoch and deletes all their
/// sessions, in one transaction; returns the new epoch and how many sessions ended.
pub fn change_password(
    conn: &mut Connection,
    user_id: i64,
    password_hash: &str,
    now: i64,
) -> Result<(i64, usize), AppError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let epoch: i64 = tx.query_row(
        "UPDATE neptun_user SET password_hash = ?2, updated_at = ?3,
             session_epoch = session_epoch + 1
         WHERE id = ?1 RETURNING session_epoch",
        params![user_id, password_hash, now],
        |r| r.get(0),
    )?;
    let ended = tx.execute("DELETE FROM session WHERE neptun_user_id = ?1", [user_id])?;
    tx.commit()?;
    Ok((epoch, ended))
}

/// Disables (with the time) or enables an account by email. Disabling also moves the user to a
/// new session epoch and deletes their sessions. Returns the user's id and the sessions ended,
/// or `None` for an unknown email.
pub fn set_disabled(
    conn: &mut Connection,
    email: &str,
    disabled_at: Option<i64>,
) -> Result<Option<(i64, usize)>, AppError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let id: Option<i64> = tx
        .query_row(
            "UPDATE neptun_user SET disabled_at = ?2,
                 session_epoch = session_epoch + (?2 IS NOT NULL)
             WHERE primary_email = ?1 RETURNING id",
            params![email, disabled_at],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = id else {
        return Ok(None);
    };
    let ended = if disabled_at.is_some() {
        tx.execute("DELETE FROM session WHERE neptun_user_id = ?1", [id])?
    } else {
        0
    };
    tx.commit()?;
    Ok(Some((id, ended)))
}

/// One line of `chatfiles user list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub id: i64,
    pub primary_email: String,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    pub files: u64,
    pub bytes: u64,
}

/// Every account with what it stores, oldest first.
pub fn list_users(conn: &Connection) -> Result<Vec<UserSummary>, AppError> {
    let mut stmt = conn.prepare(
        "SELECT u.id, u.primary_email, u.created_at, u.disabled_at,
                COUNT(f.id), COALESCE(SUM(f.size), 0)
         FROM neptun_user u
         LEFT JOIN chat_conversation c ON c.neptun_user_id = u.id
         LEFT JOIN chat_conversation_file f ON f.chat_conversation_id = c.id
         GROUP BY u.id ORDER BY u.id",
    )?;
    let users = stmt
        .query_map([], |r| {
            Ok(UserSummary {
                id: r.get(0)?,
                primary_email: r.get(1)?,
                created_at: r.get(2)?,
                disabled_at: r.get(3)?,
                files: r.get(4)?,
                bytes: r.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(users)
}

pub fn find_user(conn: &Connection, id: i64) -> Result<Option<User>, AppError> {
    let mut stmt =
        conn.prepare_cached("SELECT id, primary_email FROM neptun_user WHERE id = ?1")?;
    let found = stmt
        .query_row([id], |r| {
            Ok(User {
                id: r.get(0)?,
                primary_email: r.get(1)?,
            })
        })
        .optional()?;
    Ok(found)
}

// ---- chats -------------------------------------------------------------------------------

/// A chat conversation as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Chat {
    pub id: i64,
    /// 1 to 255 characters.
    pub name: String,
    /// Free text up to 100 characters; `default` unless given.
    pub model: String,
    /// RFC 3339 UTC, e.g. `2024-03-20T10:00:00Z`.
    #[serde(serialize_with = "as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// RFC 3339 UTC; moves when a file is uploaded to or deleted from the chat.
    #[serde(serialize_with = "as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
    /// The owner.
    pub neptun_user_id: i64,
}

const CHAT_COLUMNS: &str = "id, name, model, created_at, updated_at, neptun_user_id";

fn chat_from_row(r: &Row<'_>) -> rusqlite::Result<Chat> {
    Ok(Chat {
        id: r.get(0)?,
        name: r.get(1)?,
        model: r.get(2)?,
        created_at: r.get(3)?,
        updated_at: r.get(4)?,
        neptun_user_id: r.get(5)?,
    })
}

/// A user's chats, most recently updated first.
pub fn list_chats(conn: &Connection, user_id: i64) -> Result<Vec<Chat>, AppError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CHAT_COLUMNS} FROM chat_conversation WHERE neptun_user_id = ?1
         ORDER BY updated_at DESC, id DESC"
    ))?;
    let chats = stmt
        .query_map([user_id], chat_from_row)?
        .collect::<Result<_, _>>()?;
    Ok(chats)
}

pub fn insert_chat(
    conn: &Connection,
    user_id: i64,
    name: &str,
    model: &str,
    now: i64,
) -> Result<Chat, AppError> {
    conn.execute(
        "INSERT INTO chat_conversation (neptun_user_id, name, model, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?4)",
        params![user_id, name, model, now],
    )?;
    Ok(Chat {
        id: conn.last_insert_rowid(),
        name: name.to_owned(),
        model: model.to_owned(),
        created_at: now,
        updated_at: now,
        neptun_user_id: user_id,
    })
}

/// The chat if it exists and belongs to `user_id`.
pub fn find_chat(conn: &Connection, user_id: i64, chat_id: i64) -> Result<Option<Chat>, AppError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CHAT_COLUMNS} FROM chat_conversation WHERE id = ?1 AND neptun_user_id = ?2"
    ))?;
    Ok(stmt
        .query_row(params![chat_id, user_id], chat_from_row)
        .optional()?)
}

fn chat_exists(conn: &Connection, user_id: i64, chat_id: i64) -> Result<bool, AppError> {
    let mut stmt = conn
        .prepare_cached("SELECT 1 FROM chat_conversation WHERE id = ?1 AND neptun_user_id = ?2")?;
    Ok(stmt.exists(params![chat_id, user_id])?)
}

/// Deletes a chat and its file rows; returns the object keys whose bytes are now unreferenced
/// (recorded as pending until removed), or `None` when the chat is not the user's.
pub fn delete_chat(
    conn: &mut Connection,
    user_id: i64,
    chat_id: i64,
    now: i64,
) -> Result<Option<Vec<String>>, AppError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !chat_exists(&tx, user_id, chat_id)? {
        return Ok(None);
    }
    let keys = {
        let mut stmt = tx.prepare_cached(
            "SELECT object_key FROM chat_conversation_file WHERE chat_conversation_id = ?1",
        )?;
        stmt.query_map([chat_id], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?
    };
    tx.execute("DELETE FROM chat_conversation WHERE id = ?1", [chat_id])?;
    record_pending(&tx, &keys, now)?;
    tx.commit()?;
    Ok(Some(keys))
}

// ---- files -------------------------------------------------------------------------------

/// A stored file's row.
#[derive(Debug, Clone)]
pub struct FileRow {
    pub id: i64,
    pub chat_id: i64,
    pub object_key: String,
    pub name: String,
    pub size: u64,
    pub mime: String,
    pub sha256: String,
    pub created_at: i64,
}

/// What an upload adds, before it has an id.
#[derive(Debug, Clone)]
pub struct NewFile {
    pub object_key: String,
    pub name: String,
    pub size: u64,
    pub mime: String,
    pub sha256: String,
}

const FILE_COLUMNS: &str =
    "id, chat_conversation_id, object_key, name, size, type, sha256, created_at";

fn file_from_row(r: &Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        id: r.get(0)?,
        chat_id: r.get(1)?,
        object_key: r.get(2)?,
        name: r.get(3)?,
        size: r.get(4)?,
        mime: r.get(5)?,
        sha256: r.get(6)?,
        created_at: r.get(7)?,
    })
}

/// A file row as SQLite holds it, borrowed for the length of one callback: the listing writes
/// its answer straight from these, without a copy of each string.
#[derive(Debug, Clone, Copy)]
pub struct FileRef<'r> {
    pub id: i64,
    pub chat_id: i64,
    pub object_key: &'r str,
    pub name: &'r str,
    pub size: u64,
    pub mime: &'r str,
    pub created_at: i64,
}

/// Reads a chat's files in upload order into what `start` makes of their count, handing them to
/// `each` one at a time; `Ok(None)`, without a call, when the chat is not the user's. Both reads
/// share one read transaction, so the listing is of the chat at one moment.
pub fn each_file<L>(
    conn: &mut Connection,
    user_id: i64,
    chat_id: i64,
    start: impl FnOnce(usize) -> L,
    mut each: impl FnMut(&mut L, FileRef<'_>),
) -> Result<Option<L>, AppError> {
    let tx = conn.transaction()?;
    let count: Option<i64> = tx
        .prepare_cached(
            "SELECT (SELECT COUNT(*) FROM chat_conversation_file WHERE chat_conversation_id = ?1)
             FROM chat_conversation WHERE id = ?1 AND neptun_user_id = ?2",
        )?
        .query_row(params![chat_id, user_id], |r| r.get(0))
        .optional()?;
    let Some(count) = count else {
        return Ok(None);
    };
    let mut listing = start(usize::try_from(count).unwrap_or(0));
    {
        let mut stmt = tx.prepare_cached(
            "SELECT id, object_key, name, size, type, created_at
             FROM chat_conversation_file WHERE chat_conversation_id = ?1
             ORDER BY created_at, id",
        )?;
        let mut rows = stmt.query([chat_id])?;
        while let Some(r) = rows.next()? {
            let file = FileRef {
                id: r.get(0)?,
                chat_id,
                object_key: text(r, 1)?,
                name: text(r, 2)?,
                size: r.get(3)?,
                mime: text(r, 4)?,
                created_at: r.get(5)?,
            };
            each(&mut listing, file);
        }
    }
    tx.finish()?;
    Ok(Some(listing))
}

/// A text column, borrowed from the row.
fn text<'r>(r: &'r Row<'_>, index: usize) -> rusqlite::Result<&'r str> {
    r.get_ref(index)?.as_str().map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(err))
    })
}

/// One file of one of the user's chats.
pub fn find_file(
    conn: &Connection,
    user_id: i64,
    chat_id: i64,
    file_id: i64,
) -> Result<Option<FileRow>, AppError> {
    let mut stmt = conn.prepare_cached(
        "SELECT f.id, f.chat_conversation_id, f.object_key, f.name, f.size, f.type, f.sha256, f.created_at
         FROM chat_conversation_file f JOIN chat_conversation c ON c.id = f.chat_conversation_id
         WHERE f.id = ?1 AND f.chat_conversation_id = ?2 AND c.neptun_user_id = ?3",
    )?;
    Ok(stmt
        .query_row(params![file_id, chat_id, user_id], file_from_row)
        .optional()?)
}

/// A file by id, whoever owns it (the file an upload became).
pub fn file_by_id(conn: &Connection, file_id: i64) -> Result<Option<FileRow>, AppError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {FILE_COLUMNS} FROM chat_conversation_file WHERE id = ?1"
    ))?;
    Ok(stmt.query_row([file_id], file_from_row).optional()?)
}

/// The file stored under an object key (the download path).
pub fn find_object(conn: &Connection, object_key: &str) -> Result<Option<FileRow>, AppError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {FILE_COLUMNS} FROM chat_conversation_file WHERE object_key = ?1"
    ))?;
    Ok(stmt.query_row([object_key], file_from_row).optional()?)
}

/// Bytes stored for a user, counted from the rows' sizes, plus the full length of each of the
/// user's unfinished resumable uploads (reserved from their creation).
pub fn user_usage(conn: &Connection, user_id: i64) -> Result<u64, AppError> {
    let mut stmt = conn.prepare_cached(
        "SELECT (SELECT COALESCE(SUM(f.size), 0) FROM chat_conversation_file f
                 JOIN chat_conversation c ON c.id = f.chat_conversation_id
                 WHERE c.neptun_user_id = ?1)
              + (SELECT COALESCE(SUM(u.length), 0) FROM upload u
                 JOIN chat_conversation c ON c.id = u.chat_conversation_id
                 WHERE c.neptun_user_id = ?1 AND u.file_id IS NULL)",
    )?;
    Ok(stmt.query_row([user_id], |r| r.get(0))?)
}

/// The outcome of [`insert_files`].
#[derive(Debug)]
pub enum Inserted {
    Rows(Vec<FileRow>),
    /// The chat is not (or no longer) the user's; nothing was written.
    NoChat,
    /// The files would take the user past `quota` bytes; nothing was written.
    OverQuota,
}

/// Records uploaded files in one transaction (their keys no longer pending) and touches the chat, unless the chat is gone or
/// the user's quota (checked inside the transaction, so concurrent uploads cannot both slip
/// under it) would be exceeded.
pub fn insert_files(
    conn: &mut Connection,
    user_id: i64,
    chat_id: i64,
    files: &[NewFile],
    now: i64,
    quota: Option<u64>,
) -> Result<Inserted, AppError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !chat_exists(&tx, user_id, chat_id)? {
        return Ok(Inserted::NoChat);
    }
    if let Some(quota) = quota {
        let adding: u64 = files.iter().map(|f| f.size).sum();
        if user_usage(&tx, user_id)?.saturating_add(adding) > quota {
            return Ok(Inserted::OverQuota);
        }
    }
    let rows = files
        .iter()
        .map(|file| insert_file(&tx, chat_id, file, now))
        .collect::<Result<Vec<_>, _>>()?;
    tx.execute(
        "UPDATE chat_conversation SET updated_at = ?1 WHERE id = ?2",
        params![now, chat_id],
    )?;
    tx.commit()?;
    Ok(Inserted::Rows(rows))
}

/// Inserts one file row in a transaction the caller commits; its object key is no longer
/// pending, since the row keeps the object from now on. The caller touches the chat.
fn insert_file(
    tx: &Connection,
    chat_id: i64,
    file: &NewFile,
    now: i64,
) -> Result<FileRow, AppError> {
    tx.prepare_cached(
        "INSERT INTO chat_conversation_file
             (chat_conversation_id, object_key, name, size, type, sha256, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        chat_id,
        file.object_key,
        file.name,
        file.size,
        file.mime,
        file.sha256,
        now
    ])?;
    let id = tx.last_insert_rowid();
    tx.prepare_cached(CLEAR_PENDING)?
        .execute([&file.object_key])?;
    Ok(FileRow {
        id,
        chat_id,
        object_key: file.object_key.clone(),
        name: file.name.clone(),
        size: file.size,
        mime: file.mime.clone(),
        sha256: file.sha256.clone(),
        created_at: now,
    })
}

/// Deletes one file row and touches its chat; returns its object key (recorded as pending until
/// removed), or `None` when there is no such file in the user's chat.
pub fn delete_file(
    conn: &mut Connection,
    user_id: i64,
    chat_id: i64,
    file_id: i64,
    now: i64,
) -> Result<Option<String>, AppError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(file) = find_file(&tx, user_id, chat_id, file_id)? else {
        return Ok(None);
    };
    tx.execute(
        "DELETE FROM chat_conversation_file WHERE id = ?1",
        [file_id],
    )?;
    record_pending(&tx, std::slice::from_ref(&file.object_key), now)?;
    tx.execute(
        "UPDATE chat_conversation SET updated_at = ?1 WHERE id = ?2",
        params![now, chat_id],
    )?;
    tx.commit()?;
    Ok(Some(file.object_key))
}

const CLEAR_PENDING: &str = "DELETE FROM pending_object WHERE object_key = ?1";

/// Records `keys` as objects that may exist without a row to keep them (see `schema.sql`).
pub fn record_pending(conn: &Connection, keys: &[String], now: i64) -> Result<(), AppError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO pending_object (object_key, since) VALUES (?1, ?2)
         ON CONFLICT (object_key) DO NOTHING",
    )?;
    for key in keys {
        stmt.execute(params![key, now])?;
    }
    Ok(())
}

/// Forgets pending keys whose objects are gone (or kept by a row).
pub fn clear_pending(conn: &mut Connection, keys: &[String]) -> Result<(), AppError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut stmt = tx.prepare_cached(CLEAR_PENDING)?;
        for key in keys {
            stmt.execute([key])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Every pending key, oldest first.
pub fn pending_keys(conn: &Connection) -> Result<Vec<String>, AppError> {
    let mut stmt =
        conn.prepare("SELECT object_key FROM pending_object ORDER BY since, object_key")?;
    let keys = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(keys)
}

/// Every object key that a row refers to (for the start-up sweep).
pub fn all_object_keys(conn: &Connection) -> Result<HashSet<String>, AppError> {
    let mut stmt = conn.prepare("SELECT object_key FROM chat_conversation_file")?;
    let keys = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(keys)
}

// ---- sessions ----------------------------------------------------------------------------

/// Whom a session belongs to, as stored beside its state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionOwner {
    pub user_id: Option<i64>,
    /// The user's session epoch when they logged in (see [`Login::session_epoch`]).
    pub epoch: i64,
}

/// A live session's serialized state: not expired, and not from before its user's last
/// session epoch.
/// Also returns when the session expires.
pub fn load_session(
    conn: &Connection,
    id_hash: &str,
    now: i64,
) -> Result<Option<(String, i64)>, AppError> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.state, s.expires_at FROM session s
         LEFT JOIN neptun_user u ON u.id = s.neptun_user_id
         WHERE s.id_hash = ?1 AND s.expires_at > ?2
           AND (s.neptun_user_id IS NULL OR u.session_epoch = s.user_epoch)",
    )?;
    Ok(stmt
        .query_row(params![id_hash, now], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

pub fn insert_session(
    conn: &Connection,
    id_hash: &str,
    owner: SessionOwner,
    state: &str,
    expires_at: i64,
) -> Result<(), AppError> {
    conn.prepare_cached(
        "INSERT INTO session (id_hash, neptun_user_id, user_epoch, state, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        id_hash,
        owner.user_id,
        owner.epoch,
        state,
        expires_at
    ])?;
    Ok(())
}

/// Replaces a session's state; false when the session is gone (expired or logged out).
pub fn update_session(
    conn: &Connection,
    id_hash: &str,
    owner: SessionOwner,
    state: &str,
    expires_at: i64,
    now: i64,
) -> Result<bool, AppError> {
    let changed = conn
        .prepare_cached(
            "UPDATE session SET neptun_user_id = ?2, user_epoch = ?3, state = ?4, expires_at = ?5
             WHERE id_hash = ?1 AND expires_at > ?6",
        )?
        .execute(params![
            id_hash,
            owner.user_id,
            owner.epoch,
            state,
            expires_at,
            now
        ])?;
    Ok(changed == 1)
}

/// When a live session expires.
pub fn session_expiry(conn: &Connection, id_hash: &str, now: i64) -> Result<Option<i64>, AppError> {
    let mut stmt = conn
        .prepare_cached("SELECT expires_at FROM session WHERE id_hash = ?1 AND expires_at > ?2")?;
    Ok(stmt
        .query_row(params![id_hash, now], |r| r.get(0))
        .optional()?)
}

/// Extends a live session. Skips the write when the stored expiry is already within
/// `slack` seconds of the new one, so that a busy client does not write on every request. True
/// when the expiry moved.
pub fn touch_session(
    conn: &Connection,
    id_hash: &str,
    expires_at: i64,
    now: i64,
    slack: i64,
) -> Result<bool, AppError> {
    let changed = conn
        .prepare_cached(
            "UPDATE session SET expires_at = ?2 WHERE id_hash = ?1 AND expires_at > ?3 AND expires_at < ?2 - ?4",
        )?
        .execute(params![id_hash, expires_at, now, slack])?;
    Ok(changed == 1)
}

pub fn delete_session(conn: &Connection, id_hash: &str) -> Result<(), AppError> {
    conn.prepare_cached("DELETE FROM session WHERE id_hash = ?1")?
        .execute([id_hash])?;
    Ok(())
}

/// Logged-in sessions that are still good: not expired, not from before a password change.
pub fn count_live_sessions(conn: &Connection, now: i64) -> Result<i64, AppError> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM session s JOIN neptun_user u ON u.id = s.neptun_user_id
         WHERE s.expires_at > ?1 AND u.session_epoch = s.user_epoch",
        [now],
        |r| r.get(0),
    )?)
}

/// Removes expired sessions; returns how many.
pub fn purge_expired_sessions(conn: &Connection, now: i64) -> Result<usize, AppError> {
    Ok(conn.execute("DELETE FROM session WHERE expires_at <= ?1", [now])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> anyhow::Result<(tempfile::TempDir, Connection)> {
        let dir = tempfile::tempdir()?;
        let mut conn = Connection::open(dir.path().join("t.db"))?;
        conn.execute_batch(CONNECTION_PRAGMAS)?;
        migrate(&mut conn)?;
        Ok((dir, conn))
    }

    #[test]
    fn a_version_1_database_is_migrated_in_place() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut conn = Connection::open(dir.path().join("old.db"))?;
        conn.execute_batch(include_str!("../tests/data/schema-v1.sql"))?;
        conn.execute_batch(
            "PRAGMA user_version = 1;
             INSERT INTO neptun_user (primary_email, password_hash, created_at, updated_at)
                 VALUES ('old@example.com', 'h', 1, 1);
             INSERT INTO session (id_hash, neptun_user_id, state, expires_at)
                 VALUES ('abc', 1, '{}', 100);",
        )?;
        migrate(&mut conn)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        assert_eq!(version, SCHEMA_VERSION);
        let login = find_login_by_email(&conn, "old@example.com")?;
        assert_eq!(login.map(|l| l.session_epoch), Some(0));
        assert_eq!(
            load_session(&conn, "abc", 50)?.map(|(state, _)| state),
            Some("{}".to_owned())
        );
        // Migrating again is a no-op.
        migrate(&mut conn)?;
        Ok(())
    }

    #[test]
    fn a_session_saved_under_an_older_epoch_is_dead() -> anyhow::Result<()> {
        let (_dir, mut conn) = fresh()?;
        let user = insert_user(&conn, "a@example.com", "old hash", 1)?
            .ok_or_else(|| anyhow::anyhow!("not inserted"))?;
        let before = SessionOwner {
            user_id: Some(user.id),
            epoch: 0,
        };
        insert_session(&conn, "early", before, "{}", 1000)?;
        let (epoch, ended) = change_password(&mut conn, user.id, "new hash", 2)?;
        assert_eq!((epoch, ended), (1, 1));
        // A login that read epoch 0 before the change, saving its session after it.
        insert_session(&conn, "racing", before, "{}", 1000)?;
        assert_eq!(load_session(&conn, "racing", 10)?, None);
        let after = SessionOwner {
            user_id: Some(user.id),
            epoch,
        };
        insert_session(&conn, "fresh", after, "{}", 1000)?;
        assert_eq!(
            load_session(&conn, "fresh", 10)?,
            Some(("{}".to_owned(), 1000))
        );
        // Anonymous sessions have no epoch to go stale.
        insert_session(&conn, "anon", SessionOwner::default(), "{}", 1000)?;
        assert_eq!(
            load_session(&conn, "anon", 10)?,
            Some(("{}".to_owned(), 1000))
        );
        Ok(())
    }
}
