//! Runs the real `chatfiles` binary as a child process over a storage directory that outlives
//! it, kills it with SIGKILL, and checks what a crash may and may not leave behind: on the local
//! disk, or in an S3 bucket of a SeaweedFS node (`Deployment::on_s3`).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatfiles::storage::{Downloads, S3Credentials, S3Settings, S3Store, s3::PROBE_OBJECT};
use parking_lot::Mutex;
use rand::{RngCore, SeedableRng};
use reqwest::multipart::{Form, Part};
use reqwest::{Body, Client, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::seaweed::SeaweedNode;

/// The binary under test, built with the `failpoints` feature.
pub const BINARY: &str = env!("CARGO_BIN_EXE_chatfiles");
pub const PASSWORD: &str = "correct horse battery";
/// The same master secret for every start, so sessions and signed URLs survive a restart.
const SECRET: &str = "5c0ffee15bad5eed0ddba11c0c0a0b0e5c0ffee15bad5eed0ddba11c0c0a0b0e";
/// A debug build on a busy two-core machine may take a while to open its database.
const START_TIMEOUT: Duration = Duration::from_secs(30);
pub const MIB: usize = 1024 * 1024;
pub const KIB: usize = 1024;
/// What `Deployment::command` allows (`CHATFILES_MAX_FILE_SIZE`): room for files of several
/// S3 parts (8 MiB each).
const MAX_FILE_SIZE: &str = "64MiB";
/// The prefix an S3 deployment keeps its objects under.
const S3_PREFIX: &str = "crash/";

/// A storage directory (and database) that outlives the processes serving it, with its bytes
/// there or in a bucket.
pub struct Deployment {
    dir: TempDir,
    storage: PathBuf,
    database: Option<PathBuf>,
    /// `None`: the objects live under `<storage>/objects`.
    bucket: Option<Bucket>,
    /// Every line any of its processes printed, tagged with the run it came from.
    log: Arc<Mutex<Vec<String>>>,
    runs: AtomicUsize,
}

impl Deployment {
    /// A fresh deployment whose database lives in the storage directory (the default).
    pub fn create() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let storage = dir.path().join("storage");
        Self {
            dir,
            storage,
            database: None,
            bucket: None,
            log: Arc::default(),
            runs: AtomicUsize::new(0),
        }
    }

    /// A fresh deployment whose objects live in `node`'s bucket under `crash/`, its listings'
    /// URLs as `downloads` says. The node must outlive it.
    pub fn on_s3(node: &SeaweedNode, downloads: Downloads) -> Self {
        let mut deployment = Self::create();
        deployment.bucket = Some(Bucket::new(node, downloads));
        deployment
    }

    /// The bucket, for an S3 deployment.
    pub fn bucket(&self) -> Option<&Bucket> {
        self.bucket.as_ref()
    }

    /// A fresh deployment whose database lives beside, not inside, the storage directory.
    pub fn with_database_outside_storage() -> Self {
        let mut deployment = Self::create();
        deployment.database = Some(deployment.dir.path().join("chatfiles.db"));
        deployment
    }

    pub fn storage(&self) -> &Path {
        &self.storage
    }

    pub fn database(&self) -> PathBuf {
        self.database
            .clone()
            .unwrap_or_else(|| self.storage.join("chatfiles.db"))
    }

    /// `program` with the service's environment and nothing inherited that could change it.
    /// An S3 deployment's credentials go in the standard AWS variables, never in flags.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CHATFILES_")
                || name.starts_with("AWS_")
                || name == "FAILPOINTS"
                || name == "RUST_LOG"
            {
                command.env_remove(name.as_ref());
            }
        }
        command
            .env("CHATFILES_STORAGE_DIR", &self.storage)
            .env("CHATFILES_BIND", "127.0.0.1:0")
            .env("CHATFILES_SECRET", SECRET)
            .env("CHATFILES_WORKERS", "2")
            .env("CHATFILES_MAX_FILE_SIZE", MAX_FILE_SIZE)
            .env("RUST_LOG", "info");
        if let Some(database) = &self.database {
            command.env("CHATFILES_DATABASE", database);
        }
        if let Some(bucket) = &self.bucket {
            let settings = &bucket.settings;
            let credentials = settings.credentials.as_ref();
            let (key_id, secret) = credentials
                .map(|c| {
                    (
                        c.access_key_id.as_str(),
                        c.secret_access_key.expose_secret(),
                    )
                })
                .unwrap_or_default();
            command
                .env("CHATFILES_OBJECT_STORE", settings.location())
                .env("CHATFILES_S3_ENDPOINT", settings.endpoint.as_str())
                .env("CHATFILES_S3_REGION", &settings.region)
                .env("CHATFILES_S3_PATH_STYLE", "true")
                .env("CHATFILES_S3_DOWNLOADS", settings.downloads.as_str())
                .env("AWS_ACCESS_KEY_ID", key_id)
                .env("AWS_SECRET_ACCESS_KEY", secret);
        }
        command
    }

    /// Starts the service with no fault points.
    pub async fn start(&self) -> Service {
        self.spawn(self.command(BINARY))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_text()))
    }

    /// Starts the service with `FAILPOINTS` set to `failpoints`.
    pub async fn start_with_failpoints(&self, failpoints: &str) -> Service {
        let mut command = self.command(BINARY);
        command.env("FAILPOINTS", failpoints);
        self.spawn(command)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_text()))
    }

    /// Runs `command` and waits for its `chatfiles listening` line; an error (with what it
    /// printed) when it exits first or stays silent too long.
    pub async fn spawn(&self, mut command: Command) -> Result<Service, String> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run {command:?}: {e}"))?;
        let address = Arc::new(Mutex::new(None::<String>));
        let mut readers = Vec::new();
        let pipes: [(&str, Option<Box<dyn Read + Send>>); 2] = [
            (
                "out",
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn Read + Send>),
            ),
            (
                "err",
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn Read + Send>),
            ),
        ];
        for (tag, pipe) in pipes {
            let Some(pipe) = pipe else { continue };
            let log = self.log.clone();
            let address = address.clone();
            // Read to the end so that the service never blocks on a full pipe.
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if line.contains("chatfiles listening") {
                        let found = line
                            .split_whitespace()
                            .find_map(|word| word.strip_prefix("address="));
                        if let Some(found) = found {
                            *address.lock() = Some(format!("http://{found}"));
                        }
                    }
                    log.lock().push(format!("[run {run} {tag}] {line}"));
                }
            }));
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(address) = address.lock().clone() {
                return Ok(Service {
                    child,
                    address,
                    client: Client::new(),
                    killed: false,
                });
            }
            match child.try_wait() {
                Ok(Some(status)) => {
                    for reader in readers {
                        let _ = reader.join();
                    }
                    return Err(format!(
                        "run {run} ({command:?}) exited with {status} before it listened"
                    ));
                }
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "run {run} did not report `chatfiles listening` within {START_TIMEOUT:?}"
                    ));
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(err) => return Err(format!("run {run}: cannot wait for the child: {err}")),
            }
        }
    }

    /// What every run printed so far.
    pub fn log_text(&self) -> String {
        self.log.lock().join("\n")
    }

    /// Every row's (object key, size, SHA-256), read straight from the database file.
    pub fn rows(&self) -> Vec<(String, u64, String)> {
        let path = self.database();
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
        )
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        conn.busy_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("busy timeout: {e}"));
        let mut stmt = conn
            .prepare("SELECT object_key, size, sha256 FROM chat_conversation_file")
            .unwrap_or_else(|e| panic!("cannot query the files: {e}"));
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .unwrap_or_else(|e| panic!("cannot read the files: {e}"))
    }

    /// The pending-object journal: keys whose objects may exist without a row.
    pub fn pending(&self) -> BTreeSet<String> {
        let path = self.database();
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
        )
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        conn.busy_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("busy timeout: {e}"));
        let mut stmt = conn
            .prepare("SELECT object_key FROM pending_object")
            .unwrap_or_else(|e| panic!("cannot query the journal: {e}"));
        stmt.query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect::<Result<BTreeSet<_>, _>>())
            .unwrap_or_else(|e| panic!("cannot read the journal: {e}"))
    }

    /// Checks the directories against the database, without asking the service: the temp area
    /// is empty, every row has its object with the recorded size and hash, every object a row.
    pub fn assert_storage_consistent(&self) {
        assert_storage_consistent(&self.storage, &self.rows());
    }

    /// Checks where the bytes are against the database, without asking the service (which must
    /// be idle): locally as [`Deployment::assert_storage_consistent`]; in a bucket, it holds
    /// exactly the rows' objects (besides the probe object), each of its recorded size and
    /// SHA-256, no multipart upload is open, nothing was written to the storage directory's
    /// object areas, and the journal is empty.
    pub async fn assert_consistent(&self) {
        let Some(bucket) = &self.bucket else {
            self.assert_storage_consistent();
            return;
        };
        // A request the killed process had sent may land in the bucket after the restart's
        // sweep; the service's first housekeeping pass (5 s after its start) removes it again.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let keys: BTreeSet<String> = self.rows().into_iter().map(|(k, _, _)| k).collect();
            let stored: BTreeSet<String> = bucket.objects().await.into_keys().collect();
            if stored == keys && self.pending().is_empty() && bucket.unfinished().await.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        for area in ["objects", "tmp"] {
            let dir = self.storage.join(area);
            let entries: Vec<_> = std::fs::read_dir(&dir)
                .map(|entries| entries.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            assert!(
                entries.is_empty(),
                "an S3 deployment wrote to {}: {entries:?}",
                dir.display()
            );
        }
        bucket.assert_holds_exactly(&self.rows()).await;
        let pending = self.pending();
        assert!(
            pending.is_empty(),
            "keys left pending in the journal: {pending:?}"
        );
    }

    /// The keys of the objects stored (not those being uploaded), wherever they are.
    pub async fn stored_keys(&self) -> BTreeSet<String> {
        match &self.bucket {
            Some(bucket) => bucket.keys().await,
            None => object_files(&self.storage).into_keys().collect(),
        }
    }

    /// Whether the object `key` is stored.
    pub async fn has_object(&self, key: &str) -> bool {
        self.stored_keys().await.contains(key)
    }

    /// `chatfiles check` on the (stopped) deployment finds nothing wrong.
    pub fn assert_check_passes(&self) {
        let output = self
            .command(BINARY)
            .arg("check")
            .arg("--storage-dir")
            .arg(&self.storage)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run chatfiles check: {e}"));
        assert!(
            output.status.success(),
            "`chatfiles check` exited with {} (0 = clean, 1 = damage, 2 = cannot run)\n\
             stdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }

    /// The end of every scenario: consistent, then killed, then clean for `check` (which reads
    /// the bucket of an S3 deployment, with the service's settings and credentials).
    pub async fn finish(&self, service: Service) {
        self.assert_consistent().await;
        service.kill();
        self.assert_check_passes();
    }
}

/// An S3 deployment's bucket, looked into with a store of our own (not through the service).
pub struct Bucket {
    settings: S3Settings,
    store: S3Store,
}

impl Bucket {
    fn new(node: &SeaweedNode, downloads: Downloads) -> Self {
        let endpoint: url::Url = node
            .endpoint
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", node.endpoint));
        let settings = S3Settings {
            bucket: node.bucket.clone(),
            prefix: S3_PREFIX.to_owned(),
            public_endpoint: endpoint.clone(),
            endpoint,
            region: node.region.clone(),
            path_style: true,
            downloads,
            credentials: Some(S3Credentials {
                access_key_id: node.access_key.clone(),
                secret_access_key: SecretString::from(node.secret_key.clone()),
                session_token: None,
            }),
        };
        let store = S3Store::new(&settings, 64 * MIB as u64)
            .unwrap_or_else(|e| panic!("an S3 store for {}: {e}", settings.location()));
        Self { settings, store }
    }

    pub fn downloads(&self) -> Downloads {
        self.settings.downloads
    }

    /// Every object under the prefix but the probe, by key; panics on a name that is no key.
    pub async fn objects(&self) -> BTreeMap<String, u64> {
        let listed = self
            .store
            .list()
            .await
            .unwrap_or_else(|e| panic!("listing the bucket: {e}"));
        let mut objects = BTreeMap::new();
        for object in listed {
            if object.name == PROBE_OBJECT {
                continue;
            }
            assert!(
                chatfiles::storage::is_valid_key(&object.name),
                "stray object in the bucket: {S3_PREFIX}{}",
                object.name
            );
            objects.insert(object.name, object.size);
        }
        objects
    }

    pub async fn keys(&self) -> BTreeSet<String> {
        self.objects().await.into_keys().collect()
    }

    /// The keys of the multipart uploads begun under the prefix and never completed or aborted.
    pub async fn unfinished(&self) -> Vec<String> {
        self.store
            .unfinished()
            .await
            .unwrap_or_else(|e| panic!("listing the multipart uploads: {e}"))
            .into_iter()
            .map(|upload| upload.name)
            .collect()
    }

    /// The bytes of the object `key`, `size` long.
    pub async fn read(&self, key: &str, size: u64) -> Bytes {
        self.store
            .read(key, 0, size, size)
            .await
            .unwrap_or_else(|e| panic!("reading object {key}: {e}"))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("reading object {key}: {e}"))
    }

    /// The bucket holds exactly the objects of `rows` (key, size, SHA-256), each with its
    /// recorded size and bytes, and no multipart upload is open.
    pub async fn assert_holds_exactly(&self, rows: &[(String, u64, String)]) {
        let mut objects = self.objects().await;
        for (key, size, sha) in rows {
            let listed = objects
                .remove(key)
                .unwrap_or_else(|| panic!("row for object {key} has no object in the bucket"));
            assert_eq!(listed, *size, "object {key} is listed with the wrong size");
            let bytes = self.read(key, *size).await;
            assert_eq!(&sha256(&bytes), sha, "object {key} has the wrong SHA-256");
        }
        assert!(
            objects.is_empty(),
            "objects without a row survived the sweep: {:?}",
            objects.keys().collect::<Vec<_>>()
        );
        let unfinished = self.unfinished().await;
        assert!(
            unfinished.is_empty(),
            "multipart uploads left open: {unfinished:?}"
        );
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- what the service printed ---\n{}", self.log_text());
        }
    }
}

/// A running service process. Dropped, it is killed.
pub struct Service {
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub address: String,
    pub client: Client,
    killed: bool,
}

impl Service {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `url` pointed at this service's port (URLs handed out before a restart name the old one).
    pub fn rebase(&self, url: &str) -> String {
        let parsed = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let query = parsed.query().map(|q| format!("?{q}")).unwrap_or_default();
        format!("{}{}{query}", self.address, parsed.path())
    }

    /// GETs a signed URL without any cookie.
    pub async fn download(&self, url: &str) -> Response {
        self.client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("download {url}: {e}"))
    }

    /// SIGKILL, then reap it: its storage lock is released once this returns.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        if !self.killed {
            self.killed = true;
            if let Err(err) = self.child.kill() {
                eprintln!("kill {}: {err}", self.child.id());
            }
            let _ = self.child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// Someone signed up, with their own cookie jar.
pub struct Account {
    pub id: i64,
    pub email: String,
    pub client: Client,
}

fn cookie_client() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|e| panic!("cannot build a client: {e}"))
}

impl Account {
    pub async fn sign_up(service: &Service) -> Self {
        let email = format!("crash-{}@example.com", uuid::Uuid::new_v4());
        let client = cookie_client();
        let res = client
            .post(service.url("/api/auth/sign-up"))
            .json(&json!({"email": email, "password": PASSWORD, "confirmPassword": PASSWORD}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("sign-up: {e}"));
        assert_eq!(res.status(), StatusCode::CREATED, "sign-up failed");
        let body: Value = res.json().await.unwrap_or_default();
        let id = body["user"]["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("no user id in {body}"));
        Self { id, email, client }
    }

    /// Logs in afresh (on a restarted service, at its new port).
    pub async fn log_in(&mut self, service: &Service) {
        let client = cookie_client();
        let res = client
            .post(service.url("/api/auth/login"))
            .json(&json!({"email": self.email, "password": PASSWORD}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("login: {e}"));
        assert_eq!(res.status(), StatusCode::OK, "login failed");
        self.client = client;
    }

    pub async fn create_chat(&self, service: &Service, name: &str) -> i64 {
        let res = self
            .client
            .post(service.url(&format!("/api/users/{}/chats", self.id)))
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("create chat: {e}"));
        assert_eq!(res.status(), StatusCode::CREATED, "create chat failed");
        let body: Value = res.json().await.unwrap_or_default();
        body["chat"]["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("no chat id in {body}"))
    }

    pub fn files_url(&self, service: &Service, chat: i64) -> String {
        service.url(&format!("/api/users/{}/chats/{chat}/files", self.id))
    }

    /// Sends an upload; a transport error is returned, not raised (the service may be killed).
    pub async fn upload(
        &self,
        service: &Service,
        chat: i64,
        form: Form,
    ) -> reqwest::Result<Response> {
        self.client
            .post(self.files_url(service, chat))
            .multipart(form)
            .send()
            .await
    }

    /// The Chat Files listing's `chatFiles`.
    pub async fn list(&self, service: &Service, chat: i64) -> Vec<Value> {
        let res = self
            .client
            .get(self.files_url(service, chat))
            .send()
            .await
            .unwrap_or_else(|e| panic!("list files: {e}"));
        assert_eq!(res.status(), StatusCode::OK, "listing failed");
        let body: Value = res
            .json()
            .await
            .unwrap_or_else(|e| panic!("listing is not JSON: {e}"));
        body["chatFiles"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("no chatFiles in {body}"))
    }
}

/// A file to upload: a unique name and deterministic pseudo-random bytes.
#[derive(Clone)]
pub struct TestFile {
    pub name: String,
    pub bytes: Bytes,
}

impl TestFile {
    pub fn random(name: impl Into<String>, seed: u64, len: usize) -> Self {
        let mut bytes = vec![0u8; len];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
        Self {
            name: name.into(),
            bytes: Bytes::from(bytes),
        }
    }

    pub fn sha256(&self) -> String {
        sha256(&self.bytes)
    }

    /// The whole file as one multipart part named by its file name.
    pub fn part(&self) -> Part {
        Part::stream_with_length(self.bytes.clone(), self.bytes.len() as u64)
            .file_name(self.name.clone())
            .mime_str("application/octet-stream")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The file trickled out in `chunk`-byte pieces with `pause` between them, so that it is
    /// still being received for a while.
    pub fn slow_part(&self, chunk: usize, pause: Duration) -> Part {
        let data = self.bytes.clone();
        let stream = futures_util::stream::unfold(0usize, move |offset| {
            let data = data.clone();
            async move {
                if offset >= data.len() {
                    return None;
                }
                if offset > 0 {
                    tokio::time::sleep(pause).await;
                }
                let end = (offset + chunk).min(data.len());
                Some((Ok::<Bytes, std::io::Error>(data.slice(offset..end)), end))
            }
        });
        Part::stream_with_length(Body::wrap_stream(stream), self.bytes.len() as u64)
            .file_name(self.name.clone())
            .mime_str("application/octet-stream")
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A multipart form whose parts are all named `file`.
pub fn form(parts: impl IntoIterator<Item = Part>) -> Form {
    parts
        .into_iter()
        .fold(Form::new(), |form, part| form.part("file", part))
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The object key in a listed URL, its last path segment: `/files/{key}?…` (local storage,
/// proxied downloads) or `<endpoint>/<bucket>/<prefix>{key}?X-Amz-…` (direct downloads).
pub fn object_key(url: &str) -> String {
    let parsed = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let key = parsed
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        chatfiles::storage::is_valid_key(&key),
        "no object key in the URL {url}"
    );
    key
}

/// Files in `<storage>/tmp`, with their sizes.
pub fn temp_files(storage: &Path) -> Vec<(PathBuf, u64)> {
    let tmp = storage.join("tmp");
    std::fs::read_dir(&tmp)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", tmp.display()))
        .map(|entry| {
            let entry = entry.unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
            let size = entry.metadata().map(|m| m.len()).unwrap_or_default();
            (entry.path(), size)
        })
        .collect()
}

/// Every entry under `<storage>/objects`, by name; panics on anything that is not
/// `objects/<2 hex>/<32 hex key starting with those 2>`.
pub fn object_files(storage: &Path) -> BTreeMap<String, PathBuf> {
    let objects = storage.join("objects");
    let mut found = BTreeMap::new();
    let is_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let entries = |dir: &Path| {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|entry| entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display())))
            .collect::<Vec<_>>()
    };
    for shard in entries(&objects) {
        let shard_name = shard.file_name().to_string_lossy().into_owned();
        let shard_path = shard.path();
        assert!(
            shard_path.is_dir() && shard_name.len() == 2 && is_hex(&shard_name),
            "stray entry in objects/: {}",
            shard_path.display()
        );
        for object in entries(&shard_path) {
            let key = object.file_name().to_string_lossy().into_owned();
            let path = object.path();
            assert!(
                path.is_file() && key.len() == 32 && is_hex(&key) && key.starts_with(&shard_name),
                "stray entry in objects/{shard_name}/: {}",
                path.display()
            );
            found.insert(key, path);
        }
    }
    found
}

/// The temp area is empty, every row has its object with the recorded size and SHA-256, and
/// every object has a row.
pub fn assert_storage_consistent(storage: &Path, rows: &[(String, u64, String)]) {
    let temp = temp_files(storage);
    assert!(temp.is_empty(), "the temp area is not empty: {temp:?}");
    let mut objects = object_files(storage);
    for (key, size, sha) in rows {
        let path = objects
            .remove(key)
            .unwrap_or_else(|| panic!("row for object {key} has no bytes on disk"));
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        assert_eq!(bytes.len() as u64, *size, "object {key} has the wrong size");
        assert_eq!(&sha256(&bytes), sha, "object {key} has the wrong SHA-256");
    }
    assert!(
        objects.is_empty(),
        "objects without a row survived the sweep: {:?}",
        objects.keys().collect::<Vec<_>>()
    );
}

/// Polls `probe` every 20 ms until it gives a value; panics after `timeout`.
pub async fn poll_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts the contract's error shape and returns `data.message`.
pub async fn assert_error(res: Response, status: StatusCode) -> String {
    let got = res.status();
    let has_request_id = res.headers().contains_key("x-request-id");
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = res.text().await.unwrap_or_default();
    assert_eq!(got, status, "unexpected status; body: {text}");
    assert!(has_request_id, "no X-Request-Id on the {status} answer");
    assert!(
        content_type.starts_with("application/json"),
        "error content type {content_type:?}"
    );
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("error body {text:?}: {e}"));
    assert_eq!(body["statusCode"], json!(status.as_u16()), "{body}");
    assert_eq!(
        body["statusMessage"],
        json!(status.canonical_reason().unwrap_or_default()),
        "{body}"
    );
    body["data"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no data.message in {body}"))
        .to_owned()
}

/// What the client knows about the files it sent: which were acknowledged with a 201 (they
/// must survive anything) and which were in flight at a kill (they may or may not exist, but
/// a request's files are all there or none is).
#[derive(Default)]
pub struct Ledger {
    chats: BTreeSet<i64>,
    files: BTreeMap<String, Expected>,
    requests: usize,
}

struct Expected {
    chat: i64,
    sha256: String,
    size: u64,
    request: usize,
    acknowledged: bool,
}

impl Ledger {
    pub fn add_chat(&mut self, chat: i64) {
        self.chats.insert(chat);
    }

    /// Records a request about to be sent (file names are unique); returns its number.
    pub fn sent(&mut self, chat: i64, files: &[TestFile]) -> usize {
        self.chats.insert(chat);
        self.requests += 1;
        for file in files {
            let previous = self.files.insert(
                file.name.clone(),
                Expected {
                    chat,
                    sha256: file.sha256(),
                    size: file.bytes.len() as u64,
                    request: self.requests,
                    acknowledged: false,
                },
            );
            assert!(previous.is_none(), "file name {} used twice", file.name);
        }
        self.requests
    }

    /// The request got its 201 with `body`: its files must survive from now on.
    pub fn acknowledged(&mut self, request: usize, body: &Value) {
        let mut names: Vec<&str> = body["chatFiles"]
            .as_array()
            .unwrap_or_else(|| panic!("no chatFiles in the 201: {body}"))
            .iter()
            .map(|f| f["name"].as_str().unwrap_or_default())
            .collect();
        let mut sent: Vec<&str> = self
            .files
            .iter()
            .filter(|(_, f)| f.request == request)
            .map(|(name, _)| name.as_str())
            .collect();
        names.sort_unstable();
        sent.sort_unstable();
        assert_eq!(names, sent, "the 201 does not name the files sent");
        for (name, file) in &mut self.files {
            if file.request == request {
                let size = body["chatFiles"]
                    .as_array()
                    .and_then(|fs| fs.iter().find(|f| f["name"] == json!(name)))
                    .and_then(|f| f["size"].as_u64());
                assert_eq!(size, Some(file.size), "the 201 gives {name} the wrong size");
                file.acknowledged = true;
            }
        }
    }

    /// The file was deleted: it must never be listed again.
    pub fn deleted(&mut self, name: &str) {
        self.files.remove(name);
    }

    /// Names of the acknowledged files.
    pub fn acknowledged_names(&self) -> BTreeSet<String> {
        self.files
            .iter()
            .filter(|(_, f)| f.acknowledged)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Lists every chat and downloads every listed file: each acknowledged file is listed once
    /// with its bytes; anything else listed was in flight, whole, with all of its request.
    /// Afterwards what is listed counts as acknowledged and what is not is forgotten (so that
    /// it must never appear later). Returns the names listed that had not been acknowledged.
    pub async fn verify(&mut self, service: &Service, account: &Account) -> BTreeSet<String> {
        let mut listed = BTreeSet::new();
        for &chat in &self.chats {
            for entry in account.list(service, chat).await {
                let name = entry["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no name in {entry}"))
                    .to_owned();
                let expected = self.files.get(&name).unwrap_or_else(|| {
                    panic!("chat {chat} lists {name}, which was never uploaded or was deleted")
                });
                assert_eq!(expected.chat, chat, "{name} is listed in the wrong chat");
                assert_eq!(
                    entry["size"].as_u64(),
                    Some(expected.size),
                    "size of {name}"
                );
                let url = entry["url"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no url in {entry}"));
                let res = service.download(url).await;
                assert_eq!(res.status(), StatusCode::OK, "download of listed {name}");
                let bytes = res
                    .bytes()
                    .await
                    .unwrap_or_else(|e| panic!("download of {name}: {e}"));
                assert_eq!(
                    sha256(&bytes),
                    expected.sha256,
                    "{name} downloads with other bytes"
                );
                assert!(listed.insert(name.clone()), "{name} is listed twice");
            }
        }
        let mut surprises = BTreeSet::new();
        for (name, file) in &self.files {
            if file.acknowledged {
                assert!(
                    listed.contains(name),
                    "{name} was acknowledged with 201 but is not listed"
                );
            } else if listed.contains(name) {
                surprises.insert(name.clone());
            }
        }
        for (name, file) in &self.files {
            let siblings_listed = self
                .files
                .iter()
                .filter(|(_, f)| f.request == file.request)
                .all(|(n, _)| listed.contains(n));
            assert!(
                !listed.contains(name) || siblings_listed,
                "{name} is listed but not every file of its request is"
            );
        }
        self.files.retain(|name, _| listed.contains(name));
        for file in self.files.values_mut() {
            file.acknowledged = true;
        }
        surprises
    }

    /// [`Ledger::verify`], and nothing but the acknowledged files is listed.
    pub async fn verify_exactly_acknowledged(&mut self, service: &Service, account: &Account) {
        let surprises = self.verify(service, account).await;
        assert!(
            surprises.is_empty(),
            "listed although never acknowledged: {surprises:?}"
        );
    }
}
