//! Three instances of the binary behave as one service: RPC writes and reads go through all
//! three, one is killed (SIGKILL) in the middle, and nothing is lost, doubled or reordered.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lapin::BasicProperties;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::amqp::{Raw, table};
use crate::helpers::{
    AMQP_URL, AUTH_KEY, HASH, bind_events_queue, clean_up, eventually, free_port, rpc_queue_type,
};

const FLOWS: usize = 12;
const USERS_PER_FLOW: usize = 4;
/// Calls per user: create, three renames, a payment, a read.
const CALLS_PER_USER: usize = 6;
/// Events per user: created, three renames, the payment's totals.
const EVENTS_PER_USER: usize = 5;

/// Instances of the real binary sharing one database, queue, exchange and Redis prefix.
struct Cluster {
    db: String,
    instances: Vec<(Child, String)>,
}

impl Cluster {
    fn start(n: usize) -> Self {
        let db = format!("us_test_{}", uuid::Uuid::new_v4().simple());
        let instances = (0..n)
            .map(|_| {
                let port = free_port();
                let child = Command::new(env!("CARGO_BIN_EXE_user-service"))
                    .env(
                        "DATABASE_URL",
                        format!("postgres://postgres@127.0.0.1:5432/{db}"),
                    )
                    .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
                    .env("INTERNAL_API_KEYS", format!("auth-service={AUTH_KEY}"))
                    .env("RATE_LIMITS", "auth-service=1000000/60")
                    .env("RPC_QUEUE", format!("{db}.rpc"))
                    .env("RPC_QUEUE_TYPE", rpc_queue_type())
                    .env("EVENTS_EXCHANGE", format!("{db}.events"))
                    .env("CACHE_PREFIX", &db)
                    .env("DB_POOL_SIZE", "8")
                    .env("RUST_LOG", "error")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                (child, format!("http://127.0.0.1:{port}"))
            })
            .collect();
        Self { db, instances }
    }

    /// Waits until every instance is ready and consumes RPC requests.
    async fn until_serving(&self, http: &reqwest::Client) {
        for (_, url) in &self.instances {
            eventually(Duration::from_secs(60), || async {
                let health = http.get(format!("{url}/health")).send().await.ok()?;
                let health: Value = health.json().await.ok()?;
                (health["components"]["rabbitmq"]["status"] == "up").then_some(())
            })
            .await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (child, _) in &mut self.instances {
            let _ = child.kill();
            let _ = child.wait();
        }
        clean_up(self.db.clone());
    }
}

/// One RPC call with the test's key; writes carry a `message_id`, their request key.
async fn call(raw: &mut Raw, queue: &str, method: &str, params: Value, write: bool) -> Value {
    let mut props = BasicProperties::default().with_headers(table(&[("x-api-key", AUTH_KEY)]));
    if write {
        props = props.with_message_id(uuid::Uuid::new_v4().to_string().into());
    }
    let body = json!({"method": method, "params": params}).to_string();
    raw.call(queue, body.as_bytes(), props).await.1
}

/// One caller: users one after another, each created, renamed three times, paid for, read.
async fn flow(flow: usize, queue: String, done: Arc<AtomicUsize>) -> Vec<String> {
    let mut raw = Raw::connect().await;
    let mut ids = vec![];
    for u in 0..USERS_PER_FLOW {
        let email = format!("flow{flow}-user{u}@example.com");
        let params = json!({"name": "v0", "email": email, "password": HASH});
        let created = call(&mut raw, &queue, "users.create", params, true).await;
        assert_eq!(
            created["status"], 201,
            "a create answered as its first delivery: {created}"
        );
        let id = created["data"]["id"].as_str().unwrap().to_owned();
        done.fetch_add(1, Ordering::Relaxed);
        for v in 1..=3 {
            let params = json!({"id": id, "name": format!("v{v}")});
            let renamed = call(&mut raw, &queue, "users.update", params, true).await;
            assert_eq!(renamed["status"], 200, "{renamed}");
            assert_eq!(renamed["data"]["name"], format!("v{v}"), "{renamed}");
            done.fetch_add(1, Ordering::Relaxed);
        }
        let params = json!({"id": id, "paymentId": format!("pay-{id}"), "amount": "1.00"});
        let paid = call(&mut raw, &queue, "users.recordPayment", params, true).await;
        assert_eq!(paid["status"], 201, "{paid}");
        done.fetch_add(1, Ordering::Relaxed);
        let read = call(
            &mut raw,
            &queue,
            "users.getBillingInfo",
            json!({"id": id}),
            false,
        )
        .await;
        assert_eq!(read["status"], 200, "{read}");
        assert_eq!(read["data"]["name"], "v3", "{read}");
        assert_eq!(read["data"]["billingStats"]["totalSpent"], "1.00", "{read}");
        assert_eq!(read["data"]["billingStats"]["paymentsCount"], 1, "{read}");
        done.fetch_add(1, Ordering::Relaxed);
        ids.push(id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_three_instances_killed_under_load_loses_doubles_and_reorders_nothing() {
    let mut cluster = Cluster::start(3);
    let http = reqwest::Client::new();
    cluster.until_serving(&http).await;
    let queue = format!("{}.rpc", cluster.db);

    // A consuming service's own queue, bound before the first write.
    let conn = lapin::Connection::connect(AMQP_URL, Default::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let events_queue = bind_events_queue(&channel, &format!("{}.events", cluster.db), None).await;
    let mut events = channel
        .basic_consume(
            events_queue.into(),
            "failover-test".into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();

    // The survivors' liveness, watched throughout.
    let watching = Arc::new(AtomicBool::new(true));
    let survivors: Vec<String> = cluster.instances[1..]
        .iter()
        .map(|(_, url)| url.clone())
        .collect();
    let watcher = tokio::spawn({
        let (watching, http) = (watching.clone(), http.clone());
        async move {
            let mut checks = 0;
            while watching.load(Ordering::Relaxed) {
                for url in &survivors {
                    let status = http
                        .get(format!("{url}/health"))
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await
                        .map(|r| r.status().as_u16());
                    assert_eq!(status.ok(), Some(200), "{url}/health during the run");
                    checks += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            checks
        }
    });

    let done = Arc::new(AtomicUsize::new(0));
    let flows: Vec<_> = (0..FLOWS)
        .map(|f| tokio::spawn(flow(f, queue.clone(), done.clone())))
        .collect();
    let total = FLOWS * USERS_PER_FLOW * CALLS_PER_USER;
    // A flow that ends this early has failed: awaited below, it says why.
    eventually(Duration::from_secs(60), || async {
        let failed = flows.iter().any(|f| f.is_finished());
        (done.load(Ordering::Relaxed) >= total / 3 || failed).then_some(())
    })
    .await;
    let metrics = http
        .get(format!("{}/metrics", cluster.instances[0].1))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"user_service_rpc_deliveries_total{outcome="answered"}"#),
        "the instance about to be killed was serving requests"
    );
    cluster.instances[0].0.kill().unwrap();
    let killed_at = done.load(Ordering::Relaxed);

    let mut ids = vec![];
    for f in flows {
        ids.extend(f.await.expect("every call of the flow was answered"));
    }
    watching.store(false, Ordering::Relaxed);
    let checks = watcher.await.expect("the survivors stayed live");
    assert!(checks > 0);
    assert!(
        killed_at < total,
        "the kill came while calls were still being made"
    );

    // Every write applied once: the users, their payments, the events they wrote.
    let mut db = sqlx::PgConnection::connect(&format!(
        "postgres://postgres@127.0.0.1:5432/{}",
        cluster.db
    ))
    .await
    .unwrap();
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(users as usize, FLOWS * USERS_PER_FLOW);
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(payments as usize, FLOWS * USERS_PER_FLOW);
    let outbox: Vec<(uuid::Uuid, uuid::Uuid)> =
        sqlx::query_as("SELECT event_id, user_id FROM outbox ORDER BY id")
            .fetch_all(&mut db)
            .await
            .unwrap();
    let mut written: HashMap<String, Vec<String>> = HashMap::new();
    for (event, user) in &outbox {
        written
            .entry(user.to_string())
            .or_default()
            .push(event.to_string());
    }
    assert_eq!(written.len(), ids.len());
    for id in &ids {
        assert_eq!(written[id].len(), EVENTS_PER_USER, "events of {id}");
    }

    // Every event arrives; a repeat only under its own eventId; each user's in order.
    let mut received: HashMap<String, Vec<String>> = HashMap::new();
    let mut seen = HashSet::new();
    let wanted = outbox.len();
    let collect = async {
        while seen.len() < wanted {
            let delivery = events.next().await.expect("consumer open").unwrap();
            let event: Value = serde_json::from_slice(&delivery.data).unwrap();
            let event_id = event["eventId"].as_str().unwrap().to_owned();
            if seen.insert(event_id.clone()) {
                let user = event["userId"].as_str().unwrap().to_owned();
                received.entry(user).or_default().push(event_id);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), collect)
        .await
        .expect("every event written arrives");
    assert_eq!(received, written, "each user's events in the order written");
}
