//! The log: one line per request with method, route, status, latency and user id, as text or
//! JSON; never a cookie, a password, a signature or the secret. Runs the real binary, whose
//! output is what an operator sees.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::client;

const SECRET: &str = "9e1d0c2b3a4f5e6d7c8b9a0f1e2d3c4b5a6f7e8d9c0b1a2f3e4d5c6b7a8f9e0d";
const PASSWORD: &str = "a password nobody logs";

/// The binary, serving over a fresh storage directory, with everything it prints collected.
struct Served {
    child: Child,
    address: String,
    lines: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Served {
    fn start(format: &str) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatfiles"));
        for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("CHATFILES_")) {
            command.env_remove(name);
        }
        let mut child = command
            .args([
                "--bind",
                "127.0.0.1:0",
                "--log-format",
                format,
                "--workers",
                "1",
            ])
            .arg("--storage-dir")
            .arg(dir.path().join("storage"))
            .env("CHATFILES_SECRET", SECRET)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chatfiles: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(mut all) = lines.lock() {
                        all.push(line);
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let address = loop {
            let found = lines.lock().ok().and_then(|all| {
                all.iter()
                    .find(|l| l.contains("chatfiles listening"))
                    .and_then(|l| listening_address(l))
            });
            if let Some(address) = found {
                break address;
            }
            assert!(Instant::now() < deadline, "chatfiles did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            child,
            address: format!("http://{address}"),
            lines,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Stops the service and returns every line it printed.
    fn stop(mut self) -> Vec<String> {
        // SIGTERM, for the graceful shutdown; not through a `kill` program, which a slim system
        // lacks (and without which this would wait forever).
        let pid = libc::pid_t::try_from(self.child.id())
            .unwrap_or_else(|e| panic!("pid {}: {e}", self.child.id()));
        // SAFETY: `kill` only sends a signal, to our own child, which is not yet reaped.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        if sent != 0 {
            let error = std::io::Error::last_os_error();
            let _ = self.child.kill();
            panic!("cannot send SIGTERM to chatfiles: {error}");
        }
        let _ = self.child.wait();
        // The reader threads finish at end of stream.
        std::thread::sleep(Duration::from_millis(100));
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// `127.0.0.1:<port>` from the start-up line, in either format.
fn listening_address(line: &str) -> Option<String> {
    if let Ok(json) = serde_json::from_str::<Value>(line) {
        return json["address"].as_str().map(str::to_owned);
    }
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("address="))
        .map(str::to_owned)
}

/// Drives sign-up, login, a chat, an upload, a listing, a download, a wrong login and logout;
/// returns what must never be logged: the password, cookie values and the URL's signature.
async fn exercise(served: &Served) -> Vec<String> {
    let browser = client();
    let email = "logs@example.com";
    let res = browser
        .post(served.url("/api/auth/sign-up"))
        .json(&json!({"email": email, "password": PASSWORD, "confirmPassword": PASSWORD}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("sign-up: {e}"));
    assert_eq!(res.status(), StatusCode::CREATED);
    let mut cookies: Vec<String> = res.cookies().map(|c| c.value().to_owned()).collect();
    let user: Value = res.json().await.unwrap_or_default();
    let user_id = user["user"]["id"].as_i64().unwrap_or_default();
    let res = browser
        .post(served.url("/api/auth/login"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("login: {e}"));
    cookies.extend(res.cookies().map(|c| c.value().to_owned()));
    let res = browser
        .post(served.url(&format!("/api/users/{user_id}/chats")))
        .json(&json!({"name": "logged"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("chat: {e}"));
    let chat: Value = res.json().await.unwrap_or_default();
    let chat_id = chat["chat"]["id"].as_i64().unwrap_or_default();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"logged bytes".to_vec()).file_name("l.txt"),
    );
    let res = browser
        .post(served.url(&format!("/api/users/{user_id}/chats/{chat_id}/files")))
        .multipart(form)
        .send()
        .await
        .unwrap_or_else(|e| panic!("upload: {e}"));
    assert_eq!(res.status(), StatusCode::CREATED);
    let listing: Value = browser
        .get(served.url(&format!("/api/users/{user_id}/chats/{chat_id}/files")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("list: {e}"))
        .json()
        .await
        .unwrap_or_default();
    let url = listing["chatFiles"][0]["url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let signature = reqwest::Url::parse(&url)
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "signature")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_else(|| panic!("no signature in {url}"));
    assert_eq!(
        client()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("download: {e}"))
            .status(),
        StatusCode::OK
    );
    let res = client()
        .post(served.url("/api/auth/login"))
        .json(&json!({"email": email, "password": format!("{PASSWORD}!")}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("login: {e}"));
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    browser
        .post(served.url("/api/auth/logout"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("logout: {e}"));
    let mut secrets = vec![PASSWORD.to_owned(), signature, SECRET.to_owned()];
    secrets.extend(cookies.into_iter().filter(|c| !c.is_empty()));
    secrets
}

fn assert_nothing_secret(lines: &[String], secrets: &[String]) {
    for line in lines {
        for secret in secrets {
            assert!(
                !line.contains(secret.as_str()),
                "a log line leaks {secret:?}: {line}"
            );
        }
        assert!(
            !line.contains("neptun-session="),
            "a cookie in the log: {line}"
        );
        assert!(
            !line.contains("signature="),
            "a signed query in the log: {line}"
        );
    }
}

#[tokio::test]
async fn json_logs_have_one_line_per_request_and_nothing_secret() {
    let served = Served::start("json");
    let secrets = exercise(&served).await;
    let lines = served.stop();
    assert_nothing_secret(&lines, &secrets);
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let requests: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"] == "request")
        .collect();
    assert!(requests.len() >= 8, "{requests:?}");
    for request in &requests {
        for field in ["request_id", "method", "route", "status", "elapsed_ms"] {
            assert!(!request[field].is_null(), "no {field} in {request}");
        }
    }
    let listing = requests
        .iter()
        .find(|r| {
            r["route"] == "/api/users/{user_id}/chats/{chat_id}/files" && r["method"] == "GET"
        })
        .unwrap_or_else(|| panic!("no listing line in {requests:?}"));
    assert!(listing["user_id"].as_i64().is_some(), "{listing}");
    assert_eq!(listing["status"], 200);
    let download = requests
        .iter()
        .find(|r| r["route"] == "/files/{key}")
        .unwrap_or_else(|| panic!("no download line"));
    assert!(
        download["user_id"].is_null(),
        "downloads are anonymous: {download}"
    );
}

#[tokio::test]
async fn text_logs_say_the_same_and_nothing_secret() {
    let served = Served::start("text");
    let secrets = exercise(&served).await;
    let lines = served.stop();
    assert_nothing_secret(&lines, &secrets);
    assert!(
        lines.iter().any(|l| l.contains(" request ")
            && l.contains("route=/api/users/{user_id}/chats")
            && l.contains("user_id=")),
        "{lines:#?}"
    );
}
