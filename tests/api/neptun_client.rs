//! The seed page's own Python client (httpx + pydantic) parses our answers.

use std::path::PathBuf;
use std::process::Command;

use crate::helpers::TestApp;

/// The Python with httpx and pydantic: `CHATFILES_TEST_PYTHON` (set by `.ci/run`), else a venv
/// made once under `target/`.
fn seed_python() -> PathBuf {
    if let Some(python) = std::env::var_os("CHATFILES_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/seed-client-venv");
    let python = venv.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import httpx, pydantic"])
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        assert!(made, "python3 -m venv failed");
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "httpx", "pydantic"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(installed, "pip install httpx pydantic failed");
    }
    python
}

#[tokio::test]
async fn the_seed_pages_python_client_parses_a_listing_and_a_404() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "seed").await;
    app.upload_ok(
        &user,
        chat,
        &[
            ("document.pdf", "application/pdf", b"%PDF-1.4 seed"),
            ("notes.txt", "text/plain", b"hello"),
        ],
    )
    .await;
    let cookie = app.session_cookie(&user).await;

    let python = seed_python();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/seed_client/seed_client.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([
                app.address.clone(),
                user.id.to_string(),
                chat.to_string(),
                cookie,
                "987654".into(),
            ])
            .output()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|e| panic!("cannot run python: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "seed client failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("success parsed: ['document.pdf', 'notes.txt']"),
        "{stdout}"
    );
    assert!(stdout.contains("error parsed: Chat not found"), "{stdout}");
}
