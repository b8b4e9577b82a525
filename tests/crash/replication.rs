//! The database replicated with Litestream by `deploy/entrypoint`, all real: chatfiles, Litestream
//! 0.5 and a SeaweedFS node whose bucket holds both the files' objects (under `crash/`) and the
//! replica (under `db/`). A machine is lost (every process SIGKILLed, the storage directory
//! deleted) and the entrypoint starts again on an empty disk: the database comes back from the
//! replica with every acknowledged file, user and signed URL. And the setups that could not
//! recover are refused before anything runs.
//!
//! The entrypoint runs in a process group of its own (see [`Group`]), killed as a whole.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chatfiles::storage::Downloads;
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{
    Account, BINARY, Deployment, KIB, Ledger, MIB, Service, TestFile, assert_error, form, sha256,
};
use crate::litestream;
use crate::seaweed::{self, SeaweedNode};
use crate::tools::require;

const ENTRYPOINT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/entrypoint");
/// Where in the node's bucket the replica lives (the objects are under `crash/`).
const REPLICA_PATH: &str = "db";
/// How long the replica may take to hold every acknowledged write. Litestream syncs the WAL and
/// uploads every second (its default `sync-interval`); on this machine it takes 1–3 s.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(60);
/// How long a start that must be refused may take to exit.
const REFUSED_WITHIN: Duration = Duration::from_secs(30);

/// A process group for the entrypoint and what it starts (Litestream, and chatfiles under it),
/// led by an idle `cat` that holds the group's ID: known before the entrypoint runs, and valid
/// until the group is killed, whatever becomes of the entrypoint (the harness only kills the
/// process it started, and only that one on a start that times out). Killed when dropped.
struct Group {
    leader: Option<Child>,
}

impl Group {
    fn new() -> Self {
        let leader = Command::new("cat")
            .stdin(Stdio::piped()) // never written to: cat waits for input until killed
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start cat to lead a process group: {e}"));
        Self {
            leader: Some(leader),
        }
    }

    fn id(&self) -> i32 {
        let leader = self.leader.as_ref().expect("the group is not killed yet");
        i32::try_from(leader.id()).expect("a PID fits in pid_t")
    }

    /// `command`, to be started in this group.
    fn adopt<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        command.process_group(self.id())
    }

    /// SIGKILL to every process of the group at once, as when the machine dies.
    fn kill(&mut self) {
        let Some(mut leader) = self.leader.take() else {
            return;
        };
        // Never 0 or negative: `kill(0, …)` would signal our own group. The leader is not reaped
        // yet, so the ID is still the group's.
        if let Some(group) = libc::pid_t::try_from(leader.id()).ok().filter(|g| *g > 0) {
            // SAFETY: `kill` only sends a signal, to the group our own child leads.
            let _ = unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        let _ = leader.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The entrypoint as a replicated deployment runs it: the harness's service environment (the
/// secret, the bucket's settings and credentials) with the replica in the same bucket.
fn entrypoint(deployment: &Deployment, litestream: &Path, replica: &str) -> Command {
    let mut command = deployment.command(ENTRYPOINT);
    command
        .env("CHATFILES_BIN", BINARY)
        .env("CHATFILES_LITESTREAM_BIN", litestream)
        .env("CHATFILES_REPLICA_URL", replica);
    // The harness drops every AWS_* variable. A CA bundle goes back in (this machine's, else the
    // system's), as a host may have one, which Litestream cannot take: the entrypoint must cope.
    let bundle = std::env::var_os("AWS_CA_BUNDLE")
        .filter(|b| !b.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            let system = PathBuf::from("/etc/ssl/certs/ca-certificates.crt");
            system.is_file().then_some(system)
        });
    if let Some(bundle) = bundle {
        command.env("AWS_CA_BUNDLE", bundle);
    }
    command
}

/// Starts `command` in a new group and waits for chatfiles to listen.
async fn start(deployment: &Deployment, mut command: Command) -> (Group, Service) {
    let group = Group::new();
    group.adopt(&mut command);
    let service = deployment
        .spawn(command)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", deployment.log_text()));
    (group, service)
}

/// Kills the group and reaps the process the harness started.
fn kill(mut group: Group, service: Service) {
    group.kill();
    service.kill();
}

fn replica_url(node: &SeaweedNode) -> String {
    format!("s3://{}/{REPLICA_PATH}", node.bucket)
}

/// What the service's database says, read from a database file: each file row's (object key,
/// size, SHA-256), sorted, and the users' e-mail addresses.
#[derive(Debug, PartialEq)]
struct Contents {
    files: Vec<(String, u64, String)>,
    users: BTreeSet<String>,
}

fn contents(path: &Path) -> rusqlite::Result<Contents> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let mut files = conn
        .prepare("SELECT object_key, size, sha256 FROM chat_conversation_file")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    files.sort();
    let users = conn
        .prepare("SELECT primary_email FROM neptun_user")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<BTreeSet<String>, _>>()?;
    Ok(Contents { files, users })
}

/// Polls until a restore of the replica (`litestream restore -o`, into a scratch file, as a new
/// machine would restore it) holds exactly `expected`; panics after `CATCH_UP_WITHIN`. Returns
/// how many restores it took.
async fn wait_for_replica(litestream: &Path, node: &SeaweedNode, expected: &Contents) -> usize {
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    // The URL form names the endpoint and the addressing itself: an independent reader of the
    // replica, not the entrypoint's configuration.
    let url = format!(
        "{}?endpoint={}&region={}&forcePathStyle=true",
        replica_url(node),
        node.endpoint,
        node.region
    );
    let deadline = Instant::now() + CATCH_UP_WITHIN;
    for attempt in 1.. {
        let restored = scratch.path().join(format!("restore-{attempt}.db"));
        let output = litestream::command(litestream)
            .arg("restore")
            .arg("-o")
            .arg(&restored)
            .arg(&url)
            .env("AWS_ACCESS_KEY_ID", &node.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &node.secret_key)
            .stdin(Stdio::null())
            .output();
        let output = output.unwrap_or_else(|e| panic!("cannot run {}: {e}", litestream.display()));
        let last = if output.status.success() {
            match contents(&restored) {
                Ok(found) if found == *expected => return attempt,
                Ok(found) => format!("the restore holds {found:?}"),
                Err(err) => format!("the restore cannot be read: {err}"),
            }
        } else {
            format!(
                "litestream restore exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
        };
        assert!(
            Instant::now() < deadline,
            "the replica did not catch up within {CATCH_UP_WITHIN:?}: {last}; expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    unreachable!("the loop returns or panics")
}

/// Uploads `files` to `chat` in one request and records its 201 in `ledger`; returns the 201's
/// `chatFiles`.
async fn upload(
    service: &Service,
    account: &Account,
    ledger: &mut Ledger,
    chat: i64,
    files: &[TestFile],
) -> Vec<Value> {
    let request = ledger.sent(chat, files);
    let res = account
        .upload(service, chat, form(files.iter().map(TestFile::part)))
        .await
        .unwrap_or_else(|e| panic!("upload: {e}"));
    assert_eq!(res.status(), StatusCode::CREATED, "upload failed");
    let body: Value = res
        .json()
        .await
        .unwrap_or_else(|e| panic!("the 201 is not JSON: {e}"));
    ledger.acknowledged(request, &body);
    body["chatFiles"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_machine_comes_back_from_the_replica_on_an_empty_disk() {
    let Some(litestream) = require(litestream::find_litestream()) else {
        return;
    };
    let Some(node) = require(seaweed::start().await) else {
        return;
    };
    let began = Instant::now();
    let deployment = Deployment::on_s3(&node, Downloads::Proxy);
    let replica = replica_url(&node);

    // First start: the disk and the replica are empty; the restore finds nothing to restore.
    let (group, service) = start(&deployment, entrypoint(&deployment, &litestream, &replica)).await;
    let started = began.elapsed();
    let mut accounts = [
        Account::sign_up(&service).await,
        Account::sign_up(&service).await,
    ];
    let mut ledgers = [Ledger::default(), Ledger::default()];
    // Each account's chats, and every file's SHA-256 by name.
    let mut chats = [Vec::new(), Vec::new()];
    let mut sha = BTreeMap::new();
    let mut seed = 0;
    let mut doomed = None;
    for (n, (account, ledger)) in accounts.iter().zip(&mut ledgers).enumerate() {
        for c in 0..2 {
            let chat = account.create_chat(&service, &format!("chat {c}")).await;
            ledger.add_chat(chat);
            chats[n].push(chat);
            for sizes in [&[3 * KIB][..], &[200 * KIB, MIB + 17][..]] {
                let files: Vec<TestFile> = sizes
                    .iter()
                    .map(|&size| {
                        seed += 1;
                        TestFile::random(format!("user{n}-chat{c}-{seed}.bin"), seed, size)
                    })
                    .collect();
                sha.extend(files.iter().map(|f| (f.name.clone(), f.sha256())));
                upload(&service, account, ledger, chat, &files).await;
            }
            if doomed.is_none() {
                // Deleted again: the replica must not bring it back.
                let file = TestFile::random("doomed.bin", 1000, 10 * KIB);
                let created = upload(&service, account, ledger, chat, &[file]).await;
                let id = created[0]["id"]
                    .as_i64()
                    .expect("the 201 gives the file's id");
                let url = created[0]["url"].as_str().expect("a url").to_owned();
                let res = account
                    .client
                    .delete(format!("{}/{id}", account.files_url(&service, chat)))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("delete: {e}"));
                assert_eq!(res.status(), StatusCode::NO_CONTENT, "delete failed");
                ledger.deleted("doomed.bin");
                doomed = Some(url);
            }
        }
    }
    let doomed = doomed.expect("a file was deleted");
    // The listings' signed URLs as handed out before the loss.
    let mut old_urls = BTreeMap::new();
    for ((account, ledger), chats) in accounts.iter().zip(&mut ledgers).zip(&chats) {
        ledger.verify_exactly_acknowledged(&service, account).await;
        for &chat in chats {
            for entry in account.list(&service, chat).await {
                let name = entry["name"].as_str().expect("a name").to_owned();
                let url = entry["url"].as_str().expect("a url").to_owned();
                old_urls.insert(name, url);
            }
        }
    }
    assert_eq!(
        old_urls.len(),
        sha.len(),
        "every file is listed: {old_urls:?}"
    );
    let uploaded = began.elapsed();

    // The service is idle: what its database holds now is what the replica must come to hold.
    let expected = contents(&deployment.database())
        .unwrap_or_else(|e| panic!("reading the live database: {e}"));
    assert_eq!(expected.files.len(), sha.len(), "{expected:?}");
    assert_eq!(expected.users.len(), accounts.len(), "{expected:?}");
    let restores = wait_for_replica(&litestream, &node, &expected).await;
    let caught_up = began.elapsed();

    // The machine is lost: every process at once, then the disk.
    let old_cookies: Vec<reqwest::Client> = accounts.iter().map(|a| a.client.clone()).collect();
    kill(group, service);
    std::fs::remove_dir_all(deployment.storage())
        .unwrap_or_else(|e| panic!("removing {}: {e}", deployment.storage().display()));

    // A new machine: the same settings, an empty disk.
    let (group, service) = start(&deployment, entrypoint(&deployment, &litestream, &replica)).await;
    let restored = began.elapsed();
    let said_restored = |run: usize| {
        let said = format!("[run {run} err] chatfiles entrypoint: restored ");
        deployment.log_text().lines().any(|l| l.starts_with(&said))
    };
    assert!(
        !said_restored(1) && said_restored(2),
        "the entrypoint says it restored the database on the second start only"
    );
    // Sessions are rows of the database: a cookie from before the loss still works.
    for ((account, cookie), chats) in accounts.iter().zip(&old_cookies).zip(&chats) {
        let res = cookie
            .get(account.files_url(&service, chats[0]))
            .send()
            .await
            .unwrap_or_else(|e| panic!("a listing with the old cookie: {e}"));
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "a listing with the cookie from before"
        );
    }
    // Every user logs in with their password and finds every acknowledged file, with its bytes.
    for (account, ledger) in accounts.iter_mut().zip(&mut ledgers) {
        account.log_in(&service).await;
        ledger.verify_exactly_acknowledged(&service, account).await;
    }
    // The URLs handed out before the loss still give the bytes (at the new address: the port
    // is another, the path and signature are the same).
    for (name, url) in &old_urls {
        let res = service.download(&service.rebase(url)).await;
        assert_eq!(res.status(), StatusCode::OK, "the old URL of {name}");
        let bytes = res.bytes().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(sha256(&bytes), sha[name], "{name} through its old URL");
    }
    assert_error(
        service.download(&service.rebase(&doomed)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    // The bucket holds exactly the restored rows' objects (the replica is outside the prefix).
    deployment.assert_consistent().await;
    kill(group, service);
    deployment.assert_check_passes();
    println!(
        "started in {started:?}; uploaded by {uploaded:?}; the replica caught up by \
         {caught_up:?} ({restores} restores); restored and listening by {restored:?}; done in \
         {:?}",
        began.elapsed()
    );
}

/// Runs `command` in a group of its own and waits (bounded) for it to exit; a command still
/// running after `REFUSED_WITHIN` is killed and fails the test.
async fn run_refused(mut command: Command) -> Output {
    let mut group = Group::new();
    group.adopt(&mut command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let deadline = Instant::now() + REFUSED_WITHIN;
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let exited = matches!(child.try_wait(), Ok(Some(_)));
    group.kill();
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {command:?}: {e}"));
    assert!(
        exited,
        "{command:?} still ran after {REFUSED_WITHIN:?} (it should have refused to start)\n\
         stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    output
}

/// Asserts `output` is a refusal: exit status 2 and one line on stderr; returns that line.
fn refusal(what: &str, output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        output.status.code() == Some(2) && lines.len() == 1,
        "{what}: expected exit status 2 and one line on stderr, got {}\nstdout:\n{}\nstderr:\n{stderr}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
    );
    lines[0].to_owned()
}

/// A replica without CHATFILES_SECRET could not recover (a generated secret.key is not
/// replicated, so a restored node would sign with another secret): chatfiles refuses it in one
/// line, and so does the entrypoint, before anything is restored or replicated (Litestream is
/// not needed to find that out, nor an object store: none is reached).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_chatfiles_secret_is_refused_in_one_line() {
    let deployment = Deployment::create();
    let runs = [
        ("chatfiles", BINARY, None),
        ("the entrypoint", ENTRYPOINT, None),
        (
            "the entrypoint, CHATFILES_SECRET blank",
            ENTRYPOINT,
            Some("  "),
        ),
    ];
    for (what, program, secret) in runs {
        let mut command = deployment.command(program);
        command
            .env("CHATFILES_BIN", BINARY)
            .env("CHATFILES_LITESTREAM_BIN", "/nonexistent/litestream")
            .env("CHATFILES_REPLICA_URL", "s3://chatfiles-replica/db")
            .env_remove("CHATFILES_SECRET");
        if let Some(secret) = secret {
            command.env("CHATFILES_SECRET", secret);
        }
        let line = refusal(what, &run_refused(command).await);
        assert!(
            line.contains("CHATFILES_SECRET") && line.to_lowercase().contains("replica"),
            "{what}: the line does not name CHATFILES_SECRET and the replica: {line}"
        );
        assert!(
            !deployment.storage().exists(),
            "{what}: the storage directory was created before the refusal"
        );
    }
}

/// The entrypoint refuses a replica URL it cannot hand to Litestream, in one line naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_entrypoint_refuses_a_replica_url_that_is_not_s3_bucket_and_path() {
    let deployment = Deployment::create();
    for url in [
        "s3://chatfiles-replica",
        "s3://chatfiles-replica/",
        "s3://chatfiles-replica///",
        "https://chatfiles-replica/db",
        "s3://Chatfiles_Replica/db",
        "s3://ab/db",
        "s3://chatfiles-replica/a//b",
        "s3://chatfiles-replica/../db",
        "s3://chatfiles-replica/a b",
    ] {
        let mut command = deployment.command(ENTRYPOINT);
        command
            .env("CHATFILES_BIN", BINARY)
            .env("CHATFILES_LITESTREAM_BIN", "/nonexistent/litestream")
            .env("CHATFILES_REPLICA_URL", url);
        let line = refusal(url, &run_refused(command).await);
        assert!(
            line.contains(&format!("CHATFILES_REPLICA_URL={url}")),
            "{url}: the line does not name the URL: {line}"
        );
        assert!(!deployment.storage().exists(), "{url}: chatfiles ran");
    }
}

/// Without CHATFILES_REPLICA_URL the entrypoint is chatfiles alone: no Litestream is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_replica_the_entrypoint_runs_chatfiles_alone() {
    let deployment = Deployment::create();
    let mut command = deployment.command(ENTRYPOINT);
    command
        .env("CHATFILES_BIN", BINARY)
        .env("CHATFILES_LITESTREAM_BIN", "/nonexistent/litestream");
    let (group, service) = start(&deployment, command).await;
    let res = service.download(&service.url("/health")).await;
    assert_eq!(res.status(), StatusCode::OK, "/health");
    kill(group, service);
    let log = deployment.log_text();
    assert!(!log.contains("litestream"), "Litestream ran:\n{log}");
}

/// A replica with the files' bytes on the local disk can recover the rows but not the bytes:
/// chatfiles starts, with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_local_object_storage_is_warned_about() {
    let deployment = Deployment::create();
    let mut command = deployment.command(BINARY);
    command.env("CHATFILES_REPLICA_URL", "s3://chatfiles-replica/db");
    let (group, service) = start(&deployment, command).await;
    kill(group, service);
    let log = deployment.log_text();
    let warning = log
        .lines()
        .find(|line| line.contains("WARN") && line.contains("replica"));
    assert!(
        warning.is_some(),
        "no warning about the replica with local object storage:\n{log}"
    );
}
