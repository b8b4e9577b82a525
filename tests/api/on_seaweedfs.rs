//! The file, download, hostile, tus and tus-client suites once more, on a real SeaweedFS node,
//! with direct and with proxied downloads. This test starts the node, then runs this very test
//! executable again in a child process for each mode, filtered to those suites, with
//! `CHATFILES_TEST_BACKEND` and the node's address and credentials in its environment (see
//! `helpers::Backend`).

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chatfiles::storage::Downloads;

use crate::helpers::{Backend, S3Bucket, backend};
use crate::seaweed::{self, SeaweedNode};
use crate::tools::require;

/// The suites that run again, as libtest filters: module paths.
const SUITES: [&str; 5] = [
    "files::",
    "downloads::",
    "hostile::",
    "tus::",
    "tus_clients::",
];
/// Longest a child run may take (under a minute on 2 cores) before it is killed and fails.
const CHILD_WITHIN: Duration = Duration::from_secs(600);

#[tokio::test]
async fn the_file_download_hostile_and_tus_suites_pass_on_seaweedfs_in_both_download_modes() {
    // Already on S3: a child run (whose filters leave this test out anyway) or a whole run
    // pointed at a store by hand. Nothing to run again.
    if !matches!(backend(), Backend::Local) {
        return;
    }
    let Some(node) = require(seaweed::start().await) else {
        return;
    };
    for downloads in [Downloads::Direct, Downloads::Proxy] {
        let started = Instant::now();
        let run = run_suites(&node, downloads).await;
        let summary = run.summary().unwrap_or_default();
        let mode = format!("s3-{}", downloads.as_str());
        let passed = summary
            .strip_prefix("test result: ok. ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse::<u32>().ok());
        assert!(
            run.success && passed.is_some_and(|n| n > 0),
            "the suites failed on SeaweedFS with {mode} downloads ({}); their output:\n{}\n\
             {}\nweed's log ends:\n{}",
            run.status,
            run.stdout,
            run.stderr,
            node.log_tail()
        );
        // Straight to stderr, which libtest does not capture, so that `cargo test` shows it.
        let _ = writeln!(
            std::io::stderr().lock(),
            "on SeaweedFS, {mode} downloads: {summary} (child run {:.1?})",
            started.elapsed()
        );
    }
}

/// What a child run printed, and whether it passed.
struct ChildRun {
    success: bool,
    status: String,
    stdout: String,
    stderr: String,
}

impl ChildRun {
    /// libtest's `test result: …` line.
    fn summary(&self) -> Option<&str> {
        self.stdout
            .lines()
            .rev()
            .find(|line| line.starts_with("test result: "))
    }
}

/// Runs [`SUITES`] of this test executable on the node's bucket; killed after
/// [`CHILD_WITHIN`].
async fn run_suites(node: &SeaweedNode, downloads: Downloads) -> ChildRun {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("this test executable: {e}"));
    let backend = Backend::S3 {
        bucket: S3Bucket {
            endpoint: node.endpoint.clone(),
            bucket: node.bucket.clone(),
            access_key: node.access_key.clone(),
            secret_key: node.secret_key.clone(),
            region: node.region.clone(),
        },
        downloads,
    };
    let child = tokio::process::Command::new(&exe)
        .args(SUITES)
        // Never this test again, whatever the filters match.
        .args(["--skip", "on_seaweedfs::"])
        .envs(backend.env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let output = tokio::time::timeout(CHILD_WITHIN, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the {} run took over {CHILD_WITHIN:?}", downloads.as_str()))
        .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
    ChildRun {
        success: output.status.success(),
        status: output.status.to_string(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
