//! A chat's files: Neptun's Chat Files listing, uploads, one file, deletes.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::helpers::{
    self, TestApp, TestUser, assert_error, assert_store_error, header, key_of, raw_multipart,
    sha256,
};

fn file_url(user: &TestUser, chat: i64, file: i64) -> String {
    format!("/api/users/{}/chats/{chat}/files/{file}", user.id)
}

async fn listing(app: &TestApp, user: &TestUser, chat: i64) -> Vec<Value> {
    let res = app.list_files(user, chat).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap_or_default();
    body["chatFiles"].as_array().cloned().unwrap_or_default()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

/// `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`, by hand.
fn is_rfc3339_utc_second(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// As the API writes times.
fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    chatfiles::clock::rfc3339(at.timestamp())
}

fn str_of<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string in {value}"))
}

fn id_of(value: &Value) -> i64 {
    value["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no id in {value}"))
}

#[tokio::test]
async fn neptuns_chat_files_endpoint_answers_with_exactly_its_documented_fields() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "chat files").await;
    app.upload_ok(
        &user,
        chat,
        &[("document.pdf", "application/pdf", b"%PDF-1.4 hi")],
    )
    .await;

    let res = app.list_files(&user, chat).await;
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = header(&res, "content-type");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = res.json().await.unwrap_or_default();
    assert_eq!(keys(&body), BTreeSet::from(["chatFiles".to_owned()]));
    let files = body["chatFiles"].as_array().cloned().unwrap_or_default();
    assert_eq!(files.len(), 1);
    let file = &files[0];
    let expected: BTreeSet<String> = [
        "id",
        "chat_conversation_id",
        "name",
        "size",
        "type",
        "created_at",
        "url",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    assert_eq!(keys(file), expected);
    assert!(file["id"].is_i64() && id_of(file) > 0, "{file}");
    assert_eq!(file["chat_conversation_id"], json!(chat));
    assert_eq!(file["name"], json!("document.pdf"));
    assert_eq!(file["size"], json!(11));
    assert!(file["size"].is_u64());
    assert_eq!(file["type"], json!("application/pdf"));
    let created_at = str_of(file, "created_at");
    assert!(is_rfc3339_utc_second(created_at), "{created_at}");
    assert_eq!(created_at, rfc3339(app.started));
    let url = str_of(file, "url");
    // Ours (`{address}/files/…`), or with direct downloads the object's in the bucket.
    assert!(url.starts_with(&app.download_base()), "{url}");
    assert!(reqwest::Url::parse(url).is_ok(), "{url}");
}

#[tokio::test]
async fn an_empty_chat_lists_an_empty_array() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "empty").await;
    let res = app.list_files(&user, chat).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap_or_default();
    assert_eq!(body, json!({"chatFiles": []}));
}

#[tokio::test]
async fn two_files_in_one_request_come_back_and_list_in_upload_order() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "two").await;
    let uploaded = app
        .upload_ok(
            &user,
            chat,
            &[
                ("zeta.txt", "text/plain", b"first"),
                ("alpha.txt", "text/plain", b"second!"),
            ],
        )
        .await;
    let names: Vec<&str> = uploaded.iter().map(|f| str_of(f, "name")).collect();
    assert_eq!(names, ["zeta.txt", "alpha.txt"]);
    assert_eq!(uploaded[0]["size"], json!(5));
    assert_eq!(uploaded[1]["size"], json!(7));

    let listed = listing(&app, &user, chat).await;
    let listed_names: Vec<&str> = listed.iter().map(|f| str_of(f, "name")).collect();
    assert_eq!(listed_names, ["zeta.txt", "alpha.txt"]);
    let uploaded_ids: Vec<i64> = uploaded.iter().map(id_of).collect();
    let listed_ids: Vec<i64> = listed.iter().map(id_of).collect();
    assert_eq!(uploaded_ids, listed_ids);
}

/// The listing is written straight from the rows (src/routes/listing.rs): every field as the
/// uploads answered it, each file with its own upload's time, whether it shares it or not.
#[tokio::test]
async fn each_listed_file_is_as_its_upload_answered_with_its_own_time() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "times").await;
    let mut uploaded = app
        .upload_ok(
            &user,
            chat,
            &[
                ("a \"quoted\" \\ name.txt", "text/plain", b"first"),
                ("b.bin", "application/octet-stream", b"\xff"),
            ],
        )
        .await;
    app.clock.advance(chrono::Duration::seconds(61));
    uploaded.extend(
        app.upload_ok(
            &user,
            chat,
            &[("r\u{e9}sum\u{e9} \u{1f600}.pdf", "application/pdf", b"%PDF")],
        )
        .await,
    );
    let listed = listing(&app, &user, chat).await;
    assert_eq!(listed.len(), 3);
    let times: Vec<&str> = listed.iter().map(|f| str_of(f, "created_at")).collect();
    let later = app.started + chrono::Duration::seconds(61);
    assert_eq!(
        times,
        [rfc3339(app.started), rfc3339(app.started), rfc3339(later)]
    );
    let contents: [&[u8]; 3] = [b"first", b"\xff", b"%PDF"];
    for ((listed, uploaded), content) in listed.iter().zip(&uploaded).zip(contents) {
        for field in [
            "id",
            "chat_conversation_id",
            "name",
            "size",
            "type",
            "created_at",
        ] {
            assert_eq!(
                listed[field], uploaded[field],
                "{field}: {listed} / {uploaded}"
            );
        }
        let res = helpers::client()
            .get(str_of(listed, "url"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status(), StatusCode::OK, "{listed}");
        let got = res.bytes().await.unwrap_or_default();
        assert_eq!(got.as_ref(), content, "{listed}");
    }
}

#[tokio::test]
async fn the_type_comes_from_the_part_lowercased_with_its_charset_or_is_guessed_from_the_name() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "types").await;
    let uploaded = app
        .upload_ok(
            &user,
            chat,
            &[
                (
                    "notes.txt",
                    "Text/Plain; Charset=UTF-8; format=flowed",
                    b"hello",
                ),
                ("photo.png", "application/octet-stream", b"\x89PNG"),
                ("blob.unknownext", "application/octet-stream", b"???"),
                ("report.bin", "application/pdf", b"%PDF"),
            ],
        )
        .await;
    let types: Vec<&str> = uploaded.iter().map(|f| str_of(f, "type")).collect();
    assert_eq!(
        types,
        [
            "text/plain; charset=utf-8",
            "image/png",
            "application/octet-stream",
            "application/pdf"
        ]
    );
}

#[tokio::test]
async fn path_traversal_names_keep_only_their_last_component_and_never_leave_the_storage() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "traversal").await;
    let body = raw_multipart(&[
        (
            "Content-Disposition: form-data; name=\"file\"; filename=\"../../etc/passwd\"\r\nContent-Type: text/plain",
            b"root:x:0:0",
        ),
        (
            "Content-Disposition: form-data; name=\"file\"; filename=\"..\\\\evil.txt\"\r\nContent-Type: text/plain",
            b"evil",
        ),
    ]);
    let res = app.upload_raw(&user, chat, body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap_or_default();
    let names: Vec<&str> = body["chatFiles"]
        .as_array()
        .map(|a| a.iter().map(|f| str_of(f, "name")).collect())
        .unwrap_or_default();
    assert_eq!(names, ["passwd", "evil.txt"]);

    // Stored under random keys: `objects/<xx>/<key>` on disk, `<prefix><key>` in a bucket.
    let stored = app.stored().await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    for name in &stored {
        let (area, key) = name.rsplit_once(['/', ':']).unwrap_or_default();
        assert!(area.starts_with("objects/") || area == "s3", "{name}");
        assert!(chatfiles::storage::is_valid_key(key), "{name}");
    }
    // Nothing went to disk under the names either, with any backend.
    let outside = app.dir.path();
    for sneaky in [
        "etc/passwd",
        "passwd",
        "evil.txt",
        "storage/evil.txt",
        "storage/passwd",
    ] {
        assert!(!outside.join(sneaky).exists(), "{sneaky} exists");
    }
}

#[tokio::test]
async fn a_non_ascii_name_is_kept() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "unicode").await;
    let uploaded = app
        .upload_ok(
            &user,
            chat,
            &[("résumé 履歴書.pdf", "application/pdf", b"%PDF")],
        )
        .await;
    assert_eq!(uploaded[0]["name"], json!("résumé 履歴書.pdf"));
    let listed = listing(&app, &user, chat).await;
    assert_eq!(listed[0]["name"], json!("résumé 履歴書.pdf"));
}

#[tokio::test]
async fn control_characters_and_bidi_overrides_are_removed_from_names() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "controls").await;
    let body = raw_multipart(&[
        (
            "Content-Disposition: form-data; name=\"file\"; filename=\"invoice\u{202E}fdp.exe\"\r\nContent-Type: application/octet-stream",
            b"MZ",
        ),
        (
            "Content-Disposition: form-data; name=\"file\"; filename=\"a\tb\u{85}c\u{2066}d.txt\"\r\nContent-Type: text/plain",
            b"abcd",
        ),
    ]);
    let res = app.upload_raw(&user, chat, body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap_or_default();
    assert_eq!(body["chatFiles"][0]["name"], json!("invoicefdp.exe"));
    assert_eq!(body["chatFiles"][1]["name"], json!("abcd.txt"));
}

#[tokio::test]
async fn a_file_of_exactly_the_maximum_size_is_accepted() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "max").await;
    let max = usize::try_from(app.config.max_file_size).unwrap_or_default();
    let bytes = vec![7u8; max];
    let uploaded = app
        .upload_ok(
            &user,
            chat,
            &[("max.bin", "application/octet-stream", &bytes)],
        )
        .await;
    assert_eq!(uploaded[0]["size"], json!(max));
}

#[tokio::test]
async fn a_file_one_byte_over_the_maximum_is_refused_and_nothing_is_kept() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "over").await;
    let max = usize::try_from(app.config.max_file_size).unwrap_or_default();
    let bytes = vec![7u8; max + 1];
    let res = app
        .upload(
            &user,
            chat,
            &[
                ("small.txt", "text/plain", b"fine"),
                ("big.bin", "application/octet-stream", &bytes),
            ],
        )
        .await;
    assert_error(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(app.stored().await, Vec::<String>::new());
    assert!(listing(&app, &user, chat).await.is_empty());
}

#[tokio::test]
async fn a_request_without_a_part_named_file_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "nofile").await;
    let form = Form::new().text("note", "hello").part(
        "attachment",
        Part::bytes(b"abc".to_vec()).file_name("a.txt"),
    );
    let res = user
        .client
        .post(app.url(&format!("/api/users/{}/chats/{chat}/files", user.id)))
        .multipart(form)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_error(res, StatusCode::BAD_REQUEST).await;
    assert!(app.stored().await.is_empty());
}

#[tokio::test]
async fn a_json_body_is_an_unsupported_media_type() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "json").await;
    let res = user
        .client
        .post(app.url(&format!("/api/users/{}/chats/{chat}/files", user.id)))
        .json(&json!({"file": "aGVsbG8="}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_error(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
}

#[tokio::test]
async fn a_part_that_is_itself_multipart_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "nested").await;
    let body = raw_multipart(&[(
        "Content-Disposition: form-data; name=\"file\"; filename=\"inner.txt\"\r\nContent-Type: multipart/mixed; boundary=inner",
        b"--inner\r\nContent-Type: text/plain\r\n\r\nhi\r\n--inner--",
    )]);
    let res = app.upload_raw(&user, chat, body).await;
    assert_error(res, StatusCode::BAD_REQUEST).await;
    assert!(app.stored().await.is_empty());
    assert!(listing(&app, &user, chat).await.is_empty());
}

#[tokio::test]
async fn uploaded_bytes_come_back_unchanged_through_the_url() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "bytes").await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let uploaded = app
        .upload_ok(
            &user,
            chat,
            &[("data.bin", "application/octet-stream", &bytes)],
        )
        .await;
    let url = str_of(&uploaded[0], "url");
    let res = helpers::client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), StatusCode::OK);
    let got = res.bytes().await.unwrap_or_default();
    assert_eq!(sha256(&got), sha256(&bytes));
}

#[tokio::test]
async fn one_file_is_returned_as_chat_file_and_download_1_signs_a_download_url() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "one").await;
    let uploaded = app
        .upload_ok(&user, chat, &[("a.png", "image/png", b"\x89PNG")])
        .await;
    let id = id_of(&uploaded[0]);

    let res = user
        .client
        .get(app.url(&file_url(&user, chat, id)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap_or_default();
    assert_eq!(keys(&body), BTreeSet::from(["chatFile".to_owned()]));
    assert_eq!(body["chatFile"], uploaded[0]);
    assert!(!str_of(&body["chatFile"], "url").contains("download=1"));

    let res = user
        .client
        .get(app.url(&format!("{}?download=1", file_url(&user, chat, id))))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap_or_default();
    let url = str_of(&body["chatFile"], "url");
    assert!(url.starts_with(&app.download_base()), "{url}");
    if helpers::direct_downloads() {
        // Presigned for the store, the attachment disposition signed in.
        assert!(
            url.contains("response-content-disposition=attachment"),
            "{url}"
        );
        assert!(!url.contains("download=1"), "{url}");
    } else {
        assert!(url.contains("download=1"), "{url}");
    }
}

#[tokio::test]
async fn another_chats_file_or_a_missing_file_is_file_not_found() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "mine").await;
    let other_chat = app.chat(&user, "also mine").await;
    let uploaded = app
        .upload_ok(&user, other_chat, &[("a.txt", "text/plain", b"a")])
        .await;
    let id = id_of(&uploaded[0]);

    for path in [file_url(&user, chat, id), file_url(&user, chat, 999_999)] {
        let res = user
            .client
            .get(app.url(&path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            assert_error(res, StatusCode::NOT_FOUND).await,
            "File not found",
            "{path}"
        );
        let res = user
            .client
            .delete(app.url(&path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            assert_error(res, StatusCode::NOT_FOUND).await,
            "File not found",
            "{path}"
        );
    }
    // The file in the other chat is untouched.
    assert_eq!(listing(&app, &user, other_chat).await.len(), 1);
}

#[tokio::test]
async fn another_users_chat_is_chat_not_found() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let intruder = app.user().await;
    let chat = app.chat(&owner, "private").await;
    let uploaded = app
        .upload_ok(&owner, chat, &[("secret.txt", "text/plain", b"secret")])
        .await;
    let id = id_of(&uploaded[0]);

    let list = format!("/api/users/{}/chats/{chat}/files", intruder.id);
    let one = format!("/api/users/{}/chats/{chat}/files/{id}", intruder.id);
    for res in [
        intruder.client.get(app.url(&list)).send().await,
        intruder.client.get(app.url(&one)).send().await,
        intruder.client.delete(app.url(&one)).send().await,
    ] {
        let res = res.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            assert_error(res, StatusCode::NOT_FOUND).await,
            "Chat not found"
        );
    }
    let res = app
        .upload(&intruder, chat, &[("x.txt", "text/plain", b"x")])
        .await;
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "Chat not found"
    );
    assert_eq!(listing(&app, &owner, chat).await.len(), 1);
    assert_eq!(app.stored().await.len(), 1);
}

#[tokio::test]
async fn a_malformed_file_id_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "ids").await;
    for bad in ["abc", "0", "-1", "1.5", "99999999999999999999"] {
        let res = user
            .client
            .get(app.url(&format!("/api/users/{}/chats/{chat}/files/{bad}", user.id)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_error(res, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn a_deleted_file_leaves_the_listing_the_disk_and_its_url() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "delete").await;
    let uploaded = app
        .upload_ok(
            &user,
            chat,
            &[
                ("keep.txt", "text/plain", b"keep"),
                ("gone.txt", "text/plain", b"gone"),
            ],
        )
        .await;
    let gone = id_of(&uploaded[1]);
    let gone_url = str_of(&uploaded[1], "url").to_owned();
    // With direct downloads the listing's URL is the store's; ours must 404 too.
    let gone_route_url = app.route_url(&uploaded[1], false);
    assert_eq!(app.stored().await.len(), 2);

    let res = user
        .client
        .delete(app.url(&file_url(&user, chat, gone)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(res.bytes().await.unwrap_or_default().is_empty());

    let listed = listing(&app, &user, chat).await;
    let names: Vec<&str> = listed.iter().map(|f| str_of(f, "name")).collect();
    assert_eq!(names, ["keep.txt"]);
    let key = key_of(&gone_url);
    let stored = app.stored().await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(
        stored.iter().all(|name| !name.ends_with(&key)),
        "{stored:?}"
    );

    let get = async |url: &str| {
        helpers::client()
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    };
    if helpers::direct_downloads() {
        assert_eq!(
            assert_store_error(get(&gone_url).await, StatusCode::NOT_FOUND).await,
            "NoSuchKey"
        );
    }
    assert_error(get(&gone_route_url).await, StatusCode::NOT_FOUND).await;

    let res = user
        .client
        .get(app.url(&file_url(&user, chat, gone)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "File not found"
    );
}

#[tokio::test]
async fn listing_and_uploading_without_a_cookie_is_unauthorized() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "auth").await;
    let anonymous = helpers::client();
    let path = format!("/api/users/{}/chats/{chat}/files", user.id);

    let res = anonymous
        .get(app.url(&path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        assert_error(res, StatusCode::UNAUTHORIZED).await,
        "Unauthorized"
    );

    let form = Form::new().part("file", Part::bytes(b"hello".to_vec()).file_name("a.txt"));
    let res = anonymous
        .post(app.url(&path))
        .multipart(form)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        assert_error(res, StatusCode::UNAUTHORIZED).await,
        "Unauthorized"
    );
    assert!(app.stored().await.is_empty());
}

#[tokio::test]
async fn two_listings_within_the_same_minute_give_byte_identical_urls() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "cache").await;
    app.upload_ok(&user, chat, &[("a.txt", "text/plain", b"a")])
        .await;

    // `expires` is now + TTL rounded *up* to a minute: at 12:00:00 sharp that is 12:15:00, but
    // from 12:00:01 to 12:01:00 it is 12:16:00. Start one second into the minute.
    app.clock.advance(chrono::Duration::seconds(1));
    let first = listing(&app, &user, chat).await;
    let expires = app.started + chrono::Duration::minutes(16);
    let first_url = str_of(&first[0], "url");
    if helpers::direct_downloads() {
        // Presigned at a time fixed by the expiry: a minute and the TTL before it.
        let signed_at = expires - chrono::Duration::minutes(16);
        let date = signed_at.format("X-Amz-Date=%Y%m%dT%H%M%SZ&").to_string();
        assert!(first_url.contains(&date), "{first_url}");
        assert!(first_url.contains("X-Amz-Expires=960&"), "{first_url}");
    } else {
        let expires = expires.timestamp();
        assert!(
            first_url.contains(&format!("expires={expires}&")),
            "{first_url}"
        );
    }
    app.clock.advance(chrono::Duration::seconds(10));
    let second = listing(&app, &user, chat).await;
    assert_eq!(str_of(&first[0], "url"), str_of(&second[0], "url"));

    app.clock.advance(chrono::Duration::seconds(60));
    let third = listing(&app, &user, chat).await;
    assert_ne!(str_of(&first[0], "url"), str_of(&third[0], "url"));
}

#[tokio::test]
async fn uploading_touches_the_chats_updated_at() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let older = app.chat(&user, "older").await;
    app.clock.advance(chrono::Duration::minutes(1));
    let newer = app.chat(&user, "newer").await;

    let chats = async || -> Vec<Value> {
        let res = user
            .client
            .get(app.url(&format!("/api/users/{}/chats", user.id)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap_or_default();
        body["chats"].as_array().cloned().unwrap_or_default()
    };
    let before = chats().await;
    assert_eq!(before.iter().map(id_of).collect::<Vec<_>>(), [newer, older]);

    app.clock.advance(chrono::Duration::minutes(5));
    let uploaded = app
        .upload_ok(&user, older, &[("a.txt", "text/plain", b"a")])
        .await;
    let uploaded_at = rfc3339(app.started + chrono::Duration::minutes(6));
    assert_eq!(uploaded[0]["created_at"], json!(uploaded_at));

    let after = chats().await;
    assert_eq!(after.iter().map(id_of).collect::<Vec<_>>(), [older, newer]);
    assert_eq!(after[0]["updated_at"], json!(uploaded_at));
    assert_eq!(after[0]["created_at"], json!(rfc3339(app.started)));
}

#[tokio::test]
async fn urls_are_built_on_the_public_url_with_its_path_prefix() {
    let app = TestApp::spawn_with(|c| {
        c.public_url = "https://files.example.com/chat/".parse().ok();
    })
    .await;
    let user = app.user().await;
    let chat = app.chat(&user, "proxied").await;
    let uploaded = app
        .upload_ok(&user, chat, &[("a.txt", "text/plain", b"a")])
        .await;
    let url = uploaded[0]["url"].as_str().unwrap_or_default().to_owned();
    if helpers::direct_downloads() {
        // Presigned URLs name the store (`--s3-public-endpoint`), whatever `--public-url` is.
        assert!(url.starts_with(&app.download_base()), "{url}");
        assert!(!url.contains("files.example.com"), "{url}");
        let res = reqwest::get(&url).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.bytes().await.unwrap_or_default().as_ref(), b"a");
        return;
    }
    assert!(
        url.starts_with("https://files.example.com/chat/files/"),
        "{url}"
    );
    // Through the proxy the prefix is stripped: the same path and query work here.
    let direct = url.replacen("https://files.example.com/chat", &app.address, 1);
    let res = reqwest::get(&direct)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap_or_default().as_ref(), b"a");
}
