//! Creating an upload: OPTIONS, POST with `Upload-Length` and `Upload-Metadata`, the
//! maximum size, the name and type metadata gives the file, and creation-with-upload.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{
    OFFSET_STREAM, TUS, assert_tus, chat_file, complete, create, create_ok, created, creation,
    download, head, http_date_after, listing, metadata, number, offset_of, parse_http_date,
    part_files, patch_ok, pattern, send, tus, uploads_path,
};
use crate::helpers::{TestApp, assert_error, header, sha256};

// ---------------------------------------------------------------------------------------------
// OPTIONS and creation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn options_answers_204_with_the_tus_version_extensions_and_maximum_size() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "options").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;

    for url in [app.url(&uploads_path(&user, chat)), upload.location.clone()] {
        // No Tus-Resumable in the request: OPTIONS does not need it.
        let res = send(user.client.request(Method::OPTIONS, &url)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT, "OPTIONS {url}");
        assert_tus(&res, "OPTIONS");
        assert_eq!(header(&res, "tus-version"), TUS);
        let extensions: Vec<String> = header(&res, "tus-extension")
            .split(',')
            .map(|e| e.trim().to_owned())
            .collect();
        for extension in [
            "creation",
            "creation-with-upload",
            "termination",
            "expiration",
        ] {
            assert!(
                extensions.iter().any(|e| e == extension),
                "{extension} not in Tus-Extension {extensions:?}"
            );
        }
        assert_eq!(number(&res, "tus-max-size"), app.config.max_file_size);
        assert!(res.bytes().await.unwrap_or_default().is_empty());
    }
}

#[tokio::test]
async fn a_creation_answers_201_with_an_absolute_location_its_expiry_and_offset_zero() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "creation").await;
    assert_eq!(
        app.config.upload_expiry,
        Duration::from_secs(24 * 3600),
        "the default --upload-expiry"
    );

    let res = create(&app, &user, chat, 10, None).await;
    let upload = created(&res);
    let prefix = format!(
        "{}/api/users/{}/chats/{chat}/uploads/",
        app.address, user.id
    );
    assert!(
        upload.location.starts_with(&prefix),
        "Location {} is not under {prefix}",
        upload.location
    );
    assert_eq!(upload.location, format!("{prefix}{}", upload.id));
    assert_eq!(upload.id.len(), 32, "{}", upload.id);
    assert!(
        upload
            .id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{}",
        upload.id
    );
    assert_eq!(number(&res, "upload-offset"), 0);
    let expires = header(&res, "upload-expires");
    assert_eq!(
        parse_http_date(&expires),
        http_date_after(&app, app.config.upload_expiry),
        "Upload-Expires {expires}"
    );
    assert!(res.bytes().await.unwrap_or_default().is_empty());

    // Random ids: another creation gets another.
    let second = create_ok(&app, &user, chat, 10, None).await;
    assert_ne!(second.id, upload.id);

    // The Location answers.
    let res = head(&user.client, &upload.location).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(number(&res, "upload-length"), 10);
}

#[tokio::test]
async fn the_location_of_a_new_upload_is_built_on_the_public_url() {
    let app = TestApp::spawn_with(|c| {
        c.public_url = "https://files.example.com/chat/".parse().ok();
    })
    .await;
    let user = app.user().await;
    let chat = app.chat(&user, "proxied").await;
    let res = create(&app, &user, chat, 10, None).await;
    let upload = created(&res);
    let path = format!("/api/users/{}/chats/{chat}/uploads/{}", user.id, upload.id);
    assert_eq!(
        upload.location,
        format!("https://files.example.com/chat{path}")
    );
    // Behind the proxy the prefix is stripped: the same path works here.
    assert_eq!(offset_of(&user.client, &app.url(&path)).await, 0);
}

#[tokio::test]
async fn a_creation_without_upload_length_or_with_a_deferred_length_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "lengths").await;
    let url = app.url(&uploads_path(&user, chat));

    let res = send(tus(user.client.post(&url))).await;
    assert_tus(&res, "no Upload-Length");
    assert_error(res, StatusCode::BAD_REQUEST).await;

    let res = send(tus(user.client.post(&url)).header("Upload-Defer-Length", "1")).await;
    assert_tus(&res, "Upload-Defer-Length");
    assert_error(res, StatusCode::BAD_REQUEST).await;
    assert_eq!(part_files(&app), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_malformed_upload_length_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "lengths").await;
    let url = app.url(&uploads_path(&user, chat));
    for bad in ["abc", "-1", "1.5", "", "0x10", "1 0", "+5"] {
        let res = send(tus(user.client.post(&url)).header("Upload-Length", bad)).await;
        assert_tus(&res, bad);
        assert_eq!(
            res.status(),
            StatusCode::BAD_REQUEST,
            "Upload-Length {bad:?}"
        );
        assert_error(res, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(part_files(&app), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_malformed_upload_metadata_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "metadata").await;
    for bad in [
        // Not base64.
        "filename !!!not-base64!!!",
        // Three fields in one pair.
        "filename YS50eHQ= extra",
        // An empty pair, so an empty key.
        "filename YS50eHQ=,,filetype dGV4dC9wbGFpbg==",
        // The same key twice.
        "filename YS50eHQ=,filename Yi50eHQ=",
    ] {
        let res = create(&app, &user, chat, 10, Some(bad)).await;
        assert_tus(&res, bad);
        assert_eq!(
            res.status(),
            StatusCode::BAD_REQUEST,
            "Upload-Metadata {bad:?}"
        );
        assert_error(res, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(part_files(&app), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn an_upload_length_over_the_maximum_file_size_is_too_large_and_the_maximum_itself_is_accepted()
 {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "max").await;
    let max = app.config.max_file_size;

    let res = create(&app, &user, chat, max + 1, None).await;
    assert_tus(&res, "over the maximum");
    let message = assert_error(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(
        message,
        format!("File exceeds the maximum size of {max} bytes")
    );
    assert_eq!(part_files(&app), Vec::<PathBuf>::new());

    create_ok(&app, &user, chat, max, None).await;
}

// ---------------------------------------------------------------------------------------------
// Metadata: name and type
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn metadata_names_and_types_the_file_as_a_multipart_upload_would() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "metadata").await;
    let cases: Vec<(String, &[u8], &str, &str)> = vec![
        (
            metadata(&[("filename", "report.pdf"), ("filetype", "application/pdf")]),
            b"%PDF-1.4 hi",
            "report.pdf",
            "application/pdf",
        ),
        // tus-js-client's keys (`name`, `type`); UTF-8 text gains its charset.
        (
            metadata(&[("name", "notes.txt"), ("type", "text/plain")]),
            "héllo wörld".as_bytes(),
            "notes.txt",
            "text/plain; charset=utf-8",
        ),
        // Reduced to its last component; no type, none guessable.
        (
            metadata(&[("filename", "../../etc/passwd")]),
            b"root:x:0:0",
            "passwd",
            "application/octet-stream",
        ),
        (
            metadata(&[("filename", "..\\..\\evil.txt")]),
            b"evil",
            "evil.txt",
            "text/plain; charset=utf-8",
        ),
        (
            metadata(&[("filename", "invoice\u{202E}fdp.exe")]),
            b"MZ",
            "invoicefdp.exe",
            "application/octet-stream",
        ),
        // application/octet-stream, or an invalid type: guessed from the name.
        (
            metadata(&[
                ("filename", "photo.png"),
                ("filetype", "application/octet-stream"),
            ]),
            b"\x89PNG",
            "photo.png",
            "image/png",
        ),
        (
            metadata(&[("filename", "table.csv"), ("filetype", "text/")]),
            "a,b\né,ü\n".as_bytes(),
            "table.csv",
            "text/csv; charset=utf-8",
        ),
        // Text that is not UTF-8 stays without a charset.
        (
            metadata(&[("filename", "latin1.txt")]),
            b"r\xe9sum\xe9",
            "latin1.txt",
            "text/plain",
        ),
        // Declared types are lowercased, their charset kept as declared.
        (
            metadata(&[
                ("filename", "declared.txt"),
                ("filetype", "Text/Plain; Charset=ISO-8859-1; format=flowed"),
            ]),
            "é".as_bytes(),
            "declared.txt",
            "text/plain; charset=iso-8859-1",
        ),
        (
            metadata(&[("filename", "résumé 履歴書.pdf")]),
            b"%PDF",
            "résumé 履歴書.pdf",
            "application/pdf",
        ),
        // Base64 without padding; a key without a value.
        (
            "filename YS50eHQ,is_confidential".to_owned(),
            b"abc",
            "a.txt",
            "text/plain; charset=utf-8",
        ),
        // No metadata at all.
        (String::new(), b"x", "file", "application/octet-stream"),
    ];
    let mut expected = Vec::new();
    for (metadata, bytes, name, media_type) in &cases {
        let metadata = (!metadata.is_empty()).then_some(metadata.as_str());
        let file = complete(&app, &user, chat, metadata, bytes).await;
        assert_eq!(
            (file["name"].as_str(), file["type"].as_str()),
            (Some(*name), Some(*media_type)),
            "Upload-Metadata {metadata:?}: {file}"
        );
        assert_eq!(file["size"], json!(bytes.len()), "{file}");
        assert_eq!(file["chat_conversation_id"], json!(chat), "{file}");
        expected.push(((*name).to_owned(), (*media_type).to_owned()));
    }
    // Listed in the order they were completed, as they were answered.
    let listed: Vec<(String, String)> = listing(&app, &user, chat)
        .await
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or_default().to_owned(),
                f["type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn head_echoes_the_upload_metadata_as_sent() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "echo").await;
    let sent = "filename cmVwb3J0LnBkZg==,filetype YXBwbGljYXRpb24vcGRm,is_confidential";
    let upload = create_ok(&app, &user, chat, 10, Some(sent)).await;
    let res = head(&user.client, &upload.location).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "upload-metadata"), sent);

    // Without metadata at creation, none on HEAD.
    let bare = create_ok(&app, &user, chat, 10, None).await;
    let res = head(&user.client, &bare.location).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        !res.headers().contains_key("upload-metadata"),
        "{:?}",
        res.headers()
    );
}

// ---------------------------------------------------------------------------------------------
// creation-with-upload
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_creation_with_an_offset_stream_body_stores_it_as_the_first_chunk() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "with upload").await;
    let bytes = pattern(10_000);

    let res = send(
        creation(&app, &user, chat, 10_000)
            .header("Content-Type", OFFSET_STREAM)
            .body(bytes[..4_000].to_vec()),
    )
    .await;
    let upload = created(&res);
    assert_eq!(number(&res, "upload-offset"), 4_000);
    assert_eq!(offset_of(&user.client, &upload.location).await, 4_000);

    patch_ok(&user.client, &upload.location, 4_000, &bytes[4_000..]).await;
    let file = chat_file(&user.client, &upload.location).await;
    assert_eq!(file["size"], json!(10_000));
    assert_eq!(sha256(&download(&file).await), sha256(&bytes));
}

#[tokio::test]
async fn a_creation_whose_body_is_another_media_type_is_refused_with_415_and_nothing_is_kept() {
    let app = TestApp::spawn_with(|c| c.user_quota = 1000).await;
    let user = app.user().await;
    let chat = app.chat(&user, "wrong type").await;
    for media_type in ["application/octet-stream", "text/plain"] {
        let res = send(
            creation(&app, &user, chat, 1000)
                .header("Content-Type", media_type)
                .body(b"hello".to_vec()),
        )
        .await;
        assert_tus(&res, media_type);
        assert_error(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    }
    assert_eq!(part_files(&app), Vec::<PathBuf>::new());
    // Nothing holds quota either.
    create_ok(&app, &user, chat, 1000, None).await;
}

#[tokio::test]
async fn a_whole_file_in_the_creation_request_completes_the_upload() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "whole").await;
    let bytes = pattern(70_000);
    let res = send(
        creation(&app, &user, chat, 70_000)
            .header("Content-Type", OFFSET_STREAM)
            .header("Upload-Metadata", metadata(&[("filename", "whole.bin")]))
            .body(bytes.clone()),
    )
    .await;
    let upload = created(&res);
    assert_eq!(number(&res, "upload-offset"), 70_000);

    let file = chat_file(&user.client, &upload.location).await;
    assert_eq!(file["name"], json!("whole.bin"));
    assert_eq!(file["size"], json!(70_000));
    let listed = listing(&app, &user, chat).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], file["id"]);
    assert_eq!(sha256(&download(&listed[0]).await), sha256(&bytes));
    assert_eq!(part_files(&app), Vec::<PathBuf>::new());
    assert_eq!(app.stored().await.len(), 1, "{:?}", app.stored().await);
}

#[tokio::test]
async fn an_upload_length_of_zero_completes_at_once_as_an_empty_file() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "empty").await;
    let upload = create_ok(
        &app,
        &user,
        chat,
        0,
        Some(&metadata(&[("filename", "empty.txt")])),
    )
    .await;
    let res = head(&user.client, &upload.location).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(number(&res, "upload-offset"), 0);
    assert_eq!(number(&res, "upload-length"), 0);
    let file = chat_file(&user.client, &upload.location).await;
    assert_eq!(file["size"], json!(0));
    assert_eq!(file["name"], json!("empty.txt"));
    // An empty file counts as UTF-8.
    assert_eq!(file["type"], json!("text/plain; charset=utf-8"));
    assert_eq!(listing(&app, &user, chat).await.len(), 1);
    assert!(download(&file).await.is_empty());
}
