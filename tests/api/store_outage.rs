//! The object store killed (SIGKILL) and started again while clients keep uploading, downloading
//! (through the service: `--s3-downloads proxy`) and deleting. While it is down, every upload and
//! every download that needs the store answers 503 `Object store unavailable` with `Retry-After`,
//! at once, and `/health` answers 503 naming the object store; once it is back the service
//! recovers by itself; nothing acknowledged is lost; and after a restart of the service (its
//! sweep) the bucket holds exactly the objects of the files listed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chatfiles::storage::{Downloads, ObjectStore, is_valid_key};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use tokio::sync::watch;

use crate::helpers::{TestApp, TestUser, assert_error, sha256};
use crate::object_store::spawn_on;
use crate::seaweed;
use crate::tools::require;

/// Clients, each its own user and chat.
const CLIENTS: usize = 3;
/// Longest a client waits for any answer before it counts the request as hung.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// What a request may take while the store is down (its port refuses connections): the
/// service's connect timeout to the store is 5 s, and a refused connection is answered at once.
const DOWN_BOUND: Duration = Duration::from_secs(5);
/// Answers each client collects with the store down, then with it restarting, before it waits
/// for the next phase (so that the loops stay bounded however fast 503s come).
const DOWN_ANSWERS: usize = 12;
const RESTARTING_ANSWERS: usize = 40;
/// Successful uploads (and downloads) each client needs before the kill, and after recovery.
const WANTED_SUCCESSES: usize = 3;
/// Rounds (an upload, a download, every fourth a delete) a client runs at most.
const MAX_ROUNDS: usize = 300;
/// The bytes of objects up to this size are kept in memory by the download path, and may be
/// served without the store.
const MAX_CACHED_OBJECT: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// The store up.
    Before,
    /// Killed.
    Down,
    /// Being started again (`SeaweedNode::restart`, until it answers).
    Restarting,
    /// `/health` has answered 200 again.
    Recovered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Upload,
    Download,
    Delete,
}

/// What came of a request.
#[derive(Debug, Clone)]
enum Outcome {
    /// 201, 200 with the right bytes, 204.
    Success,
    /// 503 `Object store unavailable` in the error shape with a `Retry-After`.
    StoreUnavailable,
    /// Any other answer: status, `Retry-After`, body.
    Other(StatusCode, Option<String>, String),
    /// 200 whose bytes are not the file's.
    WrongBytes(String),
    /// No answer (connection error, or no answer within [`CLIENT_TIMEOUT`]), or a body cut off.
    Transport(String),
}

#[derive(Debug, Clone)]
struct Event {
    client: usize,
    kind: Kind,
    /// The phase when it was sent.
    phase: Phase,
    sent: Instant,
    answered: Instant,
    /// The file uploaded, downloaded or deleted.
    file: String,
    size: u64,
    outcome: Outcome,
}

impl Event {
    fn took(&self) -> Duration {
        self.answered - self.sent
    }
}

/// A file the service acknowledged (201) and has not deleted.
#[derive(Debug, Clone)]
struct Stored {
    id: i64,
    url: String,
    sha256: String,
    size: u64,
}

/// What a client did and knows at the end.
struct Report {
    user: TestUser,
    chat: i64,
    /// Acknowledged and not deleted, by name.
    stored: BTreeMap<String, Stored>,
    /// Uploads (by file name) and deletes whose outcome the client never learnt.
    unknown: BTreeSet<String>,
    /// Uploads refused with 503: their files must never be listed.
    refused: BTreeSet<String>,
    events: Vec<Event>,
}

/// How far the clients are, for the test to move on.
#[derive(Default)]
struct Progress {
    /// Clients with [`WANTED_SUCCESSES`] uploads and downloads before the kill.
    warmed_up: AtomicUsize,
    /// Clients waiting for the end of [`Phase::Down`].
    parked_down: AtomicUsize,
}

/// An answer's status, `Retry-After` and body, classified.
async fn classify(res: reqwest::Result<reqwest::Response>, success: StatusCode) -> Outcome {
    let res = match res {
        Ok(res) => res,
        Err(err) => return Outcome::Transport(err.without_url().to_string()),
    };
    let status = res.status();
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let json = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let body = match res.text().await {
        Ok(body) => body,
        Err(err) => return Outcome::Transport(format!("{status}, body cut off: {err}")),
    };
    if status == success {
        return Outcome::Success;
    }
    let message = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["data"]["message"].as_str().map(str::to_owned));
    let retry = retry_after
        .as_deref()
        .is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s > 0));
    if status == StatusCode::SERVICE_UNAVAILABLE
        && json
        && retry
        && message.as_deref() == Some("Object store unavailable")
    {
        return Outcome::StoreUnavailable;
    }
    Outcome::Other(status, retry_after, body)
}

/// The file a client sends in round `round`: sizes cycling through one PUT (≤ 8 MiB, some
/// kept in the download cache, some not) and a multipart upload (over 8 MiB).
fn file_for(client: usize, round: usize) -> (String, Vec<u8>) {
    const SIZES: [usize; 5] = [
        3 * 1024,
        2 * 1024 * 1024 + 11,
        150 * 1024,
        1536 * 1024,
        9 << 20,
    ];
    let size = SIZES[round % SIZES.len()];
    let name = format!("c{client}-r{round}.bin");
    let seed = (client * 7919 + round) as u8;
    let bytes = (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    (name, bytes)
}

struct Client {
    n: usize,
    address: String,
    report: Report,
    phase: watch::Receiver<Phase>,
    progress: Arc<Progress>,
}

impl Client {
    fn files_url(&self) -> String {
        format!(
            "{}/api/users/{}/chats/{}/files",
            self.address, self.report.user.id, self.report.chat
        )
    }

    fn record(
        &mut self,
        kind: Kind,
        phase: Phase,
        sent: Instant,
        file: &str,
        size: u64,
        outcome: Outcome,
    ) {
        self.report.events.push(Event {
            client: self.n,
            kind,
            phase,
            sent,
            answered: Instant::now(),
            file: file.to_owned(),
            size,
            outcome,
        });
    }

    async fn upload(&mut self, round: usize) -> bool {
        let (name, bytes) = file_for(self.n, round);
        let (size, sha) = (bytes.len() as u64, sha256(&bytes));
        let part = Part::bytes(bytes)
            .file_name(name.clone())
            .mime_str("application/octet-stream")
            .unwrap_or_else(|e| panic!("{e}"));
        let request = self
            .report
            .user
            .client
            .post(self.files_url())
            .multipart(Form::new().part("file", part))
            .timeout(CLIENT_TIMEOUT);
        let phase = *self.phase.borrow();
        let sent = Instant::now();
        let res = request.send().await;
        let mut created = None;
        let outcome = match res {
            Ok(res) if res.status() == StatusCode::CREATED => match res.json::<Value>().await {
                Ok(body) => {
                    created = Some(body["chatFiles"][0].clone());
                    Outcome::Success
                }
                Err(err) => Outcome::Transport(format!("201, body cut off: {err}")),
            },
            res => classify(res, StatusCode::CREATED).await,
        };
        match (&outcome, created) {
            (Outcome::Success, Some(file)) => {
                assert_eq!(file["name"], Value::from(name.as_str()), "{file}");
                assert_eq!(file["size"].as_u64(), Some(size), "{file}");
                let stored = Stored {
                    id: file["id"]
                        .as_i64()
                        .unwrap_or_else(|| panic!("no id in {file}")),
                    url: file["url"].as_str().unwrap_or_default().to_owned(),
                    sha256: sha,
                    size,
                };
                self.report.stored.insert(name.clone(), stored);
            }
            (Outcome::StoreUnavailable, _) => {
                self.report.refused.insert(name.clone());
            }
            _ => {
                self.report.unknown.insert(name.clone());
            }
        }
        let success = matches!(outcome, Outcome::Success);
        self.record(Kind::Upload, phase, sent, &name, size, outcome);
        success
    }

    /// Downloads one of the client's files (round robin) through its proxied URL.
    async fn download(&mut self, round: usize) -> Option<bool> {
        let count = self.report.stored.len();
        let (name, file) = self
            .report
            .stored
            .iter()
            .nth(round.checked_rem(count)?)
            .map(|(name, file)| (name.clone(), file.clone()))?;
        let phase = *self.phase.borrow();
        let sent = Instant::now();
        let res = reqwest::Client::new()
            .get(&file.url)
            .timeout(CLIENT_TIMEOUT)
            .send()
            .await;
        let outcome = match res {
            Ok(res) if res.status() == StatusCode::OK => match res.bytes().await {
                Ok(bytes) if sha256(&bytes) == file.sha256 => Outcome::Success,
                Ok(bytes) => Outcome::WrongBytes(format!("{} bytes", bytes.len())),
                Err(err) => Outcome::Transport(format!("200, body cut off: {err}")),
            },
            res => classify(res, StatusCode::OK).await,
        };
        let success = matches!(outcome, Outcome::Success);
        self.record(Kind::Download, phase, sent, &name, file.size, outcome);
        Some(success)
    }

    /// Deletes the client's oldest file.
    async fn delete(&mut self) {
        let Some((name, file)) = self
            .report
            .stored
            .iter()
            .next()
            .map(|(name, file)| (name.clone(), file.clone()))
        else {
            return;
        };
        let url = format!("{}/{}", self.files_url(), file.id);
        let phase = *self.phase.borrow();
        let sent = Instant::now();
        let res = self
            .report
            .user
            .client
            .delete(url)
            .timeout(CLIENT_TIMEOUT)
            .send()
            .await;
        let outcome = classify(res, StatusCode::NO_CONTENT).await;
        match outcome {
            Outcome::Success => {
                self.report.stored.remove(&name);
            }
            Outcome::Transport(_) => {
                self.report.stored.remove(&name);
                self.report.unknown.insert(name.clone());
            }
            _ => {}
        }
        self.record(Kind::Delete, phase, sent, &name, file.size, outcome);
    }

    /// Waits (bounded) until the test leaves `phase`.
    async fn park(&mut self, phase: Phase) {
        let left = tokio::time::timeout(
            Duration::from_secs(180),
            self.phase.wait_for(|p| *p != phase),
        )
        .await;
        assert!(
            matches!(left, Ok(Ok(_))),
            "client {}: the test stayed in {phase:?}",
            self.n
        );
    }

    /// Rounds of an upload, a download and (every fourth) a delete, until the test is past
    /// recovery and this client has succeeded again; bounded by [`MAX_ROUNDS`].
    async fn run(mut self) -> Report {
        let mut answers: BTreeMap<Phase, usize> = BTreeMap::new();
        let mut successes: BTreeMap<(Phase, Kind), usize> = BTreeMap::new();
        let enough = |successes: &BTreeMap<(Phase, Kind), usize>, phase| {
            [Kind::Upload, Kind::Download].iter().all(|kind| {
                successes.get(&(phase, *kind)).copied().unwrap_or_default() >= WANTED_SUCCESSES
            })
        };
        let mut warmed_up = false;
        for round in 0..MAX_ROUNDS {
            let phase = *self.phase.borrow();
            let answered = answers.get(&phase).copied().unwrap_or_default();
            match phase {
                Phase::Down if answered >= DOWN_ANSWERS => {
                    self.progress.parked_down.fetch_add(1, Ordering::SeqCst);
                    self.park(phase).await;
                    continue;
                }
                Phase::Restarting if answered >= RESTARTING_ANSWERS => {
                    self.park(phase).await;
                    continue;
                }
                Phase::Recovered if enough(&successes, phase) => return self.report,
                _ => {}
            }
            if self.upload(round).await {
                *successes.entry((phase, Kind::Upload)).or_default() += 1;
            }
            let mut count = 1;
            if let Some(ok) = self.download(round).await {
                count += 1;
                if ok {
                    *successes.entry((phase, Kind::Download)).or_default() += 1;
                }
            }
            if round % 4 == 3 {
                self.delete().await;
                count += 1;
            }
            *answers.entry(phase).or_default() += count;
            if phase == Phase::Before && !warmed_up && enough(&successes, phase) {
                warmed_up = true;
                self.progress.warmed_up.fetch_add(1, Ordering::SeqCst);
            }
        }
        panic!(
            "client {} ran {MAX_ROUNDS} rounds without {WANTED_SUCCESSES} uploads and downloads \
             after recovery; its last answers: {:#?}",
            self.n,
            self.report.events.iter().rev().take(6).collect::<Vec<_>>()
        );
    }
}

/// Polls `probe` every 20 ms until it gives a value; panics after `timeout`.
async fn poll_until<T>(
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

async fn health(app: &TestApp) -> reqwest::Response {
    reqwest::Client::new()
        .get(app.url("/health"))
        .timeout(CLIENT_TIMEOUT)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /health: {e}"))
}

/// The S3 store the app uses, opened afresh (not through the service).
async fn bucket(app: &TestApp) -> chatfiles::storage::S3Store {
    match app.config.open_store(&app.config.object_store).await {
        Ok(ObjectStore::S3(store)) => store,
        Ok(other) => panic!("not an S3 store: {}", other.describe()),
        Err(err) => panic!("{err:#}"),
    }
}

/// The object key of a proxied download URL (`/files/{key}?…`).
fn key_of(url: &str) -> String {
    let parsed = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    parsed
        .path()
        .strip_prefix("/files/")
        .unwrap_or_else(|| panic!("not a proxied download URL: {url}"))
        .to_owned()
}

/// Lists each client's chat and downloads every listed file: every acknowledged file is there
/// with its bytes; nothing refused is; anything else listed was an upload whose answer was
/// lost. Returns the object keys of the files listed.
async fn verify(app: &TestApp, reports: &[Report]) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for report in reports {
        let res = app.list_files(&report.user, report.chat).await;
        assert_eq!(res.status(), StatusCode::OK, "listing chat {}", report.chat);
        let body: Value = res.json().await.unwrap_or_default();
        let listed = body["chatFiles"].as_array().cloned().unwrap_or_default();
        let mut names = BTreeSet::new();
        for file in &listed {
            let name = file["name"].as_str().unwrap_or_default().to_owned();
            assert!(
                !report.refused.contains(&name),
                "{name} is listed although its upload was refused with 503"
            );
            assert!(
                report.stored.contains_key(&name) || report.unknown.contains(&name),
                "{name} is listed although it was deleted or never acknowledged"
            );
            let url = file["url"].as_str().unwrap_or_default();
            let res = reqwest::Client::new()
                .get(url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("download of {name}: {e}"));
            assert_eq!(res.status(), StatusCode::OK, "download of listed {name}");
            let bytes = res
                .bytes()
                .await
                .unwrap_or_else(|e| panic!("download of {name}: {e}"));
            if let Some(stored) = report.stored.get(&name) {
                assert_eq!(sha256(&bytes), stored.sha256, "{name} has other bytes");
            }
            assert!(names.insert(name), "listed twice in chat {}", report.chat);
            keys.insert(key_of(url));
        }
        for name in report.stored.keys() {
            assert!(
                names.contains(name),
                "{name} was acknowledged with 201 but is not listed"
            );
        }
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_killed_and_restarted_under_load_costs_503s_and_nothing_acknowledged() {
    let Some(mut node) = require(seaweed::start().await) else {
        return;
    };
    let started = Instant::now();
    let app = spawn_on(&node, Downloads::Proxy).await;
    let (phase, watcher) = watch::channel(Phase::Before);
    let progress = Arc::new(Progress::default());
    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        let user = app.user().await;
        let chat = app.chat(&user, &format!("outage {n}")).await;
        let client = Client {
            n,
            address: app.address.clone(),
            report: Report {
                user,
                chat,
                stored: BTreeMap::new(),
                unknown: BTreeSet::new(),
                refused: BTreeSet::new(),
                events: Vec::new(),
            },
            phase: watcher.clone(),
            progress: progress.clone(),
        };
        clients.push(tokio::spawn(client.run()));
    }
    poll_until(
        "every client has uploaded and downloaded a few files",
        Duration::from_secs(60),
        async || (progress.warmed_up.load(Ordering::SeqCst) == CLIENTS).then_some(()),
    )
    .await;

    // Down: SIGKILL, reaped, so that its port refuses connections from now on.
    node.kill();
    let killed = Instant::now();
    phase.send_replace(Phase::Down);
    let health_down = poll_until(
        "/health says the object store is unavailable",
        Duration::from_secs(10),
        async || {
            let asked = Instant::now();
            let res = health(&app).await;
            (res.status() == StatusCode::SERVICE_UNAVAILABLE).then(|| (res, asked.elapsed()))
        },
    )
    .await;
    let health_latency = health_down.1;
    assert_eq!(
        assert_error(health_down.0, StatusCode::SERVICE_UNAVAILABLE).await,
        "Object store unavailable"
    );
    poll_until(
        "every client has had its answers with the store down",
        Duration::from_secs(60),
        async || (progress.parked_down.load(Ordering::SeqCst) == CLIENTS).then_some(()),
    )
    .await;
    let res = health(&app).await;
    assert_eq!(
        assert_error(res, StatusCode::SERVICE_UNAVAILABLE).await,
        "Object store unavailable",
        "/health with the store still down"
    );

    // Restarting: the same directory and ports, the data kept.
    let restarting = Instant::now();
    phase.send_replace(Phase::Restarting);
    node.restart().await;
    let restarted = Instant::now();
    poll_until(
        "/health answers 200 again, without a restart of the service",
        Duration::from_secs(60),
        async || (health(&app).await.status() == StatusCode::OK).then_some(()),
    )
    .await;
    let recovered = Instant::now();
    phase.send_replace(Phase::Recovered);

    let mut reports = Vec::new();
    for client in clients {
        let report = tokio::time::timeout(Duration::from_secs(300), client)
            .await
            .unwrap_or_else(|_| panic!("a client did not finish"))
            .unwrap_or_else(|e| panic!("a client failed: {e}"));
        reports.push(report);
    }
    let finished = Instant::now();

    let events: Vec<&Event> = reports.iter().flat_map(|r| &r.events).collect();
    summarize(&events, killed);
    println!(
        "store killed {:?} after the start; /health said so in {health_latency:?}; down for {:?} \
         (restart took {:?}); /health 200 {:?} after the restart; load ended {:?} later",
        killed - started,
        restarting - killed,
        restarted - restarting,
        recovered - restarted,
        finished - recovered,
    );

    // Never a 500, a wrong byte or an answer of another shape, whenever it was sent.
    for event in &events {
        assert!(
            matches!(
                event.outcome,
                Outcome::Success | Outcome::StoreUnavailable | Outcome::Transport(_)
            ),
            "unexpected answer: {event:#?}"
        );
    }
    // No answer at all only for a request that was in flight when the store was killed.
    for event in &events {
        if let Outcome::Transport(why) = &event.outcome {
            assert!(
                event.sent < killed && event.answered >= killed,
                "no answer ({why}) to a request that was not in flight at the kill: {event:#?}"
            );
        }
    }
    // Sent and answered while the store was down: uploads and downloads that need the store
    // are refused at once; downloads of small objects in memory are served from there.
    let down: Vec<&&Event> = events
        .iter()
        .filter(|e| e.sent >= killed && e.answered <= restarting)
        .collect();
    for event in &down {
        assert!(
            event.took() <= DOWN_BOUND,
            "an answer with the store down took {:?}: {event:#?}",
            event.took()
        );
        let ok = match (event.kind, &event.outcome) {
            (Kind::Upload, outcome) => matches!(outcome, Outcome::StoreUnavailable),
            (Kind::Download, Outcome::Success) => event.size <= MAX_CACHED_OBJECT,
            (Kind::Download, outcome) => matches!(outcome, Outcome::StoreUnavailable),
            // A delete removes the row; its object waits in the journal.
            (Kind::Delete, outcome) => matches!(outcome, Outcome::Success),
        };
        assert!(ok, "with the store down: {event:#?}");
    }
    let refused = |kind| {
        down.iter()
            .filter(|e| e.kind == kind && matches!(e.outcome, Outcome::StoreUnavailable))
            .count()
    };
    assert!(
        refused(Kind::Upload) >= CLIENTS && refused(Kind::Download) >= 1,
        "too few requests were refused with the store down: {} uploads, {} downloads",
        refused(Kind::Upload),
        refused(Kind::Download)
    );
    // Once /health says it is back, nothing is refused.
    for event in events.iter().filter(|e| e.sent >= recovered) {
        assert!(
            matches!(event.outcome, Outcome::Success),
            "after recovery: {event:#?}"
        );
    }

    let listed = verify(&app, &reports).await;
    // The service restarted over the same database: its sweep removes what the outage left
    // (objects of refused uploads, of deletes whose objects could not be removed, open
    // multipart uploads); the bucket then holds the listed objects and nothing else.
    let app = app.restart().await;
    let relisted = verify(&app, &reports).await;
    assert_eq!(listed, relisted, "the restart changed what is listed");
    let store = bucket(&app).await;
    let objects: BTreeSet<String> = store
        .list()
        .await
        .unwrap_or_else(|e| panic!("listing the bucket: {e}"))
        .into_iter()
        .map(|o| o.name)
        .filter(|name| is_valid_key(name))
        .collect();
    let orphans: Vec<_> = objects.difference(&listed).collect();
    let missing: Vec<_> = listed.difference(&objects).collect();
    assert!(
        orphans.is_empty() && missing.is_empty(),
        "the bucket after the sweep: objects without a file {orphans:?}, files without an \
         object {missing:?}"
    );
    let open = store
        .unfinished()
        .await
        .unwrap_or_else(|e| panic!("listing the multipart uploads: {e}"));
    assert!(open.is_empty(), "multipart uploads left open: {open:?}");
    let db =
        rusqlite::Connection::open(app.config.database_path()).unwrap_or_else(|e| panic!("{e}"));
    // The keys stay in the journal until the first housekeeping pass (5 s after the start) has
    // removed their objects once more: a request of the stopped run may land late.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let pending = loop {
        let pending: i64 = db
            .query_row("SELECT COUNT(*) FROM pending_object", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        if pending == 0 || std::time::Instant::now() > deadline {
            break pending;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(pending, 0, "keys left in the journal after the sweep");
    assert_eq!(health(&app).await.status(), StatusCode::OK);
    app.stop().await;
}

/// Prints what each phase got: answers by kind and outcome, and the slowest.
fn summarize(events: &[&Event], killed: Instant) {
    let mut table: BTreeMap<(Phase, Kind, &str), (usize, Duration)> = BTreeMap::new();
    for event in events {
        let outcome = match &event.outcome {
            Outcome::Success => "ok",
            Outcome::StoreUnavailable => "503",
            Outcome::Other(..) => "other",
            Outcome::WrongBytes(_) => "wrong bytes",
            Outcome::Transport(_) => "no answer",
        };
        let entry = table.entry((event.phase, event.kind, outcome)).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(event.took());
    }
    for ((phase, kind, outcome), (count, slowest)) in table {
        println!("{phase:?} {kind:?} {outcome}: {count}, slowest {slowest:?}");
    }
    for event in events {
        let why = match &event.outcome {
            Outcome::Success | Outcome::StoreUnavailable => continue,
            Outcome::Other(status, retry_after, body) => {
                format!("{status} (Retry-After {retry_after:?}): {body}")
            }
            Outcome::WrongBytes(what) => format!("wrong bytes: {what}"),
            Outcome::Transport(why) => format!("no answer: {why}"),
        };
        {
            let at = event.sent.checked_duration_since(killed).map_or_else(
                || format!("{:?} before", killed - event.sent),
                |after| format!("{after:?} after"),
            );
            println!(
                "client {} {:?} {} ({} bytes) sent {at} the kill: {why}",
                event.client, event.kind, event.file, event.size
            );
        }
    }
}

/// With direct downloads the store answers a file's URL: a file deleted (204) while the store
/// was down, its object therefore still in the bucket, must be the store's 404 soon after the
/// store is back (the failed removal is retried in the background), not only after the next
/// start of the service.
#[tokio::test]
async fn with_direct_downloads_a_file_deleted_while_the_store_was_down_is_gone_once_it_is_back() {
    let Some(mut node) = require(seaweed::start().await) else {
        return;
    };
    let app = spawn_on(&node, Downloads::Direct).await;
    let user = app.user().await;
    let chat = app.chat(&user, "deleted while down").await;
    let files = app
        .upload_ok(&user, chat, &[("gone.txt", "text/plain", b"delete me")])
        .await;
    let url = files[0]["url"].as_str().unwrap_or_default().to_owned();
    let id = files[0]["id"].as_i64().unwrap_or_default();
    let get = async |url: &str| {
        reqwest::Client::new()
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .status()
    };
    assert_eq!(get(&url).await, StatusCode::OK);

    node.kill();
    let res = user
        .client
        .delete(app.url(&format!("/api/users/{}/chats/{chat}/files/{id}", user.id)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("delete: {e}"));
    assert_eq!(
        res.status(),
        StatusCode::NO_CONTENT,
        "a delete needs only the row"
    );
    node.restart().await;
    poll_until(
        "/health answers 200 again",
        Duration::from_secs(60),
        async || (health(&app).await.status() == StatusCode::OK).then_some(()),
    )
    .await;
    // Answers that need the store succeed again (the service has recovered)...
    app.upload_ok(&user, chat, &[("after.txt", "text/plain", b"back")])
        .await;
    // ...and the removal that failed is retried in the background (every 5 s) until it
    // succeeds: the URL is the store's 404 within a few seconds, without a restart.
    poll_until(
        "the deleted file's direct URL answers 404 with the store back",
        Duration::from_secs(30),
        async || (get(&url).await == StatusCode::NOT_FOUND).then_some(()),
    )
    .await;
    let once_back = get(&url).await;
    // ...and the next start's sweep removes the object for good.
    let app = app.restart().await;
    let after_a_restart = get(&url).await;
    assert_eq!(
        (once_back, after_a_restart),
        (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND),
        "the deleted file's direct URL, once the store is back and after a restart of the service"
    );
    app.stop().await;
}
