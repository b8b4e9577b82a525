//! Headless Chromium for the tests that run a page in a real browser (`browser`, `tus_clients`):
//! finding the binary (or the test's `SKIPPED` line), loading a page with a fresh profile and
//! reading back its DOM, and the helpers to pick that DOM apart.

use std::path::{Path, PathBuf};

use actix_web::dev::ServerHandle;
use actix_web::web::Bytes;
use actix_web::{App, HttpResponse, HttpServer, web};
use std::process::Stdio;
use std::time::Duration;

use crate::tools::Missing;

/// How long Chromium may run, in real time, before the test calls it a hang.
const CHROMIUM_DEADLINE: Duration = Duration::from_secs(90);
/// Virtual time the page gets once nothing is loading (its fetches pause the virtual clock).
const VIRTUAL_TIME_BUDGET_MS: u32 = 30_000;

/// Debian's Chromium: `CHATFILES_TEST_CHROMIUM` if set (not a file: a misconfiguration, which
/// fails the test), else `chromium` on PATH. Missing, the browser test skips (fails when strict).
pub fn chromium() -> Result<PathBuf, Missing> {
    if let Some(path) = std::env::var_os("CHATFILES_TEST_CHROMIUM") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "CHATFILES_TEST_CHROMIUM={} is not a file",
            path.display()
        );
        return Ok(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| Missing {
            what: "Chromium not found on PATH".to_owned(),
            how: "apt-get install --no-install-recommends chromium, or set \
                  CHATFILES_TEST_CHROMIUM to a Chromium binary"
                .to_owned(),
        })
}

/// Loads `url` in headless Chromium with a fresh profile and returns the DOM once the page's
/// work is done (virtual time stands still while fetches are in flight). The page must have an
/// element with `id="status"`: without it in the DOM, Chromium did not run the page.
pub async fn dump_dom(binary: &Path, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut command = tokio::process::Command::new(binary);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that the browser's helper processes can be ended with it.
        .process_group(0)
        .kill_on_drop(true);
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let group = child.id();
    let outcome = tokio::time::timeout(CHROMIUM_DEADLINE, child.wait_with_output()).await;
    if let Some(group) = group {
        end_process_group(group);
    }
    let output = outcome
        .unwrap_or_else(|_| {
            panic!(
                "{} did not finish within {CHROMIUM_DEADLINE:?} loading {url}",
                binary.display()
            )
        })
        .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("id=\"status\""),
        "{} failed ({}) loading {url}\nstdout:\n{stdout}\nstderr (end):\n{}",
        binary.display(),
        output.status,
        tail(&stderr, 4000)
    );
    stdout
}

/// Ends what is left of the browser's process group (helpers outlive the main process at times).
fn end_process_group(group: u32) {
    // Never 0 or negative: `kill(0, …)` would signal our own group.
    let Some(group) = libc::pid_t::try_from(group).ok().filter(|g| *g > 0) else {
        return;
    };
    // SAFETY: `kill` only sends a signal, here to the group the browser was started in. The
    // group may be gone already; nothing to report then.
    let _ = unsafe { libc::kill(-group, libc::SIGKILL) };
}

fn tail(text: &str, chars: usize) -> String {
    let skip = text.chars().count().saturating_sub(chars);
    text.chars().skip(skip).collect()
}

/// The text between the first `start` and the next `end` after it.
pub fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// Undoes the escaping of a serialised DOM's text and attribute values.
pub fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// A second local origin for a page to come from, serving `files` (path, content type, bytes)
/// and nothing else: `(its origin, a handle to stop it)`.
pub fn serve_origin(files: Vec<(&'static str, &'static str, Bytes)>) -> (String, ServerHandle) {
    let server = HttpServer::new(move || {
        files
            .iter()
            .cloned()
            .fold(App::new(), |app, (path, content_type, bytes)| {
                app.route(
                    path,
                    web::get().to(move || {
                        let bytes = bytes.clone();
                        async move { HttpResponse::Ok().content_type(content_type).body(bytes) }
                    }),
                )
            })
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .unwrap_or_else(|e| panic!("cannot bind the page server: {e}"));
    let addr = server
        .addrs()
        .first()
        .copied()
        .unwrap_or_else(|| panic!("the page server bound no address"));
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    (format!("http://{addr}"), handle)
}
