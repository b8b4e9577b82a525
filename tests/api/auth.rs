//! Sign-up, login, logout, the session check and the session cookie (`/api/auth/...`).

use chatfiles::clock::Clock;
use chrono::DateTime;
use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, TestUser, assert_error, client, header};

const COOKIE_NAME: &str = "neptun-session";

fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4())
}

/// A client that keeps no cookies: it sends exactly the `Cookie` header it is given.
fn bare_client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|e| panic!("cannot build a client: {e}"))
}

async fn sign_up_with(app: &TestApp, client: &Client, body: &Value) -> Response {
    client
        .post(app.url("/api/auth/sign-up"))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("sign-up: {e}"))
}

async fn log_in_with(app: &TestApp, client: &Client, email: &str, password: &str) -> Response {
    client
        .post(app.url("/api/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("login: {e}"))
}

async fn check(app: &TestApp, client: &Client) -> Response {
    client
        .get(app.url("/api/auth/check"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("check: {e}"))
}

/// `GET /api/auth/check` with only the given raw cookie value.
async fn check_with_cookie(app: &TestApp, value: &str) -> Response {
    bare_client()
        .get(app.url("/api/auth/check"))
        .header(COOKIE, format!("{COOKIE_NAME}={value}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("check: {e}"))
}

/// The `Set-Cookie` header that sets the session cookie.
fn session_set_cookie(res: &Response) -> String {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{COOKIE_NAME}=")))
        .unwrap_or_else(|| panic!("no {COOKIE_NAME} cookie set"))
        .to_owned()
}

fn session_cookie_value(res: &Response) -> String {
    res.cookies()
        .find(|c| c.name() == COOKIE_NAME)
        .map(|c| c.value().to_owned())
        .unwrap_or_else(|| panic!("no {COOKIE_NAME} cookie set"))
}

async fn json_body(res: Response) -> Value {
    res.json()
        .await
        .unwrap_or_else(|e| panic!("body is not JSON: {e}"))
}

async fn assert_logged_in_as(app: &TestApp, user: &TestUser) {
    let res = check(app, &user.client).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = json_body(res).await;
    assert_eq!(body["user"]["id"], json!(user.id), "{body}");
}

#[tokio::test]
async fn sign_up_answers_201_with_the_user_and_sets_a_session_cookie() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    let client = client();
    let res = sign_up_with(
        &app,
        &client,
        &json!({"email": email, "password": PASSWORD, "confirmPassword": PASSWORD}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let set_cookie = session_set_cookie(&res);
    let attributes: Vec<String> = set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    assert!(attributes.contains(&"httponly".to_owned()), "{set_cookie}");
    assert!(
        attributes.contains(&"samesite=lax".to_owned()),
        "{set_cookie}"
    );
    assert!(attributes.contains(&"path=/".to_owned()), "{set_cookie}");
    let ttl = app.config.session_ttl.as_secs();
    assert!(
        attributes.contains(&format!("max-age={ttl}")),
        "{set_cookie}"
    );
    assert!(
        !attributes.contains(&"secure".to_owned()),
        "not https: {set_cookie}"
    );

    let body = json_body(res).await;
    let user = body["user"]
        .as_object()
        .unwrap_or_else(|| panic!("no user in {body}"));
    assert_eq!(
        user.len(),
        2,
        "user has exactly id and primary_email: {body}"
    );
    assert!(
        body["user"]["id"].as_i64().is_some_and(|id| id > 0),
        "{body}"
    );
    assert_eq!(body["user"]["primary_email"], json!(email));

    let res = check(&app, &client).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_body(res).await["user"], body["user"]);
}

#[tokio::test]
async fn sign_up_trims_and_lowercases_the_email() {
    let app = TestApp::spawn().await;
    let local = format!("Mixed.Case-{}", uuid::Uuid::new_v4().simple());
    let res = sign_up_with(
        &app,
        &client(),
        &json!({
            "email": format!("  {local}@Example.COM \t"),
            "password": PASSWORD,
            "confirmPassword": PASSWORD,
        }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let expected = format!("{}@example.com", local.to_lowercase());
    assert_eq!(
        json_body(res).await["user"]["primary_email"],
        json!(expected)
    );

    // The stored form is what logging in matches, whatever case the user types.
    let res = log_in_with(&app, &client(), &format!(" {local}@EXAMPLE.com "), PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        json_body(res).await["user"]["primary_email"],
        json!(expected)
    );
}

#[tokio::test]
async fn sign_up_rejects_a_malformed_email_with_400() {
    let app = TestApp::spawn().await;
    for email in [
        "",
        "   ",
        "not-an-email",
        "a@b",
        "@example.com",
        "a b@example.com",
        "a@@example.com",
    ] {
        let res = sign_up_with(
            &app,
            &client(),
            &json!({"email": email, "password": PASSWORD, "confirmPassword": PASSWORD}),
        )
        .await;
        assert_error(res, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn sign_up_rejects_a_password_shorter_than_8_characters_with_400() {
    let app = TestApp::spawn().await;
    let res = sign_up_with(
        &app,
        &client(),
        &json!({"email": unique_email(), "password": "1234567", "confirmPassword": "1234567"}),
    )
    .await;
    assert_error(res, StatusCode::BAD_REQUEST).await;

    // Exactly 8 characters is enough.
    let res = sign_up_with(
        &app,
        &client(),
        &json!({"email": unique_email(), "password": "12345678", "confirmPassword": "12345678"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn sign_up_rejects_mismatched_passwords_with_400() {
    let app = TestApp::spawn().await;
    let res = sign_up_with(
        &app,
        &client(),
        &json!({"email": unique_email(), "password": PASSWORD, "confirmPassword": "something else"}),
    )
    .await;
    assert_error(res, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn sign_up_with_a_taken_email_answers_409_whatever_its_case() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    for email in [
        user.email.clone(),
        format!(" {} ", user.email.to_uppercase()),
    ] {
        let res = sign_up_with(
            &app,
            &client(),
            &json!({"email": email, "password": PASSWORD, "confirmPassword": PASSWORD}),
        )
        .await;
        assert_error(res, StatusCode::CONFLICT).await;
    }
}

#[tokio::test]
async fn sign_up_while_logged_in_answers_403() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let res = sign_up_with(
        &app,
        &user.client,
        &json!({"email": unique_email(), "password": PASSWORD, "confirmPassword": PASSWORD}),
    )
    .await;
    assert_error(res, StatusCode::FORBIDDEN).await;
    assert_logged_in_as(&app, &user).await;
}

#[tokio::test]
async fn sign_up_when_closed_answers_403() {
    let app = TestApp::spawn_with(|c| c.signup = chatfiles::config::Signup::Closed).await;
    let res = sign_up_with(
        &app,
        &client(),
        &json!({"email": unique_email(), "password": PASSWORD, "confirmPassword": PASSWORD}),
    )
    .await;
    assert_error(res, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn login_answers_200_with_the_user_and_an_rfc3339_login_time() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let client = client();
    let res = log_in_with(&app, &client, &user.email, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let set_cookie = session_set_cookie(&res).to_ascii_lowercase();
    assert!(set_cookie.contains("httponly"), "{set_cookie}");
    let body = json_body(res).await;
    assert_eq!(
        body["user"],
        json!({"id": user.id, "primary_email": user.email})
    );
    let logged_in_at = body["loggedInAt"]
        .as_str()
        .unwrap_or_else(|| panic!("no loggedInAt in {body}"));
    let parsed = DateTime::parse_from_rfc3339(logged_in_at)
        .unwrap_or_else(|e| panic!("loggedInAt {logged_in_at} is not RFC 3339: {e}"));
    assert_eq!(parsed.offset().local_minus_utc(), 0, "UTC: {logged_in_at}");
    assert_eq!(
        parsed.timestamp(),
        app.clock.now().timestamp(),
        "{logged_in_at}"
    );

    let res = check(&app, &client).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn login_issues_a_new_session_id() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    let client = client();
    let res = sign_up_with(
        &app,
        &client,
        &json!({"email": email, "password": PASSWORD, "confirmPassword": PASSWORD}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let first = session_cookie_value(&res);

    let res = log_in_with(&app, &client, &email, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let second = session_cookie_value(&res);
    assert_ne!(first, second, "login must not keep the old session id");

    let res = log_in_with(&app, &bare_client(), &email, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let third = session_cookie_value(&res);
    assert_ne!(third, first);
    assert_ne!(third, second);

    for value in [&second, &third] {
        let res = check_with_cookie(&app, value).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn login_with_a_wrong_password_or_an_unknown_email_answers_the_same_401() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let wrong_password = log_in_with(&app, &client(), &user.email, "not the password").await;
    assert!(
        wrong_password
            .cookies()
            .find(|c| c.name() == COOKIE_NAME)
            .is_none_or(|c| c.value().is_empty()),
        "a failed login must not hand out a session"
    );
    let wrong_password = assert_error(wrong_password, StatusCode::UNAUTHORIZED).await;
    let unknown_email = log_in_with(&app, &client(), &unique_email(), PASSWORD).await;
    let unknown_email = assert_error(unknown_email, StatusCode::UNAUTHORIZED).await;
    assert_eq!(wrong_password, "Invalid email or password");
    assert_eq!(unknown_email, "Invalid email or password");
}

#[tokio::test]
async fn login_with_malformed_json_answers_400() {
    let app = TestApp::spawn().await;
    for body in ["{\"email\": ", "not json", "{\"email\": \"a@b.co\"}", "[]"] {
        let res = client()
            .post(app.url("/api/auth/login"))
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("login: {e}"));
        assert_error(res, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn login_with_a_non_json_content_type_answers_415() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let res = client()
        .post(app.url("/api/auth/login"))
        .header(CONTENT_TYPE, "text/plain")
        .body(json!({"email": user.email, "password": PASSWORD}).to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("login: {e}"));
    assert_error(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
}

#[tokio::test]
async fn check_answers_200_with_a_session_and_401_without() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let res = check(&app, &user.client).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        json_body(res).await,
        json!({"user": {"id": user.id, "primary_email": user.email}})
    );

    let res = check(&app, &client()).await;
    assert_eq!(
        assert_error(res, StatusCode::UNAUTHORIZED).await,
        "Unauthorized"
    );
}

#[tokio::test]
async fn head_check_answers_200_or_401_with_an_empty_body() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    for (client, status) in [
        (&user.client, StatusCode::OK),
        (&client(), StatusCode::UNAUTHORIZED),
    ] {
        let res = client
            .head(app.url("/api/auth/check"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("head check: {e}"));
        assert_eq!(res.status(), status);
        assert!(
            res.headers().contains_key("x-request-id"),
            "no X-Request-Id"
        );
        let body = res.bytes().await.unwrap_or_else(|e| panic!("body: {e}"));
        assert!(body.is_empty(), "HEAD answered a body: {body:?}");
    }
}

#[tokio::test]
async fn logout_answers_true_and_the_old_cookie_is_worthless_at_once() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    let client = client();
    let res = sign_up_with(
        &app,
        &client,
        &json!({"email": email, "password": PASSWORD, "confirmPassword": PASSWORD}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let value = session_cookie_value(&res);
    let user_id = json_body(res).await["user"]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no user id"));

    // The replayed cookie works before logout.
    let res = check_with_cookie(&app, &value).await;
    assert_eq!(res.status(), StatusCode::OK);

    let res = client
        .post(app.url("/api/auth/logout"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("logout: {e}"));
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_body(res).await, json!(true));

    let res = check(&app, &client).await;
    assert_error(res, StatusCode::UNAUTHORIZED).await;

    // A client that kept the old value (not a browser) gets nowhere with it.
    let res = check_with_cookie(&app, &value).await;
    assert_error(res, StatusCode::UNAUTHORIZED).await;
    let res = bare_client()
        .get(app.url(&format!("/api/users/{user_id}/chats")))
        .header(COOKIE, format!("{COOKIE_NAME}={value}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("list chats: {e}"));
    assert_eq!(
        assert_error(res, StatusCode::UNAUTHORIZED).await,
        "Unauthorized"
    );
}

#[tokio::test]
async fn logout_without_a_session_answers_false() {
    let app = TestApp::spawn().await;
    let res = client()
        .post(app.url("/api/auth/logout"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("logout: {e}"));
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_body(res).await, json!(false));
}

#[tokio::test]
async fn a_second_logout_answers_false() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    for expected in [true, false] {
        let res = user
            .client
            .post(app.url("/api/auth/logout"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("logout: {e}"));
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(json_body(res).await, json!(expected));
    }
}

#[tokio::test]
async fn a_session_expires_after_its_ttl() {
    let app = TestApp::spawn_with(|c| c.session_ttl = std::time::Duration::from_secs(60)).await;
    let user = app.user().await;
    assert_logged_in_as(&app, &user).await;

    app.clock.advance(chrono::Duration::seconds(61));
    let res = check(&app, &user.client).await;
    assert_error(res, StatusCode::UNAUTHORIZED).await;
    let res = user
        .client
        .get(app.url(&format!("/api/users/{}/chats", user.id)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("list chats: {e}"));
    assert_error(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn a_session_in_use_is_renewed() {
    let app = TestApp::spawn_with(|c| c.session_ttl = std::time::Duration::from_secs(60)).await;
    let user = app.user().await;
    // Three uses 40 s apart: 120 s in all, twice the TTL, but never 60 s idle.
    for _ in 0..3 {
        app.clock.advance(chrono::Duration::seconds(40));
        assert_logged_in_as(&app, &user).await;
    }
    app.clock.advance(chrono::Duration::seconds(61));
    assert_error(check(&app, &user.client).await, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn a_cookie_from_a_server_with_another_secret_is_rejected() {
    let first = TestApp::spawn().await;
    let second = TestApp::spawn().await;
    let user = first.user().await;
    let value = first.session_cookie(&user).await;
    assert_eq!(
        check_with_cookie(&first, &value).await.status(),
        StatusCode::OK
    );

    let res = check_with_cookie(&second, &value).await;
    assert_error(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn a_forged_or_tampered_cookie_is_rejected() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let value = app.session_cookie(&user).await;
    let mut tampered = value.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap_or_else(|e| panic!("{e}"));
    for forged in [tampered.as_str(), "x", "", &"A".repeat(value.len())] {
        let res = check_with_cookie(&app, forged).await;
        assert_error(res, StatusCode::UNAUTHORIZED).await;
    }
}

#[tokio::test]
async fn a_cookie_stays_valid_across_a_restart() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let value = app.session_cookie(&user).await;
    let app = app.restart().await;

    // The cookie store is keyed by host, not port, so the user's jar carries over.
    assert_logged_in_as(&app, &user).await;
    assert_eq!(
        check_with_cookie(&app, &value).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn auth_routes_answer_405_with_allow_for_a_wrong_method() {
    let app = TestApp::spawn().await;
    for (path, allow) in [
        ("/api/auth/sign-up", "POST"),
        ("/api/auth/login", "POST"),
        ("/api/auth/logout", "POST"),
    ] {
        let res = client()
            .get(app.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let allowed = header(&res, "allow");
        assert_eq!(allowed, allow, "{path}");
        assert_error(res, StatusCode::METHOD_NOT_ALLOWED).await;
    }
    let res = client()
        .delete(app.url("/api/auth/check"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("check: {e}"));
    let allowed = header(&res, "allow");
    assert!(
        allowed.contains("GET") && allowed.contains("HEAD"),
        "{allowed}"
    );
    assert_error(res, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn an_https_public_url_marks_the_session_cookie_secure() {
    let app = TestApp::spawn_with(|c| {
        c.public_url = "https://files.example.com/chat/".parse().ok();
    })
    .await;
    let body = json!({"email": unique_email(), "password": PASSWORD, "confirmPassword": PASSWORD});
    let res = sign_up_with(&app, &bare_client(), &body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let cookie = res
        .cookies()
        .find(|c| c.name() == "neptun-session")
        .unwrap_or_else(|| panic!("no neptun-session cookie"));
    assert!(
        cookie.secure(),
        "cookie is not Secure behind an https public URL"
    );
    assert!(cookie.http_only());
}
