//! Browsers on another origin: CORS preflights and exposed tus headers for an allowed
//! origin, and the cross-site guard for the rest.

use reqwest::{Method, Response, StatusCode};

use super::{
    FOREIGN, assert_tus, create_ok, created, creation, offset_of, part_files, patch_ok, patching,
    send, tus, uploads_path,
};
use crate::helpers::{self, TestApp, assert_error, header};

/// A front end's dev server allowed by `--cors-origins` (nothing listens there).
const ALLOWED: &str = "http://127.0.0.1:5173";
const REFUSED: &str = "Cross-site request refused";

// ---------------------------------------------------------------------------------------------
// CORS and cross-site requests
// ---------------------------------------------------------------------------------------------

async fn spawn_allowing_cors() -> TestApp {
    TestApp::spawn_with(|config| config.cors_origins = vec![ALLOWED.to_owned()]).await
}

/// The comma-separated names of a header, lowercased.
fn names(res: &Response, name: &str) -> Vec<String> {
    header(res, name)
        .split(',')
        .map(|v| v.trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn a_cors_preflight_for_tus_requests_from_an_allowed_origin_is_allowed() {
    let app = spawn_allowing_cors().await;
    let user = app.user().await;
    let chat = app.chat(&user, "preflight").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;

    for (url, method, requested) in [
        (
            upload.location.clone(),
            "PATCH",
            "tus-resumable,upload-offset,content-type",
        ),
        (
            app.url(&uploads_path(&user, chat)),
            "POST",
            "tus-resumable,upload-length,upload-metadata,content-type",
        ),
        (upload.location.clone(), "HEAD", "tus-resumable"),
        (upload.location.clone(), "DELETE", "tus-resumable"),
    ] {
        // Without a cookie, as browsers send preflights.
        let res = send(
            helpers::client()
                .request(Method::OPTIONS, &url)
                .header("Origin", ALLOWED)
                .header("Access-Control-Request-Method", method)
                .header("Access-Control-Request-Headers", requested),
        )
        .await;
        let what = format!("preflight of {method} {url}");
        assert!(res.status().is_success(), "{what}: {}", res.status());
        assert_eq!(
            header(&res, "access-control-allow-origin"),
            ALLOWED,
            "{what}"
        );
        assert_eq!(
            header(&res, "access-control-allow-credentials"),
            "true",
            "{what}"
        );
        let methods: Vec<String> = names(&res, "access-control-allow-methods")
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        for expected in ["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"] {
            assert!(
                methods.iter().any(|m| m == expected),
                "{what}: {expected} not in {methods:?}"
            );
        }
        let headers = names(&res, "access-control-allow-headers");
        for expected in requested.split(',') {
            assert!(
                headers.iter().any(|h| h == expected),
                "{what}: {expected} not in {headers:?}"
            );
        }
    }
}

#[tokio::test]
async fn tus_answers_to_an_allowed_origin_expose_the_tus_headers() {
    let app = spawn_allowing_cors().await;
    let user = app.user().await;
    let chat = app.chat(&user, "exposed").await;
    let assert_exposes = |res: &Response, what: &str, expected: &[&str]| {
        assert_eq!(
            header(res, "access-control-allow-origin"),
            ALLOWED,
            "{what}"
        );
        let exposed = names(res, "access-control-expose-headers");
        for name in expected {
            assert!(
                exposed.iter().any(|e| e == name),
                "{what}: {name} not in Access-Control-Expose-Headers {exposed:?}"
            );
        }
    };

    let res = send(
        creation(&app, &user, chat, 10)
            .header("Origin", ALLOWED)
            .header("Sec-Fetch-Site", "same-site"),
    )
    .await;
    let upload = created(&res);
    assert_exposes(
        &res,
        "POST",
        &[
            "location",
            "upload-offset",
            "upload-expires",
            "tus-resumable",
        ],
    );

    let res = send(
        patching(&user.client, &upload.location, 0, b"abc")
            .header("Origin", ALLOWED)
            .header("Sec-Fetch-Site", "same-site"),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_exposes(
        &res,
        "PATCH",
        &["upload-offset", "upload-expires", "tus-resumable"],
    );

    let res = send(tus(user.client.head(&upload.location)).header("Origin", ALLOWED)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_exposes(
        &res,
        "HEAD",
        &["upload-offset", "upload-length", "tus-resumable"],
    );
}

#[tokio::test]
async fn cross_site_tus_requests_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let chat = app.chat(&user, "cross-site").await;
    let upload = create_ok(&app, &user, chat, 10, None).await;
    patch_ok(&user.client, &upload.location, 0, b"abc").await;
    let parts = part_files(&app);

    let refused = [
        patching(&user.client, &upload.location, 3, b"def").header("Origin", FOREIGN),
        patching(&user.client, &upload.location, 3, b"def").header("Sec-Fetch-Site", "cross-site"),
        // Before the session is looked at.
        patching(&helpers::client(), &upload.location, 3, b"def").header("Origin", FOREIGN),
        creation(&app, &user, chat, 10).header("Origin", FOREIGN),
        tus(user.client.delete(&upload.location)).header("Origin", FOREIGN),
    ];
    for request in refused {
        let res = send(request).await;
        assert_tus(&res, "a cross-site request");
        assert_eq!(assert_error(res, StatusCode::FORBIDDEN).await, REFUSED);
    }
    assert_eq!(offset_of(&user.client, &upload.location).await, 3);
    assert_eq!(part_files(&app), parts);

    // The service's own origin passes.
    patch_ok(&user.client, &upload.location, 3, b"def").await;
    let res =
        send(patching(&user.client, &upload.location, 6, b"ghij").header("Origin", &app.address))
            .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}
