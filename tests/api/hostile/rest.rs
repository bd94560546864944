//! REST takes ids and bodies by the same rules: an overlong correlation id is replaced, an
//! overlong `Idempotency-Key`, a body of blanks and a control character in a name are refused.

use serde_json::json;

use crate::helpers::{HASH, TestApp, assert_error, send};

/// REST takes ids by the same rule: an overlong correlation id is replaced, an overlong
/// `Idempotency-Key` is refused before anything is done.
#[tokio::test]
async fn rest_ids_that_break_the_rule() {
    use reqwest::Method;
    let app = TestApp::spawn().await;
    let body = json!({"name": "Key", "email": "key@example.com", "password": HASH});
    let resp = app
        .req(Method::POST, "/api/internal/users")
        .header("idempotency-key", "k".repeat(200))
        .header("x-correlation-id", "c".repeat(5000))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST);
    let corr = resp.headers()["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(corr.len() <= 128 && !corr.starts_with("ccc"), "{corr}");
    let error: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(error["details"][0]["field"], "Idempotency-Key", "{error}");
    assert_eq!(
        app.count("SELECT count(*) FROM users").await,
        0,
        "nothing done"
    );
}

/// A body of blanks is not JSON (only no body at all means "nothing"); a name with a control
/// character at its end is refused, not trimmed into something else.
#[tokio::test]
async fn blank_bodies_and_control_characters_are_refused() {
    use reqwest::Method;
    let app = TestApp::spawn().await;
    let id = app.create_user("Blank", "blank@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/internal/users/{id}/billing-info");
    let (status, body) = send(
        app.req(Method::PATCH, &path)
            .header("content-type", "application/json")
            .body(" \n"),
    )
    .await;
    assert_error(
        status,
        &body,
        reqwest::StatusCode::BAD_REQUEST,
        "VALIDATION_FAILED",
    );
    let (status, body) = app
        .patch(
            &format!("/api/internal/users/{id}"),
            json!({"name": "Blank\n"}),
        )
        .await;
    assert_error(
        status,
        &body,
        reqwest::StatusCode::BAD_REQUEST,
        "VALIDATION_FAILED",
    );
    let (status, body) = app
        .patch(
            &format!("/api/internal/users/{id}"),
            json!({"name": "  Blank Two "}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["name"], "Blank Two");
}
