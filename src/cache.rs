//! What the download path keeps in memory, so that a hot signed URL needs neither the database
//! nor the disk: object rows, and the bytes of small objects. Objects never change once stored
//! (a key is never reused), so the only thing that can make an entry wrong is a delete, and a
//! delete forgets its keys before it answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;

use crate::db::FileRow;

/// Rows kept before the map starts over.
const MAX_ROWS: usize = 100_000;
/// Objects up to this size are kept whole in memory once downloaded.
pub const MAX_CACHED_OBJECT: u64 = 64 * 1024;
/// Bytes of small objects kept before that map starts over.
const BODY_BUDGET: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct Bodies {
    map: HashMap<String, Bytes>,
    bytes: usize,
}

/// Object rows and small objects' bytes, by object key.
#[derive(Default)]
pub struct ObjectCache {
    rows: RwLock<HashMap<String, Arc<FileRow>>>,
    bodies: RwLock<Bodies>,
    /// Counts deletes. A lookup notes it before reading the database or the disk and stores
    /// what it read only if no delete happened meanwhile: otherwise it could put back an entry
    /// that a delete had just forgotten.
    deletes: AtomicU64,
}

impl ObjectCache {
    /// The mark to pass to the `insert_*` calls of a lookup that starts now.
    pub fn mark(&self) -> u64 {
        self.deletes.load(Ordering::SeqCst)
    }

    pub fn row(&self, key: &str) -> Option<Arc<FileRow>> {
        self.rows.read().get(key).cloned()
    }

    /// Keeps `row`, unless a delete happened since `mark`.
    pub fn insert_row(&self, row: FileRow, mark: u64) -> Arc<FileRow> {
        let row = Arc::new(row);
        let mut rows = self.rows.write();
        if self.deletes.load(Ordering::SeqCst) == mark {
            if rows.len() >= MAX_ROWS {
                rows.clear();
            }
            rows.insert(row.object_key.clone(), row.clone());
        }
        row
    }

    pub fn body(&self, key: &str) -> Option<Bytes> {
        self.bodies.read().map.get(key).cloned()
    }

    /// Keeps a small object's bytes, unless a delete happened since `mark`.
    pub fn insert_body(&self, key: &str, bytes: Bytes, mark: u64) {
        if bytes.len() as u64 > MAX_CACHED_OBJECT {
            return;
        }
        let mut bodies = self.bodies.write();
        if self.deletes.load(Ordering::SeqCst) != mark {
            return;
        }
        if bodies.bytes + bytes.len() > BODY_BUDGET {
            bodies.map.clear();
            bodies.bytes = 0;
        }
        bodies.bytes += bytes.len();
        if let Some(old) = bodies.map.insert(key.to_owned(), bytes) {
            bodies.bytes -= old.len();
        }
    }

    /// Forgets deleted objects. Called once their rows are gone, before the delete answers.
    pub fn forget(&self, keys: &[String]) {
        self.deletes.fetch_add(1, Ordering::SeqCst);
        let mut rows = self.rows.write();
        for key in keys {
            rows.remove(key);
        }
        drop(rows);
        let mut bodies = self.bodies.write();
        for key in keys {
            if let Some(old) = bodies.map.remove(key) {
                bodies.bytes -= old.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str) -> FileRow {
        FileRow {
            id: 1,
            chat_id: 1,
            object_key: key.to_owned(),
            name: "a.txt".into(),
            size: 3,
            mime: "text/plain".into(),
            sha256: String::new(),
            created_at: 0,
        }
    }

    #[test]
    fn a_delete_forgets_and_a_lookup_that_raced_it_stores_nothing() {
        let cache = ObjectCache::default();
        let mark = cache.mark();
        cache.insert_row(row("k1"), mark);
        cache.insert_body("k1", Bytes::from_static(b"abc"), mark);
        assert!(cache.row("k1").is_some() && cache.body("k1").is_some());

        // A lookup starts, reads the row, and a delete commits before it stores it.
        let racing = cache.mark();
        cache.forget(&["k1".to_owned()]);
        assert!(cache.row("k1").is_none() && cache.body("k1").is_none());
        cache.insert_row(row("k1"), racing);
        cache.insert_body("k1", Bytes::from_static(b"abc"), racing);
        assert!(cache.row("k1").is_none() && cache.body("k1").is_none());

        // Lookups that start after it store again.
        let later = cache.mark();
        cache.insert_row(row("k2"), later);
        assert!(cache.row("k2").is_some());
    }

    #[test]
    fn only_small_bodies_are_kept_within_the_budget() {
        let cache = ObjectCache::default();
        let big = Bytes::from(vec![0u8; MAX_CACHED_OBJECT as usize + 1]);
        cache.insert_body("big", big, cache.mark());
        assert!(cache.body("big").is_none());
        let chunk = Bytes::from(vec![0u8; MAX_CACHED_OBJECT as usize]);
        for i in 0..(BODY_BUDGET / chunk.len() + 5) {
            cache.insert_body(&format!("k{i}"), chunk.clone(), cache.mark());
        }
        assert!(cache.bodies.read().bytes <= BODY_BUDGET);
    }
}
