//! Where the bytes live, behind one interface: a directory on this machine ([`local`]) or an
//! S3-compatible bucket ([`s3`]).
//!
//! Callers say what they want (write an object under a key, read a range of it, remove it, a
//! URL for it until then, sweep what an interrupted run left) and never which backend does it;
//! the one difference they see is [`ObjectStore::direct_url`], a URL straight to the store or
//! none. Keys are random names the service chose, never anything a user wrote.

pub mod local;
pub mod s3;

use std::collections::HashSet;
use std::io;
use std::path::Path;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use rand::RngCore;

use crate::error::AppError;
use crate::media_type::{self, Utf8Stream};

pub use local::{
    LOCK_FILE, LocalStore, StorageLock, SweepReport, create_private_dir_all, object_path_in,
};
pub use s3::{Downloads, S3Credentials, S3Settings, S3Store};

/// The storage directory's local objects, under their historical name.
pub type Storage = LocalStore;

/// Length of an object key: 128 random bits as lowercase hex.
pub const KEY_LEN: usize = 32;

/// A fresh random object key.
pub fn new_key() -> String {
    let mut bytes = [0u8; KEY_LEN / 2];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Whether `key` has the shape of a key we issue; anything else never reaches a store.
pub fn is_valid_key(key: &str) -> bool {
    key.len() == KEY_LEN && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such object")]
    NotFound,
    /// The object store did not answer in time, refused our credentials or failed itself:
    /// the request may be retried once it is back.
    #[error("object store unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => AppError::NotFound("File not found"),
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "object store unavailable");
                AppError::StoreUnavailable
            }
            StoreError::Io(err) => err.into(),
            StoreError::Other(err) => AppError::Internal(err),
        }
    }
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(err: tokio::task::JoinError) -> Self {
        Self::Other(anyhow::anyhow!("a storage task failed: {err}"))
    }
}

/// Bytes read from an object: at hand, or arriving.
pub enum ObjectBody {
    Whole(Bytes),
    Stream(BoxStream<'static, io::Result<Bytes>>),
}

impl ObjectBody {
    /// All of it, in memory.
    pub async fn collect(self) -> Result<Bytes, StoreError> {
        use futures_util::TryStreamExt;
        match self {
            Self::Whole(bytes) => Ok(bytes),
            Self::Stream(stream) => {
                let chunks: Vec<Bytes> = stream.try_collect().await.map_err(|err| {
                    StoreError::Unavailable(format!("reading an object failed: {err}"))
                })?;
                Ok(chunks.concat().into())
            }
        }
    }
}

/// What [`ObjectStore::store_file`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    pub size: u64,
    /// The type stored, with the charset the bytes decided.
    pub mime: String,
}

/// What a file's bytes were found to be as they were written (see [`ObjectStore::store_file`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownBytes {
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    pub utf8: bool,
}

/// Bytes read from a file per write into an object being stored.
const COPY_CHUNK: usize = 1024 * 1024;

/// The object store in use.
#[derive(Debug, Clone)]
pub enum ObjectStore {
    Local(LocalStore),
    S3(S3Store),
}

impl ObjectStore {
    /// Where the objects are, for logs and messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Local(local) => format!("local ({})", local.objects_dir().display()),
            Self::S3(s3) => s3.describe(),
        }
    }

    /// Starts a new object under `key`, of type `content_type` as far as it is known.
    pub async fn create(&self, key: &str, content_type: &str) -> Result<ObjectWriter, StoreError> {
        let writer = match self {
            Self::Local(local) => {
                let store = local.clone();
                let temp = tokio::task::spawn_blocking(move || store.create_temp()).await??;
                Writer::Local(local::LocalWriter::new(local.clone(), temp))
            }
            Self::S3(s3) => Writer::S3(s3.writer(key, content_type)),
        };
        Ok(ObjectWriter {
            key: key.to_owned(),
            writer,
        })
    }

    /// `len` bytes from `start` of the object `key`, which the database says is `size` bytes.
    pub async fn read(
        &self,
        key: &str,
        start: u64,
        len: u64,
        size: u64,
    ) -> Result<ObjectBody, StoreError> {
        match self {
            Self::Local(local) => local.read(key, start, len, size).await,
            Self::S3(s3) => s3.read(key, start, len, size).await,
        }
    }

    /// The bytes of the local file at `path`, stored durably as the object `key`, typed `mime`
    /// (with `; charset=utf-8` when the type wants a charset and the bytes are UTF-8). The file
    /// stays where it is; on a local disk the object is a second link to the same bytes, and
    /// the file is not read at all when `known` says what its bytes are (an S3 upload reads
    /// them anyway, and hashes them as they go).
    pub async fn store_file(
        &self,
        key: &str,
        path: &Path,
        mime: &str,
        known: Option<KnownBytes>,
    ) -> Result<StoredFile, StoreError> {
        if let Self::Local(local) = self {
            let (local, key, path, mime) = (
                local.clone(),
                key.to_owned(),
                path.to_owned(),
                mime.to_owned(),
            );
            return Ok(tokio::task::spawn_blocking(move || {
                local.link_file(&path, &key, mime, known)
            })
            .await??);
        }
        let mut file = tokio::fs::File::open(path).await?;
        let mut object = self.create(key, mime).await?;
        let mut utf8 = media_type::wants_charset(mime).then(Utf8Stream::default);
        let copied = async {
            use tokio::io::AsyncReadExt;
            loop {
                let mut chunk = bytes::BytesMut::with_capacity(COPY_CHUNK);
                while chunk.len() < COPY_CHUNK {
                    if file.read_buf(&mut chunk).await? == 0 {
                        break;
                    }
                }
                if chunk.is_empty() {
                    break;
                }
                if let Some(utf8) = utf8.as_mut() {
                    utf8.update(&chunk);
                }
                object.write(chunk.freeze()).await?;
            }
            object.finish().await
        }
        .await;
        let (sha256, size) = match copied {
            Ok(done) => done,
            Err(err) => {
                object.discard().await;
                return Err(err);
            }
        };
        let mime = media_type::with_charset(mime.to_owned(), utf8.is_some_and(|u| u.is_utf8()));
        object.commit(&mime).await?;
        Ok(StoredFile { sha256, size, mime })
    }

    /// Removes an object's bytes; a missing object is not an error.
    pub async fn remove(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Self::Local(local) => {
                let (local, key) = (local.clone(), key.to_owned());
                Ok(tokio::task::spawn_blocking(move || local.remove(&key)).await??)
            }
            Self::S3(s3) => s3.remove(key).await,
        }
    }

    /// Removes an object and whatever an interrupted write of it left (an open multipart
    /// upload); a missing object is not an error.
    pub async fn purge(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Self::Local(_) => self.remove(key).await,
            Self::S3(s3) => s3.purge(key).await,
        }
    }

    /// A URL straight to the store for `key`, valid until `expires`, that answers with the
    /// given type and disposition; `None` when downloads go through `/files/{key}`.
    pub fn direct_url(
        &self,
        key: &str,
        content_type: &str,
        disposition: impl FnOnce() -> String,
        expires: i64,
        ttl_secs: u64,
    ) -> Option<String> {
        match self {
            Self::Local(_) => None,
            Self::S3(s3) => s3.direct_url(key, content_type, &disposition(), expires, ttl_secs),
        }
    }

    /// Proves that the store takes writes.
    pub async fn probe(&self) -> Result<(), StoreError> {
        match self {
            Self::Local(local) => {
                let local = local.clone();
                Ok(tokio::task::spawn_blocking(move || local.probe()).await??)
            }
            Self::S3(s3) => s3.probe().await,
        }
    }

    /// Removes what an interrupted run left: the objects of `pending` keys (uploads that never
    /// got their row, deletes that never got to the bytes) that no row in `referenced` keeps,
    /// and, on a local disk, temp files and any other stray file. Run at start, before requests
    /// are accepted.
    pub async fn sweep(
        &self,
        referenced: HashSet<String>,
        pending: Vec<String>,
    ) -> Result<SweepReport, StoreError> {
        match self {
            Self::Local(local) => {
                let local = local.clone();
                Ok(tokio::task::spawn_blocking(move || local.sweep(&referenced)).await??)
            }
            Self::S3(s3) => s3.sweep(&referenced, &pending).await,
        }
    }
}

/// An object being written under its key. Not visible until committed; dropped or discarded,
/// it leaves nothing (a crash in between is what the pending-object journal is for).
#[derive(Debug)]
pub struct ObjectWriter {
    key: String,
    writer: Writer,
}

#[derive(Debug)]
enum Writer {
    Local(local::LocalWriter),
    S3(s3::S3Writer),
}

impl ObjectWriter {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        match &self.writer {
            Writer::Local(local) => local.size(),
            Writer::S3(s3) => s3.size(),
        }
    }

    /// Appends `data`.
    pub async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        match &mut self.writer {
            Writer::Local(local) => local.write(data).await,
            Writer::S3(s3) => s3.write(&data).await,
        }
    }

    /// Ends the writing: returns the SHA-256 (hex) and size of the bytes.
    pub async fn finish(&mut self) -> Result<(String, u64), StoreError> {
        match &mut self.writer {
            Writer::Local(local) => local.finish().await,
            Writer::S3(s3) => Ok(s3.finish()),
        }
    }

    /// Makes the finished object visible under its key, durably, typed `content_type`.
    pub async fn commit(self, content_type: &str) -> Result<(), StoreError> {
        match self.writer {
            Writer::Local(writer) => writer.commit(self.key).await,
            Writer::S3(writer) => writer.commit(content_type).await,
        }
    }

    /// Gives the object up; true when nothing of it is left in the store.
    pub async fn discard(self) -> bool {
        match self.writer {
            Writer::Local(writer) => writer.discard().await,
            Writer::S3(writer) => writer.discard().await,
        }
    }
}
