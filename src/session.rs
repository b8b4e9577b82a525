//! Login sessions: an actix-session store backed by SQLite, and the typed extractors handlers use.
//!
//! The cookie carries only an opaque random id (256 bits, signed with the session key); the
//! state lives in the `session` table under the id's SHA-256. Sessions read lately are
//! remembered ([`SessionCache`]), so that most requests do not need the database to know who
//! sent them.

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::sync::Arc;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_session::{Session, SessionExt};
use actix_web::body::MessageBody;
use actix_web::cookie::time::Duration;
use actix_web::cookie::{Cookie, CookieJar, Key};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::cache::Memo;
use crate::clock::Clock;
use crate::db::{self, Db, SessionOwner};
use crate::error::AppError;
use crate::middleware::{Shed, note_shed};
use crate::revocations::Revocations;
use crate::state::to_completion;

const USER_ID: &str = "user_id";
const EPOCH: &str = "epoch";

/// The cookie Neptun's clients send.
pub const SESSION_COOKIE: &str = "neptun-session";

/// A session as last read from the database.
#[derive(Clone)]
struct Remembered {
    state: Arc<HashMap<String, String>>,
    expires_at: i64,
    /// When it was read (clock seconds).
    read_at: i64,
    /// The revocation count before it was read.
    revocations: u64,
}

/// Sessions remembered at once; beyond that the memory starts over.
const REMEMBERED: usize = 10_000;

/// A remembered session is read again after this many seconds, so that even a change made to
/// the database by hand (not through `chatfiles`) takes effect within that time.
pub const REVALIDATE_AFTER: i64 = 30;

/// The sessions the service has read lately, so that most requests need no database read to
/// know who sent them.
///
/// A remembered session is used only while it has not expired, was read less than
/// [`REVALIDATE_AFTER`] ago, and nothing has ended sessions since (the shared [`Revocations`]
/// count is unchanged). The service's own updates and deletes forget it before they answer.
/// Without the shared count (its file could not be mapped) nothing is remembered.
pub struct SessionCache {
    memo: Memo<String, Remembered>,
    revocations: Option<Revocations>,
}

impl SessionCache {
    pub fn new(revocations: Option<Revocations>) -> Self {
        Self {
            memo: Memo::counted(REMEMBERED),
            revocations,
        }
    }

    /// The revocation count, when sessions may be remembered at all.
    fn revocations(&self) -> Option<u64> {
        self.revocations.as_ref().map(Revocations::count)
    }

    /// The remembered session, if it may still be used at `now`.
    fn fresh(&self, hash: &str, now: i64) -> Option<Remembered> {
        let revocations = self.revocations()?;
        self.memo.get(hash).filter(|r| {
            r.revocations == revocations
                && r.expires_at > now
                // A clock stepped back re-reads too.
                && (0..REVALIDATE_AFTER).contains(&now.saturating_sub(r.read_at))
        })
    }

    /// Call after sessions were ended in the database other than through the store (a
    /// password change ends a user's other sessions): none remembered is used again.
    pub fn revoked(&self) {
        if let Some(revocations) = &self.revocations {
            revocations.bump();
        }
    }
}

/// Keeps actix-session's state in the `session` table.
#[derive(Clone)]
pub struct SqliteSessionStore {
    db: Db,
    clock: Arc<dyn Clock>,
    sessions: Arc<SessionCache>,
}

impl SqliteSessionStore {
    pub fn new(db: Db, clock: Arc<dyn Clock>, sessions: Arc<SessionCache>) -> Self {
        Self {
            db,
            clock,
            sessions,
        }
    }

    fn expiry(&self, ttl: &Duration) -> (i64, i64) {
        let now = self.clock.unix();
        (now, now.saturating_add(ttl.whole_seconds()))
    }

    /// Changes or deletes a session's row with `f`, then forgets what is remembered of it. Runs
    /// to the end even if the request is dropped meanwhile: a row deleted (a logout) with its
    /// memory kept would leave the session usable until it is read again.
    async fn write_and_forget<T, F>(&self, hash: String, f: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection, &str) -> Result<T, AppError> + Send + 'static,
    {
        let db = self.db.clone();
        let sessions = self.sessions.clone();
        to_completion(async move {
            let lookup = hash.clone();
            let written = db.write(move |conn| f(conn, &lookup)).await;
            sessions.memo.forget([hash.as_str()]);
            written
        })
        .await
    }
}

fn id_hash(key: &SessionKey) -> String {
    hex::encode(Sha256::digest(key.as_ref().as_bytes()))
}

fn new_session_key() -> Result<SessionKey, anyhow::Error> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    SessionKey::try_from(URL_SAFE_NO_PAD.encode(bytes)).map_err(anyhow::Error::from)
}

/// Whom a session's state says it belongs to, for the columns stored beside it.
fn owner_of(state: &HashMap<String, String>) -> SessionOwner {
    let field = |name: &str| state.get(name).and_then(|v| serde_json::from_str(v).ok());
    SessionOwner {
        user_id: field(USER_ID),
        epoch: field(EPOCH).unwrap_or_default(),
    }
}

fn to_anyhow(err: AppError) -> anyhow::Error {
    match err {
        AppError::Internal(err) => err,
        AppError::Unavailable => {
            note_shed(Shed::Busy);
            anyhow::anyhow!("database unavailable")
        }
        AppError::InsufficientStorage => {
            note_shed(Shed::DiskFull);
            anyhow::anyhow!("disk full")
        }
        other => anyhow::anyhow!("{other}"),
    }
}

impl SessionStore for SqliteSessionStore {
    async fn load(
        &self,
        session_key: &SessionKey,
    ) -> Result<Option<HashMap<String, String>>, LoadError> {
        let hash = id_hash(session_key);
        let now = self.clock.unix();
        if let Some(remembered) = self.sessions.fresh(&hash, now) {
            return Ok(Some(remembered.state.as_ref().clone()));
        }
        // Noted before the read: a session read from before an update, a delete or a
        // revocation is not remembered.
        let mark = self.sessions.memo.mark();
        let revocations = self.sessions.revocations();
        let lookup = hash.clone();
        let found = self
            .db
            .run(move |conn| db::load_session(conn, &lookup, now))
            .await
            .map_err(|e| LoadError::Other(to_anyhow(e)))?;
        let Some((state, expires_at)) = found else {
            return Ok(None);
        };
        let state: HashMap<String, String> =
            serde_json::from_str(&state).map_err(|e| LoadError::Deserialization(e.into()))?;
        if let Some(revocations) = revocations {
            let remembered = Remembered {
                state: Arc::new(state.clone()),
                expires_at,
                read_at: now,
                revocations,
            };
            self.sessions.memo.insert(hash, remembered, mark);
        }
        Ok(Some(state))
    }

    async fn save(
        &self,
        state: HashMap<String, String>,
        ttl: &Duration,
    ) -> Result<SessionKey, SaveError> {
        let body = serde_json::to_string(&state).map_err(|e| SaveError::Serialization(e.into()))?;
        let key = new_session_key().map_err(SaveError::Other)?;
        let hash = id_hash(&key);
        let owner = owner_of(&state);
        let (_, expires) = self.expiry(ttl);
        self.db
            .write(move |conn| db::insert_session(conn, &hash, owner, &body, expires))
            .await
            .map_err(|e| SaveError::Other(to_anyhow(e)))?;
        Ok(key)
    }

    async fn update(
        &self,
        session_key: SessionKey,
        state: HashMap<String, String>,
        ttl: &Duration,
    ) -> Result<SessionKey, UpdateError> {
        let body =
            serde_json::to_string(&state).map_err(|e| UpdateError::Serialization(e.into()))?;
        let hash = id_hash(&session_key);
        let owner = owner_of(&state);
        let (now, expires) = self.expiry(ttl);
        let updated = self
            .write_and_forget(hash, move |conn, hash| {
                db::update_session(conn, hash, owner, &body, expires, now)
            })
            .await
            .map_err(|e| UpdateError::Other(to_anyhow(e)))?;
        if !updated {
            // The session ended while the request ran (logout elsewhere, expiry). Writing the
            // state under a new id would log the user back in: leave it dead.
            tracing::debug!("session ended during the request; its changes are dropped");
        }
        Ok(session_key)
    }

    async fn update_ttl(
        &self,
        session_key: &SessionKey,
        ttl: &Duration,
    ) -> Result<(), anyhow::Error> {
        let hash = id_hash(session_key);
        let (now, expires) = self.expiry(ttl);
        // Rolling expiry to within a minute (or a tenth of a short TTL) is plenty, and spares
        // a database write on nearly every request.
        let slack = (ttl.whole_seconds() / 10).clamp(0, 60);
        // Decided on a read first: even an UPDATE that matches nothing takes SQLite's write
        // lock, and reads must not queue behind uploads for it.
        let remembered = self.sessions.fresh(&hash, now);
        let current = match remembered {
            Some(remembered) => Ok(Some(remembered.expires_at)),
            None => {
                let lookup = hash.clone();
                self.db
                    .run(move |conn| db::session_expiry(conn, &lookup, now))
                    .await
            }
        };
        let due = current.map(|current| current.is_some_and(|at| at < expires - slack));
        // Never queued behind uploads: when the database is busy, a later request extends it.
        let touched = match due {
            Ok(true) => {
                let lookup = hash.clone();
                let touched = self
                    .db
                    .try_write(move |conn| db::touch_session(conn, &lookup, expires, now, slack))
                    .await;
                // Only an expiry that really moved is remembered (not a write skipped while
                // the database was busy, nor one that matched no row).
                if let Ok(Some(true)) = touched {
                    self.sessions
                        .memo
                        .update(hash.as_str(), |r| r.expires_at = r.expires_at.max(expires));
                }
                touched.map(|_| ())
            }
            other => other.map(|_| ()),
        };
        // A missed extension only shortens the session a little; failing the request for it
        // (a 500 from the session middleware) would be worse.
        if let Err(err) = touched {
            tracing::warn!(error = %err, "could not extend a session");
        }
        Ok(())
    }

    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        self.write_and_forget(id_hash(session_key), |conn, hash| {
            db::delete_session(conn, hash)
        })
        .await
        .map_err(to_anyhow)
    }
}

/// The session cookie's signing keys: the current one, and those of previous secrets.
pub struct CookieKeys {
    pub current: Key,
    pub previous: Vec<Key>,
}

/// A `neptun-session` value signed under a previous secret, re-signed under the current one;
/// `None` when it is current already, or no key of ours signed it.
fn adopted(keys: &CookieKeys, name: &str, value: &str) -> Option<String> {
    let mut jar = CookieJar::new();
    jar.add_original(Cookie::new(name.to_owned(), value.to_owned()));
    if jar.signed(&keys.current).get(name).is_some() {
        return None;
    }
    let plain = keys
        .previous
        .iter()
        .find_map(|key| jar.signed(key).get(name))?;
    let mut fresh = CookieJar::new();
    fresh
        .signed_mut(&keys.current)
        .add(Cookie::new(name.to_owned(), plain.value().to_owned()));
    fresh.get(name).map(|c| c.value().to_owned())
}

/// Lets in a session cookie signed under a previous secret (`CHATFILES_PREVIOUS_SECRETS`) by
/// re-signing it, before the session middleware reads it, under the current key. The session
/// middleware then hands the client a cookie under the current key with its answer, so
/// clients move over as they come by.
pub async fn adopt_previous_cookies(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let keys = req.app_data::<web::Data<CookieKeys>>().cloned();
    if let Some(keys) = keys.filter(|k| !k.previous.is_empty()) {
        let header = req
            .headers()
            .get(header::COOKIE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Some(header) = header {
            let mut changed = false;
            let rewritten: Vec<String> = header
                .split(';')
                .map(|pair| {
                    let pair = pair.trim();
                    // Cookie values travel percent-encoded (the signature is base64).
                    let adopted = Cookie::parse_encoded(pair)
                        .ok()
                        .filter(|cookie| cookie.name() == SESSION_COOKIE)
                        .and_then(|cookie| adopted(&keys, cookie.name(), cookie.value()));
                    match adopted {
                        Some(value) => {
                            changed = true;
                            Cookie::new(SESSION_COOKIE, value).encoded().to_string()
                        }
                        None => pair.to_owned(),
                    }
                })
                .collect();
            if changed && let Ok(value) = HeaderValue::from_str(&rewritten.join("; ")) {
                req.headers_mut().insert(header::COOKIE, value);
            }
        }
    }
    next.call(req).await
}

/// Starts a fresh session for a user at their current session epoch (a new id, so that a
/// pre-login id cannot be fixed on a victim).
pub fn log_in(session: &Session, user_id: i64, epoch: i64) -> Result<(), AppError> {
    session.renew();
    set_epoch(session, epoch)?;
    session
        .insert(USER_ID, user_id)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("cannot store session state: {e}")))
}

/// Moves this session to a new epoch (after a password change ended all the others).
pub fn set_epoch(session: &Session, epoch: i64) -> Result<(), AppError> {
    session
        .insert(EPOCH, epoch)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("cannot store session state: {e}")))
}

/// The logged-in user's id, if any.
pub fn current_user(session: &Session) -> Option<i64> {
    session.get::<i64>(USER_ID).ok().flatten()
}

/// Ends the session: the row is deleted and the cookie removed. False when there was none.
pub fn log_out(session: &Session) -> bool {
    let had_user = current_user(session).is_some();
    session.purge();
    had_user
}

/// The user a request acted as, for its log line (never their cookie).
#[derive(Debug, Clone, Copy)]
pub struct LoggedUser(pub i64);

/// The logged-in user; extracting it answers 401 when there is no live session.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub id: i64,
}

impl FromRequest for AuthUser {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let user = current_user(&req.get_session());
        if let Some(id) = user {
            req.extensions_mut().insert(LoggedUser(id));
        }
        ready(
            user.map(|id| AuthUser { id })
                .ok_or(AppError::Unauthorized("Unauthorized")),
        )
    }
}
