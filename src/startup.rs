//! Building the application: storage directory, secrets, database, object store, sweep, and the
//! HTTP server on its listener; `run_until_stopped` serves until SIGINT/SIGTERM or a stop
//! through the handle.

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
use tokio::sync::Semaphore;

use crate::cache::{CacheBudget, ListingCache, ObjectCache};
use crate::clock::Clock;
use crate::config::{Config, Signup, public_base};
use crate::db::{self, Db};
use crate::metrics::{self, Metrics};
use crate::middleware::{
    REQUEST_ID, envelope, json_error, not_found, only_matched_cors, query_error, refuse_cross_site,
};
use crate::resumable::{PartFiles, Resumable};
use crate::revocations::{self, Revocations};
use crate::routes;
use crate::secrets::{KeyRing, load_key_ring};
use crate::session::{
    CookieKeys, SESSION_COOKIE, SessionCache, SqliteSessionStore, adopt_previous_cookies,
};
use crate::state::AppState;
use crate::storage::{ObjectStore, StorageLock};
use crate::throttle::LoginThrottle;
/// Largest JSON body accepted (sign-up, login, chats).
const JSON_LIMIT: usize = 16 * 1024;
/// How often expired sessions are purged.
const SESSION_PURGE_EVERY: Duration = Duration::from_secs(600);
/// How often object removals that failed are tried again, and expired or complete resumable
/// uploads are seen to.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(5);

/// CORS for the configured origins only: credentials allowed, preflights answered (and cached
/// for 10 minutes); any other origin gets no CORS headers, and its preflights a 400.
/// The tus routes add their methods and headers (`routes::tus`).
fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"])
        .allowed_headers(
            [header::CONTENT_TYPE, header::ACCEPT, REQUEST_ID]
                .into_iter()
                .chain(routes::tus::REQUEST_HEADERS),
        )
        .expose_headers(
            [
                REQUEST_ID,
                header::RETRY_AFTER,
                header::CONTENT_DISPOSITION,
                header::CONTENT_RANGE,
                header::ETAG,
            ]
            .into_iter()
            .chain(routes::tus::RESPONSE_HEADERS),
        )
        .supports_credentials()
        .max_age(600);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

/// A built, bound, not yet running service.
pub struct Application {
    server: Server,
    /// `/metrics` on `--metrics-bind`, when it has its own address.
    metrics_server: Option<(Server, SocketAddr)>,
    addr: SocketAddr,
    db: Db,
    /// What the handlers share, for the background retries of failed object removals.
    state: web::Data<AppState>,
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
    pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        refuse_what_cannot_recover(config)?;
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
        let store = config.open_store(&config.object_store).await?;
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
        let sweep_again = sweep(&db, &store, clock.unix()).await?;
        routes::auth::warm_up();

        let listener = TcpListener::bind(config.bind)
            .with_context(|| format!("--bind: cannot listen on {}", config.bind))?;
        let addr = listener.local_addr()?;
        let public_base = public_base(config.public_url.as_ref(), addr);
        let secure_cookies = public_base.starts_with("https://");

        let cache_budget = CacheBudget::split(config.memory_cache);
        let state = web::Data::new(AppState {
            db: db.clone(),
            store,
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
            uploads: Resumable::new(
                PartFiles::open(&config.storage_dir).with_context(|| {
                    format!(
                        "cannot open the uploads directory in {}",
                        config.storage_dir.display()
                    )
                })?,
                config.upload_expiry,
            ),
            uploads_in_flight: Arc::default(),
            removals_to_retry: parking_lot::Mutex::new(sweep_again.into_iter().collect()),
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

        routes::tus::transfer::sweep(&state, true)
            .await
            .map_err(|e| anyhow::anyhow!("cannot sweep resumable uploads: {e}"))?;
        let state_for_retries = state.clone();
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
                        .configure(routes::tus::configure)
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
                .wrap(from_fn(routes::tus::mark_tus_responses))
        })
        .workers(workers)
        .client_request_timeout(config.request_timeout)
        .client_disconnect_timeout(Duration::from_secs(1))
        .keep_alive(config.keep_alive)
        // A response written in several writes (a large listing, a file) must not wait with
        // its last segment for the client's delayed ACK (Nagle's algorithm: 40 ms on Linux).
        .tcp_nodelay(true)
        .disable_signals()
        .shutdown_timeout(10)
        .listen(listener)?
        .run();

        Ok(Self {
            server,
            metrics_server,
            addr,
            db,
            state: state_for_retries,
            clock,
            lock,
            signals: ShutdownSignals::listen(),
        })
    }

    /// Where the objects are (`local (…)` or `s3://bucket/prefix/ at <endpoint>`).
    pub fn store_description(&self) -> String {
        self.state.store.describe()
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
        let retrier = tokio::spawn(housekeeping(self.state));
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
        retrier.abort();
        if let Some(signals) = signals {
            signals.abort();
        }
        drop(self.lock);
        result
    }
}

/// With the database replicated (Litestream), a node restored on a new machine must sign with
/// the same secret, or every cookie and URL dies: a generated `secret.key` is not replicated.
/// Local object storage is allowed but warned about: its bytes are not replicated either.
fn refuse_what_cannot_recover(config: &Config) -> anyhow::Result<()> {
    let Some(replica) = &config.replica_url else {
        return Ok(());
    };
    let replica = match replica {
        crate::config::StoreTarget::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        crate::config::StoreTarget::Local => "local".to_owned(),
    };
    if config.secret.is_none() {
        anyhow::bail!(
            "CHATFILES_REPLICA_URL is set ({replica}) but CHATFILES_SECRET is not: a node restored \
             from the replica would sign with a new secret and every cookie and URL would die; \
             set CHATFILES_SECRET (make one with: openssl rand -hex 32) and keep it with the \
             replica's credentials"
        );
    }
    if config.object_store == crate::config::StoreTarget::Local {
        tracing::warn!(
            replica = %replica,
            "the database is replicated but files' bytes stay on this machine's disk \
             (--object-store local): a node restored elsewhere lists files it cannot serve"
        );
    }
    Ok(())
}

/// Purges expired sessions and removes what an interrupted run left in the object store: the
/// pending objects no row keeps (and, locally, temp files and strays).
///
/// A request that the stopped process had sent to a bucket may still land after this (a
/// multipart upload completing once its sender is gone): those keys stay in the journal and
/// come back, to be removed once more by the first housekeeping pass, a few seconds later.
async fn sweep(db: &Db, store: &ObjectStore, now: i64) -> anyhow::Result<Vec<String>> {
    let (referenced, pending) = db
        .run(|conn| Ok((db::all_object_keys(conn)?, db::pending_keys(conn)?)))
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the database: {e}"))?;
    let report = store
        .sweep(referenced, pending.clone())
        .await
        .context("start-up sweep failed")?;
    if report.temp_files + report.orphans > 0 {
        tracing::info!(
            temp_files = report.temp_files,
            orphans = report.orphans,
            "swept leftovers of an interrupted run"
        );
    }
    let (settled, again) = match store {
        ObjectStore::Local(_) => (pending, Vec::new()),
        ObjectStore::S3(_) => (Vec::new(), pending),
    };
    db.write(move |conn| {
        db::clear_pending(conn, &settled)?;
        db::purge_expired_sessions(conn, now)
    })
    .await
    .map(|purged| tracing::debug!(purged, "purged expired sessions"))
    .map_err(|e| anyhow::anyhow!("cannot write the database: {e}"))?;
    Ok(again)
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

async fn housekeeping(state: web::Data<AppState>) {
    let mut every = tokio::time::interval(HOUSEKEEPING_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first pass comes one period after the start (see `sweep`), not at once.
    every.tick().await;
    loop {
        every.tick().await;
        state.retry_removals().await;
        if let Err(err) = routes::tus::transfer::sweep(&state, false).await {
            tracing::warn!(error = %err, "could not sweep resumable uploads");
        }
    }
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
