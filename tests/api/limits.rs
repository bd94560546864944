//! Per-caller rate limits: one allowance per caller, shared by both transports.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{AMQP_URL, AUTH_KEY, CATALOG_KEY, TestApp, assert_error, send};

#[tokio::test]
async fn a_caller_over_its_limit_gets_429_with_retry_after_on_both_transports() {
    let app = TestApp::spawn_with(&[("RATE_LIMITS", "game-catalog=3/60,default=100/60")])
        .await
        .with_key(Some(CATALOG_KEY));
    let path = format!("/api/internal/users/{}/exists", uuid::Uuid::new_v4());
    for _ in 0..3 {
        let (status, body) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let response = app.req(Method::GET, &path).send().await.unwrap();
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (59..=60).contains(&retry_after),
        "3 per 60 s, and the window opened just now: {retry_after}"
    );
    let (status, body) = send(app.req(Method::GET, &path)).await;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    assert!(
        (59..=60).contains(&body["retryAfter"].as_u64().unwrap()),
        "{body}"
    );

    // Another caller has its own allowance; health checks are never limited.
    let other = app.client.get(app.url(&path)).header("x-api-key", AUTH_KEY);
    assert_eq!(other.send().await.unwrap().status(), StatusCode::OK);
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // The same caller over RabbitMQ draws on the same allowance.
    app.until_broker(true).await;
    let config = user_service_client::ClientConfig::new(AMQP_URL)
        .queue(app.rpc_queue.clone())
        .api_key(CATALOG_KEY);
    let client = user_service_client::Client::connect(config).await.unwrap();
    let reply = client
        .request("users.exists", &json!({"id": uuid::Uuid::new_v4()}))
        .await
        .unwrap();
    assert_eq!(reply["status"], 429, "{reply}");
    assert_eq!(reply["error"]["code"], "RATE_LIMITED");
    assert!(
        reply["error"]["retryAfter"].as_u64().unwrap() <= 60,
        "{reply}"
    );
}
