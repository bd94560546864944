//! The load: callers writing through the Rust client, and the consumer's side of events.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde_json::Value;
use user_service_client::{Client, ClientConfig, NewUser, UserPatch};

use super::PACE;

/// What one caller did: its users, and the writes each was sent (all answered).
pub type Written = Vec<(uuid::Uuid, usize)>;

/// Creates a user, then renames it again and again, keyed (the client's default), until
/// `running` ends; every call must be answered.
pub async fn caller(n: usize, config: ClientConfig, running: Arc<AtomicBool>) -> Written {
    let client = Client::connect(config).await.expect("connects");
    let mut written = Vec::new();
    let mut pace = tokio::time::interval(PACE);
    let mut user: Option<(uuid::Uuid, usize)> = None;
    let mut i = 0;
    while running.load(Ordering::Acquire) {
        pace.tick().await;
        i += 1;
        let started = std::time::Instant::now();
        let _slow = Slow(n, started);
        match user {
            Some((id, renames)) if renames < 5 => {
                let patch = UserPatch::new().name(format!("caller {n} rename {}", renames + 1));
                client
                    .update(id, &patch)
                    .await
                    .unwrap_or_else(|e| panic!("caller {n}: update {id}: {e}"));
                user = Some((id, renames + 1));
            }
            _ => {
                written.extend(user.take());
                let email = format!("c{n}-{i}@cluster.test");
                let hash = "$2b$10$abcdefghijklmnopqrstuv";
                let created = client
                    .create(&NewUser::new(format!("caller {n}"), email.as_str(), hash))
                    .await
                    .unwrap_or_else(|e| panic!("caller {n}: create {email}: {e}"));
                let id = created["id"].as_str().and_then(|s| s.parse().ok());
                user = Some((id.expect("an id"), 0));
            }
        }
    }
    written.extend(user);
    written
}

/// Every event on `queue`, in the order the queue holds them (duplicates included).
pub async fn drain(urls: &str, queue: &str, expected: usize) -> Vec<Value> {
    let (_conn, channel) = super::instance::channel(urls, "drain").await;
    channel
        .basic_qos(1000, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut events = Vec::new();
    let mut seen = HashSet::new();
    // Until every event was seen and the queue has been quiet for a moment.
    loop {
        let wait = if seen.len() >= expected { 2 } else { 30 };
        match tokio::time::timeout(Duration::from_secs(wait), consumer.next()).await {
            Ok(Some(Ok(delivery))) => {
                let event: Value = serde_json::from_slice(&delivery.data).expect("JSON");
                if let Some(id) = event["eventId"].as_str() {
                    seen.insert(id.to_owned());
                    events.push(event);
                }
                delivery.ack(BasicAckOptions::default()).await.expect("ack");
            }
            _ => return events,
        }
    }
}

/// Says when a call took long.
struct Slow(usize, std::time::Instant);

impl Drop for Slow {
    fn drop(&mut self) {
        if self.1.elapsed() > Duration::from_secs(2) {
            eprintln!(
                "{} caller {} waited {:?}",
                chrono::Utc::now(),
                self.0,
                self.1.elapsed()
            );
        }
    }
}
