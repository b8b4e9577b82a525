//! SIGKILL at chosen moments of an upload or a delete, then a restart over the same storage:
//! what was acknowledged survives whole, nothing else does, and nothing is left lying around.
//!
//! Each scenario runs on the local disk and, in `s3`, on a bucket of a real SeaweedFS node.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chatfiles::storage::Downloads;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::harness::{
    Account, Deployment, KIB, Ledger, MIB, Service, TestFile, assert_error, form, object_key,
    poll_until, temp_files,
};

/// The answer to an upload that may be cut off by a kill: its request number, and the body of
/// its 201 if it got one.
type Outcome = (usize, Result<(StatusCode, Option<Value>), String>);

/// Uploads running in the background while the service may be killed.
#[derive(Default)]
struct Uploads {
    tasks: Vec<JoinHandle<Outcome>>,
    /// 201s received so far.
    created: Arc<AtomicUsize>,
}

impl Uploads {
    /// Sends `form` as request number `request`.
    fn spawn(
        &mut self,
        account: &Account,
        service: &Service,
        chat: i64,
        request: usize,
        form: reqwest::multipart::Form,
    ) {
        let client = account.client.clone();
        let url = account.files_url(service, chat);
        let created = self.created.clone();
        self.tasks.push(tokio::spawn(async move {
            let sent = client.post(url).multipart(form).send().await;
            let outcome = match sent {
                Ok(res) if res.status() == StatusCode::CREATED => {
                    created.fetch_add(1, Ordering::SeqCst);
                    match res.json::<Value>().await {
                        Ok(body) => Ok((StatusCode::CREATED, Some(body))),
                        Err(err) => Err(format!("201 with an unreadable body: {err}")),
                    }
                }
                Ok(res) => Ok((res.status(), None)),
                Err(err) => Err(err.to_string()),
            };
            (request, outcome)
        }));
    }

    fn created(&self) -> usize {
        self.created.load(Ordering::SeqCst)
    }

    fn all_answered(&self) -> bool {
        self.tasks.iter().all(JoinHandle::is_finished)
    }

    /// Once the service is dead: records every 201 in the ledger; returns how many there were.
    async fn settle(self, ledger: &mut Ledger) -> usize {
        let mut acknowledged = 0;
        for task in self.tasks {
            let (request, outcome) = task.await.unwrap_or_else(|e| panic!("upload task: {e}"));
            match outcome {
                Ok((StatusCode::CREATED, Some(body))) => {
                    ledger.acknowledged(request, &body);
                    acknowledged += 1;
                }
                Ok((status, _)) => {
                    assert!(
                        !status.is_server_error(),
                        "request {request} got {status} instead of being cut off"
                    );
                }
                Err(_) => {}
            }
        }
        acknowledged
    }
}

/// Uploads `files` in one request that must succeed, and records it.
async fn upload_acknowledged(
    ledger: &mut Ledger,
    account: &Account,
    service: &Service,
    chat: i64,
    files: &[TestFile],
) -> Value {
    let request = ledger.sent(chat, files);
    let res = account
        .upload(service, chat, form(files.iter().map(TestFile::part)))
        .await
        .unwrap_or_else(|e| panic!("upload: {e}"));
    assert_eq!(res.status(), StatusCode::CREATED, "upload before the kill");
    let body: Value = res.json().await.unwrap_or_else(|e| panic!("201 body: {e}"));
    ledger.acknowledged(request, &body);
    body
}

/// Uploads trickled into the service are killed mid-body; the restart keeps the four
/// acknowledged requests' files and nothing of the three cut off. Locally the kill comes while
/// the three are being written to tmp/; on S3, while each is in the middle of a multipart upload
/// (its first 8 MiB part sent or on its way, the second not yet arrived), which the restart's
/// sweep must abort.
async fn kill_during_upload_bodies(deployment: Deployment) {
    let service = deployment.start().await;
    let mut alice = Account::sign_up(&service).await;
    let chat = alice.create_chat(&service, "killed mid-body").await;
    let mut ledger = Ledger::default();
    ledger.add_chat(chat);
    let mut before = vec![
        vec![TestFile::random("before-1.txt", 1, 10 * KIB)],
        vec![
            TestFile::random("before-2.bin", 2, MIB),
            TestFile::random("before-3.bin", 3, 300 * KIB),
        ],
        vec![TestFile::random("before-4.bin", 4, 5)],
    ];
    if deployment.bucket().is_some() {
        // Over one part: a completed multipart upload that must survive the sweep.
        before.push(vec![TestFile::random("before-5.bin", 5, 9 * MIB + 3)]);
    }
    for files in &before {
        upload_acknowledged(&mut ledger, &alice, &service, chat, files).await;
    }

    // Three uploads trickled at about 2.5 MiB/s, so that each is still arriving at the kill;
    // the second has a whole first file (already fsync'd in tmp/, or held in memory for one
    // PUT on S3) before its slow one.
    let chunk = 64 * KIB;
    let pause = Duration::from_millis(25);
    let slow = [
        vec![TestFile::random("slow-1.bin", 11, 16 * MIB)],
        vec![
            TestFile::random("slow-2a.bin", 12, 100 * KIB),
            TestFile::random("slow-2b.bin", 13, 16 * MIB),
        ],
        vec![TestFile::random("slow-3.bin", 14, 16 * MIB)],
    ];
    let mut uploads = Uploads::default();
    for files in &slow {
        let request = ledger.sent(chat, files);
        let parts = files.iter().map(|file| {
            if file.bytes.len() > MIB {
                file.slow_part(chunk, pause)
            } else {
                file.part()
            }
        });
        uploads.spawn(&alice, &service, chat, request, form(parts));
    }
    match deployment.bucket() {
        None => {
            // Mid-flight: four temp files (one finished, three growing), each slow one past its
            // first 256 KiB write.
            let storage = deployment.storage().to_path_buf();
            poll_until(
                "the three slow uploads are being written to tmp/",
                Duration::from_secs(30),
                async || {
                    let temp = temp_files(&storage);
                    let growing = temp.iter().filter(|(_, size)| *size >= 512 * 1024).count();
                    (temp.len() >= 4 && growing >= 3).then_some(())
                },
            )
            .await;
        }
        Some(bucket) => {
            // Each slow file's multipart upload is begun once its first part has arrived
            // (after about 3.2 s); the second part is due 3.2 s later.
            poll_until(
                "the three slow uploads are in the middle of their multipart uploads",
                Duration::from_secs(30),
                async || (bucket.unfinished().await.len() >= 3).then_some(()),
            )
            .await;
        }
    }
    service.kill();
    assert_eq!(
        uploads.settle(&mut ledger).await,
        0,
        "a slow upload finished before the kill: the test did not catch it mid-flight"
    );
    if let Some(bucket) = deployment.bucket() {
        // What the kill left for the restart to clean up, each one known to the journal.
        let open = bucket.unfinished().await;
        assert_eq!(
            open.len(),
            3,
            "multipart uploads open after the kill: {open:?}"
        );
        let pending = deployment.pending();
        for key in &open {
            assert!(
                pending.contains(key),
                "the open multipart upload of {key} is not in the journal: {pending:?}"
            );
        }
    }

    let service = deployment.start().await;
    alice.log_in(&service).await;
    ledger.verify_exactly_acknowledged(&service, &alice).await;
    let expected = before.iter().map(Vec::len).sum::<usize>();
    assert_eq!(ledger.acknowledged_names().len(), expected);
    deployment.finish(service).await;
}

/// Killed with every object of an upload stored (renamed into objects/, or PUT or completed in
/// the bucket) and no row written yet: the restart lists none of it and removes its objects,
/// which the journal names.
async fn kill_between_objects_and_rows(deployment: Deployment) {
    let service = deployment.start().await;
    let mut alice = Account::sign_up(&service).await;
    let chat = alice
        .create_chat(&service, "killed before the insert")
        .await;
    let mut ledger = Ledger::default();
    ledger.add_chat(chat);
    let kept = [TestFile::random("kept.txt", 21, 20 * KIB)];
    upload_acknowledged(&mut ledger, &alice, &service, chat, &kept).await;
    service.kill();

    let service = deployment
        .start_with_failpoints("upload-after-commit=sleep(60000)")
        .await;
    alice.log_in(&service).await;
    let existing = deployment.stored_keys().await;
    // On S3 the first is over one part: a completed multipart upload, the second one PUT.
    let first = if deployment.bucket().is_some() {
        9 * MIB + 1
    } else {
        700 * KIB
    };
    let caught = [
        TestFile::random("caught-1.bin", 22, first),
        TestFile::random("caught-2.bin", 23, 3 * KIB),
    ];
    let request = ledger.sent(chat, &caught);
    let mut upload = Uploads::default();
    upload.spawn(
        &alice,
        &service,
        chat,
        request,
        form(caught.iter().map(TestFile::part)),
    );
    let stored = poll_until(
        "both objects of the upload are stored",
        Duration::from_secs(20),
        async || {
            let new: BTreeSet<String> = deployment
                .stored_keys()
                .await
                .difference(&existing)
                .cloned()
                .collect();
            (new.len() == 2).then_some(new)
        },
    )
    .await;
    let rows = deployment.rows();
    let pending = deployment.pending();
    for key in &stored {
        assert!(
            rows.iter().all(|(k, _, _)| k != key),
            "object {key} already has a row: the fault point is not between objects and rows"
        );
        assert!(
            pending.contains(key),
            "stored object {key} has no row and is not in the journal"
        );
    }
    if let Some(bucket) = deployment.bucket() {
        let open = bucket.unfinished().await;
        assert!(open.is_empty(), "the upload left {open:?} open");
    }
    assert!(!upload.all_answered(), "the upload was answered early");
    service.kill();
    assert_eq!(
        upload.settle(&mut ledger).await,
        0,
        "the upload was acknowledged"
    );

    let service = deployment.start().await;
    alice.log_in(&service).await;
    ledger.verify_exactly_acknowledged(&service, &alice).await;
    assert_eq!(
        ledger.acknowledged_names().into_iter().collect::<Vec<_>>(),
        ["kept.txt"]
    );
    let left = deployment.stored_keys().await;
    for key in &stored {
        assert!(
            !left.contains(key),
            "object {key} outlived the start-up sweep"
        );
    }
    deployment.finish(service).await;
}

/// Killed after a delete's row is gone (durably, its key in the journal) and before its object
/// is: it stays deleted, and the restart removes the object.
async fn kill_between_row_and_object_delete(deployment: Deployment) {
    let service = deployment
        .start_with_failpoints("remove-objects=sleep(60000)")
        .await;
    let mut alice = Account::sign_up(&service).await;
    let chat = alice.create_chat(&service, "killed mid-delete").await;
    let mut ledger = Ledger::default();
    ledger.add_chat(chat);
    let doomed = [TestFile::random("doomed.pdf", 31, 200 * KIB)];
    let body = upload_acknowledged(&mut ledger, &alice, &service, chat, &doomed).await;
    let kept = [TestFile::random("kept.pdf", 32, 50 * KIB)];
    upload_acknowledged(&mut ledger, &alice, &service, chat, &kept).await;
    let file_id = body["chatFiles"][0]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no id in {body}"));
    let old_url = body["chatFiles"][0]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no url in {body}"))
        .to_owned();
    let key = object_key(&old_url);
    assert!(
        deployment.has_object(&key).await,
        "no object {key} for doomed.pdf"
    );
    // Straight to the store: the service is not asked whether the file still exists.
    let direct = deployment
        .bucket()
        .is_some_and(|b| b.downloads() == Downloads::Direct);

    let delete = {
        let client = alice.client.clone();
        let url = format!("{}/{file_id}", alice.files_url(&service, chat));
        tokio::spawn(async move { client.delete(url).send().await.map(|r| r.status()) })
    };
    poll_until(
        "the delete has committed (doomed.pdf no longer listed)",
        Duration::from_secs(20),
        async || {
            let listed = alice.list(&service, chat).await;
            listed
                .iter()
                .all(|f| f["name"] != "doomed.pdf")
                .then_some(())
        },
    )
    .await;
    // Row gone, bytes still there, no 204 yet: the delete is inside the fault point.
    assert!(
        deployment.has_object(&key).await,
        "the bytes went before the kill"
    );
    assert!(
        deployment.pending().contains(&key),
        "the deleted row's object {key} is not in the journal"
    );
    assert!(!delete.is_finished(), "the delete was answered early");
    if direct {
        // The store answers from its own state: the object is still there.
        let status = service.download(&old_url).await.status();
        println!("a direct URL of a deleted file whose object is not yet removed: {status}");
    } else {
        assert_error(service.download(&old_url).await, StatusCode::NOT_FOUND).await;
    }
    service.kill();
    let answer = delete.await.unwrap_or_else(|e| panic!("delete task: {e}"));
    assert!(answer.is_err(), "the delete got an answer: {answer:?}");
    ledger.deleted("doomed.pdf");

    let service = deployment.start().await;
    alice.log_in(&service).await;
    ledger.verify_exactly_acknowledged(&service, &alice).await;
    if direct {
        let res = service.download(&old_url).await;
        assert_eq!(
            res.status(),
            StatusCode::NOT_FOUND,
            "the store still serves the deleted file after the sweep"
        );
    } else {
        assert_error(
            service.download(&service.rebase(&old_url)).await,
            StatusCode::NOT_FOUND,
        )
        .await;
    }
    assert!(
        !deployment.has_object(&key).await,
        "the deleted file's bytes outlived the sweep"
    );
    deployment.finish(service).await;
}

/// Four rounds of ten uploads (some of two files) of log-uniform sizes in `sizes`, killed after
/// none, a few or most are acknowledged, each restart checked.
async fn uploads_killed_at_random_moments(deployment: Deployment, sizes: (usize, usize)) {
    let seed = std::env::var("CHATFILES_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default()
        });
    println!("seed {seed} (set CHATFILES_CRASH_SEED to repeat the sizes and delays)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut service = deployment.start().await;
    let mut alice = Account::sign_up(&service).await;
    let chats = [
        alice.create_chat(&service, "random kills 1").await,
        alice.create_chat(&service, "random kills 2").await,
    ];
    let mut ledger = Ledger::default();
    for chat in chats {
        ledger.add_chat(chat);
    }
    let (smallest, largest) = (sizes.0 as f64, sizes.1 as f64);
    for round in 0..4 {
        // Every body is made before the first is sent, so that all ten start together.
        let requests: Vec<(i64, Vec<TestFile>)> = (0..10)
            .map(|n| {
                let count = if rng.gen_bool(0.25) { 2 } else { 1 };
                let files = (0..count)
                    .map(|part| {
                        let size = (smallest * (largest / smallest).powf(rng.gen_range(0.0..1.0)))
                            as usize;
                        TestFile::random(format!("r{round}-u{n}-{part}.bin"), rng.r#gen(), size)
                    })
                    .collect();
                (chats[n % chats.len()], files)
            })
            .collect();
        let mut uploads = Uploads::default();
        for (chat, files) in &requests {
            let request = ledger.sent(*chat, files);
            let parts = form(files.iter().map(TestFile::part));
            uploads.spawn(&alice, &service, *chat, request, parts);
        }
        // The moment of the kill is what this scenario varies: after none, a few or most of the
        // 201s, plus a random few milliseconds, while the others are anywhere in their bodies,
        // renames (or parts) or transactions.
        let started = Instant::now();
        let wait_for = [0, 2, 4, 7][round];
        poll_until(
            "enough uploads are acknowledged",
            Duration::from_secs(30),
            async || (uploads.created() >= wait_for || uploads.all_answered()).then_some(()),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..20))).await;
        let in_flight = match deployment.bucket() {
            None => format!("{} temp files", temp_files(deployment.storage()).len()),
            Some(bucket) => format!("{} open multipart uploads", bucket.unfinished().await.len()),
        };
        service.kill();
        let acknowledged = uploads.settle(&mut ledger).await;
        println!(
            "round {round}: killed after {:?} (waited for {wait_for} 201s) with {in_flight}; {acknowledged} of 10 uploads acknowledged",
            started.elapsed()
        );

        service = deployment.start().await;
        alice.log_in(&service).await;
        let adopted = ledger.verify(&service, &alice).await;
        println!("round {round}: unacknowledged but whole and listed: {adopted:?}");
        deployment.assert_consistent().await;
    }
    deployment.finish(service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_during_upload_bodies_keeps_every_acknowledged_file_and_nothing_else() {
    kill_during_upload_bodies(Deployment::create()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_killed_between_rename_and_insert_is_not_listed_and_its_object_is_swept() {
    kill_between_objects_and_rows(Deployment::create()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_whose_delete_was_killed_stays_deleted_and_its_bytes_are_swept() {
    kill_between_row_and_object_delete(Deployment::create()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_killed_at_random_moments_are_whole_or_absent() {
    // Log-uniform between 4 KiB and 8 MiB.
    uploads_killed_at_random_moments(Deployment::create(), (4 * KIB, 8 * MIB)).await;
}

/// The same scenarios on a bucket of a real SeaweedFS node (skipped without `weed`: see
/// tools.rs), each checked against the bucket itself: its objects under the prefix and its
/// open multipart uploads.
///
/// The download mode does not change what an upload or a delete writes (it only decides where a
/// listing's `url` points), so each upload scenario runs in one mode, the two modes shared out
/// so that the checks read every listed file through both paths. The delete scenario runs in
/// both: a deleted file's URL is answered by the service (proxy) or by the store (direct).
mod s3 {
    use super::*;
    use crate::seaweed::{self, SeaweedNode};
    use crate::tools::require;

    /// A node, or `None` once the test's SKIPPED line is written.
    async fn node() -> Option<SeaweedNode> {
        require(seaweed::start().await)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_kill_mid_multipart_upload_leaves_exactly_the_listed_objects_and_no_open_uploads() {
        let Some(node) = node().await else { return };
        kill_during_upload_bodies(Deployment::on_s3(&node, Downloads::Proxy)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_upload_killed_between_its_objects_and_its_rows_is_not_listed_and_is_swept() {
        let Some(node) = node().await else { return };
        kill_between_objects_and_rows(Deployment::on_s3(&node, Downloads::Direct)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_delete_killed_before_its_object_went_is_swept_with_proxied_downloads() {
        let Some(node) = node().await else { return };
        kill_between_row_and_object_delete(Deployment::on_s3(&node, Downloads::Proxy)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_delete_killed_before_its_object_went_is_swept_with_direct_downloads() {
        let Some(node) = node().await else { return };
        kill_between_row_and_object_delete(Deployment::on_s3(&node, Downloads::Direct)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn uploads_killed_at_random_moments_are_whole_or_absent_and_leave_no_open_uploads() {
        let Some(node) = node().await else { return };
        // Log-uniform between 64 KiB and 24 MiB: about one file in five over one 8 MiB part.
        let deployment = Deployment::on_s3(&node, Downloads::Proxy);
        uploads_killed_at_random_moments(deployment, (64 * KIB, 24 * MIB)).await;
    }
}
