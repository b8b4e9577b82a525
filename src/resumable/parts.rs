//! Unfinished uploads' bytes on this machine: `<storage>/uploads/<id>`, one file per upload,
//! whatever the object store, until the last byte moves them there.
//!
//! Every function blocks: callers run them on the blocking pool.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::media_type::Utf8Stream;
use crate::storage::{KnownBytes, create_private_dir_all, is_valid_key};

/// The directory of part files.
#[derive(Debug, Clone)]
pub struct PartFiles {
    dir: PathBuf,
    /// What each upload's bytes hash to, as far as this process wrote them in order.
    digests: Digests,
}

type Digests = Arc<Mutex<HashMap<String, PartDigest>>>;

/// The SHA-256 and the UTF-8-ness of an upload's first `len` bytes, followed as its PATCHes
/// write them, so that the file its last byte makes needs no second read of all its bytes.
/// Only this process's writes count: after a restart, or once bytes were written that it did
/// not see, there is none, and the file is read again.
#[derive(Debug, Clone, Default)]
pub struct PartDigest {
    len: u64,
    sha256: Sha256,
    utf8: Utf8Stream,
}

impl PartDigest {
    fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        self.utf8.update(data);
        self.len += data.len() as u64;
    }

    /// What the bytes are: their size, SHA-256 and whether they are UTF-8.
    pub fn finish(self) -> KnownBytes {
        KnownBytes {
            size: self.len,
            sha256: hex::encode(self.sha256.finalize()),
            utf8: self.utf8.is_utf8(),
        }
    }
}

impl PartFiles {
    /// Opens `<storage>/uploads`, creating it (0700) as needed.
    pub fn open(storage: &Path) -> io::Result<Self> {
        let dir = storage.join("uploads");
        create_private_dir_all(&dir)?;
        Ok(Self {
            dir,
            digests: Digests::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The part file of upload `id`; `None` for a string that is not an upload id.
    pub fn path(&self, id: &str) -> Option<PathBuf> {
        is_valid_key(id).then(|| self.dir.join(id))
    }

    fn checked_path(&self, id: &str) -> io::Result<PathBuf> {
        self.path(id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid upload id"))
    }

    /// Creates upload `id`'s empty part file, durably (the directory fsync'd).
    pub fn create(&self, id: &str) -> io::Result<()> {
        let path = self.checked_path(id)?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?
            .sync_all()?;
        File::open(&self.dir)?.sync_all()
    }

    /// Opens upload `id`'s part file to append from `offset`: bytes past it (never acknowledged)
    /// are dropped. Fails with `NotFound` when the file, or some of its first `offset` bytes,
    /// are gone.
    pub fn append_at(&self, id: &str, offset: u64) -> io::Result<PartWriter> {
        let path = self.checked_path(id)?;
        let file = OpenOptions::new().write(true).open(&path)?;
        let len = file.metadata()?.len();
        if len < offset {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("the part file has {len} of {offset} acknowledged bytes"),
            ));
        }
        if len > offset {
            file.set_len(offset)?;
        }
        // The digest of the bytes before `offset`, when this process followed them all.
        let digest = match self.digests.lock().remove(id) {
            Some(digest) if digest.len == offset => Some(digest),
            _ => (offset == 0).then(PartDigest::default),
        };
        let mut writer = PartWriter {
            file,
            offset,
            synced: offset,
            id: id.to_owned(),
            digest,
            digests: self.digests.clone(),
        };
        use std::io::Seek;
        writer.file.seek(io::SeekFrom::Start(offset))?;
        Ok(writer)
    }

    /// The digest of upload `id`'s bytes, if this process followed all `len` of them.
    pub fn take_digest(&self, id: &str, len: u64) -> Option<PartDigest> {
        self.digests.lock().remove(id).filter(|d| d.len == len)
    }

    /// Forgets the digests of uploads that `keep` does not name (a writer may put one back as
    /// its upload is removed under it).
    pub fn retain_digests(&self, keep: impl Fn(&str) -> bool) {
        self.digests.lock().retain(|id, _| keep(id));
    }

    /// Removes upload `id`'s part file; a missing one is not an error.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        self.digests.lock().remove(id);
        let path = self.checked_path(id)?;
        match fs::remove_file(path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Every entry of the directory: its name and, for a regular file, its length (`None` for
    /// anything else, which has no business here).
    pub fn list(&self) -> io::Result<Vec<(String, Option<u64>)>> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            // `file_type` does not follow symlinks: a planted link is never taken for a file.
            let kind = entry.file_type()?;
            let len = if kind.is_file() {
                Some(entry.metadata()?.len())
            } else {
                None
            };
            found.push((entry.file_name().to_string_lossy().into_owned(), len));
        }
        Ok(found)
    }

    /// Removes a directory entry found by [`PartFiles::list`] (a directory with its contents),
    /// without following symlinks.
    pub fn remove_entry(&self, name: &str) -> io::Result<()> {
        if name.contains('/') || name == "." || name == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an entry name",
            ));
        }
        self.digests.lock().remove(name);
        let path = self.dir.join(name);
        if fs::symlink_metadata(&path)?.is_dir() {
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        }
    }

    /// Cuts upload `id`'s part file back to `len` bytes (bytes never acknowledged).
    pub fn truncate(&self, id: &str, len: u64) -> io::Result<()> {
        self.digests.lock().remove(id);
        let file = OpenOptions::new()
            .write(true)
            .open(self.checked_path(id)?)?;
        file.set_len(len)?;
        file.sync_all()
    }
}

/// A part file open for appending.
#[derive(Debug)]
pub struct PartWriter {
    file: File,
    /// Bytes in the file (written, maybe not yet durable).
    offset: u64,
    /// Bytes known durable.
    synced: u64,
    id: String,
    /// The digest of the file's first `offset` bytes, when followed from the start.
    digest: Option<PartDigest>,
    /// Where the digest goes back when the writer is done.
    digests: Digests,
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if let Some(digest) = self.digest.take() {
            self.digests
                .lock()
                .insert(std::mem::take(&mut self.id), digest);
        }
    }
}

impl PartWriter {
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Appends `data`.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        start_writeback(&self.file, self.offset, data.len());
        self.offset += data.len() as u64;
        if let Some(digest) = self.digest.as_mut() {
            digest.update(data);
        }
        Ok(())
    }

    /// Makes every byte written durable; returns the durable length.
    pub fn sync(&mut self) -> io::Result<u64> {
        if self.synced != self.offset {
            self.file.sync_data()?;
            self.synced = self.offset;
        }
        Ok(self.synced)
    }

    /// Drops what was written after `len` (a refused PATCH).
    pub fn rewind(&mut self, len: u64) -> io::Result<()> {
        use std::io::Seek;
        self.file.set_len(len)?;
        self.file.seek(io::SeekFrom::Start(len))?;
        self.offset = len;
        self.synced = self.synced.min(len);
        if self.digest.as_ref().is_some_and(|d| d.len != len) {
            self.digest = (len == 0).then(PartDigest::default);
        }
        Ok(())
    }
}

/// Starts writing `len` bytes from `offset` of `file` to the disk without waiting for them, so
/// that they are on their way while the rest of the body arrives, and the PATCH's closing
/// `fdatasync` has little left to wait for. Only a hint: a failure here changes nothing, since
/// that `fdatasync` is what makes the bytes durable.
fn start_writeback(file: &File, offset: u64, len: usize) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: sync_file_range reads only its arguments: the descriptor of a file borrowed
        // for the call, and two integers.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_resume_at_the_acknowledged_offset() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let parts = PartFiles::open(dir.path())?;
        let id = crate::storage::new_key();
        parts.create(&id)?;
        let mut writer = parts.append_at(&id, 0)?;
        writer.write(b"hello, unacknowledged")?;
        assert_eq!(writer.sync()?, 21);
        drop(writer);
        // Only 7 bytes were acknowledged: the rest goes.
        let mut writer = parts.append_at(&id, 7)?;
        writer.write(b"world")?;
        writer.sync()?;
        let path = parts.path(&id).ok_or_else(|| io::Error::other("no path"))?;
        assert_eq!(fs::read(&path)?, b"hello, world");
        assert_eq!(
            parts.append_at(&id, 100).map(|_| ()).map_err(|e| e.kind()),
            Err(io::ErrorKind::NotFound)
        );
        parts.remove(&id)?;
        parts.remove(&id)?;
        assert!(parts.list()?.is_empty());
        Ok(())
    }

    #[test]
    fn a_refused_patch_is_rewound() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let parts = PartFiles::open(dir.path())?;
        let id = crate::storage::new_key();
        parts.create(&id)?;
        let mut writer = parts.append_at(&id, 0)?;
        writer.write(b"keep")?;
        writer.sync()?;
        writer.write(b"drop this")?;
        writer.rewind(4)?;
        writer.write(b"!")?;
        writer.sync()?;
        let path = parts.path(&id).ok_or_else(|| io::Error::other("no path"))?;
        assert_eq!(fs::read(path)?, b"keep!");
        assert!(parts.path("../../etc/passwd").is_none());
        Ok(())
    }

    #[test]
    fn the_digest_follows_the_acknowledged_bytes_or_is_none() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let parts = PartFiles::open(dir.path())?;
        let id = crate::storage::new_key();
        parts.create(&id)?;
        let sha = |bytes: &[u8]| hex::encode(Sha256::digest(bytes));
        // Two PATCHes in order, a character split between them: followed throughout.
        let mut writer = parts.append_at(&id, 0)?;
        writer.write("caf\u{e9}".as_bytes().split_at(4).0)?;
        drop(writer);
        let mut writer = parts.append_at(&id, 4)?;
        writer.write(&[0xA9])?;
        drop(writer);
        let digest = parts
            .take_digest(&id, 5)
            .ok_or_else(|| io::Error::other("no digest"))?;
        let known = |size, sha256, utf8| KnownBytes { size, sha256, utf8 };
        assert_eq!(digest.finish(), known(5, sha("caf\u{e9}".as_bytes()), true));
        // Taken: the next writer has none (its first 5 bytes were not followed by it)...
        let mut writer = parts.append_at(&id, 5)?;
        writer.write(b"!")?;
        drop(writer);
        assert!(parts.take_digest(&id, 6).is_none());
        // ...nor does one resuming at another offset than the digest's.
        let mut writer = parts.append_at(&id, 0)?;
        writer.write(&[0xFF, 0])?;
        drop(writer);
        let mut writer = parts.append_at(&id, 1)?;
        writer.write(b"x")?;
        drop(writer);
        assert!(parts.take_digest(&id, 2).is_none());
        // From the start again, invalid UTF-8 is told as such; a wrong length gives none.
        let mut writer = parts.append_at(&id, 0)?;
        writer.write(&[0xFF, 0])?;
        drop(writer);
        assert!(parts.take_digest(&id, 3).is_none());
        let mut writer = parts.append_at(&id, 0)?;
        writer.write(&[0xFF, 0])?;
        drop(writer);
        let digest = parts
            .take_digest(&id, 2)
            .ok_or_else(|| io::Error::other("no digest"))?;
        assert_eq!(digest.finish(), known(2, sha(&[0xFF, 0]), false));
        // Removing the part file forgets it.
        let writer = parts.append_at(&id, 0)?;
        drop(writer);
        parts.remove(&id)?;
        assert!(parts.take_digest(&id, 0).is_none());
        Ok(())
    }
}
