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
    Cli, Command, GlobalArgs, Invocation, ProbeArgs, ServerArgs, Task, UserAction, one_line,
};
pub use values::{format_duration, format_size, parse_size};

/// Name of the environment variable holding the master secret. Never a flag: flags show up in
/// `ps` and shell history.
pub const SECRET_ENV: &str = "CHATFILES_SECRET";
/// Older master secrets (comma-separated), still accepted for URLs and cookies made under them.
pub const PREVIOUS_SECRETS_ENV: &str = "CHATFILES_PREVIOUS_SECRETS";

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
        } = server;
        Self {
            bind,
            public_url,
            storage_dir,
            database,
            url_ttl,
            session_ttl,
            max_file_size,
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
        }
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
