//! The Python client (httpx + pydantic) from Neptun's documentation page of its Chat Files
//! endpoint parses our answers: a listing and a 404.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::helpers::TestApp;
use crate::tools::{self, Missing};

/// The way around every obstacle, at the end of each `SKIPPED` line.
const OR: &str = "or set CHATFILES_TEST_PYTHON to a Python with httpx and pydantic";
/// How to get `python3 -m venv` on Debian.
const VENV: &str = "apt-get install python3-venv";

/// The Python with httpx and pydantic: `CHATFILES_TEST_PYTHON` as it is (`.ci/run` sets it),
/// else a venv made once under the cargo target directory in use. Missing when there is no
/// `python3`, `python3 -m venv` fails (no ensurepip) or pip cannot install (no network).
fn neptun_python() -> Result<PathBuf, Missing> {
    if let Some(python) = std::env::var_os("CHATFILES_TEST_PYTHON") {
        return Ok(PathBuf::from(python));
    }
    let parent = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let venv = parent.join("neptun-client-venv");
    let python = venv.join("bin/python");
    std::fs::create_dir_all(parent)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
    // Test processes that race here (two `cargo test` runs) make the venv one after the other.
    let lock_path = parent.join("neptun-client-venv.lock");
    let lock = std::fs::File::create(&lock_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));

    let ready = Command::new(&python)
        .args(["-c", "import httpx, pydantic"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ready {
        return Ok(python);
    }
    let missing = |what: String, how: &str| Missing {
        what,
        how: format!("{how}, {OR}"),
    };
    // What a failed attempt left behind.
    if venv.exists() {
        std::fs::remove_dir_all(&venv)
            .unwrap_or_else(|e| panic!("cannot remove {}: {e}", venv.display()));
    }
    let made = match Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(missing("python3 not found on PATH".to_owned(), VENV));
        }
        Err(e) => return Err(missing(format!("python3 cannot be run ({e})"), VENV)),
        Ok(made) => made,
    };
    if !made.status.success() {
        let _ = std::fs::remove_dir_all(&venv);
        return Err(missing(
            format!(
                "`python3 -m venv` failed ({}), without ensurepip?",
                made.status
            ),
            VENV,
        ));
    }
    let installed = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--retries",
            "1",
            "--timeout",
            "15",
            "httpx",
            "pydantic",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    if !installed.status.success() {
        // Not left looking ready to the next run.
        let _ = std::fs::remove_dir_all(&venv);
        return Err(missing(
            format!(
                "`pip install httpx pydantic` failed{}",
                last_line(&installed)
            ),
            "it needs network access to PyPI",
        ));
    }
    Ok(python)
}

/// `: <the last line of what a command printed on stderr>`, or nothing.
fn last_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(|l| format!(": {}", l.chars().take(200).collect::<String>()))
        .unwrap_or_default()
}

#[tokio::test]
async fn neptuns_python_client_parses_a_chat_files_listing_and_a_404() {
    // Before any set-up: without the Python, the test skips (or fails when strict).
    let Some(python) = tools::require(neptun_python()) else {
        return;
    };
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "neptun").await;
    app.upload_ok(
        &user,
        chat,
        &[
            ("document.pdf", "application/pdf", b"%PDF-1.4 neptun"),
            ("notes.txt", "text/plain", b"hello"),
        ],
    )
    .await;
    let cookie = app.session_cookie(&user).await;

    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/neptun_client/neptun_client.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([
                app.address.clone(),
                user.id.to_string(),
                chat.to_string(),
                cookie,
                "987654".into(),
            ])
            .output()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|e| panic!("cannot run python: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Neptun's Python client failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("success parsed: ['document.pdf', 'notes.txt']"),
        "{stdout}"
    );
    assert!(stdout.contains("error parsed: Chat not found"), "{stdout}");
}
