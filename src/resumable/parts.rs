//! Unfinished uploads' bytes on this machine: `<storage>/uploads/<id>`, one file per upload,
//! whatever the object store, until the last byte moves them there.
//!
//! Every function blocks: callers run them on the blocking pool.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::storage::{create_private_dir_all, is_valid_key};

/// The directory of part files.
#[derive(Debug, Clone)]
pub struct PartFiles {
    dir: PathBuf,
}

impl PartFiles {
    /// Opens `<storage>/uploads`, creating it (0700) as needed.
    pub fn open(storage: &Path) -> io::Result<Self> {
        let dir = storage.join("uploads");
        create_private_dir_all(&dir)?;
        Ok(Self { dir })
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
        let mut writer = PartWriter {
            file,
            offset,
            synced: offset,
        };
        use std::io::Seek;
        writer.file.seek(io::SeekFrom::Start(offset))?;
        Ok(writer)
    }

    /// Removes upload `id`'s part file; a missing one is not an error.
    pub fn remove(&self, id: &str) -> io::Result<()> {
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
        let path = self.dir.join(name);
        if fs::symlink_metadata(&path)?.is_dir() {
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        }
    }

    /// Cuts upload `id`'s part file back to `len` bytes (bytes never acknowledged).
    pub fn truncate(&self, id: &str, len: u64) -> io::Result<()> {
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
}

impl PartWriter {
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Appends `data`.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.offset += data.len() as u64;
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
        Ok(())
    }
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
}
