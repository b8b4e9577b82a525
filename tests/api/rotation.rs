//! Secret rotation: with `CHATFILES_PREVIOUS_SECRETS`, URLs and cookies made under an older
//! secret stay valid until they expire, while everything new is made under the current one.

use reqwest::StatusCode;
use reqwest::header::COOKIE;
use secrecy::SecretString;
use serde_json::Value;

use crate::helpers::{TestApp, assert_error, client, header};

const OLD: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const NEW: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn secret(hex: &str) -> SecretString {
    SecretString::from(hex.to_owned())
}

/// Restarts `app` over the same storage with `current` as the secret and `previous` as the
/// previous ones.
async fn rotate(mut app: TestApp, current: &str, previous: &[&str]) -> TestApp {
    app.config.secret = Some(secret(current));
    app.config.previous_secrets = previous.iter().map(|s| secret(s)).collect();
    app.restart().await
}

fn kid_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "kid")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_else(|| panic!("no kid in {url}"))
}

async fn first_url(app: &TestApp, user: &crate::helpers::TestUser, chat: i64) -> String {
    let body: Value = app
        .list_files(user, chat)
        .await
        .json()
        .await
        .unwrap_or_default();
    body["chatFiles"][0]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no url in {body}"))
        .to_owned()
}

#[tokio::test]
async fn urls_signed_under_a_previous_secret_download_until_it_is_dropped() {
    let app = TestApp::spawn_with(|config| config.secret = Some(secret(OLD))).await;
    let user = app.user().await;
    let chat = app.chat(&user, "rotation").await;
    app.upload_ok(
        &user,
        chat,
        &[("a.txt", "text/plain", b"made under the old secret")],
    )
    .await;
    let old_url = first_url(&app, &user, chat).await;

    let app = rotate(app, NEW, &[OLD]).await;
    let res = client()
        .get(app.rebase(&old_url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("download: {e}"));
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.bytes().await.unwrap_or_default().as_ref(),
        b"made under the old secret"
    );
    let new_url = first_url(&app, &user, chat).await;
    assert_ne!(
        kid_of(&new_url),
        kid_of(&old_url),
        "new URLs use the new key"
    );

    let app = rotate(app, NEW, &[]).await;
    let res = client()
        .get(app.rebase(&old_url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("download: {e}"));
    assert_eq!(
        assert_error(res, StatusCode::FORBIDDEN).await,
        "Invalid signature"
    );
    let res = client()
        .get(app.rebase(&new_url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("download: {e}"));
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn sessions_made_under_a_previous_secret_survive_and_move_to_the_new_one() {
    let app = TestApp::spawn_with(|config| config.secret = Some(secret(OLD))).await;
    let user = app.user().await;
    // A second session's raw cookie, kept by a client that does not come back during rotation.
    let dormant = app.session_cookie(&user).await;

    let app = rotate(app, NEW, &[OLD]).await;
    let res = user
        .client
        .get(app.url("/api/auth/check"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("check: {e}"));
    assert_eq!(res.status(), StatusCode::OK);
    let reissued = header(&res, "set-cookie");
    assert!(reissued.starts_with("neptun-session="), "{reissued}");

    // The previous secret is dropped: the client that came by holds a cookie under the new
    // secret and stays logged in; the dormant cookie is refused.
    let app = rotate(app, NEW, &[]).await;
    let res = user
        .client
        .get(app.url("/api/auth/check"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("check: {e}"));
    assert_eq!(res.status(), StatusCode::OK);
    let res = client()
        .get(app.url("/api/auth/check"))
        .header(COOKIE, format!("neptun-session={dormant}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("check: {e}"));
    assert_error(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn a_dormant_cookie_under_a_previous_secret_still_works_while_it_is_listed() {
    let app = TestApp::spawn_with(|config| config.secret = Some(secret(OLD))).await;
    let user = app.user().await;
    let dormant = app.session_cookie(&user).await;
    let app = rotate(app, NEW, &[OLD]).await;
    let res = client()
        .get(app.url("/api/auth/check"))
        .header(COOKIE, format!("neptun-session={dormant}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("check: {e}"));
    assert_eq!(res.status(), StatusCode::OK);
    // A cookie from a secret that was never ours stays refused.
    let stranger = TestApp::spawn().await;
    let foreign = {
        let someone = stranger.user().await;
        stranger.session_cookie(&someone).await
    };
    let res = client()
        .get(app.url("/api/auth/check"))
        .header(COOKIE, format!("neptun-session={foreign}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("check: {e}"));
    assert_error(res, StatusCode::UNAUTHORIZED).await;
}
