//! Issue 21: every instance survives the loss of any RabbitMQ node. Runs against the
//! three-node cluster of `scripts/rabbitmq-cluster.sh` (started by `scripts/test`), with two
//! instances of the service (processes of their own, each listing all three nodes) and
//! keyed writes from several callers, while it kills the publisher's node, kills the request
//! queue's leader, and pauses the publisher's node for 30 s.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;
use sqlx::Connection;
use user_service_client::broker::Broker;
use user_service_client::{BreakerConfig, Client, ClientConfig, NewUser, UserPatch};

use crate::helpers::{AUTH_KEY, CATALOG_KEY, SECRET, clean_up, eventually};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbitmq-cluster.sh");
const CALLERS: usize = 8;
/// Each caller's pace: 8 × 20 = 160 writes a second.
const PACE: Duration = Duration::from_millis(50);
/// The longest an instance may go without serving a request, and an event without being
/// published, while a node is lost.
const MOST: Duration = Duration::from_secs(5);

fn cluster(args: &[&str]) -> String {
    eprintln!("{} rabbitmq-cluster.sh {args:?}", chrono::Utc::now());
    let out = Command::new(SCRIPT)
        .args(args)
        .output()
        .expect("the script runs");
    assert!(
        out.status.success(),
        "rabbitmq-cluster.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One instance of the service, a process of its own.
struct Instance {
    name: &'static str,
    http: String,
    child: Child,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Instance {
    fn start(name: &'static str, db: &str, urls: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::env::temp_dir().join(format!("{db}-{name}.log"));
        let log = std::fs::File::create(&log).expect("a log file");
        let keys = format!("auth-service={AUTH_KEY},game-catalog={CATALOG_KEY}");
        let child = Command::new(env!("CARGO_BIN_EXE_user-service"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "DATABASE_URL",
                format!("postgres://postgres@127.0.0.1:5432/{db}"),
            )
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("AMQP_URL", urls)
            .env("AMQP_HEARTBEAT_SECONDS", "1")
            .env("AMQP_TIMEOUT_MS", "2000")
            .env("RPC_QUEUE", format!("{db}.rpc"))
            .env("RPC_QUEUE_TYPE", "quorum")
            .env("EVENTS_EXCHANGE", format!("{db}.events"))
            .env("CACHE_PREFIX", db)
            .env("INTERNAL_API_KEYS", keys)
            .env("INTERNAL_SERVICE_SECRET", SECRET)
            .env("RATE_LIMITS", "default=1000000/60")
            .env("DB_POOL_SIZE", "8")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("the service starts");
        Self {
            name,
            http: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    async fn health(&self, http: &reqwest::Client) -> Value {
        let response = http
            .get(format!("{}/health", self.http))
            .header("x-api-key", AUTH_KEY)
            .send()
            .await;
        match response {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// RPC requests this instance has taken off the queue so far.
    async fn served(&self, http: &reqwest::Client) -> Option<f64> {
        let text = http
            .get(format!("{}/metrics", self.http))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(
            text.lines()
                .filter(|l| l.starts_with("user_service_rpc_deliveries_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }
}

/// The node (1 to 3) the publishing instance publishes through, from its `/health`.
async fn publisher_node(instances: &[Instance], http: &reqwest::Client, ports: &[String]) -> usize {
    eventually(Duration::from_secs(30), || async {
        for instance in instances {
            let health = instance.health(http).await;
            let detail = health["components"]["eventPublishing"]["detail"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Some(via) = detail.strip_prefix("publishing via ") {
                let port = via.rsplit(':').next().unwrap_or_default();
                if let Some(i) = ports.iter().position(|p| p == port) {
                    return Some(i + 1);
                }
            }
        }
        None
    })
    .await
}

/// A stretch of time, in wall-clock terms (the database's and the script's clocks).
type Span = (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>);

/// What the watcher saw of each instance: its stretches of more than a second without
/// serving a request, and its stretches without an RPC consumer (`/health` says `rabbitmq`
/// is not up).
struct Watched {
    idle: Vec<Vec<Span>>,
    unsubscribed: Vec<Vec<Span>>,
}

/// Watches every instance while `running`.
fn watch(
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
                    if now() - last[i].1 > chrono::TimeDelta::seconds(1) {
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

/// `spans`, overlapping ones joined.
fn merged(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort();
    let mut out: Vec<Span> = Vec::new();
    for span in spans {
        match out.last_mut() {
            Some(last) if span.0 <= last.1 => last.1 = last.1.max(span.1),
            _ => out.push(span),
        }
    }
    out
}

/// How much of `span` lies outside every one of `excused` (merged), in seconds.
fn beyond(span: Span, excused: &[Span]) -> f64 {
    let length = |(a, b): Span| (b - a).num_milliseconds().max(0) as f64 / 1000.0;
    let overlap: f64 = excused
        .iter()
        .map(|e| length((span.0.max(e.0), span.1.min(e.1))))
        .sum();
    length(span) - overlap
}

/// Kills, pauses or restarts a node (as `args` says), then waits until the cluster takes a
/// confirmed message into both quorum queues again (the request queue and the test's
/// event queue): the broker's own failover (a new leader, a quorum of members that
/// answer), which no client can shorten. Returns that stretch.
async fn fault(args: &[&str], urls: &str, queues: &[&str]) -> Span {
    let start = chrono::Utc::now();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cluster(&args);
    })
    .await
    .expect("the script ran");
    let broker = Broker {
        timeout: Duration::from_secs(1),
        ..Broker::new(urls).expect("the cluster's nodes")
    };
    let mut connector = broker.connector();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    // A harmless request that wants no reply (the service takes it, answers nobody); the
    // event queue's consumer skips what has no `eventId`.
    let probe = serde_json::json!({"method": "users.exists", "params": {"id": uuid::Uuid::nil()}});
    let probe = probe.to_string();
    let mut headers = FieldTable::default();
    headers.insert("x-api-key".into(), AMQPValue::LongString(AUTH_KEY.into()));
    for queue in queues {
        loop {
            let attempt = async {
                let conn = connector.connect("probe", None).await.ok()?;
                let channel = broker.within(conn.connection.create_channel()).await.ok()?;
                let confirm = lapin::options::ConfirmSelectOptions::default();
                broker.within(channel.confirm_select(confirm)).await.ok()?;
                let published = channel.basic_publish(
                    "".into(),
                    (*queue).into(),
                    lapin::options::BasicPublishOptions::default(),
                    probe.as_bytes(),
                    lapin::BasicProperties::default().with_headers(headers.clone()),
                );
                let confirm = broker.within(published).await.ok()?;
                let acked = broker.within(confirm).await.ok()?.is_ack();
                let _ = broker
                    .within(conn.connection.close(200, "probed".into()))
                    .await;
                Some(acked)
            };
            if attempt.await == Some(true) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the cluster took no message for 120 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    (start, chrono::Utc::now())
}

/// What one caller did: its users, and the writes each was sent (all answered).
type Written = Vec<(uuid::Uuid, usize)>;

/// Creates a user, then renames it again and again, keyed (the client's default), until
/// `running` ends; every call must be answered.
async fn caller(n: usize, config: ClientConfig, running: Arc<AtomicBool>) -> Written {
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
async fn drain(urls: &str, queue: &str, expected: usize) -> Vec<Value> {
    let broker = Broker::new(urls).expect("the cluster's nodes");
    let conn = broker
        .connector()
        .connect("drain", None)
        .await
        .expect("a node");
    let channel = conn.connection.create_channel().await.expect("channel");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the cluster of scripts/rabbitmq-cluster.sh; scripts/test runs it"]
async fn every_instance_survives_the_loss_of_any_rabbitmq_node() {
    let urls = cluster(&["urls"]);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "user_service_client=debug",
        ))
        .with_writer(std::io::stderr)
        .try_init();
    let ports: Vec<String> = (1..=3)
        .map(|n| cluster(&["port", &n.to_string()]))
        .collect();
    let db = format!("us_test_{}", uuid::Uuid::new_v4().simple());
    let _cleanup = DropDb(db.clone());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");

    // The check queue: a quorum queue bound as a consuming service binds its own.
    let broker = Broker::new(&urls).expect("the cluster's nodes");
    let setup = broker
        .connector()
        .connect("setup", None)
        .await
        .expect("a node");
    let channel = setup.connection.create_channel().await.expect("channel");
    let exchange = format!("{db}.events");
    let check = format!("{db}.check");
    let durable = lapin::options::ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let durable = lapin::options::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(check.as_str().into(), durable, quorum)
        .await
        .expect("check queue");
    channel
        .queue_bind(
            check.as_str().into(),
            exchange.as_str().into(),
            "user.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    drop(setup);

    // Two instances, one after the other (the first creates the database).
    let mut instances = vec![Instance::start("a", &db, &urls)];
    let ready = async |instance: &Instance| {
        eventually(Duration::from_secs(60), || async {
            let h = instance.health(&http).await;
            let up = |c: &str| h["components"][c]["status"] == "up";
            (up("rabbitmq") && up("eventPublishing")).then_some(())
        })
        .await
    };
    ready(&instances[0]).await;
    instances.push(Instance::start("b", &db, &urls));
    ready(&instances[1]).await;
    let instances = Arc::new(instances);

    let running = Arc::new(AtomicBool::new(true));
    let watcher = watch(instances.clone(), running.clone());
    let mut config = ClientConfig::new(&urls)
        .queue(format!("{db}.rpc"))
        .quorum()
        .api_key(AUTH_KEY)
        .heartbeat(1)
        .timeout(Duration::from_secs(3))
        .retries(40);
    config.backoff_min = Duration::from_millis(100);
    config.backoff_max = Duration::from_secs(1);
    // Every call must be answered: no breaker between the callers and the cluster.
    config.breaker = BreakerConfig {
        error_threshold: 2.0,
        ..BreakerConfig::default()
    };
    let callers: Vec<_> = (0..CALLERS)
        .map(|n| tokio::spawn(caller(n, config.clone(), running.clone())))
        .collect();
    let settle = |seconds| tokio::time::sleep(Duration::from_secs(seconds));

    let rpc = format!("{db}.rpc");
    let queues = [rpc.as_str(), check.as_str()];
    let mut failovers = Vec::new();
    settle(3).await;
    let node = publisher_node(&instances, &http, &ports).await.to_string();
    eprintln!("killing node {node}, the publisher's");
    failovers.push(fault(&["kill", &node], &urls, &queues).await);
    settle(8).await;
    failovers.push(fault(&["restart", &node], &urls, &queues).await);
    settle(3).await;

    let leader = cluster(&["leader", &rpc]);
    eprintln!("killing node {leader}, the request queue's leader");
    failovers.push(fault(&["kill", &leader], &urls, &queues).await);
    settle(8).await;
    failovers.push(fault(&["restart", &leader], &urls, &queues).await);
    settle(3).await;

    let node = publisher_node(&instances, &http, &ports).await;
    eprintln!("pausing node {node}, the publisher's, for 30 s");
    let paused = Resume(node);
    let node = node.to_string();
    failovers.push(fault(&["pause", &node], &urls, &queues).await);
    settle(30).await;
    drop(paused);
    settle(5).await;

    running.store(false, Ordering::Release);
    let mut written: Written = Vec::new();
    for c in callers {
        written.extend(c.await.expect("every call of the caller was answered"));
    }
    let watched = watcher.await.expect("watched");
    let seconds = |(a, b): Span| (b - a).num_milliseconds() as f64 / 1000.0;
    let failover: Vec<f64> = failovers.iter().map(|f| seconds(*f)).collect();
    eprintln!("the broker's failovers (s): {failover:?}");

    // Applied once: each user as its last answered write left it, and no other user.
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let mut db_conn = sqlx::PgConnection::connect(&url)
        .await
        .expect("the database");
    let users: Vec<(uuid::Uuid, String)> = sqlx::query_as("SELECT id, name FROM users")
        .fetch_all(&mut db_conn)
        .await
        .expect("users");
    assert_eq!(users.len(), written.len(), "one user per answered create");
    let names: HashMap<_, _> = users.into_iter().collect();
    for (id, renames) in &written {
        let name = names.get(id).unwrap_or_else(|| panic!("{id} was created"));
        assert!(
            renames == &0 || name.ends_with(&format!("rename {renames}")),
            "{id}: {name} after {renames} renames"
        );
    }

    // Every event published within the bound (beyond the broker's failovers), and
    // delivered in order per user.
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&mut db_conn)
        .await
        .expect("outbox");
    let published: Vec<Span> = sqlx::query_as(
        "SELECT created_at, published_at FROM outbox
          WHERE published_at - created_at > interval '1 second'",
    )
    .fetch_all(&mut db_conn)
    .await
    .expect("outbox");
    let slowest = published
        .iter()
        .map(|p| beyond(*p, &failovers))
        .fold(0.0, f64::max);
    let expected: usize = written.iter().map(|(_, renames)| 1 + renames).sum();
    assert_eq!(
        events,
        i64::try_from(expected).unwrap(),
        "one event per write"
    );
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&mut db_conn)
            .await
            .expect("outbox");
    assert_eq!(unpublished, 0);
    let order: Vec<(uuid::Uuid, uuid::Uuid)> =
        sqlx::query_as("SELECT user_id, event_id FROM outbox ORDER BY id")
            .fetch_all(&mut db_conn)
            .await
            .expect("outbox");
    let mut written_order: HashMap<String, Vec<String>> = HashMap::new();
    for (user, event) in order {
        written_order
            .entry(user.to_string())
            .or_default()
            .push(event.to_string());
    }
    let delivered = drain(&urls, &check, expected).await;
    let mut seen = HashSet::new();
    let mut delivered_order: HashMap<String, Vec<String>> = HashMap::new();
    for event in &delivered {
        let id = event["eventId"].as_str().unwrap_or_default().to_owned();
        if seen.insert(id.clone()) {
            let user = event["userId"].as_str().unwrap_or_default().to_owned();
            delivered_order.entry(user).or_default().push(id);
        }
    }
    eprintln!(
        "{} writes, {} events delivered ({} with repeats); slowest publish {slowest:.2} s beyond a failover",
        expected,
        seen.len(),
        delivered.len()
    );
    assert_eq!(seen.len(), expected, "every event delivered");
    assert_eq!(delivered_order, written_order, "in order per user");

    // Each instance is subscribed again within the bound of losing its node (beyond the
    // broker's failover), and serves whenever the other does: a stretch in which no
    // instance is served is the broker's (a quorum queue hands requests to a consumer on a
    // paused node until it returns; see docs), not an instance's.
    let failovers = merged(failovers);
    for (i, instance) in instances.iter().enumerate() {
        let longest = watched.idle[i]
            .iter()
            .map(|g| seconds(*g))
            .fold(0.0, f64::max);
        let other = watched.idle[(i + 1) % instances.len()].clone();
        let excused = merged(failovers.iter().copied().chain(other).collect());
        let alone = watched.idle[i]
            .iter()
            .map(|g| beyond(*g, &excused))
            .fold(0.0, f64::max);
        let unsubscribed = watched.unsubscribed[i]
            .iter()
            .map(|g| beyond(*g, &failovers))
            .fold(0.0, f64::max);
        eprintln!(
            "instance {}: longest without serving {longest:.2} s, {alone:.2} s while the other \
             served; without a consumer {unsubscribed:.2} s beyond a failover",
            instance.name
        );
        assert!(
            alone <= MOST.as_secs_f64(),
            "instance {} served nothing for {alone:.2} s while the other served: {:?}",
            instance.name,
            watched.idle[i]
        );
        assert!(
            unsubscribed <= MOST.as_secs_f64(),
            "instance {} had no consumer for {unsubscribed:.2} s beyond a failover: {:?}",
            instance.name,
            watched.unsubscribed[i]
        );
    }
    assert!(
        slowest <= MOST.as_secs_f64(),
        "an event waited {slowest:.2} s for its publish beyond the broker's failover"
    );
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

/// A paused node is resumed whatever happens.
struct Resume(usize);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT)
            .args(["resume", &self.0.to_string()])
            .status();
    }
}

struct DropDb(String);

impl Drop for DropDb {
    fn drop(&mut self) {
        clean_up(self.0.clone());
    }
}
