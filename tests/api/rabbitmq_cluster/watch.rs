//! What the test watches: each instance's service, and the broker's own failovers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable};
use user_service_client::broker::Broker;

use super::instance::{Instance, cluster};
use crate::helpers::AUTH_KEY;

/// A stretch of time, in wall-clock terms (the database's and the script's clocks).
pub type Span = (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>);

/// What the watcher saw of each instance: its stretches of more than a second without
/// serving a request (once it has served one), and its stretches without an RPC consumer
/// (`/health` says `rabbitmq` is not up).
pub struct Watched {
    pub idle: Vec<Vec<Span>>,
    pub unsubscribed: Vec<Vec<Span>>,
}

/// Watches every instance while `running`.
pub fn watch(
    instances: Arc<Vec<Instance>>,
    running: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Watched> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .expect("client");
        let now = chrono::Utc::now;
        let count = instances.len();
        let mut last: Vec<(Option<f64>, chrono::DateTime<chrono::Utc>)> =
            vec![(None, now()); count];
        let mut down_since = vec![None; count];
        let mut watched = Watched {
            idle: vec![Vec::new(); count],
            unsubscribed: vec![Vec::new(); count],
        };
        while running.load(Ordering::Acquire) {
            for (i, instance) in instances.iter().enumerate() {
                let served = instance.served(&http).await;
                if served.is_some() && served > last[i].0 {
                    // From its first request on: the callers' own start is no idle time.
                    let serving = last[i].0.is_some_and(|n| n > 0.0);
                    if serving && now() - last[i].1 > chrono::TimeDelta::seconds(1) {
                        watched.idle[i].push((last[i].1, now()));
                    }
                    last[i] = (served, now());
                }
                let up = instance.health(&http).await["components"]["rabbitmq"]["status"] == "up";
                match (up, down_since[i]) {
                    (false, None) => down_since[i] = Some(now()),
                    (true, Some(since)) => {
                        watched.unsubscribed[i].push((since, now()));
                        down_since[i] = None;
                    }
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for i in 0..count {
            watched.idle[i].push((last[i].1, now()));
            if let Some(since) = down_since[i] {
                watched.unsubscribed[i].push((since, now()));
            }
        }
        watched
    })
}

/// Kills, pauses or restarts a node (as `args` says), then waits until every node that
/// answers takes a confirmed message into both quorum queues again (the request queue and
/// the test's event queue): the broker's own failover (a new leader, a quorum of members
/// that answer, every node knowing the leader), so that the next fault finds a whole
/// cluster. Returns that stretch, which the test prints (the bounds include it).
pub async fn fault(args: &[&str], urls: &str, queues: &[&str]) -> Span {
    let start = chrono::Utc::now();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cluster(&args);
    })
    .await
    .expect("the script ran");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    for url in urls.split(',') {
        for queue in queues {
            loop {
                match probe(url, queue).await {
                    Probe::Unreachable | Probe::Taken => break,
                    Probe::Refused => {}
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{url} took no message into {queue} for 120 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    (start, chrono::Utc::now())
}

/// Waits until the restarted node's members of `queues` have caught up with their leaders:
/// a fault before that would take a second member from a queue, which no client survives.
pub async fn synced(queues: &[&str]) {
    let mut args = vec!["synced".to_owned()];
    args.extend(queues.iter().map(|q| q.to_string()));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cluster(&args);
    })
    .await
    .expect("the script ran");
}

/// Waits until the RPC queue has one consumer per instance, and no more: a connection an
/// instance gave up (a call on it missed its deadline during an election) must not keep a
/// consumer that the broker registered late, which would take requests and serve none.
pub async fn consumers_are(urls: &str, queue: &str, instances: u32) {
    let mut last = None;
    let counted = tokio::time::timeout(super::MOST, async {
        loop {
            let (_conn, channel) = super::instance::channel(urls, "consumers").await;
            let counted = crate::amqp::consumer_count(&channel, queue);
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), counted).await {
                if n == instances {
                    return;
                }
                last = Some(n);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        counted.is_ok(),
        "{queue}: {last:?} consumers, not {instances}, {:?} after the failover",
        super::MOST
    );
}

enum Probe {
    /// The node is down or paused: not the clients' way in.
    Unreachable,
    /// Confirmed into the queue.
    Taken,
    /// Connected, but the queue did not take it in time.
    Refused,
}

/// Sends a harmless request that wants no reply (the service takes it and answers nobody;
/// the event queue's consumer skips what has no `eventId`) into `queue` through `url`.
async fn probe(url: &str, queue: &str) -> Probe {
    let broker = Broker {
        timeout: Duration::from_secs(1),
        ..Broker::new(url).expect("a node")
    };
    let Ok(conn) = broker.connector().connect("probe", None).await else {
        return Probe::Unreachable;
    };
    let body = serde_json::json!({"method": "users.exists", "params": {"id": uuid::Uuid::nil()}})
        .to_string();
    let mut headers = FieldTable::default();
    headers.insert("x-api-key".into(), AMQPValue::LongString(AUTH_KEY.into()));
    let taken = async {
        let channel = broker.within(conn.create_channel()).await.ok()?;
        let confirm = lapin::options::ConfirmSelectOptions::default();
        broker.within(channel.confirm_select(confirm)).await.ok()?;
        let published = channel.basic_publish(
            "".into(),
            queue.into(),
            lapin::options::BasicPublishOptions::default(),
            body.as_bytes(),
            lapin::BasicProperties::default().with_headers(headers),
        );
        let confirm = broker.within(published).await.ok()?;
        Some(broker.within(confirm).await.ok()?.is_ack())
    };
    let taken = taken.await == Some(true);
    let _ = broker.within(conn.close(200, "probed".into())).await;
    if taken { Probe::Taken } else { Probe::Refused }
}
