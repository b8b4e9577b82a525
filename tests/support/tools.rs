//! Tests that need a tool from outside Rust (Chromium, a Python with httpx and pydantic,
//! `unshare`) look for it first. Without it they skip: one `SKIPPED <test>: <what is missing>
//! (<how to get it>)` line on stderr, and the test passes. With `CHATFILES_TEST_STRICT=1` (as
//! `.ci/run` sets) a missing tool fails the test with that line instead.
//!
//! Shared by the `api` and `crash` test crates: `#[path = "../support/tools.rs"] mod tools;`.

use std::io::Write;

/// A tool a test needs and did not find.
pub struct Missing {
    /// What is missing, e.g. "Chromium not found on PATH".
    pub what: String,
    /// How to get it, e.g. "apt-get install --no-install-recommends chromium".
    pub how: String,
}

/// The tool `found` holds, or `None` once the calling test's `SKIPPED` line is written; the
/// test then returns. Under `CHATFILES_TEST_STRICT=1` it panics with that line instead.
///
/// The line goes straight to the process's stderr, which libtest does not capture (it captures
/// only `print!`/`eprint!` output), so that `cargo test` shows it for a passing test.
#[track_caller]
pub fn require<T>(found: Result<T, Missing>) -> Option<T> {
    let missing = match found {
        Ok(tool) => return Some(tool),
        Err(missing) => missing,
    };
    // libtest runs every test on a thread named after it (`module::test_name`).
    let current = std::thread::current();
    let test = current.name().unwrap_or("a test");
    let line = format!("SKIPPED {test}: {} ({})", missing.what, missing.how);
    if strict() {
        panic!("{line}; CHATFILES_TEST_STRICT is set, so a missing tool fails the test");
    }
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    None
}

/// `CHATFILES_TEST_STRICT` is set to anything but empty or `0`.
fn strict() -> bool {
    std::env::var_os("CHATFILES_TEST_STRICT").is_some_and(|v| !v.is_empty() && v != "0")
}
