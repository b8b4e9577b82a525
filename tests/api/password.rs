//! `POST /api/auth/password`: a new password ends every other session of the user.

use reqwest::header::COOKIE;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, TestUser, assert_error, client};

const NEW_PASSWORD: &str = "an entirely new secret";

async fn change_password(app: &TestApp, user: &TestUser, body: Value) -> Response {
    user.client
        .post(app.url("/api/auth/password"))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("change password: {e}"))
}

fn change(current: &str, password: &str, confirm: &str) -> Value {
    json!({"currentPassword": current, "password": password, "confirmPassword": confirm})
}

async fn login_status(app: &TestApp, email: &str, password: &str) -> StatusCode {
    client()
        .post(app.url("/api/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("login: {e}"))
        .status()
}

#[tokio::test]
async fn a_password_change_ends_every_other_session_and_keeps_this_one() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    // The same account logged in on a second device, and a copy of this device's cookie.
    let other_device = TestUser {
        id: user.id,
        email: user.email.clone(),
        client: client(),
    };
    assert_eq!(login_status_with(&app, &other_device).await, StatusCode::OK);
    let stolen = app.session_cookie(&user).await;
    // Used once before the change, so that the service remembers that session.
    assert_eq!(app.check_status(&other_device).await, StatusCode::OK);

    let res = change_password(&app, &user, change(PASSWORD, NEW_PASSWORD, NEW_PASSWORD)).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(
        res.cookies().any(|c| c.name() == "neptun-session"),
        "this session continues under a new cookie"
    );

    assert_eq!(app.check_status(&user).await, StatusCode::OK);
    assert_eq!(
        app.check_status(&other_device).await,
        StatusCode::UNAUTHORIZED
    );
    let res = client()
        .get(app.url("/api/auth/check"))
        .header(COOKIE, format!("neptun-session={stolen}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("check: {e}"));
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    assert_eq!(
        login_status(&app, &user.email, PASSWORD).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login_status(&app, &user.email, NEW_PASSWORD).await,
        StatusCode::OK
    );
}

async fn login_status_with(app: &TestApp, user: &TestUser) -> StatusCode {
    user.client
        .post(app.url("/api/auth/login"))
        .json(&json!({"email": user.email, "password": PASSWORD}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("login: {e}"))
        .status()
}

#[tokio::test]
async fn a_password_change_needs_a_session_and_the_current_password() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let stranger = TestUser {
        id: user.id,
        email: user.email.clone(),
        client: client(),
    };
    let res = change_password(
        &app,
        &stranger,
        change(PASSWORD, NEW_PASSWORD, NEW_PASSWORD),
    )
    .await;
    assert_error(res, StatusCode::UNAUTHORIZED).await;

    let res = change_password(
        &app,
        &user,
        change("not it at all", NEW_PASSWORD, NEW_PASSWORD),
    )
    .await;
    assert_eq!(
        assert_error(res, StatusCode::FORBIDDEN).await,
        "Current password is incorrect"
    );
    assert_eq!(
        app.check_status(&user).await,
        StatusCode::OK,
        "a wrong guess logs nobody out"
    );

    let res = change_password(&app, &user, change(PASSWORD, "short", "short")).await;
    assert_error(res, StatusCode::BAD_REQUEST).await;
    let res = change_password(
        &app,
        &user,
        change(PASSWORD, NEW_PASSWORD, "something else"),
    )
    .await;
    assert_eq!(
        assert_error(res, StatusCode::BAD_REQUEST).await,
        "Passwords do not match"
    );
    let res = change_password(&app, &user, json!({"password": NEW_PASSWORD})).await;
    assert_error(res, StatusCode::BAD_REQUEST).await;

    assert_eq!(
        login_status(&app, &user.email, PASSWORD).await,
        StatusCode::OK
    );
    let res = user
        .client
        .get(app.url("/api/auth/password"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("get: {e}"));
    assert_error(res, StatusCode::METHOD_NOT_ALLOWED).await;
}
