//! RabbitMQ stopping and starting under a running service. This binary holds this one test
//! only, so no other test sees the broker go away (cargo runs test binaries one at a time).

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::process::Command;

use helpers::{HASH, TestApp};
use reqwest::StatusCode;
use serde_json::json;

/// Stops the broker's application; starts it again when dropped, whatever the test did.
struct StoppedBroker;

impl StoppedBroker {
    fn stop() -> Self {
        rabbitmqctl(&["stop_app"]);
        Self
    }
}

impl Drop for StoppedBroker {
    fn drop(&mut self) {
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
    }
}

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .status()
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

/// A durable queue bound to the app's events, as a consuming service would have: it outlives
/// the broker restart, so nothing published is missed.
async fn bind_audit_queue(app: &TestApp) -> String {
    let conn = lapin::Connection::connect(helpers::AMQP_URL, Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let exchange = format!("{}.events", app.db_name);
    let queue = format!("{}.audit", app.db_name);
    helpers::bind_events_queue(&ch, &exchange, Some(&queue)).await;
    conn.close(200, "bound".into()).await.unwrap();
    queue
}

/// Takes `n` events off `queue` (and deletes it), failing after 30 s.
async fn drain_events(queue: &str, n: usize) -> Vec<serde_json::Value> {
    use futures::StreamExt;
    use lapin::options::{BasicConsumeOptions, QueueDeleteOptions};
    let conn = lapin::Connection::connect(helpers::AMQP_URL, Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = ch
        .basic_consume(queue.into(), "".into(), no_ack, Default::default())
        .await
        .unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let d = tokio::time::timeout(std::time::Duration::from_secs(30), consumer.next())
            .await
            .expect("events within 30 s")
            .unwrap()
            .unwrap();
        out.push(serde_json::from_slice(&d.data).unwrap());
    }
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    out
}

#[tokio::test]
async fn the_service_rides_out_a_broker_restart() {
    let app = TestApp::spawn().await;
    let audit = bind_audit_queue(&app).await;
    let before = app
        .rpc()
        .await
        .create(&user_service_client::NewUser::new(
            "Before",
            "before@example.com",
            HASH,
        ))
        .await
        .unwrap();

    let broker = StoppedBroker::stop();
    app.until_broker(false).await;
    let (_, health) = app.get("/health").await;
    assert_eq!(health["status"], "degraded");
    // REST does not need the broker; its events wait in the outbox.
    let during = app.create_user("During", "during@example.com").await;
    let id = during["id"].as_str().unwrap();
    for theme in ["dark", "light"] {
        let (status, _) = app
            .patch(
                &format!("/api/internal/users/{id}/preferences"),
                json!({"theme": theme}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = app
        .get(&format!(
            "/api/internal/users/{}",
            before["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let pending = helpers::eventually(std::time::Duration::from_secs(10), || async {
        let (_, h) = app.get("/health").await;
        let n = h["components"]["outbox"]["outboxPending"]
            .as_i64()
            .unwrap_or(0);
        (n >= 3).then_some(h)
    })
    .await;
    assert!(
        pending["components"]["outbox"]["oldestPendingSeconds"]
            .as_f64()
            .is_some(),
        "{pending}"
    );

    drop(broker);
    app.until_broker(true).await;
    let client = app.rpc().await;
    let fetched = client
        .get(id.parse().unwrap(), &[])
        .await
        .expect("RPC answers again");
    assert_eq!(fetched["email"], "during@example.com");

    // Everything arrives, in order: the event from before the outage, then the three from during it.
    let events = drain_events(&audit, 4).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "USER_CREATED",
            "USER_CREATED",
            "PREFERENCES_CHANGED",
            "PREFERENCES_CHANGED"
        ]
    );
    assert_eq!(events[1]["userId"], id);
    assert_eq!(events[2]["data"]["current"]["theme"], "dark");
    assert_eq!(events[3]["data"]["current"]["theme"], "light");
    helpers::eventually(std::time::Duration::from_secs(10), || async {
        let (_, h) = app.get("/health").await;
        (h["status"] == "ok" && h["components"]["outbox"]["outboxPending"] == 0).then_some(())
    })
    .await;
}
