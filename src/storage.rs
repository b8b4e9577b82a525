//! Where the bytes live: `<storage>/objects/<2 hex>/<key>`, written through `<storage>/tmp`.
//!
//! An object is streamed into a temp file while hashed and counted, fsync'd, then renamed into
//! place and the directory fsync'd: a crash leaves a whole object or a temp file, never a torn
//! object. Names are random keys, never anything a user chose.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Length of an object key: 128 random bits as lowercase hex.
pub const KEY_LEN: usize = 32;

/// The storage directory.
#[derive(Debug, Clone)]
pub struct Storage {
    root: PathBuf,
    objects: PathBuf,
    tmp: PathBuf,
}

/// A fresh random object key.
pub fn new_key() -> String {
    let mut bytes = [0u8; KEY_LEN / 2];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Whether `key` has the shape of a key we issue; anything else never reaches the filesystem.
pub fn is_valid_key(key: &str) -> bool {
    key.len() == KEY_LEN && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Storage {
    /// Opens the storage directory, creating it and its sub-directories as needed.
    pub fn open(root: &Path) -> io::Result<Self> {
        let storage = Self {
            root: root.to_path_buf(),
            objects: root.join("objects"),
            tmp: root.join("tmp"),
        };
        for dir in [&storage.root, &storage.objects, &storage.tmp] {
            fs::create_dir_all(dir)?;
        }
        Ok(storage)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of an object, or `None` for a string that is not a key.
    pub fn object_path(&self, key: &str) -> Option<PathBuf> {
        is_valid_key(key).then(|| self.objects.join(&key[..2]).join(key))
    }

    /// Starts a new object in the temp area.
    pub fn create_temp(&self) -> io::Result<TempObject> {
        let path = self.tmp.join(format!("{}.part", new_key()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
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
            fs::create_dir_all(shard)?;
            sync_dir(&self.objects)?;
        }
        fs::rename(&temp.path, &target)?;
        sync_dir(shard)?;
        sync_dir(&self.tmp)?;
        // The temp path no longer exists: nothing for Drop to clean up.
        temp.path = PathBuf::new();
        Ok(())
    }

    /// Removes an object's bytes; a missing object is not an error.
    pub fn remove(&self, key: &str) -> io::Result<()> {
        let Some(path) = self.object_path(key) else {
            return Ok(());
        };
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Empties the temp area and removes every object that no row refers to. Run at start,
    /// before requests are accepted.
    pub fn sweep(&self, referenced: &HashSet<String>) -> io::Result<SweepReport> {
        let mut report = SweepReport::default();
        for entry in fs::read_dir(&self.tmp)? {
            let path = entry?.path();
            if path.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
            report.temp_files += 1;
        }
        for shard in fs::read_dir(&self.objects)? {
            let shard = shard?.path();
            if !shard.is_dir() {
                fs::remove_file(&shard)?;
                report.orphans += 1;
                continue;
            }
            for entry in fs::read_dir(&shard)? {
                let entry = entry?;
                let name = entry.file_name();
                let keep = name.to_str().is_some_and(|n| {
                    referenced.contains(n) && self.object_path(n).is_some_and(|p| p == entry.path())
                });
                if !keep {
                    let path = entry.path();
                    if path.is_dir() {
                        fs::remove_dir_all(&path)?;
                    } else {
                        fs::remove_file(&path)?;
                    }
                    report.orphans += 1;
                }
            }
        }
        Ok(report)
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
        let storage = Storage::open(dir.path())?;
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
        let storage = Storage::open(dir.path())?;
        let mut temp = storage.create_temp()?;
        temp.write(b"partial")?;
        drop(temp);
        assert_eq!(fs::read_dir(dir.path().join("tmp"))?.count(), 0);
        Ok(())
    }

    #[test]
    fn the_sweep_removes_temp_files_and_orphans_only() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let storage = Storage::open(dir.path())?;
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
