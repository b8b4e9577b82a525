//! Resumable uploads (tus 1.0.0) killed with SIGKILL: mid-PATCH, right after each
//! acknowledgement, and after a PATCH the client cut off. After the restart over the same
//! storage, HEAD reports at least every acknowledged offset (exactly it when nothing more was
//! sent), the rest can be PATCHed from there, and the finished upload is an ordinary file with
//! the original bytes, its part file under `<storage>/uploads/` gone, and the storage
//! consistent.
//!
//! Two more stop at the server's fault points: between a PATCH's fsync and the recording of its
//! offset (`tus-after-sync`), and between the completed upload's object being stored and its
//! file row (`tus-after-store`).
//!
//! Each scenario runs on the local disk and, in `s3`, on a bucket of a real SeaweedFS node
//! (where the part file still lives under `<storage>/uploads/` until the upload completes, then
//! is streamed into the bucket).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chatfiles::storage::Downloads;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Body, Response, StatusCode};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::harness::{Account, Deployment, KIB, MIB, Service, TestFile, poll_until, sha256};

const TUS_VERSION: &str = "1.0.0";
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// One resumable upload, as the client knows it.
struct Upload {
    /// The `Location` the creation answered (naming the port of the run that created it).
    location: String,
    /// Its last path segment: 32 lowercase hex characters.
    id: String,
    /// The `Upload-Metadata` sent at creation.
    metadata: String,
}

/// What a HEAD answered.
#[derive(Debug)]
struct Head {
    offset: u64,
    length: u64,
    metadata: Option<String>,
}

fn header(res: &Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn header_u64(res: &Response, name: &str) -> u64 {
    header(res, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name} in the {} answer", res.status()))
}

fn uploads_url(account: &Account, service: &Service, chat: i64) -> String {
    service.url(&format!("/api/users/{}/chats/{chat}/uploads", account.id))
}

/// `<storage>/uploads/<id>`: where the bytes of an unfinished upload live.
fn part_file(deployment: &Deployment, upload: &Upload) -> PathBuf {
    deployment.storage().join("uploads").join(&upload.id)
}

/// The size of the upload's part file, if it exists.
fn part_file_size(deployment: &Deployment, upload: &Upload) -> Option<u64> {
    std::fs::metadata(part_file(deployment, upload))
        .ok()
        .map(|m| m.len())
}

/// Creates an upload of `file` (`Upload-Length` its size, `Upload-Metadata` its name and type);
/// with `first` bytes, they go in the creation's body (creation-with-upload). Returns the
/// upload and the `Upload-Offset` answered.
async fn create(
    account: &Account,
    service: &Service,
    chat: i64,
    file: &TestFile,
    first: Option<Bytes>,
) -> (Upload, u64) {
    let metadata = format!(
        "filename {},filetype {}",
        BASE64.encode(&file.name),
        BASE64.encode("application/octet-stream")
    );
    let mut request = account
        .client
        .post(uploads_url(account, service, chat))
        .header("Tus-Resumable", TUS_VERSION)
        .header("Upload-Length", file.bytes.len().to_string())
        .header("Upload-Metadata", &metadata);
    if let Some(first) = first {
        request = request
            .header(CONTENT_TYPE, OFFSET_OCTET_STREAM)
            .body(first);
    }
    let res = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("create the upload: {e}"));
    let status = res.status();
    let location = header(&res, LOCATION.as_str());
    let offset = header(&res, "upload-offset").and_then(|v| v.parse().ok());
    let tus = header(&res, "tus-resumable");
    let text = res.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::CREATED, "creation failed: {text}");
    assert_eq!(
        tus.as_deref(),
        Some(TUS_VERSION),
        "Tus-Resumable on the 201"
    );
    let location = location.unwrap_or_else(|| panic!("no Location on the 201"));
    let offset = offset.unwrap_or_else(|| panic!("no Upload-Offset on the 201"));
    let parsed = reqwest::Url::parse(&location)
        .unwrap_or_else(|e| panic!("Location {location:?} is not an absolute URL: {e}"));
    let id = parsed
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "the Location {location} does not end in an upload id"
    );
    assert_eq!(
        parsed.path(),
        format!("/api/users/{}/chats/{chat}/uploads/{id}", account.id),
        "the Location's path"
    );
    (
        Upload {
            location,
            id,
            metadata,
        },
        offset,
    )
}

/// HEAD on the upload, at `service` (which may be a later run than the one that created it).
async fn head(account: &Account, service: &Service, upload: &Upload) -> Head {
    let res = account
        .client
        .head(service.rebase(&upload.location))
        .header("Tus-Resumable", TUS_VERSION)
        .send()
        .await
        .unwrap_or_else(|e| panic!("HEAD on the upload: {e}"));
    assert_eq!(res.status(), StatusCode::OK, "HEAD on the upload");
    assert_eq!(
        header(&res, "tus-resumable").as_deref(),
        Some(TUS_VERSION),
        "Tus-Resumable on the HEAD"
    );
    Head {
        offset: header_u64(&res, "upload-offset"),
        length: header_u64(&res, "upload-length"),
        metadata: header(&res, "upload-metadata"),
    }
}

/// PATCHes `body` (`length` bytes) at `offset`; a transport error is returned, not raised (the
/// service may be killed).
async fn patch(
    account: &Account,
    service: &Service,
    upload: &Upload,
    offset: u64,
    length: u64,
    body: impl Into<Body>,
) -> reqwest::Result<Response> {
    account
        .client
        .patch(service.rebase(&upload.location))
        .header("Tus-Resumable", TUS_VERSION)
        .header(CONTENT_TYPE, OFFSET_OCTET_STREAM)
        .header("Upload-Offset", offset.to_string())
        .header(CONTENT_LENGTH, length.to_string())
        .body(body)
        .send()
        .await
}

/// PATCHes `file`'s bytes from `offset` to `end`, which must be acknowledged with a 204 whose
/// `Upload-Offset` is `end`.
async fn patch_acknowledged(
    account: &Account,
    service: &Service,
    upload: &Upload,
    file: &TestFile,
    offset: u64,
    end: u64,
) {
    let chunk = file.bytes.slice(offset as usize..end as usize);
    let res = patch(account, service, upload, offset, end - offset, chunk)
        .await
        .unwrap_or_else(|e| panic!("PATCH {offset}..{end}: {e}"));
    let status = res.status();
    let new_offset = header(&res, "upload-offset");
    let tus = header(&res, "tus-resumable");
    let text = res.text().await.unwrap_or_default();
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "PATCH {offset}..{end}: {text}"
    );
    assert_eq!(
        tus.as_deref(),
        Some(TUS_VERSION),
        "Tus-Resumable on the 204"
    );
    assert_eq!(
        new_offset.and_then(|v| v.parse::<u64>().ok()),
        Some(end),
        "Upload-Offset of the 204 to PATCH {offset}..{end}"
    );
}

/// A PATCH body trickled out by the client: `chunk`-byte pieces with `pause` between them, up
/// to `until` bytes; then it stalls (so the PATCH cannot complete however slowly the test gets
/// to its kill) until `cut` is notified, when it fails and the client drops the connection.
struct Trickle {
    /// Bytes handed over so far.
    sent: Arc<AtomicUsize>,
    cut: Arc<Notify>,
}

impl Trickle {
    fn new() -> Self {
        Self {
            sent: Arc::default(),
            cut: Arc::default(),
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst) as u64
    }

    /// The body, `data` cut to its first `until` bytes.
    fn body(&self, data: Bytes, until: usize, chunk: usize, pause: Duration) -> Body {
        let sent = self.sent.clone();
        let cut = self.cut.clone();
        let stream = futures_util::stream::unfold(0usize, move |offset| {
            let data = data.clone();
            let sent = sent.clone();
            let cut = cut.clone();
            async move {
                if offset >= until {
                    cut.notified().await;
                    let err = std::io::Error::other("the client cut its PATCH off");
                    return Some((Err(err), offset));
                }
                if offset > 0 {
                    tokio::time::sleep(pause).await;
                }
                let end = (offset + chunk).min(until);
                sent.store(end, Ordering::SeqCst);
                Some((Ok::<Bytes, std::io::Error>(data.slice(offset..end)), end))
            }
        });
        Body::wrap_stream(stream)
    }
}

/// PATCHes `body` (`length` bytes, from `offset`) in the background, where the kill may cut it
/// off: its status, or the transport error.
fn spawn_patch(
    account: &Account,
    service: &Service,
    upload: &Upload,
    offset: u64,
    length: u64,
    body: impl Into<Body> + Send + 'static,
) -> JoinHandle<reqwest::Result<StatusCode>> {
    let client = account.client.clone();
    let url = service.rebase(&upload.location);
    tokio::spawn(async move {
        client
            .patch(url)
            .header("Tus-Resumable", TUS_VERSION)
            .header(CONTENT_TYPE, OFFSET_OCTET_STREAM)
            .header("Upload-Offset", offset.to_string())
            .header(CONTENT_LENGTH, length.to_string())
            .body(body)
            .send()
            .await
            .map(|res| res.status())
    })
}

/// The finished upload is the chat's one file, with `file`'s name, size and bytes (and SHA-256
/// in its row); GET on the upload names it; its part file is gone.
async fn assert_became_the_file(
    deployment: &Deployment,
    account: &Account,
    service: &Service,
    chat: i64,
    upload: &Upload,
    file: &TestFile,
) {
    let size = file.bytes.len() as u64;
    let after = head(account, service, upload).await;
    assert_eq!(
        (after.offset, after.length),
        (size, size),
        "HEAD on the finished upload"
    );

    let res = account
        .client
        .get(service.rebase(&upload.location))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET on the finished upload: {e}"));
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::OK, "GET on the finished upload: {text}");
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET body {text:?}: {e}"));
    let chat_file = &body["chatFile"];
    assert_eq!(chat_file["name"], file.name.as_str(), "{body}");
    assert_eq!(chat_file["size"].as_u64(), Some(size), "{body}");
    assert_eq!(
        chat_file["chat_conversation_id"].as_i64(),
        Some(chat),
        "{body}"
    );

    let listed = account.list(service, chat).await;
    assert_eq!(listed.len(), 1, "the chat lists {listed:?}");
    let entry = &listed[0];
    assert_eq!(entry["name"], file.name.as_str(), "{entry}");
    assert_eq!(entry["size"].as_u64(), Some(size), "{entry}");
    assert_eq!(
        entry["id"], chat_file["id"],
        "GET and the listing name other files"
    );
    let url = entry["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no url in {entry}"));
    let res = service.download(url).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "download of the finished upload"
    );
    let bytes = res
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("download of the finished upload: {e}"));
    assert_eq!(bytes.len() as u64, size, "the download's size");
    assert_eq!(
        sha256(&bytes),
        file.sha256(),
        "the finished upload downloads with other bytes"
    );

    let rows = deployment.rows();
    assert_eq!(rows.len(), 1, "rows: {rows:?}");
    assert_eq!(
        (rows[0].1, rows[0].2.as_str()),
        (size, file.sha256().as_str()),
        "the row's size and SHA-256"
    );
    let part = part_file(deployment, upload);
    assert!(
        !part.exists(),
        "the part file {} outlived the upload's completion",
        part.display()
    );
}

/// A second PATCH trickled into the service is killed mid-body, after a first PATCH was
/// acknowledged at `acknowledged` bytes. The restart reports an offset between the two (what
/// arrived of the cut-off PATCH may or may not be kept), and the rest PATCHed from there makes
/// the original file.
async fn kill_during_a_patch(deployment: Deployment, size: usize) {
    let service = deployment.start().await;
    let mut alice = Account::sign_up(&service).await;
    let chat = alice.create_chat(&service, "tus killed mid-PATCH").await;
    let file = TestFile::random("resumed.bin", 41, size);
    let total = size as u64;
    let (upload, offset) = create(&alice, &service, chat, &file, None).await;
    assert_eq!(
        offset, 0,
        "Upload-Offset of an upload created without a body"
    );

    let acknowledged = (MIB + 5) as u64;
    patch_acknowledged(&alice, &service, &upload, &file, 0, acknowledged).await;
    let part = part_file(&deployment, &upload);
    let mode = std::fs::metadata(&part)
        .unwrap_or_else(|e| panic!("no part file {} after a PATCH: {e}", part.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the part file's mode");

    // About 3 MiB/s, the last 64 KiB never sent.
    let trickle = Trickle::new();
    let rest = file.bytes.slice(acknowledged as usize..);
    let until = rest.len() - 64 * KIB;
    let body = trickle.body(rest, until, 32 * KIB, Duration::from_millis(10));
    let second = spawn_patch(
        &alice,
        &service,
        &upload,
        acknowledged,
        total - acknowledged,
        body,
    );
    // The server has taken in part of the second PATCH: a MiB handed over, and its part file
    // grown past the acknowledged offset.
    poll_until(
        "the second PATCH is being written to the part file",
        Duration::from_secs(30),
        async || {
            let handed_over = trickle.sent();
            let on_disk = part_file_size(&deployment, &upload).unwrap_or_default();
            (handed_over >= MIB as u64 && on_disk > acknowledged).then_some(())
        },
    )
    .await;
    // Another connection asks meanwhile: never below what was acknowledged, never past what
    // was sent. (Whether the bytes in flight count yet is the server's choice.)
    // (A HEAD that waits for the PATCH is allowed, so it is given a few seconds only.)
    let meanwhile = tokio::time::timeout(Duration::from_secs(5), head(&alice, &service, &upload))
        .await
        .ok();
    let handed_over = acknowledged + trickle.sent();
    if let Some(meanwhile) = &meanwhile {
        assert!(
            (acknowledged..=handed_over).contains(&meanwhile.offset),
            "HEAD during the second PATCH reports {} (acknowledged {acknowledged}, sent \
             {handed_over})",
            meanwhile.offset
        );
    }
    assert!(!second.is_finished(), "the second PATCH was answered early");
    service.kill();
    let handed_over = acknowledged + trickle.sent();
    let on_disk = part_file_size(&deployment, &upload);
    let answer = second
        .await
        .unwrap_or_else(|e| panic!("second PATCH task: {e}"));
    assert!(
        answer.is_err(),
        "the second PATCH got an answer: {answer:?}"
    );

    let service = deployment.start().await;
    alice.log_in(&service).await;
    let resumed = head(&alice, &service, &upload).await;
    println!(
        "killed with {handed_over} of {total} bytes sent ({acknowledged} acknowledged, HEAD \
         meanwhile {:?}, part file {on_disk:?} bytes); after the restart HEAD reports {}",
        meanwhile.map(|h| h.offset),
        resumed.offset
    );
    assert!(
        (acknowledged..=handed_over).contains(&resumed.offset),
        "after the restart HEAD reports {} (acknowledged {acknowledged}, sent {handed_over})",
        resumed.offset
    );
    assert_eq!(resumed.length, total, "Upload-Length after the restart");
    assert_eq!(
        resumed.metadata.as_deref(),
        Some(upload.metadata.as_str()),
        "Upload-Metadata after the restart"
    );
    let listed = alice.list(&service, chat).await;
    assert!(
        listed.is_empty(),
        "an unfinished upload is listed: {listed:?}"
    );

    patch_acknowledged(&alice, &service, &upload, &file, resumed.offset, total).await;
    assert_became_the_file(&deployment, &alice, &service, chat, &upload, &file).await;
    deployment.finish(service).await;
}

/// A PATCH cut off by the client keeps the bytes that arrived (fsync'd, HEAD reports them,
/// with no 204 to say so); a kill after that loses none of them.
async fn kill_after_a_patch_was_cut_off(deployment: Deployment, size: usize) {
    let service = deployment.start().await;
    let mut alice = Account::sign_up(&service).await;
    let chat = alice
        .create_chat(&service, "tus cut off, then killed")
        .await;
    let file = TestFile::random("cut.bin", 81, size);
    let total = size as u64;
    let (upload, _) = create(&alice, &service, chat, &file, None).await;
    let acknowledged = (512 * KIB + 1) as u64;
    patch_acknowledged(&alice, &service, &upload, &file, 0, acknowledged).await;

    // A MiB and a bit trickled in, then the client gives up on the PATCH.
    let trickle = Trickle::new();
    let rest = file.bytes.slice(acknowledged as usize..);
    let until = MIB + 17;
    let body = trickle.body(rest, until, 32 * KIB, Duration::from_millis(5));
    let patch = spawn_patch(
        &alice,
        &service,
        &upload,
        acknowledged,
        total - acknowledged,
        body,
    );
    poll_until(
        "the client has handed its bytes over",
        Duration::from_secs(30),
        async || (trickle.sent() == until as u64).then_some(()),
    )
    .await;
    trickle.cut.notify_one();
    let answer = tokio::time::timeout(Duration::from_secs(30), patch)
        .await
        .unwrap_or_else(|_| panic!("the cut-off PATCH did not end within 30 s"))
        .unwrap_or_else(|e| panic!("PATCH task: {e}"));
    println!("the cut-off PATCH ended with {answer:?}");
    assert!(
        !matches!(answer, Ok(StatusCode::NO_CONTENT)),
        "a PATCH cut off short of its Content-Length got a 204"
    );
    let kept = acknowledged + until as u64;
    poll_until(
        "HEAD reports every byte of the cut-off PATCH",
        Duration::from_secs(20),
        async || (head(&alice, &service, &upload).await.offset == kept).then_some(()),
    )
    .await;
    service.kill();

    let service = deployment.start().await;
    alice.log_in(&service).await;
    let after = head(&alice, &service, &upload).await;
    assert_eq!(
        after.offset, kept,
        "after the restart, HEAD of an upload whose PATCH was cut off (it reported {kept})"
    );
    patch_acknowledged(&alice, &service, &upload, &file, kept, total).await;
    assert_became_the_file(&deployment, &alice, &service, chat, &upload, &file).await;
    deployment.finish(service).await;
}

/// Killed right after each acknowledgement (the creation-with-upload's 201, a PATCH's 204, the
/// completing PATCH's 204): each restart reports exactly the acknowledged offset, and the
/// completed upload survives as the file.
async fn kill_after_acknowledged_patches(deployment: Deployment, size: usize) {
    let service = deployment.start().await;
    let mut alice = Account::sign_up(&service).await;
    let chat = alice.create_chat(&service, "tus killed after a 204").await;
    let file = TestFile::random("acknowledged.bin", 51, size);
    let total = size as u64;

    let first = (512 * KIB + 3) as u64;
    let (upload, offset) = create(
        &alice,
        &service,
        chat,
        &file,
        Some(file.bytes.slice(..first as usize)),
    )
    .await;
    assert_eq!(offset, first, "Upload-Offset of the creation-with-upload");
    service.kill();

    let service = deployment.start().await;
    alice.log_in(&service).await;
    let after = head(&alice, &service, &upload).await;
    assert_eq!(
        (after.offset, after.length),
        (first, total),
        "HEAD after a kill right after the creation-with-upload's 201"
    );
    assert_eq!(
        after.metadata.as_deref(),
        Some(upload.metadata.as_str()),
        "Upload-Metadata after the restart"
    );
    // An offset the upload is past is refused, and nothing of it is kept.
    let stale = patch(&alice, &service, &upload, 0, 4, file.bytes.slice(..4))
        .await
        .unwrap_or_else(|e| panic!("PATCH at offset 0: {e}"));
    assert_eq!(
        stale.status(),
        StatusCode::CONFLICT,
        "PATCH at a stale offset"
    );
    assert_eq!(head(&alice, &service, &upload).await.offset, first);

    let second = first + (MIB + 7) as u64;
    patch_acknowledged(&alice, &service, &upload, &file, first, second).await;
    service.kill();

    let service = deployment.start().await;
    alice.log_in(&service).await;
    assert_eq!(
        head(&alice, &service, &upload).await.offset,
        second,
        "HEAD after a kill right after a PATCH's 204"
    );
    patch_acknowledged(&alice, &service, &upload, &file, second, total).await;
    service.kill();

    let service = deployment.start().await;
    alice.log_in(&service).await;
    assert_became_the_file(&deployment, &alice, &service, chat, &upload, &file).await;
    deployment.finish(service).await;
}

/// Killed inside a PATCH after its bytes were made durable and before its offset was recorded
/// (fault point `tus-after-sync`): no 204 came, so the restart may report the offset before it
/// or after it, and resuming from whichever it reports (the part file holding more than that)
/// makes the original file.
async fn kill_between_sync_and_offset(deployment: Deployment, size: usize) {
    let service = deployment.start().await;
    let mut alice = Account::sign_up(&service).await;
    let chat = alice
        .create_chat(&service, "tus killed before the offset")
        .await;
    let file = TestFile::random("synced.bin", 61, size);
    let total = size as u64;
    let (upload, _) = create(&alice, &service, chat, &file, None).await;
    let acknowledged = (300 * KIB + 1) as u64;
    patch_acknowledged(&alice, &service, &upload, &file, 0, acknowledged).await;
    service.kill();

    let service = deployment
        .start_with_failpoints("tus-after-sync=sleep(60000)")
        .await;
    alice.log_in(&service).await;
    let synced = acknowledged + (MIB + 3) as u64;
    let chunk = file.bytes.slice(acknowledged as usize..synced as usize);
    let caught = spawn_patch(
        &alice,
        &service,
        &upload,
        acknowledged,
        synced - acknowledged,
        chunk,
    );
    poll_until(
        "the PATCH's bytes are in the part file",
        Duration::from_secs(20),
        async || (part_file_size(&deployment, &upload) == Some(synced)).then_some(()),
    )
    .await;
    let meanwhile = head(&alice, &service, &upload).await;
    assert!(!caught.is_finished(), "the PATCH was answered early");
    service.kill();
    let answer = caught.await.unwrap_or_else(|e| panic!("PATCH task: {e}"));
    assert!(answer.is_err(), "the PATCH got an answer: {answer:?}");

    let service = deployment.start().await;
    alice.log_in(&service).await;
    let resumed = head(&alice, &service, &upload).await;
    println!(
        "killed between the fsync of {synced} bytes and recording them ({acknowledged} \
         acknowledged; HEAD meanwhile {}); after the restart HEAD reports {}",
        meanwhile.offset, resumed.offset
    );
    assert!(
        (acknowledged..=synced).contains(&resumed.offset),
        "after the restart HEAD reports {} (acknowledged {acknowledged}, synced {synced})",
        resumed.offset
    );
    patch_acknowledged(&alice, &service, &upload, &file, resumed.offset, total).await;
    assert_became_the_file(&deployment, &alice, &service, chat, &upload, &file).await;
    deployment.finish(service).await;
}

/// Killed after the last PATCH delivered every byte and the object was stored, before the file
/// row was written (fault point `tus-after-store`): no 204 came, but every byte was durable
/// and recorded, so the restart makes the upload the file (once, with a fresh object) and
/// sweeps the object the killed run stored.
async fn kill_while_making_the_file(deployment: Deployment, size: usize) {
    let service = deployment
        .start_with_failpoints("tus-after-store=sleep(60000)")
        .await;
    let mut alice = Account::sign_up(&service).await;
    let chat = alice
        .create_chat(&service, "tus killed while making the file")
        .await;
    let file = TestFile::random("completed.bin", 71, size);
    let (upload, _) = create(&alice, &service, chat, &file, None).await;
    let acknowledged = (MIB + 9) as u64;
    patch_acknowledged(&alice, &service, &upload, &file, 0, acknowledged).await;

    let chunk = file.bytes.slice(acknowledged as usize..);
    let length = chunk.len() as u64;
    let last = spawn_patch(&alice, &service, &upload, acknowledged, length, chunk);
    let stored = poll_until(
        "the completed upload's object is stored",
        Duration::from_secs(30),
        async || {
            let keys = deployment.stored_keys().await;
            (keys.len() == 1).then_some(keys)
        },
    )
    .await;
    let rows = deployment.rows();
    assert!(
        rows.is_empty(),
        "a file row before the fault point: {rows:?}"
    );
    let pending = deployment.pending();
    assert!(
        stored.is_subset(&pending),
        "the stored object {stored:?} is not in the journal {pending:?}"
    );
    if let Some(bucket) = deployment.bucket() {
        let open = bucket.unfinished().await;
        assert!(open.is_empty(), "multipart uploads open: {open:?}");
    }
    assert!(!last.is_finished(), "the last PATCH was answered early");
    service.kill();
    let answer = last
        .await
        .unwrap_or_else(|e| panic!("last PATCH task: {e}"));
    assert!(answer.is_err(), "the last PATCH got an answer: {answer:?}");

    let service = deployment.start().await;
    alice.log_in(&service).await;
    assert_became_the_file(&deployment, &alice, &service, chat, &upload, &file).await;
    let left = deployment.stored_keys().await;
    assert!(
        left.is_disjoint(&stored),
        "the killed run's object {stored:?} outlived the restart ({left:?} stored)"
    );
    deployment.finish(service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_mid_patch_resumes_from_at_least_the_acknowledged_offset() {
    kill_during_a_patch(Deployment::create(), 5 * MIB + 77).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_right_after_each_acknowledgement_keeps_exactly_that_offset() {
    kill_after_acknowledged_patches(Deployment::create(), 3 * MIB + 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bytes_of_a_patch_cut_off_by_the_client_survive_a_kill() {
    kill_after_a_patch_was_cut_off(Deployment::create(), 3 * MIB + 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_between_a_patch_fsync_and_its_offset_resumes_from_either() {
    kill_between_sync_and_offset(Deployment::create(), 2 * MIB + 13).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_while_a_complete_upload_becomes_a_file_is_finished_by_the_restart() {
    kill_while_making_the_file(Deployment::create(), 2 * MIB + 21).await;
}

/// The same scenarios on a bucket of a real SeaweedFS node (skipped without `weed`: see
/// tools.rs). The files are over one 8 MiB part, so that each completion streams a multipart
/// upload into the bucket.
mod s3 {
    use super::*;
    use crate::seaweed::{self, SeaweedNode};
    use crate::tools::require;

    /// A node, or `None` once the test's SKIPPED line is written.
    async fn node() -> Option<SeaweedNode> {
        require(seaweed::start().await)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_kill_mid_patch_resumes_and_completes_into_the_bucket() {
        let Some(node) = node().await else { return };
        let deployment = Deployment::on_s3(&node, Downloads::Proxy);
        kill_during_a_patch(deployment, 9 * MIB + 77).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_kill_right_after_each_acknowledgement_keeps_exactly_that_offset_on_s3() {
        let Some(node) = node().await else { return };
        let deployment = Deployment::on_s3(&node, Downloads::Direct);
        kill_after_acknowledged_patches(deployment, 9 * MIB + 11).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_bytes_of_a_patch_cut_off_by_the_client_survive_a_kill_on_s3() {
        let Some(node) = node().await else { return };
        let deployment = Deployment::on_s3(&node, Downloads::Proxy);
        kill_after_a_patch_was_cut_off(deployment, 9 * MIB + 5).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_kill_between_a_patch_fsync_and_its_offset_resumes_from_either_on_s3() {
        let Some(node) = node().await else { return };
        let deployment = Deployment::on_s3(&node, Downloads::Proxy);
        kill_between_sync_and_offset(deployment, 9 * MIB + 13).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_kill_after_the_object_is_in_the_bucket_is_finished_by_the_restart() {
        let Some(node) = node().await else { return };
        let deployment = Deployment::on_s3(&node, Downloads::Direct);
        kill_while_making_the_file(deployment, 9 * MIB + 21).await;
    }
}
