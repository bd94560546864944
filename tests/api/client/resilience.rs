//! When no answer comes: retries under one message id, the circuit breaker, a list of nodes walked
//! past dead and silent ones, a silent link replaced; service errors are answers, not failures.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use user_domain::Method;
use user_service_client::{
    BreakerConfig, BreakerState, Client, ClientConfig, ClientError, ErrorCode, RequestKey, Uuid,
};

use crate::helpers::{AMQP_URL, TestApp, eventually};
use crate::relay::Relay;

type Seen = (Option<String>, String);

/// The next `n` requests that reached the watched queue.
async fn attempts(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>, n: usize) -> Vec<Seen> {
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("an attempt")
                .expect("watching"),
        );
    }
    got
}

#[tokio::test]
async fn idempotent_calls_are_retried_then_the_breaker_opens() {
    // A queue that nobody answers: every attempt times out. Each attempt also expires in
    // the queue after the timeout: at 200 ms, a machine busy with the other tests once let
    // one expire before the watcher below took it.
    let queue = format!("client-test.{}", Uuid::new_v4().simple());
    let mut config = ClientConfig::new(AMQP_URL)
        .queue(queue.clone())
        .api_key("any")
        .timeout(Duration::from_millis(500))
        .retries(2);
    config.backoff_min = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(20);
    config.breaker = BreakerConfig {
        min_calls: 8,
        reset_after: Duration::from_secs(60),
        ..Default::default()
    };
    let client = Client::connect(config).await.unwrap();

    // Watch what reaches the queue: (message id, method).
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
            let body: Value = serde_json::from_slice(&d.data).unwrap();
            let _ = tx.send((id, body["method"].as_str().unwrap_or_default().to_owned()));
        }
    });
    // A read: three attempts, one message id.
    let err = client.exists(Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    let read = attempts(&mut rx, 3).await;
    assert!(read.iter().all(|a| a.1 == "users.exists"));
    assert!(
        read.iter().all(|a| a.0.is_some() && a.0 == read[0].0),
        "one message id for every attempt: {read:?}"
    );

    // A keyed write (the typed calls key every write): retried too, under one request key.
    let err = client.delete(Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    let delete = attempts(&mut rx, 3).await;
    assert!(delete.iter().all(|a| a.1 == "users.delete"));
    assert!(delete.iter().all(|a| a.0.is_some() && a.0 == delete[0].0));
    assert_ne!(delete[0].0, read[0].0, "a fresh key per call");

    // An unkeyed write: sent once, without a message id.
    let err = client
        .call_with(
            Method::Delete,
            json!({"id": Uuid::new_v4()}),
            RequestKey::Unkeyed,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)));
    let once = attempts(&mut rx, 1).await;
    assert_eq!(once[0], (None, "users.delete".to_owned()));
    let nothing = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    assert!(nothing.is_err(), "not retried");
    assert_eq!(client.breaker_state(), BreakerState::Closed, "7 of 8");

    // The eighth failure in a row opens it; the next call fails at once, sending nothing.
    let given = RequestKey::Given("my-operation-42".to_owned());
    let _ = client
        .call_with(Method::RecordLogin, json!({"id": Uuid::new_v4()}), given)
        .await;
    assert_eq!(
        attempts(&mut rx, 1).await[0].0.as_deref(),
        Some("my-operation-42")
    );
    assert!(matches!(client.breaker_state(), BreakerState::Open { .. }));
    let err = client.exists(Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(err, ClientError::CircuitOpen), "{err}");
    let nothing = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    assert!(nothing.is_err(), "nothing was sent while open");
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .unwrap();
}

/// A cluster's list, walked: a node that is gone and one that accepts TCP and never speaks
/// are passed over, each within the connect deadline, and calls go through the one that
/// answers.
#[tokio::test]
async fn the_client_walks_a_list_of_nodes_past_dead_and_silent_ones() {
    let app = TestApp::spawn().await;
    app.until_broker(true).await;
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone_url = format!("amqp://guest:guest@{}/%2f", gone.local_addr().unwrap());
    drop(gone);
    // Accepts, then says nothing: a paused node (the kernel completes the handshake).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("amqp://guest:guest@{}/%2f", silent.local_addr().unwrap());
    let mut config = app.client_config();
    config.broker.nodes = vec![gone_url, silent_url, AMQP_URL.to_owned()];
    // Each wait's bound, the link's own declarations through the node that answers included:
    // beside the cluster test a declaration took over 500 ms.
    config.broker.timeout = Duration::from_secs(1);
    let started = std::time::Instant::now();
    let client = Client::connect(config)
        .await
        .expect("the third node answers");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!client.exists(Uuid::new_v4()).await.unwrap());
    drop(silent);
}

/// A link on which nothing comes back for a whole timeout is given up: the next call opens
/// another, on the next node, rather than wait on a channel the broker holds back (as a quorum
/// queue does for about 10 s after losing its leader) until its heartbeat gives out.
#[tokio::test]
async fn a_link_that_answers_nothing_for_a_timeout_is_replaced() {
    let app = TestApp::spawn().await;
    app.until_broker(true).await;
    let relay = Relay::rabbitmq().await;
    let mut config = app
        .client_config()
        .heartbeat(60)
        .timeout(Duration::from_secs(1))
        .retries(0);
    config.broker.nodes = vec![
        format!("amqp://guest:guest@{}/%2f", relay.addr),
        AMQP_URL.to_owned(),
    ];
    // Each wait's bound, the first link's declarations included (beside the cluster test one
    // took over 500 ms). After the freeze the next link starts at the node after the relay's.
    config.broker.timeout = Duration::from_secs(2);
    let client = Client::connect(config).await.expect("through the relay");
    assert!(!client.exists(Uuid::new_v4()).await.unwrap());
    relay.freeze();
    let silent = client.exists(Uuid::new_v4()).await;
    assert!(matches!(silent, Err(ClientError::Timeout(_))), "{silent:?}");
    // The frozen link still counts as connected (its heartbeat allows a minute): only a new
    // link, on the next node, answers. (On a loaded machine the new link's set-up can take
    // longer than the call's 1 s, hence more than one call.)
    eventually(Duration::from_secs(20), || async {
        matches!(client.exists(Uuid::new_v4()).await, Ok(false)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn service_errors_are_typed_not_retried_and_do_not_open_the_breaker() {
    let app = TestApp::spawn().await;
    let client = app.rpc().await;
    for _ in 0..10 {
        let err = client.get(Uuid::new_v4(), &[]).await.unwrap_err();
        assert!(err.is_not_found(), "{err}");
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
    let ClientError::Service {
        status,
        code,
        details,
        ..
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!((status, code), (400, ErrorCode::ValidationFailed));
    assert_eq!(details[0]["field"], "id", "{details}");
    // A bad argument is refused before anything is sent.
    let err = client
        .update_preferences(Uuid::new_v4(), json!(["not", "an", "object"]))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidArgument(_)), "{err}");
}
