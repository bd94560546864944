//! RabbitMQ stopping and starting under a running service. This binary holds this one test
//! only, so no other test sees the broker go away (cargo runs test binaries one at a time).

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::process::Command;

use helpers::{HASH, TestApp};
use reqwest::StatusCode;

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
    let status = Command::new("rabbitmqctl").arg("-q").args(args).status().expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

#[tokio::test]
async fn the_service_rides_out_a_broker_restart() {
    let app = TestApp::spawn().await;
    let before = app.rpc().await.create("Before", "before@example.com", HASH).await.unwrap();

    let broker = StoppedBroker::stop();
    app.until_broker(false).await;
    let (_, health) = app.get("/health").await;
    assert_eq!(health["status"], "degraded");
    // REST does not need the broker.
    let during = app.create_user("During", "during@example.com").await;
    let (status, _) = app.get(&format!("/api/internal/users/{}", before["id"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK);

    drop(broker);
    app.until_broker(true).await;
    let client = app.rpc().await;
    let fetched = client.get(during["id"].as_str().unwrap(), &[]).await.expect("RPC answers again");
    assert_eq!(fetched["email"], "during@example.com");
    assert_eq!(app.get("/health").await.1["status"], "ok");
}
