//! The type a file is stored and served with: a part's own only when it is a real media type,
//! and text that is UTF-8 says so.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, TestUser, header, raw_multipart};

/// A part named `file` called `name`, with `content_type` as its Content-Type header (none when
/// `None`), exactly as written.
fn part_headers(name: &str, content_type: Option<&str>) -> String {
    let disposition = format!("Content-Disposition: form-data; name=\"file\"; filename=\"{name}\"");
    match content_type {
        Some(content_type) => format!("{disposition}\r\nContent-Type: {content_type}"),
        None => disposition,
    }
}

/// Uploads `(name, content type, bytes)` parts in one raw request; returns the stored types.
async fn stored_types(
    app: &TestApp,
    user: &TestUser,
    chat: i64,
    parts: &[(&str, Option<&str>, &[u8])],
) -> Vec<Value> {
    let headers: Vec<String> = parts
        .iter()
        .map(|(name, content_type, _)| part_headers(name, *content_type))
        .collect();
    let raw: Vec<(&str, &[u8])> = headers
        .iter()
        .zip(parts)
        .map(|(headers, (_, _, bytes))| (headers.as_str(), *bytes))
        .collect();
    let res = app.upload_raw(user, chat, raw_multipart(&raw)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap_or_default();
    body["chatFiles"].as_array().cloned().unwrap_or_default()
}

fn types(files: &[Value]) -> Vec<&str> {
    files
        .iter()
        .map(|f| f["type"].as_str().unwrap_or_default())
        .collect()
}

/// What the file's signed URL answers as its Content-Type.
async fn served_type(file: &Value) -> String {
    let url = file["url"].as_str().unwrap_or_default();
    let res = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("download: {e}"));
    assert_eq!(res.status(), StatusCode::OK);
    header(&res, "content-type")
}

#[tokio::test]
async fn a_part_type_that_is_not_type_slash_subtype_falls_back_to_the_name_guess() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "invalid types").await;
    let files = stored_types(
        &app,
        &user,
        chat,
        &[
            ("photo.png", Some("text/"), b"\x89PNG"),
            ("report.pdf", Some("/x"), b"%PDF"),
            ("song.mp3", Some("a b/c"), b"ID3"),
            ("clip.mp4", Some("video"), b"...."),
            ("page.html", Some("*/*"), b"<p>"),
            ("data.unknownext", Some("image/"), b"\x00\x01"),
            ("style.css", Some("text/css"), b"\xff not utf-8"),
        ],
    )
    .await;
    assert_eq!(
        types(&files),
        [
            "image/png",
            "application/pdf",
            "audio/mpeg",
            "video/mp4",
            "text/html; charset=utf-8",
            "application/octet-stream",
            "text/css",
        ]
    );
    // What is stored is what a download says.
    assert_eq!(served_type(&files[0]).await, "image/png");
    assert_eq!(served_type(&files[1]).await, "application/pdf");
}

#[tokio::test]
async fn utf8_text_is_stored_and_served_with_charset_utf8_and_other_text_without() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "charsets").await;
    // Longer than a network chunk and a write batch, with characters of every width, so that
    // some characters fall across chunk boundaries.
    let long: Vec<u8> = "résumé 東京 🦀 ".repeat(30_000).into_bytes();
    assert!(long.len() > 512 * 1024);
    let mut long_latin1 = long.clone();
    long_latin1.extend_from_slice(b" caf\xe9");
    let files = stored_types(
        &app,
        &user,
        chat,
        &[
            ("résumé.txt", Some("text/plain"), "résumé".as_bytes()),
            ("latin1.txt", Some("text/plain"), b"r\xe9sum\xe9"),
            ("long.txt", Some("text/plain"), &long),
            ("long-latin1.txt", Some("text/plain"), &long_latin1),
            ("guessed.csv", None, "a,b\né,ü\n".as_bytes()),
            (
                "declared.txt",
                Some("text/plain; charset=ISO-8859-1"),
                "é".as_bytes(),
            ),
            (
                "data.json",
                Some("application/json"),
                "{\"é\":1}".as_bytes(),
            ),
            ("empty.txt", Some("text/plain"), b""),
            ("cut.txt", Some("text/plain"), &"🦀".as_bytes()[..3]),
        ],
    )
    .await;
    let expected = [
        "text/plain; charset=utf-8",
        "text/plain",
        "text/plain; charset=utf-8",
        "text/plain",
        "text/csv; charset=utf-8",
        "text/plain; charset=iso-8859-1",
        "application/json",
        "text/plain; charset=utf-8",
        "text/plain",
    ];
    assert_eq!(types(&files), expected);
    for (file, expected) in files.iter().zip(expected) {
        assert_eq!(served_type(file).await, expected, "{file}");
    }
    // The listing says the same as the upload's answer.
    let listed: Value = app
        .list_files(&user, chat)
        .await
        .json()
        .await
        .unwrap_or_default();
    let listed = listed["chatFiles"].as_array().cloned().unwrap_or_default();
    assert_eq!(types(&listed), expected);
}
