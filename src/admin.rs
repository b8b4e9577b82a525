//! `chatfiles user add|list|disable|enable`: account administration straight on the database,
//! for closed sign-up and for locking someone out. Safe while the service runs (SQLite WAL).

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::Context;

use crate::clock::{Clock, SystemClock, rfc3339};
use crate::config::{Config, UserAction};
use crate::db::{self, Db};
use crate::revocations::{self, Revocations};
use crate::routes::auth::{check_new_password, hash_password, is_valid_email, normalize_email};
use crate::session::REVALIDATE_AFTER;

/// Why a `chatfiles user` action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The action ran and the answer is no: the email is taken or invalid, the password too
    /// short, no such user. Exit 1.
    #[error("{0}")]
    Refused(String),
    /// The action could not run: no database, or it cannot be opened, read or written. Exit 2.
    #[error("{0:#}")]
    CannotRun(#[from] anyhow::Error),
}

impl AdminError {
    /// The exit status: 1 refused, 2 could not run.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Refused(_) => ExitCode::FAILURE,
            Self::CannotRun(_) => ExitCode::from(2),
        }
    }
}

fn refused(message: impl Into<String>) -> AdminError {
    AdminError::Refused(message.into())
}

/// Any other failure (the database's): the action could not run.
fn cannot_run(err: impl std::fmt::Display) -> AdminError {
    AdminError::CannotRun(anyhow::anyhow!("{err}"))
}

/// Runs one `chatfiles user` action and prints its report; exits 0 when it was done, 1 when
/// it was refused, 2 when it could not run.
pub fn main(config: &Config, action: UserAction) -> ExitCode {
    match run(config, action, &mut std::io::stdin().lock()) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            err.exit_code()
        }
    }
}

/// The work behind [`main`], with the password read from `input`; returns what to print.
pub fn run(
    config: &Config,
    action: UserAction,
    input: &mut dyn BufRead,
) -> Result<String, AdminError> {
    let path = config.database_path();
    // Only `add` may start a database (bootstrapping closed sign-up); the others on a missing
    // one mean a mistyped --storage-dir or --database.
    if !matches!(action, UserAction::Add { .. }) && !path.exists() {
        return Err(anyhow::anyhow!(
            "no database at {} (a mistyped --storage-dir or --database?)",
            path.display()
        )
        .into());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::storage::create_private_dir_all(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let db = Db::open(&path, 1)?;
    let mut conn = db.get().map_err(cannot_run)?;
    let now = SystemClock.unix();
    match action {
        UserAction::Add { email } => {
            let email = normalize_email(&email);
            if !is_valid_email(&email) {
                return Err(refused(format!("invalid email address {email:?}")));
            }
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprint!("Password for {email} (shown as typed; pipe it in to hide it): ");
            }
            let mut password = String::new();
            input
                .read_line(&mut password)
                .context("cannot read the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']).to_owned();
            check_new_password(&password, &password).map_err(|e| refused(e.to_string()))?;
            let hash = hash_password(&password).map_err(cannot_run)?;
            let user = db::insert_user(&conn, &email, &hash, now)
                .map_err(cannot_run)?
                .ok_or_else(|| refused(format!("{email} is already taken")))?;
            Ok(format!("created user {} {}", user.id, user.primary_email))
        }
        UserAction::List => {
            let users = db::list_users(&conn).map_err(cannot_run)?;
            let mut out = format!(
                "{:>6}  {:<40}  {:<20}  {:<8}  {:>6}  {:>12}",
                "id", "email", "created", "state", "files", "bytes"
            );
            for user in users {
                out.push_str(&format!(
                    "\n{:>6}  {:<40}  {:<20}  {:<8}  {:>6}  {:>12}",
                    user.id,
                    user.primary_email,
                    rfc3339(user.created_at),
                    if user.disabled_at.is_some() {
                        "disabled"
                    } else {
                        "active"
                    },
                    user.files,
                    user.bytes
                ));
            }
            Ok(out)
        }
        UserAction::Disable { email } => {
            let email = normalize_email(&email);
            let (id, ended) = db::set_disabled(&mut conn, &email, Some(now))
                .map_err(cannot_run)?
                .ok_or_else(|| refused(format!("no user {email}")))?;
            let mut report = format!("disabled user {id} {email}; ended {ended} session(s)");
            // Tells a running service to stop using the sessions it remembers.
            match Revocations::open(&path, false) {
                Ok(counter) => counter.bump(),
                // Without the counter's file no service has mapped it: no one to tell.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => report.push_str(&format!(
                    "\nwarning: cannot reach a running service through {} ({err}): it may \
                     accept those sessions for up to {REVALIDATE_AFTER} s more",
                    revocations::path_for(&path).display()
                )),
            }
            Ok(report)
        }
        UserAction::Enable { email } => {
            let email = normalize_email(&email);
            let (id, _) = db::set_disabled(&mut conn, &email, None)
                .map_err(cannot_run)?
                .ok_or_else(|| refused(format!("no user {email}")))?;
            Ok(format!("enabled user {id} {email}"))
        }
    }
}
