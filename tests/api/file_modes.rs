//! What chatfiles creates on disk is for the service's user alone: the database (password and
//! session hashes) and its WAL 0600, the storage directory 0700.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::helpers::{TestApp, chatfiles_cli};

/// The permission bits of `path`, in octal as `ls -l` and `chmod` spell them.
fn mode_of(path: &Path) -> String {
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode();
    format!("{:o}", mode & 0o777)
}

#[tokio::test]
async fn the_database_and_its_wal_are_0600_and_the_storage_directory_0700() {
    // Under the usual umask (022) a file would otherwise be created 0644, a directory 0755.
    let app = TestApp::spawn().await;
    let storage = app.storage_dir();
    // A write, so that SQLite has its -wal and -shm files open.
    let user = app.user().await;
    app.upload_ok(
        &user,
        app.chat(&user, "modes").await,
        &[("a.txt", "text/plain", b"a")],
    )
    .await;

    let database = app.config.database_path();
    for path in [
        database.clone(),
        database.with_extension("db-wal"),
        database.with_extension("db-shm"),
    ] {
        assert!(path.exists(), "{} was not created", path.display());
        assert_eq!(mode_of(&path), "600", "{}", path.display());
    }
    for dir in [
        storage.clone(),
        storage.join("objects"),
        storage.join("objects/00"),
        storage.join("objects/ff"),
        storage.join("tmp"),
    ] {
        assert_eq!(mode_of(&dir), "700", "{}", dir.display());
    }
    let secret = storage.join("secret.key");
    if secret.exists() {
        assert_eq!(mode_of(&secret), "600", "{}", secret.display());
    }
}

#[tokio::test]
async fn a_storage_directory_that_exists_keeps_the_mode_its_operator_gave_it() {
    let app = TestApp::spawn_with(|config| {
        std::fs::create_dir_all(&config.storage_dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&config.storage_dir, std::fs::Permissions::from_mode(0o750))
            .unwrap_or_else(|e| panic!("{e}"));
    })
    .await;
    assert_eq!(mode_of(&app.storage_dir()), "750");
    // What chatfiles creates inside it is still its own.
    assert_eq!(mode_of(&app.storage_dir().join("objects")), "700");
    assert_eq!(mode_of(&app.config.database_path()), "600");
}

#[tokio::test]
async fn user_add_on_a_fresh_storage_directory_creates_it_private_too() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let storage = dir.path().join("fresh/storage");
    let storage_arg = storage.to_string_lossy().into_owned();
    let run = chatfiles_cli(
        &[
            "user",
            "add",
            "ada@example.com",
            "--storage-dir",
            &storage_arg,
        ],
        "correct horse battery\n",
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(mode_of(&storage), "700");
    assert_eq!(mode_of(&storage.join("chatfiles.db")), "600");
}
