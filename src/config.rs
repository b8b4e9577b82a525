//! Command-line flags and environment variables, parsed and validated once at start.
//!
//! Nothing else in the crate reads the environment.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use secrecy::SecretString;
use url::Url;

/// Name of the environment variable holding the master secret. Never a flag: flags show up in
/// `ps` and shell history.
pub const SECRET_ENV: &str = "CHATFILES_SECRET";
/// Older master secrets (comma-separated), still accepted for URLs and cookies made under them.
pub const PREVIOUS_SECRETS_ENV: &str = "CHATFILES_PREVIOUS_SECRETS";

const MIN_URL_TTL: Duration = Duration::from_secs(1);
const MAX_URL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const MIN_SESSION_TTL: Duration = Duration::from_secs(1);
const MAX_SESSION_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Whether new accounts can be created through `POST /api/auth/sign-up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Signup {
    Open,
    Closed,
}

/// The command line: a subcommand (serving by default) and the configuration they share.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "chatfiles",
    version,
    about = "Chat attachments behind time-limited signed URLs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

/// What to do; `serve` when none is given.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Verify that every stored file's bytes exist with the recorded size and SHA-256, and list
    /// orphaned or missing objects. Exits 1 when damage is found.
    Check {
        /// Also remove orphaned objects and temp files (refused while the service runs on the
        /// same storage directory). Rows whose bytes are gone are reported, never deleted.
        #[arg(long)]
        repair: bool,
    },
    /// Ask the running service's `/health` (at `--bind`) and exit 0 when it is healthy, 1
    /// otherwise: for container health checks, without curl.
    Healthcheck,
    /// Manage accounts directly in the database (works while the service runs).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
}

/// `chatfiles user ...`
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum UserAction {
    /// Create an account; the password is read from standard input (one line), never a flag.
    Add { email: String },
    /// List accounts: id, email, created, state.
    List,
    /// Refuse the account's logins from now on and end all of its sessions.
    Disable { email: String },
    /// Allow a disabled account to log in again.
    Enable { email: String },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The service's whole configuration.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(
        long,
        global = true,
        env = "CHATFILES_BIND",
        default_value = "127.0.0.1:8080"
    )]
    pub bind: SocketAddr,

    /// Absolute base URL that clients reach the service at, used for signed download URLs
    /// [default: http://<bind>].
    #[arg(long, global = true, env = "CHATFILES_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<Url>,

    /// Directory that holds stored files, the secret key and (by default) the database.
    #[arg(
        long,
        global = true,
        env = "CHATFILES_STORAGE_DIR",
        default_value = "./storage"
    )]
    pub storage_dir: PathBuf,

    /// SQLite database file [default: <storage>/chatfiles.db].
    #[arg(long, global = true, env = "CHATFILES_DATABASE")]
    pub database: Option<PathBuf>,

    /// Lifetime of signed download URLs (1s to 7d).
    #[arg(long, global = true, env = "CHATFILES_URL_TTL", default_value = "15m", value_parser = parse_url_ttl)]
    pub url_ttl: Duration,

    /// Lifetime of a login session, renewed on use (1s to 365d).
    #[arg(long, global = true, env = "CHATFILES_SESSION_TTL", default_value = "7d", value_parser = parse_session_ttl)]
    pub session_ttl: Duration,

    /// Largest accepted file, inclusive (e.g. 25MiB, 512KiB, 1GiB or plain bytes).
    #[arg(long, global = true, env = "CHATFILES_MAX_FILE_SIZE", default_value = "25MiB", value_parser = parse_size)]
    pub max_file_size: u64,

    /// Whether sign-up is open or closed.
    #[arg(
        long,
        global = true,
        env = "CHATFILES_SIGNUP",
        value_enum,
        default_value = "open"
    )]
    pub signup: Signup,

    /// Number of HTTP worker threads [default: number of CPUs].
    #[arg(long, global = true, env = "CHATFILES_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Storage each user may fill, counted from stored sizes (e.g. 1GiB; 0 for no quota).
    #[arg(long, global = true, env = "CHATFILES_USER_QUOTA", default_value = "1GiB", value_parser = parse_size_or_zero)]
    pub user_quota: u64,

    /// Memory for what is kept between requests: object rows and the bytes of objects up to
    /// 1 MiB for downloads, and chat listings (e.g. 32MiB; 0 keeps none of those; sessions are
    /// remembered regardless).
    #[arg(long, global = true, env = "CHATFILES_MEMORY_CACHE", default_value = "32MiB", value_parser = parse_size_or_zero)]
    pub memory_cache: u64,

    /// Proxies (IP addresses or CIDR ranges, comma-separated) whose `X-Forwarded-For` names the
    /// client address used for login throttling [default: none; the peer address is used].
    #[arg(long, global = true, env = "CHATFILES_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_proxy)]
    pub trusted_proxies: Vec<IpNet>,

    /// Time a client has to send a request's headers.
    #[arg(long, global = true, env = "CHATFILES_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub request_timeout: Duration,

    /// Longest a request body may stall between two chunks (slow uploads are cut off with 408).
    #[arg(long, global = true, env = "CHATFILES_BODY_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
    pub body_timeout: Duration,

    /// How long an idle keep-alive connection stays open.
    #[arg(long, global = true, env = "CHATFILES_KEEP_ALIVE", default_value = "15s", value_parser = parse_timeout)]
    pub keep_alive: Duration,

    /// Origins (scheme://host[:port], comma-separated) whose pages may call the API with
    /// credentials, e.g. a front end on its own dev server [default: none].
    #[arg(long, global = true, env = "CHATFILES_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,

    /// Serve `/metrics` on this separate address instead of the main one.
    #[arg(long, global = true, env = "CHATFILES_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,

    /// Log line format; the level comes from `RUST_LOG` (default `info`).
    #[arg(
        long,
        global = true,
        env = "CHATFILES_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Master secret, from the environment only (see `SECRET_ENV`).
    #[arg(skip)]
    pub secret: Option<SecretString>,

    /// Previous master secrets, from the environment only (see `PREVIOUS_SECRETS_ENV`).
    #[arg(skip)]
    pub previous_secrets: Vec<SecretString>,
}

impl Cli {
    /// Parses flags and environment, exiting with a one-line message naming the flag on error.
    pub fn from_env_and_args() -> Self {
        let mut cli = match Self::try_parse() {
            Ok(cli) => cli,
            Err(err) if !err.use_stderr() => err.exit(),
            Err(err) => {
                // clap's message spans several lines; the contract wants one naming the flag.
                let rendered = err.to_string();
                let line = rendered
                    .lines()
                    .next()
                    .unwrap_or("error: invalid arguments");
                eprintln!("{line}");
                std::process::exit(2);
            }
        };
        // An empty value (`CHATFILES_SECRET=` in a compose file) means "not set".
        cli.config.secret = std::env::var(SECRET_ENV)
            .ok()
            .filter(|s| !s.trim().is_empty())
            .map(SecretString::from);
        cli.config.previous_secrets = std::env::var(PREVIOUS_SECRETS_ENV)
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| SecretString::from(s.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        cli
    }
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

fn parse_public_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("not an absolute URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("scheme must be http or https".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("a host is required".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not carry a query or fragment".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    Ok(url)
}

fn parse_duration_within(value: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let duration = humantime::parse_duration(value.trim()).map_err(|e| e.to_string())?;
    if duration < min || duration > max {
        return Err(format!(
            "must be between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(duration)
}

fn parse_timeout(value: &str) -> Result<Duration, String> {
    parse_duration_within(value, MIN_TIMEOUT, MAX_TIMEOUT)
}

fn parse_url_ttl(value: &str) -> Result<Duration, String> {
    parse_duration_within(value, MIN_URL_TTL, MAX_URL_TTL)
}

fn parse_session_ttl(value: &str) -> Result<Duration, String> {
    parse_duration_within(value, MIN_SESSION_TTL, MAX_SESSION_TTL)
}

/// Parses `25MiB`, `512KiB`, `1GiB`, `10MB`, `100B` or plain bytes. Binary units are powers of
/// 1024, decimal units of 1000.
pub fn parse_size(value: &str) -> Result<u64, String> {
    match parse_bytes(value)? {
        0 => Err("must be at least 1 byte".into()),
        size => Ok(size),
    }
}

/// A size as [`parse_size`] reads it, zero allowed.
fn parse_bytes(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    if digits.is_empty() {
        return Err("expected a number of bytes, e.g. 25MiB".into());
    }
    let number: u64 = digits.parse().map_err(|_| "number too large".to_owned())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => return Err(format!("unknown unit {other:?} (use B, KiB, MiB, GiB)")),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| "size too large".to_owned())
}

/// A size as [`parse_size`] reads it, or zero (`0`, `0B`, `0GiB`): no quota, no cache.
fn parse_size_or_zero(value: &str) -> Result<u64, String> {
    parse_bytes(value)
}

/// One CORS origin, normalised to `scheme://host[:port]` as browsers send `Origin`.
fn parse_origin(value: &str) -> Result<String, String> {
    let url = Url::parse(value.trim()).map_err(|e| format!("{value:?} is not an origin: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{value:?} is not an http(s) origin"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{value:?} must be an origin only, without a path"));
    }
    Ok(url.origin().ascii_serialization())
}

/// One trusted proxy: an address (a /32 or /128) or a CIDR range.
fn parse_proxy(value: &str) -> Result<IpNet, String> {
    let value = value.trim();
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{value:?} is not an IP address or CIDR range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("25MiB"), Ok(25 * 1024 * 1024));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2 MB"), Ok(2_000_000));
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn ttls_are_bounded() {
        assert_eq!(parse_url_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_url_ttl("7d"), Ok(MAX_URL_TTL));
        assert!(parse_url_ttl("8d").is_err());
        assert!(parse_url_ttl("0s").is_err());
        assert!(parse_session_ttl("366d").is_err());
        assert!(parse_session_ttl("nonsense").is_err());
    }

    #[test]
    fn public_urls_must_be_absolute_http() {
        assert!(parse_public_url("https://example.com/chat/").is_ok());
        assert!(parse_public_url("ftp://example.com").is_err());
        assert!(parse_public_url("example.com").is_err());
        assert!(parse_public_url("https://example.com/?a=b").is_err());
        let url = parse_public_url("https://example.com/chat/").ok();
        let bound = SocketAddr::from(([127, 0, 0, 1], 1));
        assert_eq!(public_base(url.as_ref(), bound), "https://example.com/chat");
        assert_eq!(public_base(None, bound), "http://127.0.0.1:1");
    }

    #[test]
    fn flags_parse_and_bad_values_name_the_flag() {
        let cli = Cli::try_parse_from(["chatfiles", "--max-file-size", "1KiB"]);
        assert_eq!(cli.map(|c| c.config.max_file_size).ok(), Some(1024));
        let err = Cli::try_parse_from(["chatfiles", "--url-ttl", "9d"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("--url-ttl"), "{err}");
    }

    #[test]
    fn subcommands_take_the_shared_flags_on_either_side() {
        let cli = Cli::try_parse_from(["chatfiles", "check", "--repair", "--storage-dir", "/x"]);
        let cli = cli.map_err(|e| e.to_string());
        assert_eq!(
            cli.as_ref().map(|c| c.command.clone()),
            Ok(Some(Command::Check { repair: true }))
        );
        assert_eq!(cli.map(|c| c.config.storage_dir), Ok(PathBuf::from("/x")));
        let cli = Cli::try_parse_from(["chatfiles", "--storage-dir", "/y", "check"]);
        assert_eq!(
            cli.map(|c| c.config.storage_dir).ok(),
            Some(PathBuf::from("/y"))
        );
        let serve = Cli::try_parse_from(["chatfiles"]).map(|c| c.command);
        assert_eq!(serve.ok(), Some(None));
    }

    #[test]
    fn cors_origins_are_normalised_origins() {
        assert_eq!(
            parse_origin("http://localhost:5173/"),
            Ok("http://localhost:5173".to_owned())
        );
        assert_eq!(
            parse_origin("HTTPS://App.Example.com:443"),
            Ok("https://app.example.com".to_owned())
        );
        assert!(parse_origin("http://localhost:5173/app").is_err());
        assert!(parse_origin("localhost:5173").is_err());
        assert!(parse_origin("*").is_err());
    }

    #[test]
    fn quotas_and_proxies_parse() {
        assert_eq!(parse_size_or_zero("0"), Ok(0));
        assert_eq!(parse_size_or_zero("0B"), Ok(0));
        assert_eq!(parse_size_or_zero("0 GiB"), Ok(0));
        assert_eq!(parse_size_or_zero("1GiB"), Ok(1 << 30));
        assert!(parse_size_or_zero("-1").is_err());
        assert_eq!(
            parse_proxy("10.0.0.0/8").map(|n| n.to_string()),
            Ok("10.0.0.0/8".to_owned())
        );
        assert_eq!(
            parse_proxy("127.0.0.1").map(|n| n.to_string()),
            Ok("127.0.0.1/32".to_owned())
        );
        assert!(parse_proxy("proxy.local").is_err());
        let cli = Cli::try_parse_from(["chatfiles", "--trusted-proxies", "10.0.0.1,::1"]);
        assert_eq!(cli.map(|c| c.config.trusted_proxies.len()).ok(), Some(2));
    }
}
