//! The cluster and the service's instances, as processes of their own.

use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{AUTH_KEY, clean_up, eventually, service_process};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbitmq-cluster.sh");

/// A channel on the first node of `urls` that answers, with its connection (a paused node
/// is passed over after a second).
pub async fn channel(
    urls: &str,
    name: &str,
) -> (user_service_client::broker::Connected, lapin::Channel) {
    let broker = user_service_client::broker::Broker {
        timeout: Duration::from_secs(1),
        ..user_service_client::broker::Broker::new(urls).expect("the cluster's nodes")
    };
    let conn = broker
        .connector()
        .connect(name, None)
        .await
        .expect("a node");
    let channel = conn.create_channel().await.expect("channel");
    (conn, channel)
}

pub fn cluster(args: &[&str]) -> String {
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
pub struct Instance {
    pub name: &'static str,
    http: String,
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Instance {
    pub fn start(name: &'static str, db: &str, urls: &str) -> Self {
        let log = std::env::temp_dir().join(format!("{db}-{name}.log"));
        let (mut command, port) = service_process(db, &log);
        let child = command
            .env("RUST_LOG", "info,user_service::rpc=debug")
            .env("AMQP_URL", urls)
            .env("AMQP_HEARTBEAT_SECONDS", "1")
            .env("AMQP_TIMEOUT_MS", "2000")
            .env("RPC_QUEUE_TYPE", "quorum")
            .env("RATE_LIMITS", "default=1000000/60")
            .spawn()
            .expect("the service starts");
        Self {
            name,
            http: format!("http://127.0.0.1:{port}"),
            child,
            log,
        }
    }

    /// What the instance logged from a second before `from` to `to`, its requests left out.
    pub fn logged(&self, (from, to): super::watch::Span) -> String {
        let stamp = |t: chrono::DateTime<chrono::Utc>| {
            format!(
                "{{\"timestamp\":\"{}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            )
        };
        let (from, to) = (stamp(from - chrono::TimeDelta::seconds(1)), stamp(to));
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.as_bytes() >= from.as_bytes() && l.as_bytes() <= to.as_bytes())
            .filter(|l| !l.contains(r#""message":"request""#))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub async fn health(&self, http: &reqwest::Client) -> Value {
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
    pub async fn served(&self, http: &reqwest::Client) -> Option<f64> {
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
pub async fn publisher_node(
    instances: &[Instance],
    http: &reqwest::Client,
    ports: &[String],
) -> usize {
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

/// A paused node is resumed whatever happens.
pub struct Resume(pub usize);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT)
            .args(["resume", &self.0.to_string()])
            .status();
    }
}

pub struct DropDb(pub String);

impl Drop for DropDb {
    fn drop(&mut self) {
        clean_up(self.0.clone());
    }
}
