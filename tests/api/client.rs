//! The Rust client kit against the real RabbitMQ: retries, timeouts and the circuit breaker.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use serde_json::json;
use user_domain::Method;
use user_service::client::{BreakerConfig, BreakerState, Client, ClientConfig, ClientError};

use crate::helpers::AMQP_URL;

#[tokio::test]
async fn idempotent_calls_are_retried_then_the_breaker_opens() {
    // A queue that nobody answers: every attempt times out.
    let queue = format!("client-test.{}", uuid::Uuid::new_v4().simple());
    let mut config = ClientConfig::new(AMQP_URL)
        .queue(queue.clone())
        .api_key("any");
    config.timeout = Duration::from_millis(200);
    config.retries = 2;
    config.backoff_min = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(20);
    config.breaker = BreakerConfig {
        min_calls: 4,
        reset_after: Duration::from_secs(60),
        ..Default::default()
    };
    let client = Client::connect(config).await.unwrap();

    // Watch what reaches the queue.
    let conn = lapin::Connection::connect(AMQP_URL, Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut seen = ch
        .basic_consume(
            queue.clone().into(),
            "".into(),
            no_ack,
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(d)) = seen.next().await {
            let id = d
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.as_str().to_owned());
            let body: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
            let _ = tx.send((id, body["method"].as_str().unwrap_or_default().to_owned()));
        }
    });

    let err = client
        .exists(&uuid::Uuid::new_v4().to_string())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    let mut attempts = Vec::new();
    for _ in 0..3 {
        attempts.push(
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert!(attempts.iter().all(|a| a.1 == "users.exists"));
    assert!(
        attempts
            .iter()
            .all(|a| a.0.is_some() && a.0 == attempts[0].0),
        "one message id for every attempt: {attempts:?}"
    );

    // Not idempotent: sent once.
    let err = client
        .call(Method::Delete, json!({"id": uuid::Uuid::new_v4()}))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)));
    let delete = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delete.1, "users.delete");

    // Four failures out of four: open. The next call fails at once, sending nothing.
    assert!(matches!(client.breaker_state(), BreakerState::Open { .. }));
    let err = client
        .exists(&uuid::Uuid::new_v4().to_string())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::CircuitOpen), "{err}");
    let nothing = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    assert!(nothing.is_err(), "nothing was sent while open");
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn service_errors_are_not_retried_and_do_not_open_the_breaker() {
    let app = crate::helpers::TestApp::spawn().await;
    let client = app.rpc().await;
    for _ in 0..10 {
        let err = client
            .get(&uuid::Uuid::new_v4().to_string(), &[])
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(404));
    }
    assert_eq!(
        client.breaker_state(),
        BreakerState::Closed,
        "a 404 is an answer, not a failure"
    );
    let err = client
        .call(Method::Get, json!({"id": "x"}))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
}
