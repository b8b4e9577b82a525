//! SIGKILL at chosen moments of an upload or a delete, then a restart over the same storage:
//! what was acknowledged survives whole, nothing else does, and nothing is left lying around.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::harness::{
    Account, Deployment, KIB, Ledger, MIB, Service, TestFile, assert_error, form, object_files,
    object_key, poll_until, temp_files,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_during_upload_bodies_keeps_every_acknowledged_file_and_nothing_else() {
    let deployment = Deployment::create();
    let service = deployment.start().await;
    let mut alice = Account::sign_up(&service).await;
    let chat = alice.create_chat(&service, "killed mid-body").await;
    let mut ledger = Ledger::default();
    ledger.add_chat(chat);
    let before = [
        vec![TestFile::random("before-1.txt", 1, 10 * KIB)],
        vec![
            TestFile::random("before-2.bin", 2, MIB),
            TestFile::random("before-3.bin", 3, 300 * KIB),
        ],
        vec![TestFile::random("before-4.bin", 4, 5)],
    ];
    for files in &before {
        upload_acknowledged(&mut ledger, &alice, &service, chat, files).await;
    }

    // Three uploads trickled at about 2.5 MiB/s, so that each is still arriving at the kill;
    // the second has a whole first file (already fsync'd in tmp/) before its slow one.
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
    // Mid-flight: four temp files (one finished, three growing), each slow one past its first
    // 256 KiB write.
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
    service.kill();
    assert_eq!(
        uploads.settle(&mut ledger).await,
        0,
        "a slow upload finished before the kill: the test did not catch it mid-flight"
    );

    let service = deployment.start().await;
    alice.log_in(&service).await;
    ledger.verify_exactly_acknowledged(&service, &alice).await;
    assert_eq!(ledger.acknowledged_names().len(), 4);
    deployment.finish(service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_killed_between_rename_and_insert_is_not_listed_and_its_object_is_swept() {
    let deployment = Deployment::create();
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
    let existing = object_files(deployment.storage());
    let caught = [
        TestFile::random("caught-1.bin", 22, 700 * KIB),
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
    let storage = deployment.storage().to_path_buf();
    let renamed = poll_until(
        "both objects of the upload are renamed into objects/",
        Duration::from_secs(20),
        async || {
            let new: Vec<_> = object_files(&storage)
                .into_iter()
                .filter(|(key, _)| !existing.contains_key(key))
                .collect();
            (new.len() == 2).then_some(new)
        },
    )
    .await;
    let rows = deployment.rows();
    for (key, _) in &renamed {
        assert!(
            rows.iter().all(|(k, _, _)| k != key),
            "object {key} already has a row: the fault point is not between rename and insert"
        );
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
    for (key, path) in &renamed {
        assert!(!path.exists(), "object {key} outlived the start-up sweep");
    }
    deployment.finish(service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_whose_delete_was_killed_stays_deleted_and_its_bytes_are_swept() {
    let deployment = Deployment::create();
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
    let object = object_files(deployment.storage())
        .remove(&key)
        .unwrap_or_else(|| panic!("no object {key} for doomed.pdf"));

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
    assert!(object.exists(), "the bytes went before the kill");
    assert!(!delete.is_finished(), "the delete was answered early");
    assert_error(service.download(&old_url).await, StatusCode::NOT_FOUND).await;
    service.kill();
    let answer = delete.await.unwrap_or_else(|e| panic!("delete task: {e}"));
    assert!(answer.is_err(), "the delete got an answer: {answer:?}");
    ledger.deleted("doomed.pdf");

    let service = deployment.start().await;
    alice.log_in(&service).await;
    ledger.verify_exactly_acknowledged(&service, &alice).await;
    assert_error(
        service.download(&service.rebase(&old_url)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(
        !object.exists(),
        "the deleted file's bytes outlived the sweep"
    );
    deployment.finish(service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_killed_at_random_moments_are_whole_or_absent() {
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
    let deployment = Deployment::create();
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
    for round in 0..4 {
        // Every body is made before the first is sent, so that all ten start together.
        let requests: Vec<(i64, Vec<TestFile>)> = (0..10)
            .map(|n| {
                let count = if rng.gen_bool(0.25) { 2 } else { 1 };
                let files = (0..count)
                    .map(|part| {
                        // Log-uniform between 4 KiB and 8 MiB.
                        let size =
                            (4.0 * KIB as f64 * 2048f64.powf(rng.gen_range(0.0..1.0))) as usize;
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
        // renames or transactions.
        let started = Instant::now();
        let wait_for = [0, 2, 4, 7][round];
        poll_until(
            "enough uploads are acknowledged",
            Duration::from_secs(30),
            async || (uploads.created() >= wait_for || uploads.all_answered()).then_some(()),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..20))).await;
        let in_tmp = temp_files(deployment.storage()).len();
        service.kill();
        let acknowledged = uploads.settle(&mut ledger).await;
        println!(
            "round {round}: killed after {:?} (waited for {wait_for} 201s) with {in_tmp} temp files; {acknowledged} of 10 uploads acknowledged",
            started.elapsed()
        );

        service = deployment.start().await;
        alice.log_in(&service).await;
        let adopted = ledger.verify(&service, &alice).await;
        println!("round {round}: unacknowledged but whole and listed: {adopted:?}");
        deployment.assert_storage_consistent();
    }
    deployment.finish(service);
}
