//! What resumable (tus) uploads keep between requests: their part files, one lock per upload
//! so that two PATCHes never write one file at once, and how long an upload may take.
//!
//! The protocol itself is `routes::tus`.

pub mod metadata;
pub mod parts;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

pub use parts::{PartFiles, PartWriter};

/// Resumable uploads' shared state.
#[derive(Debug)]
pub struct Resumable {
    pub parts: PartFiles,
    /// How long an upload may take, from its creation.
    pub expiry: Duration,
    locks: Locks,
}

impl Resumable {
    pub fn new(parts: PartFiles, expiry: Duration) -> Self {
        Self {
            parts,
            expiry,
            locks: Locks::default(),
        }
    }

    /// Upload `id`'s lock, waiting up to `wait` for whoever holds it; `None` if they still do.
    pub async fn lock(&self, id: &str, wait: Duration) -> Option<UploadLock> {
        let mutex = self.locks.entry(id);
        let guard = tokio::time::timeout(wait, mutex.clone().lock_owned())
            .await
            .ok();
        drop(mutex);
        self.held(id, guard)
    }

    /// Upload `id`'s lock if nobody holds it.
    pub fn try_lock(&self, id: &str) -> Option<UploadLock> {
        let mutex = self.locks.entry(id);
        let guard = mutex.clone().try_lock_owned().ok();
        drop(mutex);
        self.held(id, guard)
    }

    /// The lock, when `guard` was got; else the entry let go.
    fn held(&self, id: &str, guard: Option<OwnedMutexGuard<()>>) -> Option<UploadLock> {
        match guard {
            Some(guard) => Some(UploadLock {
                id: id.to_owned(),
                locks: self.locks.clone(),
                guard: Some(guard),
            }),
            None => {
                self.locks.release(id);
                None
            }
        }
    }
}

/// One mutex per upload being worked on; an entry lives while someone holds or waits for it.
#[derive(Debug, Clone, Default)]
struct Locks(Arc<parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>);

impl Locks {
    fn entry(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.0.lock().entry(id.to_owned()).or_default().clone()
    }

    /// Drops `id`'s entry when nobody holds or waits for it any more (only the map's handle
    /// is left; handles are only taken under the map's lock, so none can appear meanwhile).
    fn release(&self, id: &str) {
        let mut map = self.0.lock();
        if map.get(id).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(id);
        }
    }
}

/// The right to write one upload, held until dropped.
#[derive(Debug)]
pub struct UploadLock {
    id: String,
    locks: Locks,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for UploadLock {
    fn drop(&mut self) {
        self.guard.take();
        self.locks.release(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_writer_per_upload_and_no_entry_left_behind() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let uploads = Resumable::new(PartFiles::open(dir.path())?, Duration::from_secs(60));
        let first = uploads.try_lock("a");
        assert!(first.is_some());
        assert!(uploads.try_lock("a").is_none());
        assert!(uploads.lock("a", Duration::from_millis(20)).await.is_none());
        assert!(uploads.try_lock("b").is_some(), "another upload is free");
        drop(first);
        assert!(uploads.lock("a", Duration::from_millis(20)).await.is_some());
        assert!(uploads.locks.0.lock().is_empty());
        Ok(())
    }
}
