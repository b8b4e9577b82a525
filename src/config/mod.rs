//! Command-line flags and environment variables, parsed and validated once at start.
//!
//! Nothing else in the crate reads the environment.
//!
//! The command line: `chatfiles [SERVER FLAGS]` or `chatfiles serve [SERVER FLAGS]` runs the
//! service; `check`, `healthcheck` and `user` take only what they need. `--storage-dir`,
//! `--database` and `--log-format` are global (either side of the command). A server flag
//! written before a command is refused rather than dropped; a server variable in the
//! environment (the Docker image sets `CHATFILES_BIND`) never stands in the way of a command.
//!
//! `cli` holds the clap types and turns a command line into an `Invocation`; `values` parses
//! and formats what the flags take (durations, sizes, URLs, origins, proxies).

mod cli;
mod values;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use ipnet::IpNet;
use secrecy::SecretString;
use url::Url;

pub use cli::{
    Cli, Command, GlobalArgs, Invocation, ProbeArgs, ServerArgs, StoreArgs, Task, UserAction,
    one_line,
};
pub use values::{StoreTarget, format_duration, format_size, parse_object_store, parse_size};

use crate::storage::local::OPEN_FILES;
use crate::storage::{
    Downloads, LocalStore, ObjectStore, S3Credentials, S3Settings, S3Store, StoreError,
};

/// Name of the environment variable holding the master secret. Never a flag: flags show up in
/// `ps` and shell history.
pub const SECRET_ENV: &str = "CHATFILES_SECRET";
/// Older master secrets (comma-separated), still accepted for URLs and cookies made under them.
pub const PREVIOUS_SECRETS_ENV: &str = "CHATFILES_PREVIOUS_SECRETS";
/// The S3 credentials, under the names every S3 tool reads.
pub const ACCESS_KEY_ENV: &str = "AWS_ACCESS_KEY_ID";
pub const SECRET_KEY_ENV: &str = "AWS_SECRET_ACCESS_KEY";
pub const SESSION_TOKEN_ENV: &str = "AWS_SESSION_TOKEN";

/// How to reach an S3-compatible store (the `--s3-*` flags), whichever bucket is used.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// `None`: AWS's endpoint for the region.
    pub endpoint: Option<Url>,
    /// `None`: the endpoint.
    pub public_endpoint: Option<Url>,
    pub region: String,
    pub path_style: bool,
    pub downloads: Downloads,
    /// From the environment only.
    pub credentials: Option<S3Credentials>,
}

/// Whether new accounts can be created through `POST /api/auth/sign-up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Signup {
    Open,
    Closed,
}

impl Signup {
    /// `open` or `closed`, as the flag spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The service's whole configuration. Commands other than `serve` see the server settings at
/// their defaults (`healthcheck` its own `--bind`).
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Base URL of signed download URLs; `http://<bound address>` when `None`.
    pub public_url: Option<Url>,
    /// Objects, temp area, `secret.key` and the default database.
    pub storage_dir: PathBuf,
    /// The SQLite file; `<storage>/chatfiles.db` when `None`.
    pub database: Option<PathBuf>,
    /// Lifetime of signed download URLs.
    pub url_ttl: Duration,
    /// Lifetime of a login session, renewed on use.
    pub session_ttl: Duration,
    /// Largest accepted file, inclusive.
    pub max_file_size: u64,
    /// How long a resumable upload may take from its creation.
    pub upload_expiry: Duration,
    pub signup: Signup,
    /// HTTP worker threads; the number of CPUs when `None`.
    pub workers: Option<u16>,
    /// Bytes each user may store; 0 for no quota.
    pub user_quota: u64,
    /// Memory for rows, small objects and listings kept between requests.
    pub memory_cache: u64,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpNet>,
    /// Time a client has to send a request's headers.
    pub request_timeout: Duration,
    /// Longest a request body may stall between two chunks.
    pub body_timeout: Duration,
    /// How long an idle keep-alive connection stays open.
    pub keep_alive: Duration,
    /// Origins allowed to call the API with credentials.
    pub cors_origins: Vec<String>,
    /// Where `/metrics` is served instead of on `bind`.
    pub metrics_bind: Option<SocketAddr>,
    pub log_format: LogFormat,
    /// Master secret, from the environment only (see `SECRET_ENV`).
    pub secret: Option<SecretString>,
    /// Previous master secrets, from the environment only (see `PREVIOUS_SECRETS_ENV`).
    pub previous_secrets: Vec<SecretString>,
    /// Where files' bytes go.
    pub object_store: StoreTarget,
    /// Where Litestream replicates the database, when it does (`CHATFILES_REPLICA_URL`).
    pub replica_url: Option<StoreTarget>,
    pub s3: S3Options,
}

impl Config {
    /// A configuration with every default, rooted at `storage_dir` (used by tests and tools).
    pub fn with_storage_dir(storage_dir: impl Into<PathBuf>) -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            storage_dir: storage_dir.into(),
            database: None,
            url_ttl: Duration::from_secs(15 * 60),
            session_ttl: Duration::from_secs(7 * 24 * 3600),
            max_file_size: 25 * 1024 * 1024,
            upload_expiry: Duration::from_secs(24 * 3600),
            signup: Signup::Open,
            workers: None,
            user_quota: 1 << 30,
            memory_cache: 32 << 20,
            trusted_proxies: Vec::new(),
            request_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(15),
            cors_origins: Vec::new(),
            metrics_bind: None,
            log_format: LogFormat::Text,
            secret: None,
            previous_secrets: Vec::new(),
            object_store: StoreTarget::Local,
            replica_url: None,
            s3: S3Options {
                endpoint: None,
                public_endpoint: None,
                region: "us-east-1".into(),
                path_style: false,
                downloads: Downloads::Direct,
                credentials: None,
            },
        }
    }

    fn from_args(global: GlobalArgs, server: ServerArgs) -> Self {
        let GlobalArgs {
            storage_dir,
            database,
            log_format,
        } = global;
        let ServerArgs {
            bind,
            public_url,
            url_ttl,
            session_ttl,
            max_file_size,
            upload_expiry,
            signup,
            workers,
            user_quota,
            memory_cache,
            trusted_proxies,
            request_timeout,
            body_timeout,
            keep_alive,
            cors_origins,
            metrics_bind,
            replica_url,
            store,
        } = server;
        Self {
            bind,
            public_url,
            storage_dir,
            database,
            url_ttl,
            session_ttl,
            max_file_size,
            upload_expiry,
            signup,
            workers,
            user_quota,
            memory_cache,
            trusted_proxies,
            request_timeout,
            body_timeout,
            keep_alive,
            cors_origins,
            metrics_bind,
            log_format,
            secret: None,
            previous_secrets: Vec::new(),
            object_store: store.object_store,
            replica_url,
            s3: S3Options {
                endpoint: store.s3_endpoint,
                public_endpoint: store.s3_public_endpoint,
                region: store.s3_region,
                path_style: store.s3_path_style,
                downloads: store.s3_downloads,
                credentials: None,
            },
        }
    }

    /// The S3 settings for `target`, or `None` for local storage.
    pub fn s3_settings(&self, target: &StoreTarget) -> Option<S3Settings> {
        let StoreTarget::S3 { bucket, prefix } = target else {
            return None;
        };
        let endpoint = self.s3.endpoint.clone().unwrap_or_else(|| {
            let aws = format!("https://s3.{}.amazonaws.com", self.s3.region);
            Url::parse(&aws).unwrap_or_else(|_| unreachable!("a region is a valid host label"))
        });
        Some(S3Settings {
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            public_endpoint: self
                .s3
                .public_endpoint
                .clone()
                .unwrap_or_else(|| endpoint.clone()),
            endpoint,
            region: self.s3.region.clone(),
            path_style: self.s3.path_style,
            downloads: self.s3.downloads,
            credentials: self.s3.credentials.clone(),
        })
    }

    /// Opens the object store `target` names, with these S3 settings: an S3 bucket must answer,
    /// accept the credentials and take a write, or the error names why.
    pub async fn open_store(&self, target: &StoreTarget) -> anyhow::Result<ObjectStore> {
        let Some(settings) = self.s3_settings(target) else {
            let local = LocalStore::open(&self.storage_dir).map_err(|err| {
                anyhow::anyhow!(
                    "cannot prepare storage directory {}: {err}",
                    self.storage_dir.display()
                )
            })?;
            // Files kept open are part of what `--memory-cache 0` keeps none of.
            let open_files = if self.memory_cache == 0 {
                0
            } else {
                OPEN_FILES
            };
            return Ok(ObjectStore::Local(local.keep_open(open_files)));
        };
        let s3 = S3Store::new(&settings, self.max_file_size)?;
        match s3.probe().await {
            Ok(()) => Ok(ObjectStore::S3(s3)),
            Err(StoreError::Unavailable(reason)) => {
                anyhow::bail!("object store {}: {reason}", s3.describe())
            }
            Err(err) => anyhow::bail!("object store {}: {err}", s3.describe()),
        }
    }

    /// Reads the S3 credentials from their standard variables (empty means unset).
    pub fn read_s3_credentials(&mut self) {
        let var = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        self.s3.credentials = match (var(ACCESS_KEY_ENV), var(SECRET_KEY_ENV)) {
            (Some(access_key_id), Some(secret)) => Some(S3Credentials {
                access_key_id,
                secret_access_key: SecretString::from(secret),
                session_token: var(SESSION_TOKEN_ENV).map(SecretString::from),
            }),
            _ => None,
        };
    }

    /// The database file, defaulting to `<storage>/chatfiles.db`.
    pub fn database_path(&self) -> PathBuf {
        self.database
            .clone()
            .unwrap_or_else(|| self.storage_dir.join("chatfiles.db"))
    }

    /// Worker threads to run.
    pub fn worker_count(&self) -> usize {
        self.workers.map(usize::from).unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

/// Base URL as configured, or `http://<addr>` for the address actually bound, without a
/// trailing slash.
pub fn public_base(public_url: Option<&Url>, bound: SocketAddr) -> String {
    match public_url {
        Some(url) => url.as_str().trim_end_matches('/').to_owned(),
        None => format!("http://{bound}"),
    }
}
