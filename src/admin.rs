//! `chatfiles user add|list|disable|enable`: account administration straight on the database,
//! for closed sign-up and for locking someone out. Safe while the service runs (SQLite WAL).

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::clock::{Clock, SystemClock, rfc3339};
use crate::config::{Config, UserAction};
use crate::db::{self, Db};
use crate::revocations::{self, Revocations};
use crate::routes::auth::{check_new_password, hash_password, is_valid_email, normalize_email};
use crate::session::REVALIDATE_AFTER;

/// Runs one `chatfiles user` action; 0 on success, 1 when it was refused, 2 when it could not
/// run.
pub fn main(config: &Config, action: UserAction) -> ExitCode {
    match run(config, action, &mut std::io::stdin().lock()) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The work behind [`main`], with the password read from `input`; returns what to print.
pub fn run(config: &Config, action: UserAction, input: &mut dyn BufRead) -> anyhow::Result<String> {
    let path = config.database_path();
    // Only `add` may start a database (bootstrapping closed sign-up); the others on a missing
    // one mean a mistyped --storage-dir or --database.
    if !matches!(action, UserAction::Add { .. }) && !path.exists() {
        bail!("no database at {}", path.display());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let db = Db::open(&path, 1)?;
    let mut conn = db.get().map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = SystemClock.unix();
    match action {
        UserAction::Add { email } => {
            let email = normalize_email(&email);
            if !is_valid_email(&email) {
                bail!("invalid email address {email:?}");
            }
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprint!("Password for {email} (shown as typed; pipe it in to hide it): ");
            }
            let mut password = String::new();
            input
                .read_line(&mut password)
                .context("cannot read the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']).to_owned();
            check_new_password(&password, &password).map_err(|e| anyhow::anyhow!("{e}"))?;
            let hash = hash_password(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
            let user = db::insert_user(&conn, &email, &hash, now)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .with_context(|| format!("{email} is already taken"))?;
            Ok(format!("created user {} {}", user.id, user.primary_email))
        }
        UserAction::List => {
            let users = db::list_users(&conn).map_err(|e| anyhow::anyhow!("{e}"))?;
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
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .with_context(|| format!("no user {email}"))?;
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
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .with_context(|| format!("no user {email}"))?;
            Ok(format!("enabled user {id} {email}"))
        }
    }
}
