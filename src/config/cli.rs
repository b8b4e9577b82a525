//! The command line as clap parses it: the commands and their flags, the help texts, and the
//! one-line errors that refused flags and values get.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use ipnet::IpNet;
use secrecy::SecretString;
use url::Url;

use super::values::{
    StoreTarget, parse_object_store, parse_origin, parse_proxy, parse_public_url,
    parse_s3_endpoint, parse_session_ttl, parse_size, parse_size_or_zero, parse_timeout,
    parse_upload_expiry, parse_url_ttl,
};
use super::{Config, LogFormat, PREVIOUS_SECRETS_ENV, SECRET_ENV, Signup};
use crate::storage::Downloads;

/// The settings that only the environment carries, shown under `chatfiles --help`.
const ENVIRONMENT_HELP: &str = "\
Environment only (never flags, which show up in `ps` and shell history):
  CHATFILES_SECRET            master secret: at least 32 bytes once decoded, hex or base64
                              (make one with: openssl rand -hex 32); when unset, one is
                              generated into <storage>/secret.key
  CHATFILES_PREVIOUS_SECRETS  older master secrets, comma-separated, whose signed URLs and
                              cookies stay valid while a rotation runs out
  AWS_ACCESS_KEY_ID           with --object-store s3://…: the credentials, under the standard
  AWS_SECRET_ACCESS_KEY       names (AWS_SESSION_TOKEN too, for temporary ones)
  RUST_LOG                    log level filter, e.g. debug or warn,chatfiles=info (default: info)

Exit status: 0 stopped cleanly (SIGINT or SIGTERM); 1 failed while running; 2 could not start
(a flag or environment value, the secret, the storage directory, the database or the object
store refused).";

/// The command line as clap sees it; [`Cli::from_env_and_args`] turns it into an
/// [`Invocation`].
#[derive(Debug, Clone, Parser)]
#[command(
    name = "chatfiles",
    version,
    about = "Chat attachments behind time-limited signed URLs",
    after_help = ENVIRONMENT_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The server flags of `chatfiles` without a command.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// What to do; `serve` when none is given.
#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum Command {
    /// Run the HTTP service (what `chatfiles` without a command does).
    #[command(after_help = ENVIRONMENT_HELP)]
    Serve(Box<ServerArgs>),
    /// Verify that every stored file's bytes exist with the recorded size and SHA-256, and list orphaned or missing objects.
    #[command(
        after_help = "Exit status: 0 clean (or fully repaired); 1 damage found; 2 the check could not run\n\
                      (no storage directory or database, the service holds the lock for --repair, a\n\
                      repair step failed)."
    )]
    Check {
        /// Also remove orphaned objects and temp files (refused while the service runs on the same storage directory). Rows whose bytes are gone are reported, never deleted.
        #[arg(long)]
        repair: bool,
        #[command(flatten)]
        store: Box<StoreArgs>,
    },
    /// Copy every stored file's bytes from the configured object store (--object-store) to another, verifying each one's size and SHA-256; resumable. Stop the service first; afterwards start it with --object-store set to the target.
    #[command(
        after_help = "Exit status: 0 every file is in the target with its bytes; 1 some could not be copied\n\
                      (listed; run again once dealt with); 2 could not run (no database, the service holds\n\
                      the lock, a store refused)."
    )]
    Migrate {
        /// The object store to copy to: local or s3://BUCKET[/PREFIX] (the --s3-* flags apply to whichever side is S3).
        #[arg(long, value_name = "STORE", value_parser = parse_object_store)]
        to: StoreTarget,
        #[command(flatten)]
        store: Box<StoreArgs>,
    },
    /// Ask the running service's /health at --bind, for container health checks without curl.
    #[command(after_help = "Exit status: 0 healthy (200); 1 unhealthy or unreachable.")]
    Healthcheck(ProbeArgs),
    /// Manage accounts directly in the database (works while the service runs).
    #[command(
        after_help = "Exit status: 0 done; 1 refused (email taken or invalid, password too short, no such\n\
                      user); 2 could not run (no database, or it cannot be opened)."
    )]
    User {
        #[command(subcommand)]
        action: UserAction,
    },
}

/// `chatfiles user ...`
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum UserAction {
    /// Create an account; the password is read from standard input (one line, never a flag; on a terminal it shows as typed, so pipe it in). The only user action that may create the database.
    Add {
        /// The account's email address (stored lowercased).
        email: String,
    },
    /// List accounts, one a line: id, email, created (UTC), state (active or disabled), files and bytes stored.
    List,
    /// Refuse the account's logins from now on and end all of its sessions.
    Disable {
        /// The account's email address.
        email: String,
    },
    /// Allow a disabled account to log in again.
    Enable {
        /// The account's email address.
        email: String,
    },
}

/// The flags every command takes, on either side of its name.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct GlobalArgs {
    /// Directory that holds stored files, the secret key and (by default) the database.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "CHATFILES_STORAGE_DIR",
        hide_env_values = true,
        default_value = "./storage"
    )]
    pub storage_dir: PathBuf,

    /// SQLite database file [env: CHATFILES_DATABASE] [default: <storage>/chatfiles.db]
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "CHATFILES_DATABASE",
        hide_env = true
    )]
    pub database: Option<PathBuf>,

    /// Log line format; the level comes from RUST_LOG (default info).
    #[arg(
        long,
        global = true,
        value_name = "FORMAT",
        env = "CHATFILES_LOG_FORMAT",
        hide_env_values = true,
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

// Flags whose default is not a value (it depends on other flags or on the machine) have their
// `[env: …] [default: …]` written into their help, in the order clap renders the others', with
// clap's own env note hidden. Help stays single-paragraph so `-h` and `--help` look alike.

/// The flags of the service itself.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Server options")]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(
        long,
        value_name = "ADDR",
        env = "CHATFILES_BIND",
        hide_env_values = true,
        default_value = "127.0.0.1:8080"
    )]
    pub bind: SocketAddr,

    /// Absolute base URL that clients reach the service at, used for signed download URLs; may carry a path prefix; https:// turns on Secure cookies [env: CHATFILES_PUBLIC_URL] [default: http://<bind>]
    #[arg(long, value_name = "URL", env = "CHATFILES_PUBLIC_URL", hide_env = true, value_parser = parse_public_url)]
    pub public_url: Option<Url>,

    /// Lifetime of signed download URLs, 1s to 7d (e.g. 90s, 15m, 1h 30m).
    #[arg(long, value_name = "DURATION", env = "CHATFILES_URL_TTL", hide_env_values = true, default_value = "15m", value_parser = parse_url_ttl)]
    pub url_ttl: Duration,

    /// Lifetime of a login session, renewed on use, 1s to 365d.
    #[arg(long, value_name = "DURATION", env = "CHATFILES_SESSION_TTL", hide_env_values = true, default_value = "7d", value_parser = parse_session_ttl)]
    pub session_ttl: Duration,

    /// Largest accepted file, inclusive: 25MiB, 512KiB, 1GiB (powers of 1024), decimal MB/GB (powers of 1000), or plain bytes.
    #[arg(long, value_name = "SIZE", env = "CHATFILES_MAX_FILE_SIZE", hide_env_values = true, default_value = "25MiB", value_parser = parse_size)]
    pub max_file_size: u64,

    /// How long a resumable (tus) upload may take from its creation, 1m to 30d; an unfinished one is then removed.
    #[arg(long, value_name = "DURATION", env = "CHATFILES_UPLOAD_EXPIRY", hide_env_values = true, default_value = "24h", value_parser = parse_upload_expiry)]
    pub upload_expiry: Duration,

    /// Whether sign-up is open or closed.
    #[arg(
        long,
        env = "CHATFILES_SIGNUP",
        hide_env_values = true,
        value_enum,
        default_value = "open"
    )]
    pub signup: Signup,

    /// Number of HTTP worker threads, 1 to 1024 [env: CHATFILES_WORKERS] [default: number of CPUs]
    #[arg(long, value_name = "N", env = "CHATFILES_WORKERS", hide_env = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Storage each user may fill, counted from stored sizes (e.g. 500MiB, 1GiB; 0 for no quota).
    #[arg(long, value_name = "SIZE", env = "CHATFILES_USER_QUOTA", hide_env_values = true, default_value = "1GiB", value_parser = parse_size_or_zero)]
    pub user_quota: u64,

    /// Memory for what is kept between requests: object rows and the bytes of objects up to 1 MiB for downloads, and chat listings (e.g. 32MiB; 0 keeps none of those; sessions are remembered regardless).
    #[arg(long, value_name = "SIZE", env = "CHATFILES_MEMORY_CACHE", hide_env_values = true, default_value = "32MiB", value_parser = parse_size_or_zero)]
    pub memory_cache: u64,

    /// Proxies (IP addresses or CIDR ranges, comma-separated) whose X-Forwarded-For names the client address used for login throttling; without any, the peer address is used [env: CHATFILES_TRUSTED_PROXIES] [default: none]
    #[arg(long, value_name = "LIST", env = "CHATFILES_TRUSTED_PROXIES", hide_env = true, value_delimiter = ',', value_parser = parse_proxy)]
    pub trusted_proxies: Vec<IpNet>,

    /// Time a client has to send a request's headers (then 408), 100ms to 1h.
    #[arg(long, value_name = "DURATION", env = "CHATFILES_REQUEST_TIMEOUT", hide_env_values = true, default_value = "10s", value_parser = parse_timeout)]
    pub request_timeout: Duration,

    /// Longest a request body may stall between two chunks (then 408), 100ms to 1h.
    #[arg(long, value_name = "DURATION", env = "CHATFILES_BODY_TIMEOUT", hide_env_values = true, default_value = "30s", value_parser = parse_timeout)]
    pub body_timeout: Duration,

    /// How long an idle keep-alive connection stays open, 100ms to 1h.
    #[arg(long, value_name = "DURATION", env = "CHATFILES_KEEP_ALIVE", hide_env_values = true, default_value = "15s", value_parser = parse_timeout)]
    pub keep_alive: Duration,

    /// Origins (scheme://host[:port], comma-separated) whose pages may call the API with credentials, e.g. a front end on its own dev server [env: CHATFILES_CORS_ORIGINS] [default: none]
    #[arg(long, value_name = "LIST", env = "CHATFILES_CORS_ORIGINS", hide_env = true, value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,

    /// Serve /metrics on this separate address instead of the main one [env: CHATFILES_METRICS_BIND] [default: none, on --bind]
    #[arg(
        long,
        value_name = "ADDR",
        env = "CHATFILES_METRICS_BIND",
        hide_env = true
    )]
    pub metrics_bind: Option<SocketAddr>,
    /// Where Litestream replicates the database (deploy/entrypoint runs it): s3://BUCKET/PATH. chatfiles only makes sure such a setup can recover: it refuses to start without CHATFILES_SECRET [env: CHATFILES_REPLICA_URL] [default: none]
    #[arg(long, value_name = "URL", env = "CHATFILES_REPLICA_URL", hide_env = true, value_parser = parse_replica_url)]
    pub replica_url: Option<StoreTarget>,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `s3://BUCKET/PATH`: a bucket and a path, as Litestream's replica URLs name them.
fn parse_replica_url(value: &str) -> Result<StoreTarget, String> {
    match parse_object_store(value)? {
        StoreTarget::S3 { prefix, .. } if prefix.is_empty() => {
            Err("expected s3://BUCKET/PATH, with a path for the replica".into())
        }
        StoreTarget::Local => Err("expected s3://BUCKET/PATH".into()),
        replica => Ok(replica),
    }
}

/// Where the bytes live: the flags of `serve`, `check` and `migrate`. S3 credentials come from
/// the environment only.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Object store options")]
pub struct StoreArgs {
    /// Where files' bytes go: local (under <storage>/objects) or s3://BUCKET[/PREFIX].
    #[arg(
        long,
        value_name = "STORE",
        env = "CHATFILES_OBJECT_STORE",
        hide_env_values = true,
        default_value = "local",
        value_parser = parse_object_store
    )]
    pub object_store: StoreTarget,
    /// The S3 API's URL, e.g. http://127.0.0.1:8333 [env: CHATFILES_S3_ENDPOINT] [default: AWS's endpoint for --s3-region]
    #[arg(long, value_name = "URL", env = "CHATFILES_S3_ENDPOINT", hide_env = true, value_parser = parse_s3_endpoint)]
    pub s3_endpoint: Option<Url>,
    /// The S3 endpoint as clients reach it, for direct download URLs (SigV4 signs the host) [env: CHATFILES_S3_PUBLIC_ENDPOINT] [default: --s3-endpoint]
    #[arg(long, value_name = "URL", env = "CHATFILES_S3_PUBLIC_ENDPOINT", hide_env = true, value_parser = parse_s3_endpoint)]
    pub s3_public_endpoint: Option<Url>,
    /// The region requests are signed for.
    #[arg(
        long,
        value_name = "REGION",
        env = "CHATFILES_S3_REGION",
        hide_env_values = true,
        default_value = "us-east-1",
        value_parser = parse_region
    )]
    pub s3_region: String,
    /// Address the bucket as <endpoint>/<bucket> (SeaweedFS, MinIO, Garage) rather than <bucket>.<endpoint> (AWS, R2).
    #[arg(
        long,
        value_name = "BOOL",
        env = "CHATFILES_S3_PATH_STYLE",
        hide_env_values = true,
        default_value = "false",
        action = ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub s3_path_style: bool,
    /// direct: each file's url is a presigned URL to the store; proxy: our /files/{key}, the bytes streamed from the store.
    #[arg(
        long,
        value_name = "MODE",
        env = "CHATFILES_S3_DOWNLOADS",
        hide_env_values = true,
        value_enum,
        default_value = "direct"
    )]
    pub s3_downloads: Downloads,
}

/// A region name as AWS spells them (`us-east-1`), or another store's own (`garage`).
fn parse_region(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(value.to_owned())
    } else {
        Err("expected a region such as us-east-1 (lowercase letters, digits, - and _)".into())
    }
}

/// `chatfiles healthcheck`'s flags.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ProbeArgs {
    /// Address the service listens on; /health is asked there (0.0.0.0 or [::] means this machine).
    #[arg(
        long,
        value_name = "ADDR",
        env = "CHATFILES_BIND",
        hide_env_values = true,
        default_value = "127.0.0.1:8080"
    )]
    pub bind: SocketAddr,
}

/// What a run of the binary is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    Serve,
    Check { repair: bool },
    Migrate { to: StoreTarget },
    Healthcheck,
    User(UserAction),
}

/// A parsed command line: the task and the configuration it runs with.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub task: Task,
    pub config: Config,
}

impl Cli {
    /// Parses flags and environment; on a refused flag or value, prints one line naming it and
    /// exits 2 (`--help` and `--version` exit 0).
    pub fn from_env_and_args() -> Invocation {
        let args: Vec<OsString> = std::env::args_os().collect();
        let mut invocation = match Self::try_parse_args(&args) {
            Ok(invocation) => invocation,
            Err(err) if !err.use_stderr() => err.exit(),
            Err(err) => {
                eprintln!("error: {}", one_line(&err, &args));
                std::process::exit(2);
            }
        };
        // An empty value (`CHATFILES_SECRET=` in a compose file) means "not set".
        invocation.config.secret = std::env::var(SECRET_ENV)
            .ok()
            .filter(|s| !s.trim().is_empty())
            .map(SecretString::from);
        invocation.config.previous_secrets = std::env::var(PREVIOUS_SECRETS_ENV)
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| SecretString::from(s.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        invocation.config.read_s3_credentials();
        invocation
    }

    /// Parses `args` (the program name first) with the flags' environment variables, but not
    /// the secrets.
    pub fn try_parse_args<T: Into<OsString> + Clone>(
        args: &[T],
    ) -> Result<Invocation, clap::Error> {
        let args: Vec<OsString> = args.iter().cloned().map(Into::into).collect();
        let server = server_arg_ids();
        // First without the top level's server variables: a command other than `serve` has
        // no use for them, so a bad CHATFILES_URL_TTL must not keep `chatfiles user list`
        // from running. Serving (or help, or an error) parses again with them.
        let bare = Self::command().mut_args(|arg| {
            if server.contains(arg.get_id()) {
                arg.env(None)
            } else {
                arg
            }
        });
        let matches = match bare.try_get_matches_from(&args) {
            Ok(matches)
                if matches
                    .subcommand_name()
                    .is_some_and(|name| name != "serve") =>
            {
                matches
            }
            _ => Self::command().try_get_matches_from(&args)?,
        };
        if let Some(name) = matches.subcommand_name() {
            // Values of the top level's copy would be dropped in favour of the command's.
            let misplaced = matches.ids().find(|id| {
                server.contains(id)
                    && matches.value_source(id.as_str()) == Some(ValueSource::CommandLine)
            });
            if let Some(id) = misplaced {
                return Err(misplaced_server_flag(id.as_str(), name));
            }
        }
        let cli = Self::from_arg_matches(&matches)?;
        Ok(cli.into_invocation())
    }

    fn into_invocation(self) -> Invocation {
        let Cli {
            command,
            global,
            server,
        } = self;
        let (task, server, probe) = match command {
            None => (Task::Serve, server, None),
            Some(Command::Serve(args)) => (Task::Serve, *args, None),
            Some(Command::Check { repair, store }) => {
                let mut server = server;
                server.store = *store;
                (Task::Check { repair }, server, None)
            }
            Some(Command::Migrate { to, store }) => {
                let mut server = server;
                server.store = *store;
                (Task::Migrate { to }, server, None)
            }
            Some(Command::Healthcheck(probe)) => (Task::Healthcheck, server, Some(probe)),
            Some(Command::User { action }) => (Task::User(action), server, None),
        };
        let mut config = Config::from_args(global, server);
        if let Some(probe) = probe {
            config.bind = probe.bind;
        }
        Invocation { task, config }
    }
}

/// The ids of the server flags (the same at the top level and under `serve`).
fn server_arg_ids() -> Vec<clap::Id> {
    ServerArgs::augment_args(clap::Command::new("server"))
        .get_arguments()
        .map(|arg| arg.get_id().clone())
        .collect()
}

/// The long flag of the argument `id` (`--url-ttl`).
fn long_flag(id: &str) -> String {
    format!("--{}", id.replace('_', "-"))
}

/// `chatfiles --bind x serve`: refused, since the command's own flags would win silently.
fn misplaced_server_flag(id: &str, command: &str) -> clap::Error {
    let flag = long_flag(id);
    let takes_it = Cli::command()
        .find_subcommand(command)
        .is_some_and(|sub| sub.get_arguments().any(|arg| arg.get_id() == id));
    let message = if takes_it {
        format!("{flag} goes after `{command}`: chatfiles {command} {flag} …")
    } else {
        format!(
            "{flag} is a server flag (chatfiles {flag} … or chatfiles serve {flag} …); \
             `chatfiles {command}` does not take it"
        )
    };
    clap::Error::raw(ErrorKind::ArgumentConflict, message)
}

/// clap's error as one line naming the flag, or the environment variable when the value came
/// from there. Values with an `@` (a URL's credentials) are not repeated.
pub fn one_line(err: &clap::Error, args: &[OsString]) -> String {
    let context = |kind| match err.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    // "--url-ttl <DURATION>" → "--url-ttl"
    let flag = context(ContextKind::InvalidArg)
        .and_then(|arg| arg.split_whitespace().next().map(str::to_owned));
    match (err.kind(), flag) {
        (ErrorKind::ValueValidation | ErrorKind::InvalidValue, Some(flag)) => {
            let on_command_line = args.iter().any(|arg| {
                arg.to_str().is_some_and(|arg| {
                    arg == flag
                        || arg
                            .strip_prefix(flag.as_str())
                            .is_some_and(|rest| rest.starts_with('='))
                })
            });
            let env = (!on_command_line).then(|| env_of(&flag)).flatten();
            let value = context(ContextKind::InvalidValue)
                .filter(|value| !value.contains('@'))
                .map(|value| format!(" '{value}'"))
                .unwrap_or_default();
            let place = match env {
                Some(env) => format!("in {env} (for {flag})"),
                None => format!("for {flag}"),
            };
            let reason = match err.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(valid)) => format!("expected {}", valid.join(" or ")),
                _ => std::error::Error::source(err)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "refused".to_owned()),
            };
            format!("invalid value{value} {place}: {reason}")
        }
        (ErrorKind::UnknownArgument, Some(flag)) if flag.starts_with("--pass") => {
            format!(
                "unexpected argument '{flag}': a password is read from standard input, never a flag"
            )
        }
        (ErrorKind::UnknownArgument, Some(flag))
            if server_arg_ids()
                .iter()
                .any(|id| long_flag(id.as_str()) == flag) =>
        {
            format!(
                "{flag} is a server flag (chatfiles {flag} … or chatfiles serve {flag} …); \
                 this command does not take it"
            )
        }
        _ => first_paragraph(&err.to_string()),
    }
}

/// The environment variable behind `flag`, wherever in the command tree it is defined.
fn env_of(flag: &str) -> Option<String> {
    fn find(cmd: &clap::Command, long: &str) -> Option<String> {
        cmd.get_arguments()
            .find(|arg| arg.get_long() == Some(long))
            .and_then(|arg| arg.get_env())
            .map(|env| env.to_string_lossy().into_owned())
            .or_else(|| cmd.get_subcommands().find_map(|sub| find(sub, long)))
    }
    find(&Cli::command(), flag.strip_prefix("--")?)
}

/// The first paragraph of a rendered clap error (and its "a similar … exists" tip), on one line,
/// without the `error: ` prefix.
fn first_paragraph(rendered: &str) -> String {
    let mut paragraphs = rendered.split("\n\n");
    let mut line = paragraphs
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(rest) = line.strip_prefix("error: ") {
        line = rest.to_owned();
    }
    if let Some(tip) = paragraphs
        .flat_map(str::lines)
        .map(str::trim)
        .find(|l| l.starts_with("tip:") && l.contains("similar"))
    {
        line = format!("{line} ({tip})");
    }
    if line.is_empty() {
        "invalid arguments".to_owned()
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Invocation, String> {
        let mut all = vec!["chatfiles"];
        all.extend_from_slice(args);
        Cli::try_parse_args(&all).map_err(|err| {
            let args: Vec<OsString> = all.iter().map(OsString::from).collect();
            one_line(&err, &args)
        })
    }

    fn help(args: &[&str]) -> String {
        let mut all = vec!["chatfiles"];
        all.extend_from_slice(args);
        all.push("--help");
        match Cli::try_parse_args(&all) {
            Err(err) if err.kind() == ErrorKind::DisplayHelp => err.to_string(),
            other => panic!("no help for {args:?}: {:?}", other.map(|i| i.task)),
        }
    }

    #[test]
    fn flags_parse_and_bad_values_name_the_flag() {
        let run = parse(&["--max-file-size", "1KiB"]);
        assert_eq!(run.map(|i| i.config.max_file_size), Ok(1024));
        assert_eq!(
            parse(&["--url-ttl", "9d"]).err().unwrap_or_default(),
            "invalid value '9d' for --url-ttl: expected a duration such as 90s, 15m or 7d, \
             between 1s and 7d"
        );
        assert_eq!(
            parse(&["serve", "--url-ttl=9d"]).err().unwrap_or_default(),
            "invalid value '9d' for --url-ttl: expected a duration such as 90s, 15m or 7d, \
             between 1s and 7d"
        );
        assert_eq!(
            parse(&["--signup", "maybe"]).err().unwrap_or_default(),
            "invalid value 'maybe' for --signup: expected open or closed"
        );
        // A URL's credentials are not repeated back.
        let err = parse(&["--public-url", "https://me:hunter2@example.com"])
            .err()
            .unwrap_or_default();
        assert_eq!(
            err,
            "invalid value for --public-url: must not carry credentials"
        );
        let err = parse(&["user", "add"]).err().unwrap_or_default();
        assert!(err.contains("<EMAIL>"), "{err}");
        let err = parse(&["user", "lsit"]).err().unwrap_or_default();
        assert!(err.contains("'list'"), "{err}");
        let err = parse(&["user", "add", "a@example.com", "--password", "x"]);
        let err = err.err().unwrap_or_default();
        assert!(err.contains("standard input"), "{err}");
    }

    #[test]
    fn serving_takes_the_server_flags_with_or_without_serve() {
        let defaults = Config::with_storage_dir("./storage");
        for args in [&[][..], &["serve"][..]] {
            let run = parse(args).map(|i| (i.task, format!("{:?}", i.config)));
            assert_eq!(run, Ok((Task::Serve, format!("{defaults:?}"))), "{args:?}");
        }
        for args in [
            &["--bind", "10.0.0.1:80", "--storage-dir", "/s"][..],
            &["serve", "--bind", "10.0.0.1:80", "--storage-dir", "/s"][..],
            &["--storage-dir", "/s", "serve", "--bind", "10.0.0.1:80"][..],
        ] {
            let run =
                parse(args).map(|i| (i.task, i.config.bind.to_string(), i.config.storage_dir));
            assert_eq!(
                run,
                Ok((Task::Serve, "10.0.0.1:80".to_owned(), PathBuf::from("/s"))),
                "{args:?}"
            );
        }
        let run = parse(&["--trusted-proxies", "10.0.0.1,::1", "--workers", "3"]);
        assert_eq!(
            run.map(|i| (i.config.trusted_proxies.len(), i.config.worker_count())),
            Ok((2, 3))
        );
    }

    #[test]
    fn a_server_flag_before_a_command_is_refused_not_dropped() {
        assert_eq!(
            parse(&["--bind", "10.0.0.1:80", "serve"])
                .err()
                .unwrap_or_default(),
            "--bind goes after `serve`: chatfiles serve --bind …"
        );
        assert_eq!(
            parse(&["--bind", "10.0.0.1:80", "healthcheck"])
                .err()
                .unwrap_or_default(),
            "--bind goes after `healthcheck`: chatfiles healthcheck --bind …"
        );
        let err = parse(&["--url-ttl", "5m", "user", "list"])
            .err()
            .unwrap_or_default();
        assert!(err.starts_with("--url-ttl is a server flag"), "{err}");
        assert!(err.contains("`chatfiles user` does not take it"), "{err}");
        let err = parse(&["check", "--url-ttl", "5m"])
            .err()
            .unwrap_or_default();
        assert!(err.starts_with("--url-ttl is a server flag"), "{err}");
    }

    #[test]
    fn commands_take_the_global_flags_on_either_side() {
        let run = parse(&["check", "--repair", "--storage-dir", "/x"]);
        assert_eq!(
            run.map(|i| (i.task, i.config.storage_dir)),
            Ok((Task::Check { repair: true }, PathBuf::from("/x")))
        );
        let run = parse(&["--storage-dir", "/y", "--database", "/d.db", "check"]);
        assert_eq!(
            run.map(|i| (i.config.database_path(), i.config.storage_dir)),
            Ok((PathBuf::from("/d.db"), PathBuf::from("/y")))
        );
        let run = parse(&["--log-format", "json", "user", "list"]);
        assert_eq!(
            run.map(|i| (i.task, i.config.log_format)),
            Ok((Task::User(UserAction::List), LogFormat::Json))
        );
        let run = parse(&["user", "add", "a@example.com", "--storage-dir", "/z"]);
        assert_eq!(
            run.map(|i| (i.task, i.config.storage_dir)),
            Ok((
                Task::User(UserAction::Add {
                    email: "a@example.com".to_owned()
                }),
                PathBuf::from("/z")
            ))
        );
        let run = parse(&["healthcheck", "--bind", "0.0.0.0:9"]);
        assert_eq!(
            run.map(|i| (i.task, i.config.bind.to_string())),
            Ok((Task::Healthcheck, "0.0.0.0:9".to_owned()))
        );
    }

    #[test]
    fn help_lists_the_environment_only_settings() {
        let top = help(&[]);
        for name in [
            SECRET_ENV,
            PREVIOUS_SECRETS_ENV,
            "RUST_LOG",
            "openssl rand -hex 32",
        ] {
            assert!(top.contains(name), "{name} missing from:\n{top}");
        }
        assert!(help(&["serve"]).contains(SECRET_ENV));
        assert!(help(&["user", "add"]).contains("standard input"));
        assert!(help(&["user", "list"]).contains("id, email, created"));
    }

    #[test]
    fn commands_other_than_serve_list_only_their_flags() {
        for args in [
            &["user"][..],
            &["user", "add"][..],
            &["user", "list"][..],
            &["check"][..],
            &["healthcheck"][..],
        ] {
            let text = help(args);
            for flag in [
                "--url-ttl",
                "--cors-origins",
                "--max-file-size",
                "--workers",
            ] {
                assert!(!text.contains(flag), "{flag} in {args:?} help:\n{text}");
            }
            assert!(text.contains("--storage-dir"), "{args:?}:\n{text}");
            assert_eq!(
                text.contains("--bind"),
                args == ["healthcheck"],
                "{args:?}:\n{text}"
            );
        }
        for args in [&[][..], &["serve"][..]] {
            let text = help(args);
            for flag in ["--bind", "--url-ttl", "--cors-origins", "--storage-dir"] {
                assert!(text.contains(flag), "{flag} missing from {args:?} help");
            }
        }
    }

    #[test]
    fn every_flag_shows_env_then_default_and_never_a_value() {
        fn check(cmd: &clap::Command, text: &str) {
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            for arg in cmd.get_arguments() {
                let Some(env) = arg.get_env() else { continue };
                let env = env.to_string_lossy();
                let note = format!("[env: {env}] [default: ");
                assert!(text.contains(&note), "no {note:?} in:\n{text}");
                assert!(
                    !text.contains(&format!("{env}=")),
                    "a value shown for {env}"
                );
            }
            assert_eq!(
                text.matches("[default: ").count(),
                text.matches("[env: ").count(),
                "{text}"
            );
        }
        let root = Cli::command();
        check(&root, &help(&[]));
        for sub in root.get_subcommands() {
            let name = sub.get_name();
            if name != "help" {
                check(sub, &help(&[name]));
            }
        }
    }
}
