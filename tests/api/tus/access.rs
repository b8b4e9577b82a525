//! Who may reach an upload, and how: Tus-Resumable, sessions, malformed ids, other users'
//! chats and uploads, and unsupported methods.

use reqwest::{Method, RequestBuilder, StatusCode};

use super::{
    FOREIGN, OFFSET_STREAM, TUS, assert_tus, create_ok, head, offset_of, part_files, patch_ok,
    patching, send, tus, uploads_path,
};
use crate::helpers::{self, TestApp, assert_error, header};

// ---------------------------------------------------------------------------------------------
// Tus-Resumable
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_missing_or_other_tus_resumable_is_a_precondition_failure_naming_tus_version() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "versions").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;
    patch_ok(&user.client, &upload.location, 0, b"abc").await;
    let collection = app.url(&uploads_path(&user, chat));
    let parts_before = part_files(&app);

    for version in [None, Some("0.2.2"), Some("1.0"), Some("")] {
        let with = |request: RequestBuilder| match version {
            Some(version) => request.header("Tus-Resumable", version),
            None => request,
        };
        let requests = [
            (
                "POST",
                with(user.client.post(&collection)).header("Upload-Length", 10),
            ),
            ("HEAD", with(user.client.head(&upload.location))),
            (
                "PATCH",
                with(user.client.patch(&upload.location))
                    .header("Content-Type", OFFSET_STREAM)
                    .header("Upload-Offset", 3)
                    .body(b"def".to_vec()),
            ),
            ("DELETE", with(user.client.delete(&upload.location))),
        ];
        for (method, request) in requests {
            let what = format!("{method} with Tus-Resumable {version:?}");
            let res = send(request).await;
            assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED, "{what}");
            assert_tus(&res, &what);
            assert_eq!(header(&res, "tus-version"), TUS, "{what}");
            if method != "HEAD" {
                assert_error(res, StatusCode::PRECONDITION_FAILED).await;
            }
        }
    }
    // Nothing was done.
    assert_eq!(part_files(&app), parts_before);
    assert_eq!(offset_of(&user.client, &upload.location).await, 3);
}

#[tokio::test]
async fn every_answer_of_the_tus_routes_carries_tus_resumable() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "headers").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;
    let anonymous = helpers::client();
    let unknown = format!("{}/{}", uploads_path(&user, chat), "0".repeat(32));
    let cases: Vec<(StatusCode, RequestBuilder)> = vec![
        (
            StatusCode::UNAUTHORIZED,
            tus(anonymous.head(&upload.location)),
        ),
        (
            StatusCode::UNAUTHORIZED,
            tus(anonymous.post(app.url(&uploads_path(&user, chat)))).header("Upload-Length", 1),
        ),
        (
            StatusCode::BAD_REQUEST,
            tus(user
                .client
                .head(app.url(&format!("{}/nope", uploads_path(&user, chat))))),
        ),
        (
            StatusCode::BAD_REQUEST,
            tus(user.client.post(app.url(&uploads_path(&user, chat)))),
        ),
        (
            StatusCode::NOT_FOUND,
            tus(user.client.head(app.url(&unknown))),
        ),
        (
            StatusCode::NOT_FOUND,
            tus(user.client.patch(app.url(&unknown)))
                .header("Content-Type", OFFSET_STREAM)
                .header("Upload-Offset", 0)
                .body(b"x".to_vec()),
        ),
        (
            StatusCode::PRECONDITION_FAILED,
            user.client.head(&upload.location),
        ),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            tus(user.client.put(&upload.location)),
        ),
        (
            StatusCode::CONFLICT,
            patching(&user.client, &upload.location, 5, b"x"),
        ),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            patching(&user.client, &upload.location, 0, &[0; 11]),
        ),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            tus(user.client.patch(&upload.location))
                .header("Content-Type", "text/plain")
                .header("Upload-Offset", 0)
                .body(b"x".to_vec()),
        ),
        (StatusCode::CONFLICT, user.client.get(&upload.location)),
        (
            StatusCode::FORBIDDEN,
            patching(&user.client, &upload.location, 0, b"x").header("Origin", FOREIGN),
        ),
        (StatusCode::OK, tus(user.client.head(&upload.location))),
        (
            StatusCode::NO_CONTENT,
            patching(&user.client, &upload.location, 0, b"x"),
        ),
    ];
    for (status, request) in cases {
        // Sent by the client that built it (the anonymous one has no cookie).
        let (client, request) = request.build_split();
        let request = request.unwrap_or_else(|e| panic!("a request: {e}"));
        let what = format!("{} {}", request.method(), request.url().path());
        let res = client
            .execute(request)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(res.status(), status, "{what}");
        assert_tus(&res, &format!("{what} answered {status}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions, ids and owners
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn without_a_session_every_tus_route_is_unauthorized_even_with_a_malformed_id() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "auth").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;
    let parts_before = part_files(&app);
    let anonymous = helpers::client();
    let bad = app.url("/api/users/abc/chats/0/uploads");
    let bad_item = app.url("/api/users/abc/chats/0/uploads/NOT-AN-ID");
    for url in [upload.location.clone(), bad_item] {
        for method in [
            Method::HEAD,
            Method::PATCH,
            Method::DELETE,
            Method::GET,
            Method::OPTIONS,
        ] {
            // With and without Tus-Resumable: the session comes first.
            for request in [
                tus(anonymous.request(method.clone(), &url)),
                anonymous.request(method.clone(), &url),
            ] {
                let res = send(
                    request
                        .header("Content-Type", OFFSET_STREAM)
                        .header("Upload-Offset", 0),
                )
                .await;
                assert_tus(&res, &format!("{method} {url}"));
                if method == Method::HEAD {
                    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "HEAD {url}");
                } else {
                    assert_eq!(
                        assert_error(res, StatusCode::UNAUTHORIZED).await,
                        "Unauthorized",
                        "{method} {url}"
                    );
                }
            }
        }
    }
    for url in [app.url(&uploads_path(&user, chat)), bad] {
        let res = send(tus(anonymous.post(&url)).header("Upload-Length", 10)).await;
        assert_tus(&res, &format!("POST {url}"));
        assert_eq!(
            assert_error(res, StatusCode::UNAUTHORIZED).await,
            "Unauthorized",
            "POST {url}"
        );
    }
    // Nothing was done.
    assert_eq!(offset_of(&user.client, &upload.location).await, 0);
    assert_eq!(part_files(&app), parts_before);
}

#[tokio::test]
async fn malformed_user_chat_and_upload_ids_are_bad_requests() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "ids").await;
    let u = user.id;

    for bad in ["abc", "0", "-1", "+1", "99999999999999999999"] {
        for (path, message) in [
            (
                format!("/api/users/{bad}/chats/{chat}/uploads"),
                "Invalid user id",
            ),
            (
                format!("/api/users/{u}/chats/{bad}/uploads"),
                "Invalid chat id",
            ),
        ] {
            let res = send(tus(user.client.post(app.url(&path))).header("Upload-Length", 1)).await;
            assert_tus(&res, &path);
            assert_eq!(
                assert_error(res, StatusCode::BAD_REQUEST).await,
                message,
                "POST {path}"
            );
        }
    }
    let hex = "0123456789abcdef0123456789abcdef";
    for bad in [
        "abc".to_owned(),
        hex.to_uppercase(),
        hex[..31].to_owned(),
        format!("{hex}0"),
        format!("{}g", &hex[..31]),
        "1".to_owned(),
    ] {
        let url = app.url(&format!("{}/{bad}", uploads_path(&user, chat)));
        let res = head(&user.client, &url).await;
        assert_tus(&res, &format!("HEAD {bad}"));
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "HEAD {bad}");
        for request in [
            patching(&user.client, &url, 0, b"x"),
            tus(user.client.delete(&url)),
            user.client.get(&url),
        ] {
            let res = send(request).await;
            assert_tus(&res, &bad);
            assert_eq!(
                assert_error(res, StatusCode::BAD_REQUEST).await,
                "Invalid upload id",
                "upload id {bad:?}"
            );
        }
    }
}

#[tokio::test]
async fn another_users_chat_or_user_id_is_not_found_and_the_user_comes_before_the_version() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let intruder = app.user().await;
    let chat = app.chat(&owner, "private").await;
    let upload = create_ok(&app, &owner, chat, 10, None).await;

    // The intruder's own user id, the owner's chat.
    let theirs = app.url(&uploads_path(&intruder, chat));
    let res = send(tus(intruder.client.post(&theirs)).header("Upload-Length", 1)).await;
    assert_tus(&res, "another user's chat");
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "Chat not found"
    );
    let item = format!("{theirs}/{}", upload.id);
    for request in [
        patching(&intruder.client, &item, 0, b"abc"),
        tus(intruder.client.delete(&item)),
        intruder.client.get(&item),
    ] {
        let res = send(request).await;
        assert_eq!(
            assert_error(res, StatusCode::NOT_FOUND).await,
            "Chat not found"
        );
    }
    assert_eq!(
        head(&intruder.client, &item).await.status(),
        StatusCode::NOT_FOUND
    );

    // The owner's user id in the path: not the session's user.
    for request in [
        tus(intruder.client.head(&upload.location)),
        patching(&intruder.client, &upload.location, 0, b"abc"),
        tus(intruder.client.delete(&upload.location)),
    ] {
        let (client, request) = request.build_split();
        let request = request.unwrap_or_else(|e| panic!("a request: {e}"));
        let method = request.method().clone();
        let res = client
            .execute(request)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if method == Method::HEAD {
            assert_eq!(res.status(), StatusCode::NOT_FOUND);
        } else {
            assert_eq!(
                assert_error(res, StatusCode::NOT_FOUND).await,
                "User not found",
                "{method}"
            );
        }
    }

    // Precedence: User not found before the version check, the version before the chat.
    let res = send(intruder.client.patch(&upload.location)).await;
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "User not found"
    );
    let res = send(intruder.client.post(&theirs).header("Upload-Length", 1)).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_error(res, StatusCode::PRECONDITION_FAILED).await;

    // Untouched.
    assert_eq!(offset_of(&owner.client, &upload.location).await, 0);
}

#[tokio::test]
async fn an_upload_is_found_only_under_its_own_users_own_chat() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let other = app.user().await;
    let owners_chat = app.chat(&owner, "owner's").await;
    let owners_second_chat = app.chat(&owner, "owner's other").await;
    let others_chat = app.chat(&other, "other's").await;
    let upload = create_ok(&app, &owner, owners_chat, 10, None).await;
    let parts_before = part_files(&app);

    // Another user's upload id under one's own chat; one's own under one's other chat; an id
    // that was never made.
    let never = "0123456789abcdef0123456789abcdef";
    for (client, path) in [
        (
            &other.client,
            format!("{}/{}", uploads_path(&other, others_chat), upload.id),
        ),
        (
            &owner.client,
            format!("{}/{}", uploads_path(&owner, owners_second_chat), upload.id),
        ),
        (
            &owner.client,
            format!("{}/{never}", uploads_path(&owner, owners_chat)),
        ),
    ] {
        let url = app.url(&path);
        let res = head(client, &url).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "HEAD {path}");
        assert_tus(&res, &path);
        for request in [
            patching(client, &url, 0, b"abc"),
            tus(client.delete(&url)),
            client.get(&url),
        ] {
            let res = send(request).await;
            assert_tus(&res, &path);
            assert_eq!(
                assert_error(res, StatusCode::NOT_FOUND).await,
                "Upload not found",
                "{path}"
            );
        }
    }
    assert_eq!(offset_of(&owner.client, &upload.location).await, 0);
    assert_eq!(part_files(&app), parts_before);
}

#[tokio::test]
async fn unsupported_methods_are_405_with_allow() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "methods").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;
    let collection = app.url(&uploads_path(&user, chat));

    for (url, methods, allowed) in [
        (
            collection.clone(),
            vec![Method::PUT, Method::GET, Method::PATCH, Method::DELETE],
            vec!["POST", "OPTIONS"],
        ),
        (
            upload.location.clone(),
            vec![Method::PUT, Method::POST],
            vec!["HEAD", "PATCH", "DELETE", "GET", "OPTIONS"],
        ),
    ] {
        for method in methods {
            let res = send(tus(user.client.request(method.clone(), &url))).await;
            assert_tus(&res, &format!("{method} {url}"));
            let allow = header(&res, "allow").to_ascii_uppercase();
            let allow: Vec<&str> = allow.split(',').map(str::trim).collect();
            for expected in &allowed {
                assert!(allow.contains(expected), "{method} {url}: Allow {allow:?}");
            }
            assert!(
                !allow.contains(&method.as_str()),
                "{method} {url}: Allow {allow:?}"
            );
            assert_error(res, StatusCode::METHOD_NOT_ALLOWED).await;
        }
    }
}
