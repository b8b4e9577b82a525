//! What every handler shares: the database, the object store, the signer, the caches and the
//! limits; and the sequences that must run to the end once begun.
//!
//! Routes, middleware and metrics import this module; only `startup` builds it.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use ipnet::IpNet;
use tokio::sync::Semaphore;

use crate::cache::{ListingCache, ObjectCache};
use crate::clock::Clock;
use crate::db::{self, Db};
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::resumable::Resumable;
use crate::routes::upload::InFlight;
use crate::session::SessionCache;
use crate::signing::UrlSigner;
use crate::storage::ObjectStore;
use crate::throttle::LoginThrottle;

/// How long a password check may wait for a free hasher before the request is shed with 503.
const HASH_WAIT: Duration = Duration::from_secs(5);

/// What every handler shares.
pub struct AppState {
    pub db: Db,
    /// Where the bytes live.
    pub store: ObjectStore,
    pub signer: UrlSigner,
    pub clock: Arc<dyn Clock>,
    /// Absolute base of download URLs, without a trailing slash.
    pub public_base: String,
    /// `scheme://host[:port]` of `--public-url`, when one is configured.
    pub public_origin: Option<String>,
    /// Origins allowed to call the API from their pages, with credentials (`--cors-origins`).
    pub cors_origins: Vec<String>,
    pub url_ttl_secs: u64,
    pub max_file_size: u64,
    /// Bytes each user may store; `None` for no limit.
    pub user_quota: Option<u64>,
    /// Longest a request body may stall.
    pub body_timeout: Duration,
    pub signup_open: bool,
    pub metrics: Arc<Metrics>,
    /// Rows and small objects the download path keeps in memory.
    pub objects: ObjectCache,
    /// Chats' recent listings.
    pub listings: ListingCache,
    /// Sessions read lately (shared with the session store).
    pub sessions: Arc<SessionCache>,
    pub login_throttle: LoginThrottle,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Resumable uploads' part files and locks.
    pub uploads: Resumable,
    /// Upload bytes per user not yet stored, counted against the quota.
    pub uploads_in_flight: Arc<InFlight>,
    /// Objects whose rows are gone but whose removal failed (the store was down): retried in
    /// the background, so that a deleted file's direct URL stops working soon after the store
    /// is back, not only after the next start.
    pub removals_to_retry: parking_lot::Mutex<std::collections::BTreeSet<String>>,
    /// Argon2 takes ~19 MiB and tens of milliseconds of a core per hash: a flood of logins must
    /// queue, not exhaust memory or starve everything else.
    pub(crate) hashers: Arc<Semaphore>,
}

impl AppState {
    /// Runs password hashing or checking on the blocking pool, a few at a time.
    pub async fn hashing<T, F>(&self, f: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = tokio::time::timeout(HASH_WAIT, self.hashers.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                tracing::warn!("password hashing is saturated; shedding a request");
                AppError::Unavailable
            })?;
        Ok(web::block(move || {
            let _permit = permit;
            f()
        })
        .await?)
    }

    /// Deletes rows with `f` (which returns the object keys they referenced, or `None` when
    /// there was nothing to delete), then removes those objects. Runs to the end even if the
    /// request is dropped halfway (a client reset), so that freed quota never leaves bytes
    /// behind.
    pub async fn delete_with_objects<F>(
        state: &web::Data<Self>,
        chat_id: i64,
        f: F,
    ) -> Result<Option<()>, AppError>
    where
        F: FnOnce(&mut rusqlite::Connection) -> Result<Option<Vec<String>>, AppError>
            + Send
            + 'static,
    {
        let state = state.clone();
        to_completion(async move {
            let deleted = state.db.write(f).await;
            // Before the answer: from now on, the chat's listing is read afresh, and the keys'
            // signed URLs find nothing.
            state.listings.forget(chat_id);
            let Some(keys) = deleted? else {
                return Ok(None);
            };
            state.objects.forget(&keys);
            state.remove_objects(keys).await;
            Ok(Some(()))
        })
        .await
    }

    /// Removes objects whose rows are gone (their keys pending in the journal), then forgets
    /// the keys. A failure leaves the key pending for the next start's sweep, so it is logged,
    /// not returned.
    pub async fn remove_objects(&self, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        // Crash tests stop here: rows deleted (durably), bytes still on disk.
        #[cfg(feature = "failpoints")]
        if web::block(|| fail::fail_point!("remove-objects"))
            .await
            .is_err()
        {
            return;
        }
        let mut removed = Vec::with_capacity(keys.len());
        for key in keys {
            match self.store.remove(&key).await {
                Ok(()) => removed.push(key),
                Err(err) => {
                    tracing::warn!(object = %key, error = %err, "could not remove an object; retrying in the background");
                    self.removals_to_retry.lock().insert(key);
                }
            }
        }
        if removed.is_empty() {
            return;
        }
        if let Err(err) = self
            .db
            .write(move |conn| db::clear_pending(conn, &removed))
            .await
        {
            tracing::warn!(error = %err, "could not clear removed objects from the journal; the next start does");
        }
    }
}

impl AppState {
    /// Tries again to remove the objects whose removal failed; those that fail again stay for
    /// the next try (and in the journal, for the next start).
    pub async fn retry_removals(&self) {
        let keys: Vec<String> = std::mem::take(&mut *self.removals_to_retry.lock())
            .into_iter()
            .collect();
        if !keys.is_empty() {
            tracing::debug!(objects = keys.len(), "retrying object removals");
            self.remove_objects(keys).await;
        }
    }
}

/// Runs `work` on its own task and waits for it. Dropping the waiting request (a client that
/// resets its connection) does not stop it: for sequences that must not end halfway.
pub async fn to_completion<T: 'static>(
    work: impl std::future::Future<Output = Result<T, AppError>> + 'static,
) -> Result<T, AppError> {
    actix_web::rt::spawn(work)
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("a background step failed: {e}")))?
}
