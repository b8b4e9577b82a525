//! Spawns the real server on port 0 over a temp storage directory and a real SQLite file, with
//! a hand-driven clock, and talks HTTP to it.
//!
//! The files' bytes go where `CHATFILES_TEST_BACKEND` says (see [`Backend`]): the storage
//! directory, or a bucket of an S3 store with downloads direct or proxied.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use actix_web::dev::ServerHandle;
use chatfiles::clock::{Clock, ManualClock};
use chatfiles::config::{Config, StoreTarget};
use chatfiles::startup::Application;
use chatfiles::storage::{Downloads, S3Credentials, S3Store};
use chrono::{DateTime, DurationRound, TimeDelta, TimeZone, Utc};
use reqwest::multipart::{Form, Part};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub const PASSWORD: &str = "correct horse battery";

/// A running server, its storage directory and its clock.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    pub clock: Arc<ManualClock>,
    /// Where the clock started (a restart keeps it).
    pub started: DateTime<Utc>,
    pub config: Config,
    pub dir: Arc<TempDir>,
    /// `http://127.0.0.1:<port>` of `/metrics` when `--metrics-bind` gives it its own address.
    pub metrics_address: Option<String>,
    handle: ServerHandle,
}

/// A signed-up user with their own cookie jar.
pub struct TestUser {
    pub id: i64,
    pub email: String,
    pub client: Client,
}

/// The boundary of [`raw_multipart`] bodies.
const BOUNDARY: &str = "chatfilesTestBoundary7MA4YWxkTrZu0gW";

/// A raw multipart/form-data body whose parts are (headers, bytes), exactly as given: for
/// part headers that a client library would refuse to send.
pub fn raw_multipart(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (headers, bytes) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n{headers}\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// A client with a cookie store that never follows redirects.
pub fn client() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|e| panic!("cannot build a client: {e}"))
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A test start time: whole minute, far from any DST or leap oddity.
pub fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 15, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

/// Selects the backend: `local` (or unset), `s3-direct` or `s3-proxy`.
pub const BACKEND_ENV: &str = "CHATFILES_TEST_BACKEND";
const S3_ENDPOINT_ENV: &str = "CHATFILES_TEST_S3_ENDPOINT";
const S3_BUCKET_ENV: &str = "CHATFILES_TEST_S3_BUCKET";
const S3_ACCESS_KEY_ENV: &str = "CHATFILES_TEST_S3_ACCESS_KEY";
const S3_SECRET_KEY_ENV: &str = "CHATFILES_TEST_S3_SECRET_KEY";
/// Optional: `us-east-1` without it.
const S3_REGION_ENV: &str = "CHATFILES_TEST_S3_REGION";

/// Where the [`TestApp`]s of this test process keep their files, from `CHATFILES_TEST_BACKEND`
/// and, for S3, `CHATFILES_TEST_S3_{ENDPOINT,BUCKET,ACCESS_KEY,SECRET_KEY}` (and `_REGION`).
/// `on_seaweedfs` runs the file, download and hostile suites again in a child process with
/// these set; they can be pointed at another S3 store by hand the same way (other suites look
/// at the storage directory itself).
#[derive(Debug, Clone)]
pub enum Backend {
    /// `<storage>/objects`.
    Local,
    /// A bucket shared by every `TestApp` of the process, each under a prefix of its own
    /// (`run-<uuid>/`), so that tests running in parallel never see each other's objects.
    S3 {
        bucket: S3Bucket,
        downloads: Downloads,
    },
}

/// An S3 store's bucket and the credentials to use it (addressed path-style).
#[derive(Debug, Clone)]
pub struct S3Bucket {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

/// The backend of this test process, read once.
pub fn backend() -> &'static Backend {
    static BACKEND: OnceLock<Backend> = OnceLock::new();
    BACKEND.get_or_init(Backend::from_env)
}

/// Whether listings hand out presigned URLs straight to the store rather than our own.
pub fn direct_downloads() -> bool {
    matches!(
        backend(),
        Backend::S3 {
            downloads: Downloads::Direct,
            ..
        }
    )
}

impl Backend {
    fn from_env() -> Backend {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let downloads = match var(BACKEND_ENV).as_deref() {
            None | Some("local") => return Backend::Local,
            Some("s3-direct") => Downloads::Direct,
            Some("s3-proxy") => Downloads::Proxy,
            Some(other) => panic!("{BACKEND_ENV}={other}: expected local, s3-direct or s3-proxy"),
        };
        let required = |name: &str| {
            var(name).unwrap_or_else(|| panic!("{BACKEND_ENV} names S3, but {name} is not set"))
        };
        Backend::S3 {
            bucket: S3Bucket {
                endpoint: required(S3_ENDPOINT_ENV),
                bucket: required(S3_BUCKET_ENV),
                access_key: required(S3_ACCESS_KEY_ENV),
                secret_key: required(S3_SECRET_KEY_ENV),
                region: var(S3_REGION_ENV).unwrap_or_else(|| "us-east-1".to_owned()),
            },
            downloads,
        }
    }

    /// The variables that select this backend in a child test process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let Backend::S3 { bucket, downloads } = self else {
            return vec![(BACKEND_ENV, "local".to_owned())];
        };
        vec![
            (BACKEND_ENV, format!("s3-{}", downloads.as_str())),
            (S3_ENDPOINT_ENV, bucket.endpoint.clone()),
            (S3_BUCKET_ENV, bucket.bucket.clone()),
            (S3_ACCESS_KEY_ENV, bucket.access_key.clone()),
            (S3_SECRET_KEY_ENV, bucket.secret_key.clone()),
            (S3_REGION_ENV, bucket.region.clone()),
        ]
    }

    /// Where a `TestApp`'s clock starts: [`start_time`], or with S3 the real time to the
    /// minute. The store checks presigned URLs against its own clock (the service signs its own
    /// requests with the real time, so only direct URLs depend on the test clock).
    pub fn start_time(&self) -> DateTime<Utc> {
        match self {
            Backend::Local => start_time(),
            Backend::S3 { .. } => Utc::now()
                .duration_trunc(TimeDelta::minutes(1))
                .unwrap_or_else(|e| panic!("{e}")),
        }
    }

    /// Points `config` at this backend, an S3 bucket under a fresh prefix.
    fn configure(&self, config: &mut Config) {
        let Backend::S3 { bucket, downloads } = self else {
            return;
        };
        config.object_store = StoreTarget::S3 {
            bucket: bucket.bucket.clone(),
            prefix: format!("run-{}/", uuid::Uuid::new_v4()),
        };
        config.s3.endpoint = Some(
            bucket
                .endpoint
                .parse()
                .unwrap_or_else(|e| panic!("{S3_ENDPOINT_ENV}: {e}")),
        );
        config.s3.region = bucket.region.clone();
        config.s3.path_style = true;
        config.s3.downloads = *downloads;
        config.s3.credentials = Some(S3Credentials {
            access_key_id: bucket.access_key.clone(),
            secret_access_key: bucket.secret_key.clone().into(),
            session_token: None,
        });
    }
}

/// The object key in a download URL: its last path segment (`/files/{key}`, or the object's
/// name `/<bucket>/<prefix><key>` in a presigned URL straight to the store).
pub fn key_of(url: &str) -> String {
    let parsed = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let key = parsed.path().rsplit('/').next().unwrap_or_default();
    assert!(
        chatfiles::storage::is_valid_key(key),
        "no object key in {url}"
    );
    key.to_owned()
}

/// Asserts that `res` is an error answered by the S3 store itself (XML, not our JSON shape)
/// and returns its `<Code>` (empty for a HEAD, whose answer has no body).
pub async fn assert_store_error(res: Response, status: StatusCode) -> String {
    let answered = res.status();
    let url = res.url().path().to_owned();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = res.text().await.unwrap_or_default();
    assert_eq!(answered, status, "from the store for {url}: {body}");
    assert!(
        content_type.contains("xml") && (body.is_empty() || body.contains("<Error>")),
        "not an error of the store: {content_type} {body}"
    );
    body.split("<Code>")
        .nth(1)
        .and_then(|rest| rest.split("</Code>").next())
        .unwrap_or_default()
        .to_owned()
}

impl TestApp {
    /// A server with the default configuration (but a known secret and a small size limit).
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// A server whose configuration `adjust` may change first.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        Self::spawn_at(backend().start_time(), adjust).await
    }

    /// [`TestApp::spawn_with`], its clock starting at `now`.
    pub async fn spawn_at(now: DateTime<Utc>, adjust: impl FnOnce(&mut Config)) -> TestApp {
        let dir = Arc::new(tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")));
        let mut config = Config::with_storage_dir(dir.path().join("storage"));
        config.bind = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
        config.workers = Some(2);
        config.max_file_size = 1024 * 1024;
        backend().configure(&mut config);
        adjust(&mut config);
        let clock = Arc::new(ManualClock::new(now));
        Self::start(config, clock, dir).await
    }

    async fn start(config: Config, clock: Arc<ManualClock>, dir: Arc<TempDir>) -> TestApp {
        let app = Application::build(&config, clock.clone())
            .await
            .unwrap_or_else(|e| panic!("the server did not build: {e:#}"));
        let address = format!("http://{}", app.local_addr());
        let metrics_address = app.metrics_addr().map(|a| format!("http://{a}"));
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        TestApp {
            address,
            started: clock.now(),
            clock,
            config,
            dir,
            metrics_address,
            handle,
        }
    }

    /// Stops the server gracefully and starts a new one over the same storage, configuration
    /// and clock (on a new port).
    pub async fn restart(self) -> TestApp {
        self.handle.stop(true).await;
        let restarted = Self::start(self.config.clone(), self.clock.clone(), self.dir.clone());
        TestApp {
            started: self.started,
            ..restarted.await
        }
    }

    /// [`TestApp::restart`] with the configuration changed by `adjust` first.
    pub async fn restart_with(self, adjust: impl FnOnce(&mut Config)) -> TestApp {
        self.handle.stop(true).await;
        let mut config = self.config.clone();
        adjust(&mut config);
        let restarted = Self::start(config, self.clock.clone(), self.dir.clone());
        TestApp {
            started: self.started,
            ..restarted.await
        }
    }

    pub fn storage_dir(&self) -> PathBuf {
        self.config.storage_dir.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// `url` with its scheme, host and port replaced by this server's (after a restart).
    pub fn rebase(&self, url: &str) -> String {
        let parsed = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let query = parsed.query().map(|q| format!("?{q}")).unwrap_or_default();
        format!("{}{}{}", self.address, parsed.path(), query)
    }

    /// Signs up a fresh user (unique email) and returns them logged in.
    pub async fn user(&self) -> TestUser {
        let email = format!("user-{}@example.com", uuid::Uuid::new_v4());
        self.sign_up(&email).await
    }

    pub async fn sign_up(&self, email: &str) -> TestUser {
        let client = client();
        let res = client
            .post(self.url("/api/auth/sign-up"))
            .json(&json!({"email": email, "password": PASSWORD, "confirmPassword": PASSWORD}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("sign-up: {e}"));
        assert_eq!(res.status(), StatusCode::CREATED, "sign-up failed");
        let body: Value = res.json().await.unwrap_or_default();
        TestUser {
            id: body["user"]["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("no id in {body}")),
            email: body["user"]["primary_email"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            client,
        }
    }

    /// Creates a chat for `user` and returns its id.
    pub async fn chat(&self, user: &TestUser, name: &str) -> i64 {
        let res = user
            .client
            .post(self.url(&format!("/api/users/{}/chats", user.id)))
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("create chat: {e}"));
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap_or_default();
        body["chat"]["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("no chat id in {body}"))
    }

    /// Uploads `files` as parts named `file`: (file name, content type, bytes).
    pub async fn upload(
        &self,
        user: &TestUser,
        chat_id: i64,
        files: &[(&str, &str, &[u8])],
    ) -> Response {
        let mut form = Form::new().percent_encode_noop();
        for (name, mime, bytes) in files {
            let part = Part::bytes(bytes.to_vec())
                .file_name((*name).to_owned())
                .mime_str(mime)
                .unwrap_or_else(|e| panic!("{e}"));
            form = form.part("file", part);
        }
        user.client
            .post(self.url(&format!("/api/users/{}/chats/{chat_id}/files", user.id)))
            .multipart(form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("upload: {e}"))
    }

    /// Uploads a body made by [`raw_multipart`], exactly as given.
    pub async fn upload_raw(&self, user: &TestUser, chat_id: i64, body: Vec<u8>) -> Response {
        user.client
            .post(self.url(&format!("/api/users/{}/chats/{chat_id}/files", user.id)))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("upload: {e}"))
    }

    /// Uploads files that must succeed; returns the `chatFiles` array.
    pub async fn upload_ok(
        &self,
        user: &TestUser,
        chat_id: i64,
        files: &[(&str, &str, &[u8])],
    ) -> Vec<Value> {
        let res = self.upload(user, chat_id, files).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap_or_default();
        body["chatFiles"].as_array().cloned().unwrap_or_default()
    }

    /// The raw value of `user`'s `neptun-session` cookie, as a non-browser client would keep it.
    pub async fn session_cookie(&self, user: &TestUser) -> String {
        // Logging in again hands out a fresh cookie whose value we can read off the response.
        let res = client()
            .post(self.url("/api/auth/login"))
            .json(&json!({"email": user.email, "password": PASSWORD}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("login: {e}"));
        assert_eq!(res.status(), StatusCode::OK);
        res.cookies()
            .find(|c| c.name() == "neptun-session")
            .map(|c| c.value().to_owned())
            .unwrap_or_else(|| panic!("login set no neptun-session cookie"))
    }

    /// The status of `GET /api/auth/check` with `user`'s cookies: is their session live?
    pub async fn check_status(&self, user: &TestUser) -> StatusCode {
        user.client
            .get(self.url("/api/auth/check"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("check: {e}"))
            .status()
    }

    /// Neptun's Chat Files endpoint: a chat's files.
    pub async fn list_files(&self, user: &TestUser, chat_id: i64) -> Response {
        user.client
            .get(self.url(&format!("/api/users/{}/chats/{chat_id}/files", user.id)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("list files: {e}"))
    }

    /// Every file under the storage directory's `objects` and `tmp` areas.
    pub fn stored_files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for area in ["objects", "tmp"] {
            let mut stack = vec![self.storage_dir().join(area)];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        stack.push(path);
                    } else {
                        found.push(path);
                    }
                }
            }
        }
        found
    }

    /// Everything stored for this server, wherever: the files under the storage directory's
    /// `objects` and `tmp` areas (as paths under it), and with S3 the bucket's objects under
    /// this server's prefix (`s3:<name>`, the start-up probe object aside) and the multipart
    /// uploads still open there (`s3-upload:<name>`).
    pub async fn stored(&self) -> Vec<String> {
        let storage = self.storage_dir();
        let mut found: Vec<String> = self
            .stored_files()
            .iter()
            .map(|path| {
                let under = path.strip_prefix(&storage).unwrap_or(path);
                under.display().to_string()
            })
            .collect();
        if let Some(s3) = self.bucket() {
            let objects = s3.list().await.unwrap_or_else(|e| panic!("listing: {e}"));
            found.extend(
                objects
                    .into_iter()
                    .filter(|o| o.name != chatfiles::storage::s3::PROBE_OBJECT)
                    .map(|o| format!("s3:{}", o.name)),
            );
            let open = s3
                .unfinished()
                .await
                .unwrap_or_else(|e| panic!("uploads: {e}"));
            found.extend(open.into_iter().map(|u| format!("s3-upload:{}", u.name)));
        }
        found.sort();
        found
    }

    /// The S3 store this server keeps its files in, reached on our own (not through the
    /// server); `None` with local storage.
    fn bucket(&self) -> Option<S3Store> {
        let settings = self.config.s3_settings(&self.config.object_store)?;
        let store = S3Store::new(&settings, self.config.max_file_size);
        Some(store.unwrap_or_else(|e| panic!("{e}")))
    }

    /// What every download URL in a listing starts with: our own `/files/` on the public base,
    /// or with direct downloads the objects' names in the bucket (path-style).
    pub fn download_base(&self) -> String {
        match self.config.s3_settings(&self.config.object_store) {
            Some(s3) if s3.downloads == Downloads::Direct => {
                let endpoint = s3.public_endpoint.as_str().trim_end_matches('/');
                format!("{endpoint}/{}/{}", s3.bucket, s3.prefix)
            }
            _ => format!("{}/files/", self.public_base()),
        }
    }

    /// The base our own download URLs are built on (`--public-url`, else our address).
    fn public_base(&self) -> String {
        let bound = self.address.trim_start_matches("http://").parse();
        let bound = bound.unwrap_or_else(|e| panic!("{}: {e}", self.address));
        chatfiles::config::public_base(self.config.public_url.as_ref(), bound)
    }

    /// Our own signed `/files/{key}` URL for `file` (a `ChatFile`), as a listing made now
    /// would sign it, on this server's address. Without direct downloads that is the
    /// listing's URL; with them, our route still serves it (from the bucket), so tests of the
    /// route itself (headers, ranges, validators, signatures) run on every backend.
    pub fn route_url(&self, file: &Value, download: bool) -> String {
        let url = file["url"]
            .as_str()
            .unwrap_or_else(|| panic!("no url in {file}"));
        let key = key_of(url);
        let keys = chatfiles::secrets::load_key_ring(
            &self.storage_dir(),
            self.config.secret.as_ref(),
            &self.config.previous_secrets,
        )
        .unwrap_or_else(|e| panic!("the server's keys: {e:#}"));
        let expires = chatfiles::signing::expiry(self.clock.unix(), self.config.url_ttl.as_secs());
        let query = keys.current.urls.query(&key, expires, download);
        format!("{}/files/{key}?{query}", self.address)
    }
}

/// A response header's value; panics when it is missing or not text.
pub fn header(res: &Response, name: &str) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_owned()
}

/// Asserts the contract's error shape and returns `data.message`.
pub async fn assert_error(res: Response, status: StatusCode) -> String {
    assert_eq!(res.status(), status, "unexpected status");
    assert!(
        res.headers().contains_key("x-request-id"),
        "no X-Request-Id"
    );
    let content_type = header(&res, "content-type");
    assert!(
        content_type.starts_with("application/json"),
        "error content type {content_type}"
    );
    let body: Value = res
        .json()
        .await
        .unwrap_or_else(|e| panic!("error body is not JSON: {e}"));
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

impl TestApp {
    /// Stops the server gracefully and waits until it has let go of the storage lock, so another
    /// process (`chatfiles check --repair`) can take it.
    pub async fn stop(&self) {
        self.handle.stop(true).await;
        // The lock is dropped by the server's task just after it stops, not by `stop` itself.
        let dir = self.storage_dir();
        let freed = tokio::task::spawn_blocking(move || {
            chatfiles::storage::StorageLock::acquire(&dir, std::time::Duration::from_secs(10))
        })
        .await
        .unwrap_or_else(|e| panic!("lock probe: {e}"))
        .unwrap_or_else(|e| panic!("storage lock: {e}"));
        assert!(
            freed.is_some(),
            "the stopped server still holds the storage lock"
        );
    }
}

/// What a run of the `chatfiles` binary printed, and how it exited.
pub struct CliRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    pub fn last_line(&self) -> &str {
        self.stdout.lines().next_back().unwrap_or_default()
    }

    /// Asserts that standard output has exactly this line.
    pub fn assert_has(&self, line: &str) {
        assert!(
            self.lines().contains(&line),
            "no {line:?} in:\n{}",
            self.stdout
        );
    }
}

/// Runs the real `chatfiles` binary with `args`, feeding it `stdin`; no `CHATFILES_*` variable
/// of the test's own environment leaks in.
pub async fn chatfiles_cli(args: &[&str], stdin: &str) -> CliRun {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatfiles"));
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("CHATFILES_")) {
        command.env_remove(name);
    }
    let mut child = command
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run chatfiles: {e}"));
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("stdin: {e}"));
    }
    let output = child
        .wait_with_output()
        .await
        .unwrap_or_else(|e| panic!("chatfiles: {e}"));
    CliRun {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
