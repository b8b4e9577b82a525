//! What the hot paths keep in memory.
//!
//! - The download path: object rows and the bytes of small objects, so that a hot signed URL
//!   needs neither the database nor the disk. Objects never change once stored (a key is never
//!   reused), so the only thing that can make an entry wrong is a delete, and a delete forgets
//!   its keys before it answers.
//! - The listing: a chat's JSON answer, while its URLs' expiry (a whole minute) is the one a
//!   fresh answer would carry. Uploads and deletes forget the chat before they answer.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;

use crate::db::FileRow;

/// Objects up to this size are read whole on their first download (even for a `Range` inside
/// them) and kept in memory, so that the next download of the same object needs neither a
/// blocking-pool trip nor a copy from the page cache.
pub const MAX_CACHED_OBJECT: u64 = 1024 * 1024;

/// How `--memory-cache` is shared out: an eighth for object rows, five eighths for objects'
/// bytes, a quarter for chat listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheBudget {
    pub rows: usize,
    pub bodies: usize,
    pub listings: usize,
}

impl CacheBudget {
    pub fn split(total: u64) -> Self {
        let total = usize::try_from(total).unwrap_or(usize::MAX);
        Self {
            rows: total / 8,
            bodies: total / 8 * 5,
            listings: total / 4,
        }
    }
}

/// Roughly what a kept row costs: its strings (the key twice, as the map's key too) and the
/// fixed parts.
fn row_weight(row: &Arc<FileRow>) -> usize {
    2 * row.object_key.len() + row.name.len() + row.mime.len() + row.sha256.len() + 160
}

/// A bounded map filled by lookups that may race the changes that empty it.
///
/// Each forget bumps a counter. A lookup notes it ([`Memo::mark`]) before it reads the
/// database or the disk, and [`Memo::insert`] keeps what it read only if nothing was forgotten
/// meanwhile: otherwise it could put back an entry that a change had just forgotten. Entries
/// are weighed; when the budget would overflow, the map starts over.
pub struct Memo<K, V> {
    inner: RwLock<Weighed<K, V>>,
    forgets: AtomicU64,
    budget: usize,
    weigh: fn(&V) -> usize,
}

struct Weighed<K, V> {
    map: HashMap<K, V>,
    weight: usize,
}

impl<K: Eq + Hash, V: Clone> Memo<K, V> {
    /// A memo holding at most `budget` in weight; an entry heavier than that is never kept.
    pub fn new(budget: usize, weigh: fn(&V) -> usize) -> Self {
        Self {
            inner: RwLock::new(Weighed {
                map: HashMap::new(),
                weight: 0,
            }),
            forgets: AtomicU64::new(0),
            budget,
            weigh,
        }
    }

    /// A memo of at most `entries` entries.
    pub fn counted(entries: usize) -> Self {
        Self::new(entries, |_| 1)
    }

    /// The mark to pass to [`Memo::insert`] for a lookup that starts now.
    pub fn mark(&self) -> u64 {
        self.forgets.load(Ordering::SeqCst)
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.read().map.get(key).cloned()
    }

    /// Keeps `value`, unless something was forgotten since `mark`. True when kept.
    pub fn insert(&self, key: K, value: V, mark: u64) -> bool {
        let weight = (self.weigh)(&value);
        if weight > self.budget {
            return false;
        }
        let mut inner = self.inner.write();
        if self.forgets.load(Ordering::SeqCst) != mark {
            return false;
        }
        if inner.weight + weight > self.budget {
            inner.map.clear();
            inner.weight = 0;
        }
        inner.weight += weight;
        if let Some(old) = inner.map.insert(key, value) {
            inner.weight -= (self.weigh)(&old);
        }
        true
    }

    /// Changes an entry in place, if there is one; its weight must not change.
    pub fn update<Q>(&self, key: &Q, f: impl FnOnce(&mut V))
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(value) = self.inner.write().map.get_mut(key) {
            f(value);
        }
    }

    /// Forgets `keys`, and makes every lookup under way keep nothing.
    pub fn forget<'k, Q>(&self, keys: impl IntoIterator<Item = &'k Q>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + 'k,
    {
        self.forgets.fetch_add(1, Ordering::SeqCst);
        let mut inner = self.inner.write();
        for key in keys {
            if let Some(old) = inner.map.remove(key) {
                inner.weight -= (self.weigh)(&old);
            }
        }
    }

    /// Forgets everything, lookups under way included.
    pub fn clear(&self) {
        self.forgets.fetch_add(1, Ordering::SeqCst);
        let mut inner = self.inner.write();
        inner.map.clear();
        inner.weight = 0;
    }

    #[cfg(test)]
    fn weight(&self) -> usize {
        self.inner.read().weight
    }
}

/// Where a download lookup started, for [`ObjectCache::insert_row`] and
/// [`ObjectCache::insert_body`].
#[derive(Debug, Clone, Copy)]
pub struct ObjectMark {
    rows: u64,
    bodies: u64,
}

/// Object rows and small objects' bytes, by object key.
pub struct ObjectCache {
    rows: Memo<String, Arc<FileRow>>,
    bodies: Memo<String, Bytes>,
}

impl ObjectCache {
    pub fn new(budget: CacheBudget) -> Self {
        Self {
            rows: Memo::new(budget.rows, row_weight),
            bodies: Memo::new(budget.bodies, Bytes::len),
        }
    }

    /// The mark to pass to the `insert_*` calls of a lookup that starts now.
    pub fn mark(&self) -> ObjectMark {
        ObjectMark {
            rows: self.rows.mark(),
            bodies: self.bodies.mark(),
        }
    }

    pub fn row(&self, key: &str) -> Option<Arc<FileRow>> {
        self.rows.get(key)
    }

    /// Keeps `row`, unless a delete happened since `mark`.
    pub fn insert_row(&self, row: FileRow, mark: ObjectMark) -> Arc<FileRow> {
        let row = Arc::new(row);
        self.rows
            .insert(row.object_key.clone(), row.clone(), mark.rows);
        row
    }

    pub fn body(&self, key: &str) -> Option<Bytes> {
        self.bodies.get(key)
    }

    /// Keeps a small object's bytes, unless a delete happened since `mark`.
    pub fn insert_body(&self, key: &str, bytes: Bytes, mark: ObjectMark) {
        if bytes.len() as u64 <= MAX_CACHED_OBJECT {
            self.bodies.insert(key.to_owned(), bytes, mark.bodies);
        }
    }

    /// Forgets deleted objects. Called once their rows are gone, before the delete answers.
    pub fn forget(&self, keys: &[String]) {
        self.rows.forget(keys.iter().map(String::as_str));
        self.bodies.forget(keys.iter().map(String::as_str));
    }
}

/// A chat's listing as last answered: the JSON bytes, good while URLs made now carry the same
/// expiry (they change each minute) and nothing in the chat changed.
#[derive(Debug)]
pub struct Listing {
    /// Whose chat it is: a request for another user's path must not be answered from here.
    pub user_id: i64,
    /// The expiry of every URL in it.
    pub expires: i64,
    pub body: Bytes,
}

/// Recent chat listings, by chat id. Uploads and deletes forget their chat before they answer.
/// A listing over an eighth of the budget is never kept, so that one huge chat cannot keep
/// starting the map over.
pub struct ListingCache(Memo<i64, Arc<Listing>>);

impl ListingCache {
    pub fn new(budget: CacheBudget) -> Self {
        Self(Memo::new(budget.listings, |listing| listing.body.len()))
    }

    pub fn mark(&self) -> u64 {
        self.0.mark()
    }

    /// The chat's listing for `user_id` with URLs expiring at `expires`, if it is at hand.
    pub fn get(&self, chat_id: i64, user_id: i64, expires: i64) -> Option<Bytes> {
        self.0
            .get(&chat_id)
            .filter(|l| l.user_id == user_id && l.expires == expires)
            .map(|l| l.body.clone())
    }

    /// Keeps a listing, unless its chat changed since `mark`.
    pub fn insert(&self, chat_id: i64, listing: Listing, mark: u64) {
        if listing.body.len() <= self.0.budget / 8 {
            self.0.insert(chat_id, Arc::new(listing), mark);
        }
    }

    /// Forgets a chat whose files changed. Called after the change commits, before it answers.
    pub fn forget(&self, chat_id: i64) {
        self.0.forget([&chat_id]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: CacheBudget = CacheBudget {
        rows: 1 << 20,
        bodies: 8 << 20,
        listings: 1 << 20,
    };

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
        let cache = ObjectCache::new(BUDGET);
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
        let cache = ObjectCache::new(BUDGET);
        let big = Bytes::from(vec![0u8; MAX_CACHED_OBJECT as usize + 1]);
        cache.insert_body("big", big, cache.mark());
        assert!(cache.body("big").is_none());
        let chunk = Bytes::from(vec![0u8; MAX_CACHED_OBJECT as usize]);
        for i in 0..(BUDGET.bodies / chunk.len() + 5) {
            cache.insert_body(&format!("k{i}"), chunk.clone(), cache.mark());
        }
        assert!(cache.bodies.weight() <= BUDGET.bodies);
    }

    #[test]
    fn a_zero_budget_keeps_nothing() {
        let budget = CacheBudget::split(0);
        let objects = ObjectCache::new(budget);
        objects.insert_row(row("k"), objects.mark());
        objects.insert_body("k", Bytes::from_static(b"abc"), objects.mark());
        assert!(objects.row("k").is_none() && objects.body("k").is_none());
        let listings = ListingCache::new(budget);
        listings.insert(1, listing(1, 60, b"{}"), listings.mark());
        assert!(listings.get(1, 1, 60).is_none());
        assert_eq!(
            CacheBudget::split(32 << 20),
            CacheBudget {
                rows: 4 << 20,
                bodies: 20 << 20,
                listings: 8 << 20
            }
        );
    }

    fn listing(user_id: i64, expires: i64, body: &'static [u8]) -> Listing {
        Listing {
            user_id,
            expires,
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn a_listing_is_given_only_to_its_owner_for_its_minute_and_until_its_chat_changes() {
        let cache = ListingCache::new(BUDGET);
        cache.insert(7, listing(1, 600, b"[a]"), cache.mark());
        assert_eq!(cache.get(7, 1, 600).as_deref(), Some(&b"[a]"[..]));
        assert!(cache.get(7, 2, 600).is_none(), "another user");
        assert!(cache.get(7, 1, 660).is_none(), "the next minute's URLs");
        assert!(cache.get(8, 1, 600).is_none(), "another chat");

        // A listing read before an upload committed is not kept once the upload forgot it.
        let racing = cache.mark();
        cache.forget(7);
        assert!(cache.get(7, 1, 600).is_none());
        cache.insert(7, listing(1, 600, b"[a]"), racing);
        assert!(cache.get(7, 1, 600).is_none());
        cache.insert(7, listing(1, 600, b"[a,b]"), cache.mark());
        assert_eq!(cache.get(7, 1, 600).as_deref(), Some(&b"[a,b]"[..]));
    }

    #[test]
    fn a_memo_keeps_to_its_budget_and_updates_in_place() {
        let memo: Memo<u32, u32> = Memo::counted(3);
        for key in 0..3 {
            assert!(memo.insert(key, key, memo.mark()));
        }
        memo.update(&1, |v| *v = 10);
        assert_eq!(memo.get(&1), Some(10));
        // The fourth entry starts the map over.
        assert!(memo.insert(3, 3, memo.mark()));
        assert_eq!(memo.weight(), 1);
        assert_eq!((memo.get(&0), memo.get(&3)), (None, Some(3)));
        memo.clear();
        assert!(memo.get(&3).is_none());
        let heavy: Memo<u32, Vec<u8>> = Memo::new(4, Vec::len);
        assert!(
            !heavy.insert(1, vec![0; 5], heavy.mark()),
            "heavier than the budget"
        );
    }
}
