//! Objects on this machine: `<storage>/objects/<2 hex>/<key>`, written through `<storage>/tmp`.
//!
//! An object is streamed into a temp file while hashed and counted, fsync'd, then renamed into
//! place and the directory fsync'd: a crash leaves a whole object or a temp file, never a torn
//! object. Names are random keys, never anything a user chose.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

use super::{KnownBytes, ObjectBody, StoreError, StoredFile, is_valid_key, new_key};
use crate::cache::Memo;
use crate::media_type::{self, Utf8Stream};

/// Bytes gathered before one trip to the blocking pool to write them.
const WRITE_BATCH: usize = 256 * 1024;
/// Reads up to this size are done in one go; larger ones are streamed.
const SMALL_READ: u64 = 1024 * 1024;
const STREAM_CHUNK: usize = 256 * 1024;
/// Bytes read at a time when a file is hashed.
const READ_CHUNK: usize = 1024 * 1024;
/// The lock file [`StorageLock`] keeps in the storage directory.
pub const LOCK_FILE: &str = "chatfiles.lock";

/// An exclusive hold on a storage directory (`<storage>/chatfiles.lock`): one service, or one
/// `check --repair`, at a time. Released when dropped, or by the kernel when the process dies.
#[derive(Debug)]
pub struct StorageLock {
    _file: File,
}

impl StorageLock {
    /// Takes the lock, retrying for up to `wait`; `Ok(None)` when someone else still holds it.
    pub fn acquire(root: &Path, wait: std::time::Duration) -> io::Result<Option<Self>> {
        create_private_dir_all(root)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(root.join(LOCK_FILE))?;
        let deadline = std::time::Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Some(Self { _file: file })),
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(fs::TryLockError::WouldBlock) => return Ok(None),
                Err(fs::TryLockError::Error(err)) => return Err(err),
            }
        }
    }
}

/// How many objects' files the service keeps open between reads (see [`LocalStore::read`]).
pub const OPEN_FILES: usize = 64;

/// The objects in the storage directory.
#[derive(Clone)]
pub struct LocalStore {
    root: PathBuf,
    objects: PathBuf,
    tmp: PathBuf,
    /// Objects' files kept open, their sizes checked, for reads of part of a large object (a
    /// `Range`): neither a path lookup nor a trip to the blocking pool when the bytes are in the
    /// page cache. An object never changes once stored (a key is never reused), and a removal
    /// forgets its file; empty unless [`LocalStore::keep_open`] says how many.
    open_files: Arc<Memo<String, Arc<File>>>,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Where the object `key` lives under the `objects` directory: `<objects>/<first 2 hex>/<key>`;
/// `None` for a string that is not a key.
pub fn object_path_in(objects: &Path, key: &str) -> Option<PathBuf> {
    is_valid_key(key).then(|| objects.join(&key[..2]).join(key))
}

/// Creates `dir` and any missing parents 0700: stored bytes are for the service alone. A
/// directory that exists keeps its mode.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl LocalStore {
    /// Opens the storage directory, creating it and its sub-directories as needed.
    pub fn open(root: &Path) -> io::Result<Self> {
        let storage = Self {
            root: root.to_path_buf(),
            objects: root.join("objects"),
            tmp: root.join("tmp"),
            open_files: Arc::new(Memo::counted(0)),
        };
        for dir in [&storage.root, &storage.objects, &storage.tmp] {
            create_private_dir_all(dir)?;
        }
        // Every shard exists before the first upload, made durable once here: a commit never
        // has to create (and fsync) a directory that a concurrent commit may be relying on.
        let mut created = false;
        for shard in 0..=255u8 {
            let dir = storage.objects.join(hex::encode([shard]));
            if !dir.is_dir() {
                create_private_dir_all(&dir)?;
                created = true;
            }
        }
        if created {
            sync_dir(&storage.objects)?;
            sync_dir(&storage.root)?;
        }
        Ok(storage)
    }

    /// Keeps the files of up to `files` objects over [`SMALL_READ`] open between reads of parts
    /// of them.
    pub fn keep_open(mut self, files: usize) -> Self {
        self.open_files = Arc::new(Memo::counted(files));
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<storage>/objects`.
    pub fn objects_dir(&self) -> &Path {
        &self.objects
    }

    /// The path of an object, or `None` for a string that is not a key.
    pub fn object_path(&self, key: &str) -> Option<PathBuf> {
        object_path_in(&self.objects, key)
    }

    /// Starts a new object in the temp area.
    pub fn create_temp(&self) -> io::Result<TempObject> {
        let path = self.tmp.join(format!("{}.part", new_key()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(TempObject {
            file: Some(file),
            path,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Moves a finished temp object into place under `key`, durably.
    pub fn commit(&self, mut temp: TempObject, key: &str) -> io::Result<()> {
        let target = self
            .object_path(key)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid object key"))?;
        if temp.file.is_some() {
            return Err(io::Error::other(
                "temp object committed before it was finished",
            ));
        }
        let shard = target.parent().unwrap_or(&self.objects);
        if !shard.exists() {
            // Only if someone removed it since the start (see `open`).
            create_private_dir_all(shard)?;
            sync_dir(&self.objects)?;
        }
        fs::rename(&temp.path, &target)?;
        sync_dir(shard)?;
        sync_dir(&self.tmp)?;
        // The temp path no longer exists: nothing for Drop to clean up.
        temp.path = PathBuf::new();
        Ok(())
    }

    /// Stores the file at `path` as the object `key` by linking it into place, durably, after
    /// reading it once for its hash and charset (see `ObjectStore::store_file`), unless `known`
    /// already tells them for its size. A file on another file system is copied instead.
    pub fn link_file(
        &self,
        path: &Path,
        key: &str,
        mime: String,
        known: Option<KnownBytes>,
    ) -> io::Result<StoredFile> {
        let target = self
            .object_path(key)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid object key"))?;
        let size = fs::metadata(path)?.len();
        let known = match known {
            Some(known) if known.size == size => known,
            _ => hash_file(path)?,
        };
        let size = known.size;
        let shard = target.parent().unwrap_or(&self.objects).to_path_buf();
        if !shard.exists() {
            create_private_dir_all(&shard)?;
            sync_dir(&self.objects)?;
        }
        match fs::hard_link(path, &target) {
            Ok(()) => sync_dir(&shard)?,
            Err(err) if err.kind() == io::ErrorKind::CrossesDevices => {
                let mut temp = self.create_temp()?;
                std::io::copy(
                    &mut File::open(path)?,
                    temp.file
                        .as_mut()
                        .ok_or_else(|| io::Error::other("a new temp object has no file"))?,
                )?;
                temp.size = size;
                temp.finish()?;
                self.commit(temp, key)?;
            }
            Err(err) => return Err(err),
        }
        let utf8 = known.utf8 && media_type::wants_charset(&mime);
        Ok(StoredFile {
            sha256: known.sha256,
            size,
            mime: media_type::with_charset(mime, utf8),
        })
    }

    /// Proves that the storage directory takes writes: a small temp file written, then removed.
    /// Both areas count: the temp file is renamed into a shard of `objects`, as a commit would,
    /// and removed (a leftover's name is no key, so the sweep would take it).
    pub fn probe(&self) -> io::Result<()> {
        let mut temp = self.create_temp()?;
        temp.write(b"health")?;
        let target = self
            .objects
            .join("00")
            .join(format!("health-{}", new_key()));
        fs::rename(&temp.path, &target)?;
        temp.path = PathBuf::new();
        fs::remove_file(&target)
    }

    /// Removes an object's bytes; a missing object is not an error.
    pub fn remove(&self, key: &str) -> io::Result<()> {
        let Some(path) = self.object_path(key) else {
            return Ok(());
        };
        let removed = match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err),
        };
        // After the unlink: a read that opened the file before it then keeps nothing.
        self.open_files.forget([key]);
        removed
    }

    /// Empties the temp area and removes every object that no row refers to. Run at start,
    /// before requests are accepted.
    pub fn sweep(&self, referenced: &HashSet<String>) -> io::Result<SweepReport> {
        let mut report = SweepReport::default();
        for entry in fs::read_dir(&self.tmp)? {
            remove_entry(&entry?)?;
            report.temp_files += 1;
        }
        for shard in fs::read_dir(&self.objects)? {
            let shard = shard?;
            // `file_type` does not follow symlinks: a link planted here is removed, never walked.
            if !shard.file_type()?.is_dir() {
                remove_entry(&shard)?;
                report.orphans += 1;
                continue;
            }
            let mut kept = 0;
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                let name = entry.file_name();
                let keep = entry.file_type()?.is_file()
                    && name.to_str().is_some_and(|n| {
                        referenced.contains(n)
                            && self.object_path(n).is_some_and(|p| p == entry.path())
                    });
                if keep {
                    kept += 1;
                } else {
                    remove_entry(&entry)?;
                    report.orphans += 1;
                }
            }
            let is_shard = shard
                .file_name()
                .to_str()
                .is_some_and(|n| n.len() == 2 && n.bytes().all(|b| b.is_ascii_hexdigit()));
            if kept == 0 && !is_shard {
                fs::remove_dir(shard.path())?;
            }
        }
        Ok(report)
    }
}

impl LocalStore {
    /// `len` bytes from `start` of the object `key`, which should be `size` bytes: read at once
    /// when few, else streamed from the open file.
    ///
    /// A read at once from a file kept open is tried first right here, without waiting for the
    /// disk (`RWF_NOWAIT`: the kernel answers from the page cache or not at all), so that a hot
    /// range costs one system call on the async worker; otherwise the file is opened (and kept)
    /// and read on the blocking pool.
    pub async fn read(
        &self,
        key: &str,
        start: u64,
        len: u64,
        size: u64,
    ) -> Result<ObjectBody, StoreError> {
        let path = self.object_path(key).ok_or(StoreError::NotFound)?;
        if len <= SMALL_READ {
            if let Some(file) = self.open_files.get(key) {
                let read = read_cached(&file, start, len);
                // A file forgotten meanwhile (its object deleted) may be this one's last
                // handle: its close, which frees the file's blocks, is not for this thread.
                if let Some(file) = Arc::into_inner(file) {
                    tokio::task::spawn_blocking(move || drop(file));
                }
                if let Some(bytes) = read {
                    return Ok(ObjectBody::Whole(bytes));
                }
            }
            let store = self.clone();
            let key = key.to_owned();
            return tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                // An object read whole (small enough to be kept in memory) is not kept open.
                let file = if size > SMALL_READ {
                    store.open_kept(&key, &path, size)?
                } else {
                    Arc::new(open_sized(&path, size)?)
                };
                let mut buf = vec![0; usize::try_from(len).unwrap_or(0)];
                file.read_exact_at(&mut buf, start)?;
                Ok(ObjectBody::Whole(Bytes::from(buf)))
            })
            .await?;
        }
        let opened = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            use std::io::{Seek, SeekFrom};
            let mut file = open_sized(&path, size)?;
            file.seek(SeekFrom::Start(start))?;
            Ok(ObjectBody::Stream(
                ReaderStream::with_capacity(
                    tokio::fs::File::from_std(file).take(len),
                    STREAM_CHUNK,
                )
                .boxed(),
            ))
        });
        opened.await?
    }

    /// The object's file, from those kept open or opened (and kept); blocking.
    fn open_kept(&self, key: &str, path: &Path, size: u64) -> Result<Arc<File>, StoreError> {
        if let Some(file) = self.open_files.get(key) {
            return Ok(file);
        }
        // Noted before the open: a removal meanwhile keeps the file from being kept.
        let mark = self.open_files.mark();
        let file = Arc::new(open_sized(path, size)?);
        self.open_files.insert(key.to_owned(), file.clone(), mark);
        Ok(file)
    }
}

/// Reads a file whole for what [`KnownBytes`] says of it.
fn hash_file(path: &Path) -> io::Result<KnownBytes> {
    use std::io::Read;
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut utf8 = Utf8Stream::default();
    let mut size = 0u64;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        utf8.update(&buf[..n]);
        size += n as u64;
    }
    Ok(KnownBytes {
        size,
        sha256: hex::encode(hasher.finalize()),
        utf8: utf8.is_utf8(),
    })
}

/// Opens an object's file, which the database says is `size` bytes; blocking. Reading it leaves
/// its access time alone where the kernel lets us (`O_NOATIME`, for the files' owner): a read
/// that may run on an async worker must not start a metadata write.
fn open_sized(path: &Path, size: u64) -> Result<File, StoreError> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path);
    let opened = match opened {
        Err(err) if err.raw_os_error() == Some(libc::EPERM) => File::open(path),
        other => other,
    };
    let file = match opened {
        Ok(file) => file,
        // Deleted between the lookup and now.
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound),
        Err(err) => return Err(err.into()),
    };
    let actual = file.metadata()?.len();
    if actual != size {
        return Err(StoreError::Other(anyhow::anyhow!(
            "object {} is {actual} bytes on disk, {size} in the database",
            path.display()
        )));
    }
    Ok(file)
}

/// `len` bytes from `start` of `file` if the page cache holds them all; never waits for the
/// disk, so it may run on an async worker.
fn read_cached(file: &File, start: u64, len: u64) -> Option<Bytes> {
    use rustix::io::{ReadWriteFlags, preadv2};
    let mut buf = vec![0; usize::try_from(len).ok()?];
    let read = preadv2(
        file,
        &mut [io::IoSliceMut::new(&mut buf)],
        start,
        ReadWriteFlags::NOWAIT,
    )
    .ok()?;
    (read == buf.len()).then(|| Bytes::from(buf))
}

/// A local object being written: bytes batched, then written to its temp file on the blocking
/// pool, and renamed into place on commit.
#[derive(Debug)]
pub struct LocalWriter {
    store: LocalStore,
    /// `None` only while a blocking write has it.
    temp: Option<TempObject>,
    batch: BytesMut,
}

impl LocalWriter {
    pub fn new(store: LocalStore, temp: TempObject) -> Self {
        Self {
            store,
            temp: Some(temp),
            batch: BytesMut::new(),
        }
    }

    pub fn size(&self) -> u64 {
        self.temp.as_ref().map_or(0, TempObject::size) + self.batch.len() as u64
    }

    pub async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.batch.extend_from_slice(&data);
        if self.batch.len() >= WRITE_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let data = self.batch.split().freeze();
        let mut temp = self.take()?;
        let temp = tokio::task::spawn_blocking(move || temp.write(&data).map(|()| temp)).await??;
        self.temp = Some(temp);
        Ok(())
    }

    fn take(&mut self) -> Result<TempObject, StoreError> {
        self.temp
            .take()
            .ok_or_else(|| StoreError::Other(anyhow::anyhow!("the temp file was lost")))
    }

    pub async fn finish(&mut self) -> Result<(String, u64), StoreError> {
        self.flush().await?;
        let mut temp = self.take()?;
        let (temp, done) = tokio::task::spawn_blocking(move || {
            let done = temp.finish();
            (temp, done)
        })
        .await?;
        self.temp = Some(temp);
        Ok(done?)
    }

    pub async fn commit(mut self, key: String) -> Result<(), StoreError> {
        let temp = self.take()?;
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.commit(temp, &key)).await??)
    }

    /// Removes the temp file, off the async worker. Nothing was ever under the key.
    pub async fn discard(mut self) -> bool {
        if let Some(temp) = self.temp.take() {
            let _ = tokio::task::spawn_blocking(move || drop(temp)).await;
        }
        true
    }
}

/// Removes a directory entry (a directory with its contents), without following symlinks.
fn remove_entry(entry: &fs::DirEntry) -> io::Result<()> {
    if entry.file_type()?.is_dir() {
        fs::remove_dir_all(entry.path())
    } else {
        fs::remove_file(entry.path())
    }
}

/// What the start-up sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub temp_files: usize,
    pub orphans: usize,
}

/// An object being written: bytes go to a temp file while hashed and counted. Dropped before it
/// is committed, it deletes its temp file.
#[derive(Debug)]
pub struct TempObject {
    file: Option<File>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl TempObject {
    /// Appends `data`.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("write after finish"))?;
        file.write_all(data)?;
        self.hasher.update(data);
        self.size += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Flushes the bytes to disk; returns the SHA-256 (hex) and size.
    pub fn finish(&mut self) -> io::Result<(String, u64)> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("finished twice"))?;
        file.sync_all()?;
        let digest = std::mem::take(&mut self.hasher).finalize();
        Ok((hex::encode(digest), self.size))
    }
}

impl Drop for TempObject {
    fn drop(&mut self) {
        self.file.take();
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_lowercase_hex() {
        let key = new_key();
        assert!(is_valid_key(&key));
        assert_ne!(key, new_key());
        for bad in [
            "",
            "../../etc/passwd",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcde/",
            "..%2f",
        ] {
            assert!(!is_valid_key(bad), "{bad}");
        }
    }

    #[test]
    fn a_committed_object_keeps_its_bytes_and_hash() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let storage = LocalStore::open(dir.path())?;
        let mut temp = storage.create_temp()?;
        temp.write(b"hello ")?;
        temp.write(b"world")?;
        let (sha, size) = temp.finish()?;
        assert_eq!(size, 11);
        assert_eq!(sha, hex::encode(Sha256::digest(b"hello world")));
        let key = new_key();
        storage.commit(temp, &key)?;
        let path = storage
            .object_path(&key)
            .ok_or_else(|| io::Error::other("no path"))?;
        assert_eq!(fs::read(path)?, b"hello world");
        assert_eq!(fs::read_dir(dir.path().join("tmp"))?.count(), 0);
        Ok(())
    }

    #[test]
    fn a_dropped_temp_object_leaves_nothing() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let storage = LocalStore::open(dir.path())?;
        let mut temp = storage.create_temp()?;
        temp.write(b"partial")?;
        drop(temp);
        assert_eq!(fs::read_dir(dir.path().join("tmp"))?.count(), 0);
        Ok(())
    }

    #[test]
    fn the_sweep_removes_planted_links_without_following_them() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let storage = LocalStore::open(&dir.path().join("storage"))?;
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere)?;
        fs::write(elsewhere.join("precious"), b"keep me")?;
        let objects = dir.path().join("storage").join("objects");
        fs::remove_dir(objects.join("ab"))?;
        std::os::unix::fs::symlink(&elsewhere, objects.join("ab"))?;
        std::os::unix::fs::symlink(&elsewhere, objects.join("cd").join("link"))?;
        fs::create_dir(objects.join("not-a-shard"))?;
        let report = storage.sweep(&HashSet::new())?;
        assert_eq!(report.orphans, 2);
        assert!(elsewhere.join("precious").exists());
        assert!(!objects.join("ab").exists());
        assert!(!objects.join("not-a-shard").exists());
        assert!(objects.join("cd").exists(), "an empty shard may stay");
        Ok(())
    }

    #[test]
    fn only_one_holder_locks_a_storage_directory() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let wait = std::time::Duration::from_millis(50);
        let first = StorageLock::acquire(dir.path(), wait)?;
        assert!(first.is_some());
        assert!(StorageLock::acquire(dir.path(), wait)?.is_none());
        drop(first);
        assert!(StorageLock::acquire(dir.path(), wait)?.is_some());
        Ok(())
    }

    #[test]
    fn the_sweep_removes_temp_files_and_orphans_only() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let storage = LocalStore::open(dir.path())?;
        let mut keys = Vec::new();
        for _ in 0..2 {
            let mut temp = storage.create_temp()?;
            temp.write(b"x")?;
            temp.finish()?;
            let key = new_key();
            storage.commit(temp, &key)?;
            keys.push(key);
        }
        fs::write(dir.path().join("tmp").join("left.part"), b"junk")?;
        let referenced: HashSet<String> = keys[..1].iter().cloned().collect();
        let report = storage.sweep(&referenced)?;
        assert_eq!(
            report,
            SweepReport {
                temp_files: 1,
                orphans: 1
            }
        );
        assert!(storage.object_path(&keys[0]).is_some_and(|p| p.exists()));
        assert!(storage.object_path(&keys[1]).is_some_and(|p| !p.exists()));
        Ok(())
    }
}
