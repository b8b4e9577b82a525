//! Login throttling: repeated failures per account and per client address get 429 with
//! `Retry-After`, while the real owner elsewhere still gets in. Clients use distinct loopback
//! source addresses (127.0.0.x), so the server sees them as different peers.

use chrono::Duration;
use std::net::{IpAddr, Ipv4Addr};

use reqwest::{Client, Response, StatusCode};
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, assert_error, header};

const THROTTLED: &str = "Too many failed login attempts; try again later";

/// A client whose connections come from `127.0.0.<last>`.
fn client_at(last: u8) -> Client {
    Client::builder()
        .cookie_store(true)
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        .build()
        .unwrap_or_else(|e| panic!("cannot build a client: {e}"))
}

async fn log_in(app: &TestApp, client: &Client, email: &str, password: &str) -> Response {
    client
        .post(app.url("/api/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("login: {e}"))
}

async fn assert_throttled(res: Response) -> u64 {
    let retry_after: u64 = header(&res, "retry-after")
        .parse()
        .unwrap_or_else(|e| panic!("Retry-After is not a number: {e}"));
    assert_eq!(
        assert_error(res, StatusCode::TOO_MANY_REQUESTS).await,
        THROTTLED
    );
    retry_after
}

#[tokio::test]
async fn failed_logins_from_one_address_are_throttled_while_the_owner_gets_in_elsewhere() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let attacker = client_at(2);
    for _ in 0..5 {
        let res = log_in(&app, &attacker, &owner.email, "wrong password").await;
        assert_error(res, StatusCode::UNAUTHORIZED).await;
    }
    let res = log_in(&app, &attacker, &owner.email, "wrong password").await;
    assert_eq!(assert_throttled(res).await, 15 * 60);
    // Throttled means no password is checked at all, not even the right one.
    let res = log_in(&app, &attacker, &owner.email, PASSWORD).await;
    assert_throttled(res).await;

    let elsewhere = client_at(3);
    let res = log_in(&app, &elsewhere, &owner.email, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);

    // The window slides: Retry-After counts down, and once it has passed the address may try.
    app.clock.advance(Duration::minutes(10));
    let res = log_in(&app, &attacker, &owner.email, "wrong password").await;
    assert_eq!(assert_throttled(res).await, 5 * 60);
    app.clock.advance(Duration::minutes(5));
    let res = log_in(&app, &attacker, &owner.email, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_address_that_fails_on_many_accounts_is_throttled_for_every_account() {
    let app = TestApp::spawn().await;
    let victim = app.user().await;
    let scanner = client_at(4);
    for i in 0..20 {
        let email = format!("nobody-{i}@example.com");
        let res = log_in(&app, &scanner, &email, "guess1234").await;
        assert_error(res, StatusCode::UNAUTHORIZED).await;
    }
    let res = log_in(&app, &scanner, &victim.email, PASSWORD).await;
    assert_throttled(res).await;
    let res = log_in(&app, &scanner, "someone-else@example.com", "guess1234").await;
    assert_throttled(res).await;
    // Unknown emails count like known ones, so throttling tells nobody which accounts exist.
    let res = log_in(&app, &client_at(5), &victim.email, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
    // Without trusted proxies a client cannot dodge throttling by making up X-Forwarded-For.
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let attacker = client_at(6);
    for i in 0..5 {
        let res = attacker
            .post(app.url("/api/auth/login"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&json!({"email": owner.email, "password": "wrong password"}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("login: {e}"));
        assert_error(res, StatusCode::UNAUTHORIZED).await;
    }
    let res = attacker
        .post(app.url("/api/auth/login"))
        .header("x-forwarded-for", "198.51.100.99")
        .json(&json!({"email": owner.email, "password": "wrong password"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("login: {e}"));
    assert_throttled(res).await;

    // Behind a trusted proxy (here: every connection from 127.0.0.1) the forwarded address is
    // the client: one forwarded client is throttled, another is not.
    let app = TestApp::spawn_with(|config| {
        config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap_or_else(|e| panic!("{e}"))];
    })
    .await;
    let owner = app.user().await;
    let proxy = client_at(1);
    let through_proxy = |client_ip: &'static str, password: &'static str| {
        proxy
            .post(app.url("/api/auth/login"))
            .header("x-forwarded-for", format!("203.0.113.77, {client_ip}"))
            .json(&json!({"email": owner.email, "password": password}))
            .send()
    };
    for _ in 0..5 {
        let res = through_proxy("192.0.2.10", "wrong password")
            .await
            .unwrap_or_else(|e| panic!("login: {e}"));
        assert_error(res, StatusCode::UNAUTHORIZED).await;
    }
    let res = through_proxy("192.0.2.10", PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("login: {e}"));
    assert_throttled(res).await;
    let res = through_proxy("192.0.2.11", PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("login: {e}"));
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn wrong_current_passwords_on_a_password_change_are_throttled_too() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let change = |current: &'static str| {
        owner
            .client
            .post(app.url("/api/auth/password"))
            .json(&json!({
                "currentPassword": current,
                "password": "a brand new password",
                "confirmPassword": "a brand new password",
            }))
            .send()
    };
    for _ in 0..5 {
        let res = change("not my password")
            .await
            .unwrap_or_else(|e| panic!("change: {e}"));
        assert_error(res, StatusCode::FORBIDDEN).await;
    }
    let res = change(PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("change: {e}"));
    assert_throttled(res).await;
}

#[tokio::test]
async fn guesses_sent_in_parallel_cannot_slip_past_the_limit() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let attacker = client_at(7);
    let guesses = (0..12).map(|i| {
        let attacker = attacker.clone();
        let url = app.url("/api/auth/login");
        let email = owner.email.clone();
        async move {
            attacker
                .post(url)
                .json(&json!({"email": email, "password": format!("guess number {i}")}))
                .send()
                .await
                .unwrap_or_else(|e| panic!("login: {e}"))
                .status()
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((checked, throttled), (5, 7), "{statuses:?}");
}
