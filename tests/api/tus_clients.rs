//! Real tus clients upload to chatfiles as they are, resuming after a lost connection: tuspy
//! (Python), tus-js-client under Node, and tus-js-client's browser bundle in headless Chromium on
//! a page of another local origin that sends the session cookie along (`withCredentials`).
//!
//! Each client talks to the server through a [`CuttingProxy`] (the server's `--public-url`, so
//! the upload URLs it hands out lead through the proxy too), which cuts the connection once,
//! halfway into the body of the sixth chunk's PATCH. The client then asks the server for the
//! offset (HEAD) and goes on from there; the test reads what the client sent (its scripts print
//! every request: method, `Upload-Offset`, the answer's status and `Upload-Offset`), checks that
//! it resumed from the offset the server reported after the cut, which kept the bytes that had
//! arrived of the cut PATCH, and that the file listed in the chat has the bytes that were sent.
//!
//! The clients' scripts are in `tests/tus_clients/`. What they need, `.ci/run` installs:
//! - tuspy: a Python with it, `CHATFILES_TEST_TUSPY_PYTHON`, else `target/tus-venv/bin/python`;
//! - tus-js-client: `npm ci --prefix tests/tus_clients` (or the directory with its node_modules
//!   in `CHATFILES_TEST_TUS_JS`), and `node` 20 or later on PATH for the Node test;
//! - Chromium for the browser test (see `crate::chromium`).
//!
//! Without one, its test skips with a `SKIPPED` line (fails under `CHATFILES_TEST_STRICT=1`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::web;
use parking_lot::Mutex;
use rand::RngCore;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::chromium::{self, between, unescape};
use crate::helpers::{self, PASSWORD, TestApp, TestUser, header, sha256};
use crate::tools::{self, Missing};

/// The clients' chunk size: small, so that an upload is many PATCHes.
const CHUNK: u64 = 256 * 1024;
/// Where the proxy cuts: after this many bytes from the client, halfway into the sixth chunk's
/// body (the requests before it, headers and all, are far under half a chunk).
const CUT_AFTER: u64 = 5 * CHUNK + CHUNK / 2;
/// The offset of the PATCH that the cut falls into.
const CUT_CHUNK_START: u64 = 5 * CHUNK;
/// The size of the files tuspy and Node send: 24 chunks.
const FILE_SIZE: usize = 6 << 20;
/// The browser's: 16 chunks.
const BROWSER_FILE_SIZE: usize = 4 << 20;
/// How long a client may take, in real time, before the test calls it a hang.
const CLIENT_DEADLINE: Duration = Duration::from_secs(120);
/// Every client declares this type; the server keeps a concrete declared type.
const FILE_TYPE: &str = "video/mp4";

/// The tuspy that `.ci/run` installs, and what it is looked for under.
const TUSPY_VERSION: &str = "1.1.0";
const TUSPY_ENV: &str = "CHATFILES_TEST_TUSPY_PYTHON";
/// The directory with tus-js-client's node_modules.
const TUS_JS_ENV: &str = "CHATFILES_TEST_TUS_JS";
const TUS_JS_HOW: &str = "npm ci --prefix tests/tus_clients, or set CHATFILES_TEST_TUS_JS to a \
                          directory whose node_modules has tus-js-client";

/// The page Chromium loads.
const PAGE: &str = include_str!("../tus_clients/page.html");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script(name: &str) -> PathBuf {
    repo().join("tests/tus_clients").join(name)
}

// ---------------------------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------------------------

/// A Python with tuspy: `CHATFILES_TEST_TUSPY_PYTHON` (`.ci/run` sets it), else the venv that
/// `.ci/run` makes, `target/tus-venv`.
fn tuspy_python() -> Result<PathBuf, Missing> {
    let (python, source) = match std::env::var_os(TUSPY_ENV) {
        Some(python) => (PathBuf::from(python), TUSPY_ENV.to_owned()),
        None => (
            repo().join("target/tus-venv/bin/python"),
            format!("{TUSPY_ENV} unset"),
        ),
    };
    let ready = std::process::Command::new(&python)
        .args(["-c", "import tusclient"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ready {
        return Ok(python);
    }
    Err(Missing {
        what: format!("no Python with tuspy at {} ({source})", python.display()),
        how: format!(
            "python3 -m venv target/tus-venv && target/tus-venv/bin/pip install \
             tuspy=={TUSPY_VERSION}, or set {TUSPY_ENV} to a Python with tuspy"
        ),
    })
}

/// The directory whose node_modules has tus-js-client: `CHATFILES_TEST_TUS_JS`, else
/// `tests/tus_clients` (where `npm ci --prefix tests/tus_clients` puts it).
fn tus_js_dir() -> Result<PathBuf, Missing> {
    let dir = std::env::var_os(TUS_JS_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("tests/tus_clients"));
    let manifest = dir.join("node_modules/tus-js-client/package.json");
    if manifest.is_file() {
        return Ok(dir);
    }
    Err(Missing {
        what: format!(
            "tus-js-client is not installed ({} is missing)",
            manifest.display()
        ),
        how: TUS_JS_HOW.to_owned(),
    })
}

/// `node` on PATH, version 20 or later.
fn node() -> Result<PathBuf, Missing> {
    let how = "apt-get install nodejs (20 or later), or put Node 20 on PATH";
    let node = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("node"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| Missing {
            what: "node not found on PATH".to_owned(),
            how: how.to_owned(),
        })?;
    let version = std::process::Command::new(&node)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let major = version
        .strip_prefix('v')
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    if major.is_some_and(|m| m >= 20) {
        return Ok(node);
    }
    Err(Missing {
        what: format!("{} is Node {version:?}, not 20 or later", node.display()),
        how: how.to_owned(),
    })
}

/// What a client ran into: its exit status and what it printed.
struct ClientRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn drain(pipe: Option<impl AsyncRead + Unpin + Send + 'static>) -> JoinHandle<String> {
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes).await;
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs a client to its end; one that is still running after [`CLIENT_DEADLINE`] is killed
/// (and waited for) and the test fails.
async fn run_client(mut command: tokio::process::Command, what: &str) -> ClientRun {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let waited = tokio::time::timeout(CLIENT_DEADLINE, child.wait()).await;
    let killed = waited.is_err();
    if killed {
        // Kills and waits.
        let _ = child.kill().await;
    }
    let stdout = stdout.await.unwrap_or_default();
    let stderr = stderr.await.unwrap_or_default();
    let status = match waited {
        Ok(status) => status.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => panic!(
            "{what} did not finish within {CLIENT_DEADLINE:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        ),
    };
    ClientRun {
        status,
        stdout,
        stderr,
    }
}

/// One HTTP request a client sent, as its script wrote it down.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    method: String,
    /// The request's `Upload-Offset`.
    offset: Option<u64>,
    /// `None`: no answer (the connection was lost).
    status: Option<u16>,
    /// The answer's `Upload-Offset`.
    result_offset: Option<u64>,
    /// What went wrong, when the client says (tuspy).
    #[serde(default)]
    error: Option<String>,
}

/// What a client's script reports: the upload's URL and every request it sent.
#[derive(Debug, Deserialize)]
struct Report {
    url: Option<String>,
    events: Vec<Event>,
}

impl Report {
    fn parse(json: &str, what: &str) -> Report {
        serde_json::from_str(json.trim())
            .unwrap_or_else(|e| panic!("{what} reported no transcript ({e}):\n{json}"))
    }

    /// The client's own report, read back from what the script printed (its last line).
    fn of(run: &ClientRun, what: &str) -> Report {
        assert!(
            run.status.success(),
            "{what} failed ({})\nstdout:\n{}\nstderr:\n{}",
            run.status,
            run.stdout,
            run.stderr
        );
        let line = run.stdout.lines().next_back().unwrap_or_default();
        Report::parse(line, what)
    }

    fn transcript(&self) -> String {
        self.events
            .iter()
            .map(|e| {
                let offset = e.offset.map_or("-".to_owned(), |o| o.to_string());
                let status = e.status.map_or("no answer".to_owned(), |s| s.to_string());
                let result = e.result_offset.map_or("-".to_owned(), |o| o.to_string());
                let error = e.error.as_deref().unwrap_or_default();
                format!("  {} @{offset} -> {status} @{result} {error}\n", e.method)
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------------------

/// How much the proxy has passed on from clients, and whether it has cut yet.
#[derive(Default)]
struct Traffic {
    forwarded: u64,
    cut: bool,
}

impl Traffic {
    /// Of `n` more bytes from a client, how many to pass on, and whether to cut the connection
    /// after them: once, when the total reaches `cut_after`.
    fn admit(&mut self, n: usize, cut_after: u64) -> (usize, bool) {
        let more = n as u64;
        if self.cut || self.forwarded + more < cut_after {
            self.forwarded += more;
            return (n, false);
        }
        let pass = cut_after - self.forwarded;
        self.forwarded = cut_after;
        self.cut = true;
        (usize::try_from(pass).unwrap_or(n), true)
    }
}

/// A TCP proxy on 127.0.0.1 in front of the server that passes everything through both ways,
/// except that once, when `cut_after` bytes from clients (all connections together) have gone
/// through, it drops both sides of the connection carrying them: to the client the connection
/// is reset in the middle of its request; the server sees its body end early.
struct CuttingProxy {
    /// `http://127.0.0.1:<port>`
    address: String,
    traffic: Arc<Mutex<Traffic>>,
    task: Option<JoinHandle<()>>,
}

impl CuttingProxy {
    /// Listens first, so that the server's public URL can name the proxy.
    async fn bind() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind the proxy: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the proxy's address: {e}"));
        (listener, format!("http://{addr}"))
    }

    fn start(listener: TcpListener, address: String, target: SocketAddr) -> CuttingProxy {
        let traffic = Arc::new(Mutex::new(Traffic::default()));
        let task = tokio::spawn(accept(listener, target, CUT_AFTER, traffic.clone()));
        CuttingProxy {
            address,
            traffic,
            task: Some(task),
        }
    }

    fn was_cut(&self) -> bool {
        self.traffic.lock().cut
    }

    /// Ends the proxy and every connection it carries (they are tasks of its own task).
    async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    cut_after: u64,
    traffic: Arc<Mutex<Traffic>>,
) {
    // Dropped with this task: every connection ends with the proxy.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { return };
                connections.spawn(relay(client, target, cut_after, traffic.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn relay(
    client: TcpStream,
    target: SocketAddr,
    cut_after: u64,
    traffic: Arc<Mutex<Traffic>>,
) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Client to server; `true` when the connection is to be dropped (cut, or broken).
    let upstream = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) => {
                    // The client is done sending: so are we, and the answer still comes back.
                    let _ = server_write.shutdown().await;
                    return false;
                }
                Ok(n) => n,
                Err(_) => return true,
            };
            let (pass, cut) = traffic.lock().admit(n, cut_after);
            if server_write.write_all(&buffer[..pass]).await.is_err() || cut {
                return true;
            }
        }
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::pin!(upstream);
    tokio::pin!(downstream);
    tokio::select! {
        drop_now = &mut upstream => {
            if !drop_now {
                downstream.await;
            }
        }
        () = &mut downstream => {}
    }
    // Both sides are dropped here.
}

// ---------------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------------

/// A server whose public URL is a cutting proxy in front of it, and a user.
struct Setup {
    app: TestApp,
    user: TestUser,
    proxy: CuttingProxy,
}

async fn set_up(cors_origins: Vec<String>) -> Setup {
    let (listener, address) = CuttingProxy::bind().await;
    let public_url = address.clone();
    let app = TestApp::spawn_with(move |config| {
        config.public_url = Some(
            public_url
                .parse()
                .unwrap_or_else(|e| panic!("{public_url}: {e}")),
        );
        config.max_file_size = 16 << 20;
        config.cors_origins = cors_origins;
    })
    .await;
    let target: SocketAddr = app
        .address
        .trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", app.address));
    let proxy = CuttingProxy::start(listener, address, target);
    let user = app.user().await;
    Setup { app, user, proxy }
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

fn is_success(event: &Event) -> bool {
    event.status.is_some_and(|s| (200..300).contains(&s))
}

/// Checks a client's requests: it created the upload, sent chunk after chunk until the cut
/// (the sixth chunk's PATCH, which got no answer, or a 409 when the browser sent it again on
/// its own), then asked the server for the offset (HEAD) and went on from exactly there.
/// Returns the offset it resumed from.
///
/// Whether the server kept the part of the cut PATCH that arrived depends on timing (a request
/// whose connection dies before its handler starts reading is dropped whole, and those bytes
/// were never acknowledged); `tus::a_patch_cut_off_by_the_client_keeps_the_bytes_that_arrived`
/// pins that down. So here the client may resume anywhere from the cut chunk's start, and a
/// browser that re-sent the cut PATCH on its own, unseen by the page, may not notice the cut
/// at all (`None`).
fn check_resumption(report: &Report, size: u64, what: &str) -> Option<u64> {
    let events = &report.events;
    let transcript = report.transcript();
    let first = events
        .first()
        .unwrap_or_else(|| panic!("{what} sent nothing"));
    assert!(
        first.method == "POST" && first.status == Some(201),
        "{what} did not start with a creation:\n{transcript}"
    );
    for event in events
        .iter()
        .filter(|e| e.method == "PATCH" && is_success(e))
    {
        let offset = event.offset.unwrap_or_default();
        assert_eq!(
            event.result_offset,
            Some(offset + CHUNK.min(size - offset)),
            "a PATCH at {offset} was not acknowledged whole:\n{transcript}"
        );
    }
    let lost = events.iter().filter(|e| e.status.is_none()).count();
    assert!(
        lost <= 1,
        "the proxy cut once, yet {what} lost {lost} requests:\n{transcript}"
    );
    for event in events.iter().filter(|e| !is_success(e)) {
        assert!(
            event.status.is_none() || event.status == Some(409),
            "{what} got an error that no cut explains:\n{transcript}"
        );
    }

    let last = events.last().unwrap_or(first);
    assert!(
        last.method == "PATCH" && is_success(last) && last.result_offset == Some(size),
        "{what} did not end with the last chunk:\n{transcript}"
    );
    let Some(cut) = events.iter().position(|e| !is_success(e)) else {
        assert!(
            what.contains("Chromium"),
            "{what} never noticed the cut:\n{transcript}"
        );
        return None;
    };
    let interrupted = &events[cut];
    assert_eq!(
        (interrupted.method.as_str(), interrupted.offset),
        ("PATCH", Some(CUT_CHUNK_START)),
        "the cut did not fall into the PATCH of the sixth chunk:\n{transcript}"
    );
    let resumed = events[cut..]
        .iter()
        .position(|e| e.method == "PATCH" && is_success(e))
        .map(|i| cut + i)
        .unwrap_or_else(|| panic!("{what} never resumed:\n{transcript}"));
    let asked = &events[resumed - 1];
    assert!(
        asked.method == "HEAD" && asked.status == Some(200),
        "{what} resumed without asking the server for the offset:\n{transcript}"
    );
    let from = asked
        .result_offset
        .unwrap_or_else(|| panic!("a HEAD without Upload-Offset:\n{transcript}"));
    assert_eq!(
        events[resumed].offset,
        Some(from),
        "{what} did not resume from the offset the server reported:\n{transcript}"
    );
    assert!(
        (CUT_CHUNK_START..CUT_CHUNK_START + CHUNK).contains(&from),
        "after the cut the server reported {from}, outside the cut chunk (from \
         {CUT_CHUNK_START}):\n{transcript}"
    );
    Some(from)
}

/// The checks after a client's upload: the proxy cut, the client resumed right
/// ([`check_resumption`]), the upload URL leads through the public URL, the upload is complete
/// and became the chat's only file, with the name and type sent and the very bytes.
async fn check_upload(
    setup: &Setup,
    chat: i64,
    report: &Report,
    payload: &[u8],
    name: &str,
    what: &str,
) {
    let Setup { app, user, proxy } = setup;
    assert!(proxy.was_cut(), "the proxy never cut the connection");
    let size = payload.len() as u64;
    let from = check_resumption(report, size, what);
    // Shown with --nocapture, or when the test fails.
    let resumed = from.map_or_else(
        || "re-sent by the browser itself".to_owned(),
        |from| format!("resumed from {from}"),
    );
    eprintln!(
        "{what}: cut in the PATCH at {CUT_CHUNK_START}, {resumed}; its requests:\n{}",
        report.transcript()
    );

    let url = report
        .url
        .clone()
        .unwrap_or_else(|| panic!("{what} reported no upload URL"));
    let prefix = format!(
        "{}/api/users/{}/chats/{chat}/uploads/",
        proxy.address, user.id
    );
    let id = url
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("the upload URL {url} is not under {prefix}"));
    assert!(
        id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "upload id {id:?}"
    );

    let head = user
        .client
        .head(app.rebase(&url))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap_or_else(|e| panic!("HEAD {url}: {e}"));
    assert_eq!(head.status(), StatusCode::OK, "HEAD {url}");
    assert_eq!(
        header(&head, "upload-offset"),
        size.to_string(),
        "HEAD {url}"
    );
    assert_eq!(
        header(&head, "upload-length"),
        size.to_string(),
        "HEAD {url}"
    );

    let got = user
        .client
        .get(app.rebase(&url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(got.status(), StatusCode::OK, "GET {url}");
    let got: Value = got.json().await.unwrap_or_default();

    let listing = app.list_files(user, chat).await;
    assert_eq!(listing.status(), StatusCode::OK);
    let listing: Value = listing.json().await.unwrap_or_default();
    let files = listing["chatFiles"].as_array().cloned().unwrap_or_default();
    assert_eq!(files.len(), 1, "the chat's files: {listing}");
    let file = &files[0];
    assert_eq!(file["id"], got["chatFile"]["id"], "{file} vs {got}");
    assert_eq!(file["name"], name, "{file}");
    assert_eq!(file["type"], FILE_TYPE, "{file}");
    assert_eq!(file["size"], size, "{file}");

    let link = file["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no url in {file}"));
    let res = helpers::client()
        .get(link)
        .send()
        .await
        .unwrap_or_else(|e| panic!("download {link}: {e}"));
    assert_eq!(res.status(), StatusCode::OK, "download {link}");
    let body = res
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("download {link}: {e}"));
    assert_eq!(body.len(), payload.len(), "downloaded size");
    assert_eq!(sha256(&body), sha256(payload), "SHA-256 of the download");
}

/// Writes `payload` to a file for a client to read.
fn payload_file(payload: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("payload.bin");
    std::fs::write(&path, payload).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (dir, path)
}

/// The arguments both client scripts take: endpoint, cookie header, file, name, type, chunk size.
async fn script_args(setup: &Setup, chat: i64, file: &Path, name: &str) -> Vec<String> {
    let Setup { app, user, proxy } = setup;
    let cookie = app.session_cookie(user).await;
    vec![
        format!(
            "{}/api/users/{}/chats/{chat}/uploads",
            proxy.address, user.id
        ),
        format!("neptun-session={cookie}"),
        file.display().to_string(),
        name.to_owned(),
        FILE_TYPE.to_owned(),
        CHUNK.to_string(),
    ]
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tuspy_resumes_an_upload_cut_off_in_the_middle_of_a_patch() {
    // Before any set-up: without tuspy, the test skips (or fails when strict).
    let Some(python) = tools::require(tuspy_python()) else {
        return;
    };
    let setup = set_up(Vec::new()).await;
    let chat = setup.app.chat(&setup.user, "tuspy").await;
    let payload = random_bytes(FILE_SIZE);
    let (_dir, file) = payload_file(&payload);
    let name = "café clip (tuspy).mp4";

    let mut command = tokio::process::Command::new(&python);
    command
        .arg(script("tuspy_upload.py"))
        .args(script_args(&setup, chat, &file, name).await);
    let run = run_client(command, "tuspy").await;
    let report = Report::of(&run, "tuspy");
    check_upload(&setup, chat, &report, &payload, name, "tuspy").await;
    setup.proxy.stop().await;
}

#[tokio::test]
async fn tus_js_client_under_node_resumes_an_upload_cut_off_in_the_middle_of_a_patch() {
    // Before any set-up: without Node or tus-js-client, the test skips (or fails when strict).
    let Some(node) = tools::require(node()) else {
        return;
    };
    let Some(modules) = tools::require(tus_js_dir()) else {
        return;
    };
    let setup = set_up(Vec::new()).await;
    let chat = setup.app.chat(&setup.user, "tus-js-client").await;
    let payload = random_bytes(FILE_SIZE);
    let (_dir, file) = payload_file(&payload);
    let name = "café clip (tus-js-client, Node).mp4";

    let mut command = tokio::process::Command::new(&node);
    command
        .arg(script("tus_js_upload.js"))
        .args(script_args(&setup, chat, &file, name).await)
        .env("NODE_PATH", modules.join("node_modules"));
    let run = run_client(command, "tus-js-client under Node").await;
    let report = Report::of(&run, "tus-js-client under Node");
    check_upload(
        &setup,
        chat,
        &report,
        &payload,
        name,
        "tus-js-client under Node",
    )
    .await;
    setup.proxy.stop().await;
}

/// A second local origin serving the page, tus-js-client's browser bundle and the file to
/// upload: `(its origin, a handle to stop it)`.
fn serve_page(bundle: Vec<u8>, payload: Vec<u8>) -> (String, ServerHandle) {
    chromium::serve_origin(vec![
        (
            "/",
            "text/html; charset=utf-8",
            web::Bytes::from_static(PAGE.as_bytes()),
        ),
        (
            "/tus.min.js",
            "text/javascript; charset=utf-8",
            web::Bytes::from(bundle),
        ),
        (
            "/payload.bin",
            "application/octet-stream",
            web::Bytes::from(payload),
        ),
    ])
}

/// The text of the page's `<tag id="id">`.
fn dom_text(dom: &str, tag: &str, id: &str) -> String {
    between(dom, &format!("<{tag} id=\"{id}\">"), &format!("</{tag}>"))
        .map(unescape)
        .unwrap_or_else(|| panic!("no #{id} in the DOM:\n{dom}"))
}

#[tokio::test]
async fn tus_js_client_in_headless_chromium_on_another_origin_resumes_an_upload_with_credentials() {
    // Before any set-up: without the browser or tus-js-client, the test skips (or fails when
    // strict).
    let Some(binary) = tools::require(chromium::chromium()) else {
        return;
    };
    let Some(modules) = tools::require(tus_js_dir()) else {
        return;
    };
    let bundle_path = modules.join("node_modules/tus-js-client/dist/tus.min.js");
    let bundle = std::fs::read(&bundle_path)
        .unwrap_or_else(|e| panic!("tus-js-client's bundle {}: {e}", bundle_path.display()));
    let payload = random_bytes(BROWSER_FILE_SIZE);
    let (page_origin, page_server) = serve_page(bundle, payload.clone());
    // Same site as the page (127.0.0.1, another port), so its SameSite=Lax cookie goes along.
    let setup = set_up(vec![page_origin.clone()]).await;
    let name = "café clip (tus-js-client, Chromium).mp4";

    let page = reqwest::Url::parse_with_params(
        &format!("{page_origin}/"),
        [
            ("api", setup.proxy.address.as_str()),
            ("email", setup.user.email.as_str()),
            ("password", PASSWORD),
            ("filename", name),
            ("filetype", FILE_TYPE),
            ("chunk", &CHUNK.to_string()),
        ],
    )
    .unwrap_or_else(|e| panic!("page URL: {e}"));
    let dom = chromium::dump_dom(&binary, page.as_str()).await;
    page_server.stop(true).await;

    let status = dom_text(&dom, "p", "status");
    let reported = dom_text(&dom, "pre", "report");
    if status != "done" {
        let requests = serde_json::from_str::<Report>(&reported)
            .map_or_else(|_| reported.clone(), |r| r.transcript());
        panic!("the page did not finish: {status}\nits requests:\n{requests}\n{dom}");
    }
    let report = Report::parse(&reported, "the page");
    let chat: i64 = dom_text(&dom, "p", "chat")
        .parse()
        .unwrap_or_else(|e| panic!("the page's chat id: {e}\n{dom}"));
    check_upload(
        &setup,
        chat,
        &report,
        &payload,
        name,
        "tus-js-client in Chromium",
    )
    .await;
    setup.proxy.stop().await;
}

#[test]
fn the_proxy_cuts_once_at_the_byte_it_is_told() {
    let mut traffic = Traffic::default();
    assert_eq!(traffic.admit(60, 100), (60, false));
    assert_eq!(traffic.admit(60, 100), (40, true));
    assert_eq!(traffic.admit(60, 100), (60, false), "only once");
    let mut exact = Traffic::default();
    assert_eq!(exact.admit(100, 100), (100, true));
}
