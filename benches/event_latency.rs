//! Commit-to-consumer latency of domain events against a running user-service.
//!
//! ```sh
//! cargo run --release &                        # the service, in open mode on :3001
//! cargo bench --bench event_latency            # ROUNDS=200
//! ```
//! For each round it updates a user's preferences over REST and times the event's arrival at
//! a consumer bound to `user.*`: from the moment the response arrived (the transaction had
//! committed) and from the moment the request was sent (an upper bound).
//! Reads `BASE_URL`, `AMQP_URL`, `EVENTS_EXCHANGE`, `USER_SERVICE_API_KEY`, `ROUNDS`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let base = env_or("BASE_URL", "http://127.0.0.1:3001");
    let rounds: usize = env_or("ROUNDS", "200").parse().expect("ROUNDS is a number");
    let http = reqwest::Client::new();
    let auth = |r: reqwest::RequestBuilder| match std::env::var("USER_SERVICE_API_KEY") {
        Ok(k) => r.header("x-api-key", k),
        Err(_) => r,
    };

    let conn = lapin::Connection::connect(
        &env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        Default::default(),
    )
    .await
    .expect("RabbitMQ");
    let ch = conn.create_channel().await.expect("channel");
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let queue = ch
        .queue_declare("".into(), exclusive, FieldTable::default())
        .await
        .expect("queue");
    let exchange = env_or("EVENTS_EXCHANGE", "user-service.events");
    ch.queue_bind(
        queue.name().clone(),
        exchange.into(),
        "user.*".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind (is the service running? it declares the exchange)");
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut events = ch
        .basic_consume(
            queue.name().clone(),
            "".into(),
            no_ack,
            FieldTable::default(),
        )
        .await
        .expect("consume");

    let email = format!("latency-{}@example.com", uuid::Uuid::new_v4().simple());
    let user: Value = auth(http.post(format!("{base}/api/internal/users")))
        .json(&json!({"name": "Latency", "email": email, "password": "$2b$10$abcdefghijklmnopqrstuv"}))
        .send()
        .await
        .expect("service answers")
        .json()
        .await
        .expect("JSON");
    let id = user["id"].as_str().expect("created").to_owned();
    let _created = events.next().await;

    let (mut after_commit, mut after_send) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let theme = ["dark", "light"][i % 2];
        let sent = Instant::now();
        let resp = auth(http.patch(format!("{base}/api/internal/users/{id}/preferences")))
            .json(&json!({"theme": theme}))
            .send()
            .await
            .expect("patch");
        let committed = Instant::now();
        assert!(resp.status().is_success());
        let delivery = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("event within 5 s")
            .expect("consumer open")
            .expect("delivery");
        let arrived = Instant::now();
        let event: Value = serde_json::from_slice(&delivery.data).expect("JSON event");
        assert_eq!(event["data"]["current"]["theme"], theme);
        // The event may arrive before the HTTP response does: count that as zero.
        after_commit.push(arrived.saturating_duration_since(committed));
        after_send.push(arrived - sent);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    after_commit.sort();
    after_send.sort();
    println!(
        "event latency over {rounds} rounds: response→consumer p50 {:.2} ms, p99 {:.2} ms; request→consumer p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&after_commit, 0.5),
        percentile(&after_commit, 0.99),
        percentile(&after_send, 0.5),
        percentile(&after_send, 0.99),
        percentile(&after_send, 1.0),
    );
}
