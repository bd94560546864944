//! A frozen RabbitMQ: the service reaches the broker through a relay the test owns, which stops
//! forwarding without closing anything (a paused or partitioned node). REST keeps serving
//! reads and writes, `/health` shows the broker down, RPC is back within 10 s of the thaw, and
//! every event of every acknowledged write reaches a consumer on the real broker, in order
//! per user.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use user_service_client::{BreakerConfig, Client, Uuid};

use crate::events::Events;
use crate::helpers::{TestApp, eventually, send};
use crate::relay::Relay;

const WRITERS: usize = 4;
const READERS: usize = 2;
/// "As usual": generous, for a debug build on a shared machine; a stalled request waits for
/// ever, a REST request that waited on the broker would take at least `AMQP_TIMEOUT_MS`.
const ANSWERED_WITHIN: Duration = Duration::from_secs(3);
/// How long the broker stays frozen: long enough for the reconnect backoff to reach its cap.
const FROZEN_FOR: Duration = Duration::from_secs(10);
/// Pacing of the load, so that it does not take every core of the machine.
const PACE: Duration = Duration::from_millis(10);

/// A client on the real broker (not the relay) that waits `timeout` for each call, tries
/// once, and never stops trying because of earlier failures.
async fn client(app: &TestApp, timeout: Duration) -> Client {
    let mut config = app.client_config().timeout(timeout).retries(0);
    config.breaker = BreakerConfig {
        min_calls: usize::MAX,
        ..Default::default()
    };
    Client::connect(config).await.expect("client connects")
}

/// One REST request: answered within [`ANSWERED_WITHIN`] with `want`.
async fn answered(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
    want: StatusCode,
) {
    let mut req = app.req(method, path);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let started = Instant::now();
    let (status, reply) = tokio::time::timeout(ANSWERED_WITHIN, send(req))
        .await
        .unwrap_or_else(|_| panic!("{path} not answered within {ANSWERED_WITHIN:?}"));
    assert_eq!(status, want, "{path}: {reply}");
    assert!(started.elapsed() < ANSWERED_WITHIN);
}

#[tokio::test]
async fn a_frozen_broker_costs_rest_nothing_rpc_returns_and_no_event_is_lost() {
    let relay = Relay::rabbitmq().await;
    let url = format!("amqp://guest:guest@{}/%2f", relay.addr);
    let app = Arc::new(
        TestApp::spawn_with(&[
            ("AMQP_URL", url.as_str()),
            ("AMQP_HEARTBEAT_SECONDS", "2"),
            ("AMQP_TIMEOUT_MS", "1000"),
            // The load is well over the default limits.
            ("RATE_LIMITS", "auth-service=1000000/60,default=1000000/60"),
        ])
        .await,
    );
    let mut events = Events::bind(&format!("{}.events", app.db_name)).await;
    app.until_broker(true).await;
    let mut ids = Vec::new();
    for i in 0..WRITERS {
        let user = app
            .create_user(&format!("Frozen {i}"), &format!("frozen{i}@example.com"))
            .await;
        ids.push(user["id"].as_str().expect("an id").to_owned());
    }
    let before = client(&app, Duration::from_secs(5)).await;
    let first: Uuid = ids[0].parse().expect("a UUID");
    before
        .get(first, &[])
        .await
        .expect("RPC answers before the freeze");

    relay.freeze();
    let frozen = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for id in &ids {
        let (app, stop, id) = (app.clone(), stop.clone(), id.clone());
        writers.push(tokio::spawn(async move {
            // The names this user was given, in the order the service acknowledged them.
            let mut names = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let name = format!("Frozen {id} {}", names.len());
                let path = format!("/api/internal/users/{id}");
                answered(
                    &app,
                    Method::PATCH,
                    &path,
                    Some(json!({"name": name})),
                    StatusCode::OK,
                )
                .await;
                names.push(name);
                tokio::time::sleep(PACE).await;
            }
            (id, names)
        }));
    }
    let mut readers = Vec::new();
    for i in 0..READERS {
        let (app, stop, id) = (app.clone(), stop.clone(), ids[i % ids.len()].clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let path = format!("/api/internal/users/{id}");
                answered(&app, Method::GET, &path, None, StatusCode::OK).await;
                reads += 1;
                tokio::time::sleep(PACE).await;
            }
            reads
        }));
    }
    // RPC calls sent meanwhile reach the broker, but no instance can take them.
    let during = client(&app, Duration::from_millis(500)).await;
    for id in &ids {
        let id: Uuid = id.parse().expect("a UUID");
        assert!(
            during.get(id, &[]).await.is_err(),
            "answered by a frozen connection?"
        );
    }
    // Both users of the broker see it gone, while REST goes on.
    eventually(Duration::from_secs(20), || async {
        let (_, health) = app.get("/health").await;
        let status = |part: &str| health["components"][part]["status"].clone();
        (status("rabbitmq") == "down" && status("eventPublishing") == "down").then_some(())
    })
    .await;
    // More writes while it is known to be down, until the outage has lasted its time.
    let mark = app.count("SELECT count(*) FROM outbox").await;
    eventually(FROZEN_FOR * 3, || async {
        let more = app.count("SELECT count(*) FROM outbox").await >= mark + 20;
        (more && frozen.elapsed() >= FROZEN_FOR).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut written: HashMap<String, Vec<String>> = HashMap::new();
    for w in writers {
        let (id, names) = w.await.expect("a writer panicked");
        written.insert(id, names);
    }
    let mut reads = 0;
    for r in readers {
        let done = r.await.expect("a reader panicked");
        assert!(done > 0, "no read while frozen");
        reads += done;
    }
    let writes: usize = written.values().map(Vec::len).sum();
    eprintln!("while frozen: {writes} writes and {reads} reads answered");

    relay.thaw();
    let thawed = Instant::now();
    let after = client(&app, Duration::from_secs(1)).await;
    eventually(Duration::from_secs(10), || async {
        after.get(first, &[]).await.ok()
    })
    .await;
    let rpc_back = thawed.elapsed();
    assert!(rpc_back < Duration::from_secs(10), "{rpc_back:?}");
    eprintln!("RPC answered {rpc_back:?} after the thaw");

    // Every acknowledged write's event, once deduplicated, in the order of the writes.
    let mut seen = HashSet::new();
    let mut delivered: HashMap<String, Vec<String>> = HashMap::new();
    let complete = |delivered: &HashMap<String, Vec<String>>| {
        written
            .iter()
            .all(|(id, names)| delivered.get(id).map_or(0, Vec::len) >= names.len())
    };
    while !complete(&delivered) {
        let (key, _, event) = events.next().await;
        let fresh = seen.insert(event["eventId"].as_str().expect("an event id").to_owned());
        if fresh && key == "user.updated" {
            let user = event["userId"].as_str().expect("a user id").to_owned();
            let name = event["data"]["current"]["name"].as_str().expect("a name");
            delivered.entry(user).or_default().push(name.to_owned());
        }
    }
    eprintln!(
        "events published after the thaw within {:?}",
        thawed.elapsed()
    );
    for (id, names) in &written {
        assert!(!names.is_empty(), "no write while frozen");
        assert_eq!(&delivered[id], names, "events of {id} lost or out of order");
    }
}
