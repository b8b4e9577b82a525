//! A disk that fills up mid-upload (ENOSPC): 507 in the contract's shape, nothing left in
//! tmp/, and the service goes on serving. The storage directory is a small tmpfs mounted in a
//! private mount namespace of the service alone; the database stays outside it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;

use crate::harness::{
    Account, BINARY, Deployment, KIB, Ledger, MIB, TestFile, assert_error,
    assert_storage_consistent, form, poll_until, temp_files,
};
use crate::tools::{self, Missing};

/// The size of the tmpfs; uploads bigger than this cannot fit.
const TMPFS_SIZE: &str = "8m";

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|uids| uids.split_whitespace().next().map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// `command` (an `unshare`) made to run what follows `--` in a private mount namespace: in a
/// new user namespace too, mapped to root, when we are not root.
fn in_private_mount_namespace(command: &mut Command) -> &mut Command {
    if !running_as_root() {
        command.args(["--user", "--map-root-user"]);
    }
    command.args(["--mount", "--propagation", "private", "--"])
}

/// Can `unshare` mount a tmpfs in a private mount namespace here, as the service is run below?
fn private_tmpfs() -> Result<(), Missing> {
    let how = "it needs `unshare` from util-linux, and root or unprivileged user namespaces: \
               sysctl kernel.unprivileged_userns_clone=1 (Debian), \
               kernel.apparmor_restrict_unprivileged_userns=0 (Ubuntu), or a --privileged container";
    let missing = |what: String| Missing {
        what,
        how: how.to_owned(),
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut probe = Command::new("unshare");
    in_private_mount_namespace(&mut probe)
        .args(["sh", "-c", r#"mount -t tmpfs -o size=1m tmpfs "$1""#, "sh"])
        .arg(dir.path())
        .stdin(Stdio::null());
    match probe.output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(missing("`unshare` not found on PATH".to_owned()))
        }
        Err(e) => Err(missing(format!("`unshare` cannot be run ({e})"))),
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let reason = stderr
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty())
                .map_or_else(|| output.status.to_string(), str::to_owned);
            Err(missing(format!(
                "`unshare` cannot mount a tmpfs in a private mount namespace: {reason}"
            )))
        }
    }
}

/// The filesystem type mounted at `mount_point` as process `pid` sees it, if any.
fn mounted_type(pid: u32, mount_point: &Path) -> Option<String> {
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    let wanted = mount_point.to_string_lossy();
    // `id parent major:minor root mount-point options… - type source super-options`; the last
    // mount on a point is the one in effect.
    mountinfo
        .lines()
        .rev()
        .filter(|line| line.split_whitespace().nth(4) == Some(wanted.as_ref()))
        .filter_map(|line| line.split(" - ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_that_fills_the_disk_gets_507_leaves_no_temp_file_and_the_service_goes_on() {
    // Before any set-up: without a private tmpfs, the test skips (or fails when strict).
    if tools::require(private_tmpfs()).is_none() {
        return;
    }
    let deployment = Deployment::with_database_outside_storage();
    std::fs::create_dir_all(deployment.storage()).unwrap_or_else(|e| panic!("{e}"));
    let storage = deployment
        .storage()
        .canonicalize()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut command = deployment.command("unshare");
    in_private_mount_namespace(&mut command)
        .args(["sh", "-c"])
        .arg(format!(
            r#"mount -t tmpfs -o size={TMPFS_SIZE} tmpfs "$1" && shift && exec "$@""#
        ))
        .arg("sh")
        .arg(&storage)
        .arg(BINARY);
    let service = deployment.spawn(command).await.unwrap_or_else(|e| {
        panic!(
            "cannot run the service over a private {TMPFS_SIZE} tmpfs (the probe could mount \
             one): {e}\n{}",
            deployment.log_text()
        )
    });
    let mounted = mounted_type(service.pid(), &storage);
    assert_eq!(
        mounted.as_deref(),
        Some("tmpfs"),
        "the service does not see a tmpfs at {}",
        storage.display()
    );
    // The tmpfs exists only in the service's namespace; its root shows it to us.
    let inside = PathBuf::from(format!("/proc/{}/root", service.pid()))
        .join(storage.strip_prefix("/").unwrap_or(&storage));

    let alice = Account::sign_up(&service).await;
    let chat = alice.create_chat(&service, "disk full").await;
    let mut ledger = Ledger::default();
    ledger.add_chat(chat);
    let small = [TestFile::random("before.txt", 41, 64 * KIB)];
    let request = ledger.sent(chat, &small);
    let res = alice
        .upload(&service, chat, form(small.iter().map(TestFile::part)))
        .await
        .unwrap_or_else(|e| panic!("small upload: {e}"));
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "small upload on the tmpfs"
    );
    ledger.acknowledged(request, &res.json().await.unwrap_or_default());

    let big = [TestFile::random("too-big.bin", 42, 12 * MIB)];
    ledger.sent(chat, &big);
    let res = alice
        .upload(&service, chat, form(big.iter().map(TestFile::part)))
        .await
        .unwrap_or_else(|e| {
            panic!("the upload that fills the disk got no answer (expected 507): {e:?}")
        });
    let message = assert_error(res, StatusCode::INSUFFICIENT_STORAGE).await;
    println!("507 message: {message}");

    let tmp_inside = inside.clone();
    poll_until(
        "the failed upload's temp file is gone",
        Duration::from_secs(5),
        async || temp_files(&tmp_inside).is_empty().then_some(()),
    )
    .await;
    ledger.verify_exactly_acknowledged(&service, &alice).await;

    let after = [TestFile::random("after.txt", 43, 32 * KIB)];
    let request = ledger.sent(chat, &after);
    let res = alice
        .upload(&service, chat, form(after.iter().map(TestFile::part)))
        .await
        .unwrap_or_else(|e| panic!("upload after the disk filled: {e}"));
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "upload after the disk filled"
    );
    ledger.acknowledged(request, &res.json().await.unwrap_or_default());
    ledger.verify_exactly_acknowledged(&service, &alice).await;
    assert_storage_consistent(&inside, &deployment.rows());
    service.kill();
}
