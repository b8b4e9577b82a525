//! A user's chats: list, create, delete (`/api/users/{user_id}/chats`).

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_error, client, header};

fn chats_path(user_id: impl std::fmt::Display) -> String {
    format!("/api/users/{user_id}/chats")
}

async fn create(app: &TestApp, user: &TestUser, body: &Value) -> Response {
    user.client
        .post(app.url(&chats_path(user.id)))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create chat: {e}"))
}

async fn list(app: &TestApp, user: &TestUser) -> Vec<Value> {
    let res = user
        .client
        .get(app.url(&chats_path(user.id)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("list chats: {e}"));
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap_or_else(|e| panic!("not JSON: {e}"));
    body["chats"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no chats array in {body}"))
}

async fn delete(app: &TestApp, user: &TestUser, chat_id: i64) -> Response {
    user.client
        .delete(app.url(&format!("{}/{chat_id}", chats_path(user.id))))
        .send()
        .await
        .unwrap_or_else(|e| panic!("delete chat: {e}"))
}

fn ids(chats: &[Value]) -> Vec<i64> {
    chats.iter().filter_map(|c| c["id"].as_i64()).collect()
}

fn is_rfc3339_utc(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

#[tokio::test]
async fn creating_a_chat_answers_201_with_the_chat_and_the_default_model() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let res = create(&app, &user, &json!({"name": "Holiday plans"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap_or_else(|e| panic!("not JSON: {e}"));
    let chat = &body["chat"];
    let fields = chat
        .as_object()
        .unwrap_or_else(|| panic!("no chat in {body}"));
    let mut keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "id",
            "model",
            "name",
            "neptun_user_id",
            "updated_at"
        ],
        "{body}"
    );
    assert!(chat["id"].as_i64().is_some_and(|id| id > 0), "{body}");
    assert_eq!(chat["name"], json!("Holiday plans"));
    assert_eq!(chat["model"], json!("default"));
    assert_eq!(chat["neptun_user_id"], json!(user.id));
    assert!(is_rfc3339_utc(&chat["created_at"]), "{body}");
    assert!(is_rfc3339_utc(&chat["updated_at"]), "{body}");
    assert_eq!(chat["created_at"], chat["updated_at"]);

    assert_eq!(list(&app, &user).await, vec![chat.clone()]);
}

#[tokio::test]
async fn creating_a_chat_keeps_a_given_model() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let res = create(&app, &user, &json!({"name": "Code", "model": "gpt-4o"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap_or_else(|e| panic!("not JSON: {e}"));
    assert_eq!(body["chat"]["model"], json!("gpt-4o"));

    // 100 characters (not bytes) is still fine.
    let res = create(
        &app,
        &user,
        &json!({"name": "Long model", "model": "é".repeat(100)}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn creating_a_chat_trims_its_name() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let res = create(&app, &user, &json!({"name": "  \t Trimmed name \n "})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap_or_else(|e| panic!("not JSON: {e}"));
    assert_eq!(body["chat"]["name"], json!("Trimmed name"));
}

#[tokio::test]
async fn creating_a_chat_with_an_empty_or_blank_name_answers_400() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    for name in ["", " ", " \t\n "] {
        let res = create(&app, &user, &json!({"name": name})).await;
        assert_error(res, StatusCode::BAD_REQUEST).await;
    }
    assert!(list(&app, &user).await.is_empty());
}

#[tokio::test]
async fn creating_a_chat_with_a_name_over_255_characters_answers_400() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let res = create(&app, &user, &json!({"name": "a".repeat(256)})).await;
    assert_error(res, StatusCode::BAD_REQUEST).await;

    // Exactly 255 characters (multi-byte ones too) is accepted.
    for name in ["a".repeat(255), "ü".repeat(255)] {
        let res = create(&app, &user, &json!({"name": name})).await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    // Surrounding blanks do not count.
    let res = create(
        &app,
        &user,
        &json!({"name": format!("  {}  ", "b".repeat(255))}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn creating_a_chat_with_a_model_over_100_characters_answers_400() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let res = create(
        &app,
        &user,
        &json!({"name": "Chat", "model": "m".repeat(101)}),
    )
    .await;
    assert_error(res, StatusCode::BAD_REQUEST).await;
    assert!(list(&app, &user).await.is_empty());
}

#[tokio::test]
async fn creating_a_chat_with_malformed_json_answers_400() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    for body in ["{\"name\": ", "{}", "{\"name\": 5}", "null"] {
        let res = user
            .client
            .post(app.url(&chats_path(user.id)))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create chat: {e}"));
        assert_error(res, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn a_new_user_has_no_chats() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    assert!(list(&app, &user).await.is_empty());
}

#[tokio::test]
async fn chats_are_listed_most_recently_updated_first() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let older = app.chat(&user, "older").await;
    app.clock.advance(chrono::Duration::seconds(5));
    let newer = app.chat(&user, "newer").await;
    assert_eq!(ids(&list(&app, &user).await), [newer, older]);

    // An upload touches the older chat's updated_at, which brings it to the top.
    app.clock.advance(chrono::Duration::seconds(5));
    app.upload_ok(&user, older, &[("notes.txt", "text/plain", b"hello")])
        .await;
    let chats = list(&app, &user).await;
    assert_eq!(ids(&chats), [older, newer]);
    assert_ne!(chats[0]["updated_at"], chats[0]["created_at"], "{chats:?}");
    assert!(
        chats[0]["updated_at"].as_str() > chats[1]["updated_at"].as_str(),
        "{chats:?}"
    );
}

#[tokio::test]
async fn chats_with_equal_update_times_are_listed_higher_id_first() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let first = app.chat(&user, "first").await;
    let second = app.chat(&user, "second").await;
    let third = app.chat(&user, "third").await;
    assert_eq!(ids(&list(&app, &user).await), [third, second, first]);
}

#[tokio::test]
async fn a_user_sees_only_their_own_chats() {
    let app = TestApp::spawn().await;
    let alice = app.user().await;
    let bob = app.user().await;
    let mine = app.chat(&alice, "alice's").await;
    app.chat(&bob, "bob's").await;
    assert_eq!(ids(&list(&app, &alice).await), [mine]);
}

#[tokio::test]
async fn chat_routes_answer_401_without_a_session() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "chat").await;
    let anonymous = client();
    let responses = [
        anonymous.get(app.url(&chats_path(user.id))).send().await,
        anonymous
            .post(app.url(&chats_path(user.id)))
            .json(&json!({"name": "x"}))
            .send()
            .await,
        anonymous
            .delete(app.url(&format!("{}/{chat}", chats_path(user.id))))
            .send()
            .await,
        // 401 comes before a malformed id.
        anonymous.get(app.url(&chats_path("abc"))).send().await,
    ];
    for res in responses {
        let res = res.unwrap_or_else(|e| panic!("request: {e}"));
        assert_eq!(
            assert_error(res, StatusCode::UNAUTHORIZED).await,
            "Unauthorized"
        );
    }
    assert_eq!(ids(&list(&app, &user).await), [chat]);
}

#[tokio::test]
async fn malformed_user_ids_answer_400() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    for id in ["abc", "0", "-1", "99999999999999999999", "1.5", "+1", "%20"] {
        let res = user
            .client
            .get(app.url(&chats_path(id)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("list chats: {e}"));
        assert_error(res, StatusCode::BAD_REQUEST).await;
        let res = user
            .client
            .post(app.url(&chats_path(id)))
            .json(&json!({"name": "x"}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("create chat: {e}"));
        assert_error(res, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn malformed_chat_ids_answer_400_on_delete() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    for id in ["abc", "0", "-1", "99999999999999999999"] {
        let res = user
            .client
            .delete(app.url(&format!("{}/{id}", chats_path(user.id))))
            .send()
            .await
            .unwrap_or_else(|e| panic!("delete chat: {e}"));
        assert_error(res, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn another_users_id_answers_404_user_not_found() {
    let app = TestApp::spawn().await;
    let alice = app.user().await;
    let bob = app.user().await;
    let bobs = app.chat(&bob, "bob's").await;
    let res = alice
        .client
        .get(app.url(&chats_path(bob.id)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("list chats: {e}"));
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "User not found"
    );
    let res = alice
        .client
        .post(app.url(&chats_path(bob.id)))
        .json(&json!({"name": "sneaky"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("create chat: {e}"));
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "User not found"
    );
    let res = alice
        .client
        .delete(app.url(&format!("{}/{bobs}", chats_path(bob.id))))
        .send()
        .await
        .unwrap_or_else(|e| panic!("delete chat: {e}"));
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "User not found"
    );
    // A user id nobody has.
    let res = alice
        .client
        .get(app.url(&chats_path(i64::MAX)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("list chats: {e}"));
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "User not found"
    );

    assert_eq!(ids(&list(&app, &bob).await), [bobs]);
}

#[tokio::test]
async fn deleting_another_users_chat_answers_404_chat_not_found() {
    let app = TestApp::spawn().await;
    let alice = app.user().await;
    let bob = app.user().await;
    let bobs = app.chat(&bob, "bob's").await;
    let res = delete(&app, &alice, bobs).await;
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "Chat not found"
    );
    // The same answer as for a chat that does not exist at all.
    let res = delete(&app, &alice, bobs + 1000).await;
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "Chat not found"
    );
    assert_eq!(ids(&list(&app, &bob).await), [bobs]);
}

#[tokio::test]
async fn deleting_a_chat_answers_204_and_removes_its_files_rows_and_bytes() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let keep = app.chat(&user, "keep").await;
    let doomed = app.chat(&user, "doomed").await;
    let files = app
        .upload_ok(
            &user,
            doomed,
            &[
                ("a.txt", "text/plain", b"first file"),
                ("b.bin", "application/octet-stream", &[0u8, 1, 2, 3]),
            ],
        )
        .await;
    assert_eq!(files.len(), 2);
    assert_eq!(app.stored_files().len(), 2, "{:?}", app.stored_files());
    let url = app.rebase(files[0]["url"].as_str().unwrap_or_else(|| panic!("no url")));
    let res = client()
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("download: {e}"));
    assert_eq!(res.status(), StatusCode::OK);

    let res = delete(&app, &user, doomed).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let body = res.bytes().await.unwrap_or_else(|e| panic!("body: {e}"));
    assert!(body.is_empty(), "204 with a body: {body:?}");

    assert_eq!(ids(&list(&app, &user).await), [keep]);
    let res = app.list_files(&user, doomed).await;
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "Chat not found"
    );
    assert!(app.stored_files().is_empty(), "{:?}", app.stored_files());

    let res = client()
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("download: {e}"));
    assert_error(res, StatusCode::NOT_FOUND).await;

    // Deleting it again: it no longer exists.
    let res = delete(&app, &user, doomed).await;
    assert_eq!(
        assert_error(res, StatusCode::NOT_FOUND).await,
        "Chat not found"
    );
}

#[tokio::test]
async fn deleting_a_chat_leaves_other_chats_files_alone() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let keep = app.chat(&user, "keep").await;
    let doomed = app.chat(&user, "doomed").await;
    app.upload_ok(&user, keep, &[("keep.txt", "text/plain", b"keep me")])
        .await;
    app.upload_ok(&user, doomed, &[("gone.txt", "text/plain", b"lose me")])
        .await;
    assert_eq!(
        delete(&app, &user, doomed).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());
    let res = app.list_files(&user, keep).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap_or_else(|e| panic!("not JSON: {e}"));
    assert_eq!(
        body["chatFiles"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
}

#[tokio::test]
async fn a_wrong_method_on_the_chats_route_answers_405_with_allow() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let res = user
        .client
        .put(app.url(&chats_path(user.id)))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put chats: {e}"));
    let allow = header(&res, "allow");
    assert!(
        allow.contains("GET") && allow.contains("POST"),
        "Allow: {allow}"
    );
    assert_error(res, StatusCode::METHOD_NOT_ALLOWED).await;

    let chat = app.chat(&user, "chat").await;
    let res = user
        .client
        .get(app.url(&format!("{}/{chat}", chats_path(user.id))))
        .send()
        .await
        .unwrap_or_else(|e| panic!("get chat: {e}"));
    assert_eq!(header(&res, "allow"), "DELETE");
    assert_error(res, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn a_wrong_method_without_a_session_answers_401_first() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let res = client()
        .put(app.url(&chats_path(user.id)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put chats: {e}"));
    assert_error(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn an_unknown_route_answers_404_in_the_error_shape() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    for client in [&client(), &user.client] {
        let res = client
            .get(app.url("/api/nope"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("unknown route: {e}"));
        assert_error(res, StatusCode::NOT_FOUND).await;
    }
}

#[tokio::test]
async fn an_oversized_json_body_answers_413_and_a_wrong_media_type_415() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let huge = json!({"name": "x".repeat(64 * 1024)});
    let message = assert_error(
        create(&app, &user, &huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(message, "Request body is too large");

    let res = user
        .client
        .post(app.url(&format!("/api/users/{}/chats", user.id)))
        .header("content-type", "text/plain")
        .body(r#"{"name":"plain"}"#)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_error(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert!(list(&app, &user).await.is_empty());
}
