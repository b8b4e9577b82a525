//! Building the application: storage, secrets, database, sweep, and the HTTP server on its
//! listener; `run_until_stopped` serves until SIGINT/SIGTERM or a stop through the handle.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_session::SessionMiddleware;
use actix_session::config::{CookieContentSecurity, PersistentSession, TtlExtensionPolicy};
use actix_web::cookie::SameSite;
use actix_web::dev::{Server, ServerHandle};
use actix_web::http::header;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;

use ipnet::IpNet;
use tokio::sync::Semaphore;

use crate::cache::{CacheBudget, ListingCache, ObjectCache};
use crate::clock::Clock;
use crate::config::{Config, Signup, public_base};
use crate::db::{self, Db};
use crate::error::AppError;
use crate::metrics::{self, Metrics};
use crate::middleware::{
    REQUEST_ID, envelope, json_error, not_found, only_matched_cors, query_error, refuse_cross_site,
};
use crate::revocations::{self, Revocations};
use crate::routes;
use crate::routes::upload::InFlight;
use crate::secrets::{KeyRing, load_key_ring};
use crate::session::{CookieKeys, SessionCache, SqliteSessionStore, adopt_previous_cookies};
use crate::signing::UrlSigner;
use crate::storage::{Storage, StorageLock};
use crate::throttle::LoginThrottle;

/// The cookie Neptun's clients send.
pub const SESSION_COOKIE: &str = "neptun-session";
/// Largest JSON body accepted (sign-up, login, chats).
const JSON_LIMIT: usize = 16 * 1024;
/// How often expired sessions are purged.
const SESSION_PURGE_EVERY: Duration = Duration::from_secs(600);

/// How long a password check may wait for a free hasher before the request is shed with 503.
const HASH_WAIT: Duration = Duration::from_secs(5);

/// What every handler shares.
pub struct AppState {
    pub db: Db,
    pub storage: Storage,
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
    /// Upload bytes per user not yet stored, counted against the quota.
    pub uploads_in_flight: Arc<InFlight>,
    /// Argon2 takes ~19 MiB and tens of milliseconds of a core per hash: a flood of logins must
    /// queue, not exhaust memory or starve everything else.
    hashers: Arc<Semaphore>,
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

    /// Removes objects whose rows are gone. A failure only leaves an orphan for the next
    /// start's sweep, so it is logged, not returned.
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
        let storage = self.storage.clone();
        let result = web::block(move || {
            for key in &keys {
                if let Err(err) = storage.remove(key) {
                    tracing::warn!(object = %key, error = %err, "could not remove an object; the next start sweeps it");
                }
            }
        })
        .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, "object removal did not run");
        }
    }
}

/// CORS for the configured origins only: credentials allowed, preflights answered (and cached
/// for 10 minutes); any other origin gets no CORS headers, and its preflights a 400.
fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "HEAD", "POST", "DELETE"])
        .allowed_headers([header::CONTENT_TYPE, header::ACCEPT, REQUEST_ID])
        .expose_headers([
            REQUEST_ID,
            header::RETRY_AFTER,
            header::CONTENT_DISPOSITION,
            header::CONTENT_RANGE,
            header::ETAG,
        ])
        .supports_credentials()
        .max_age(600);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    cors
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

/// A built, bound, not yet running service.
pub struct Application {
    server: Server,
    /// `/metrics` on `--metrics-bind`, when it has its own address.
    metrics_server: Option<(Server, SocketAddr)>,
    addr: SocketAddr,
    db: Db,
    clock: Arc<dyn Clock>,
    /// Held while the service runs: no second service, and no `check --repair`, on the same
    /// storage directory.
    lock: StorageLock,
    /// SIGINT and SIGTERM, listened for from the build on: a signal that arrives once the
    /// service has said it listens stops it gracefully, never kills it outright.
    signals: Option<ShutdownSignals>,
}

impl Application {
    /// Prepares everything and binds the listener; requests are accepted once it runs.
    pub fn build(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        // A moment's grace for a previous instance that is still letting go.
        let lock = StorageLock::acquire(&config.storage_dir, Duration::from_secs(2))
            .with_context(|| {
                format!(
                    "cannot lock storage directory {}",
                    config.storage_dir.display()
                )
            })?
            .with_context(|| {
                format!(
                    "another chatfiles process is using storage directory {}",
                    config.storage_dir.display()
                )
            })?;
        let storage = Storage::open(&config.storage_dir).with_context(|| {
            format!(
                "cannot prepare storage directory {}",
                config.storage_dir.display()
            )
        })?;
        let KeyRing {
            current: keys,
            previous_sessions,
        } = load_key_ring(
            &config.storage_dir,
            config.secret.as_ref(),
            &config.previous_secrets,
        )?;

        let workers = config.worker_count();
        let pool_size = u32::try_from(workers * 2 + 2).unwrap_or(32).clamp(4, 32);
        let db = Db::open(&config.database_path(), pool_size)?;
        let revocations = Revocations::open(&config.database_path(), true)
            .inspect_err(|err| {
                tracing::warn!(
                    file = %revocations::path_for(&config.database_path()).display(),
                    error = %err,
                    "cannot map the session revocation counter; sessions are read from the \
                     database on every request"
                );
            })
            .ok();
        let sessions = Arc::new(SessionCache::new(revocations));
        {
            let conn = db.get().map_err(|e| anyhow::anyhow!("{e}"))?;
            let referenced = db::all_object_keys(&conn).map_err(|e| anyhow::anyhow!("{e}"))?;
            let report = storage
                .sweep(&referenced)
                .context("start-up sweep failed")?;
            if report.temp_files + report.orphans > 0 {
                tracing::info!(
                    temp_files = report.temp_files,
                    orphans = report.orphans,
                    "swept leftovers of an interrupted run"
                );
            }
            let purged = db::purge_expired_sessions(&conn, clock.unix())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            tracing::debug!(purged, "purged expired sessions");
        }
        routes::auth::warm_up();

        let listener = TcpListener::bind(config.bind)
            .with_context(|| format!("--bind: cannot listen on {}", config.bind))?;
        let addr = listener.local_addr()?;
        let public_base = public_base(config.public_url.as_ref(), addr);
        let secure_cookies = public_base.starts_with("https://");

        let cache_budget = CacheBudget::split(config.memory_cache);
        let state = web::Data::new(AppState {
            db: db.clone(),
            storage,
            signer: keys.urls,
            clock: clock.clone(),
            public_base,
            public_origin: config
                .public_url
                .as_ref()
                .map(|url| url.origin().ascii_serialization()),
            cors_origins: config.cors_origins.clone(),
            url_ttl_secs: config.url_ttl.as_secs(),
            max_file_size: config.max_file_size,
            user_quota: (config.user_quota > 0).then_some(config.user_quota),
            body_timeout: config.body_timeout,
            signup_open: config.signup == Signup::Open,
            metrics: Arc::new(Metrics::new().context("cannot set up metrics")?),
            objects: ObjectCache::new(cache_budget),
            listings: ListingCache::new(cache_budget),
            sessions: sessions.clone(),
            login_throttle: LoginThrottle::default(),
            trusted_proxies: config.trusted_proxies.clone(),
            uploads_in_flight: Arc::default(),
            hashers: Arc::new(Semaphore::new(workers.max(2))),
        });
        let store = SqliteSessionStore::new(db.clone(), clock.clone(), sessions);
        let session_key = keys.session;
        let cookie_keys = web::Data::new(CookieKeys {
            current: session_key.clone(),
            previous: previous_sessions,
        });
        let session_ttl = actix_web::cookie::time::Duration::seconds(
            i64::try_from(config.session_ttl.as_secs()).unwrap_or(i64::MAX),
        );

        let cors_origins = config.cors_origins.clone();
        let serve_metrics_here = config.metrics_bind.is_none();
        let metrics_server = match config.metrics_bind {
            Some(bind) => Some(metrics_server(bind, state.clone())?),
            None => None,
        };

        let server = HttpServer::new(move || {
            let sessions = SessionMiddleware::builder(store.clone(), session_key.clone())
                .cookie_name(SESSION_COOKIE.to_owned())
                .cookie_secure(secure_cookies)
                .cookie_http_only(true)
                .cookie_same_site(SameSite::Lax)
                .cookie_path("/".to_owned())
                .cookie_content_security(CookieContentSecurity::Signed)
                .session_lifecycle(
                    PersistentSession::default()
                        .session_ttl(session_ttl)
                        .session_ttl_extension_policy(TtlExtensionPolicy::OnEveryRequest),
                )
                .build();
            App::new()
                .app_data(state.clone())
                .app_data(cookie_keys.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(JSON_LIMIT)
                        .error_handler(json_error),
                )
                .app_data(web::QueryConfig::default().error_handler(query_error))
                .service(
                    web::scope("/api")
                        .wrap(sessions)
                        .wrap(from_fn(adopt_previous_cookies))
                        .wrap(from_fn(refuse_cross_site))
                        .configure(routes::auth::configure)
                        .configure(routes::chats::configure)
                        .configure(routes::files::configure)
                        .configure(routes::openapi::configure),
                )
                .configure(routes::downloads::configure)
                .configure(routes::health::configure)
                .configure(|cfg| {
                    if serve_metrics_here {
                        metrics::configure(cfg);
                    }
                })
                .default_service(web::to(not_found))
                .wrap(cors(&cors_origins))
                .wrap(from_fn(only_matched_cors))
                .wrap(from_fn(envelope))
        })
        .workers(workers)
        .client_request_timeout(config.request_timeout)
        .client_disconnect_timeout(Duration::from_secs(1))
        .keep_alive(config.keep_alive)
        .disable_signals()
        .shutdown_timeout(10)
        .listen(listener)?
        .run();

        Ok(Self {
            server,
            metrics_server,
            addr,
            db,
            clock,
            lock,
            signals: ShutdownSignals::listen(),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address `/metrics` is served on when `--metrics-bind` gives it its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(|(_, addr)| *addr)
    }

    /// A handle to stop the server gracefully.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped through the handle or by SIGINT/SIGTERM (in-flight requests get
    /// up to 10 s to finish), purging expired sessions along the way.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let purger = tokio::spawn(purge_sessions(self.db, self.clock));
        let handle = self.server.handle();
        let signals = self.signals.map(|signals| {
            tokio::spawn(async move {
                let signal = signals.recv().await;
                tracing::info!(signal, "stopping gracefully");
                handle.stop(true).await;
            })
        });
        let metrics = self.metrics_server.map(|(server, _)| {
            let handle = server.handle();
            (tokio::spawn(server), handle)
        });
        let result = self.server.await;
        if let Some((task, handle)) = metrics {
            handle.stop(true).await;
            let _ = task.await;
        }
        purger.abort();
        if let Some(signals) = signals {
            signals.abort();
        }
        drop(self.lock);
        result
    }
}

/// A one-worker server for `/metrics` alone, on its own (usually internal) address.
fn metrics_server(
    bind: SocketAddr,
    state: web::Data<AppState>,
) -> anyhow::Result<(Server, SocketAddr)> {
    let listener = TcpListener::bind(bind)
        .with_context(|| format!("--metrics-bind: cannot listen on {bind}"))?;
    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(metrics::configure)
            .default_service(web::to(not_found))
            .wrap(from_fn(envelope))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    Ok((server, addr))
}

async fn purge_sessions(db: Db, clock: Arc<dyn Clock>) {
    let mut every = tokio::time::interval(SESSION_PURGE_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        let now = clock.unix();
        match db
            .write(move |conn| db::purge_expired_sessions(conn, now))
            .await
        {
            Ok(purged) if purged > 0 => tracing::debug!(purged, "purged expired sessions"),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "could not purge expired sessions"),
        }
    }
}

/// SIGINT and SIGTERM, as streams: once these exist, the signals no longer end the process.
struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Starts listening; `None` (with a warning) if the signals cannot be listened for.
    fn listen() -> Option<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(interrupt), Ok(terminate)) => Some(Self {
                interrupt,
                terminate,
            }),
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!(error = %err, "cannot listen for SIGINT/SIGTERM; they will end the service at once");
                None
            }
        }
    }

    /// The first of the two to arrive.
    async fn recv(mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
