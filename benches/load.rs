//! Load against a running user-service: throughput and latency of `users.get`, over RabbitMQ
//! (the client kit) or over REST.
//!
//! ```sh
//! cargo run --release &                               # the service, in open mode
//! cargo bench --bench load                            # TRANSPORT=rpc CONCURRENCY=256 DURATION_SECS=10
//! TRANSPORT=rest cargo bench --bench load
//! ```
//! Reads `TRANSPORT` (`rpc` or `rest`), `AMQP_URL`, `RPC_QUEUE`, `USER_SERVICE_URL`
//! (`http://127.0.0.1:3001`), `USER_SERVICE_API_KEY`, `CONCURRENCY`, `DURATION_SECS`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use user_service::client::{Client, ClientConfig};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() {
    let concurrency: usize = env_or("CONCURRENCY", "256")
        .parse()
        .expect("CONCURRENCY is a number");
    let duration = Duration::from_secs(
        env_or("DURATION_SECS", "10")
            .parse()
            .expect("DURATION_SECS is a number"),
    );
    let key = std::env::var("USER_SERVICE_API_KEY").ok();
    let transport = env_or("TRANSPORT", "rpc");
    let client = Arc::new(match transport.as_str() {
        "rpc" => {
            let mut config =
                ClientConfig::new(env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
                    .queue(env_or("RPC_QUEUE", "user-service.rpc"));
            config.timeout = Duration::from_secs(10);
            if let Some(key) = key {
                config = config.api_key(key);
            }
            Caller::Rpc(Box::new(
                Client::connect(config).await.expect("connects to RabbitMQ"),
            ))
        }
        "rest" => Caller::Rest {
            http: reqwest::Client::new(),
            base: env_or("USER_SERVICE_URL", "http://127.0.0.1:3001"),
            key,
        },
        other => panic!("TRANSPORT is rpc or rest, not {other}"),
    });

    // Users to read: created once per run, under a run-specific domain.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut ids = Vec::new();
    for i in 0..100 {
        let email = format!("bench{i}@{}.example.com", &run[..12]);
        ids.push(client.create(&email).await);
    }
    let ids = Arc::new(ids);

    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (client, ids) = (client.clone(), ids.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut i = w;
            while started.elapsed() < duration {
                let id = &ids[i % ids.len()];
                i += 7;
                let t = Instant::now();
                if client.get(id).await {
                    latencies.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await.expect("worker");
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
    };
    let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    println!(
        "{transport} users.get: concurrency {concurrency}, {} ok, {errors} errors, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(latencies.last()),
    );
}

enum Caller {
    Rpc(Box<Client>),
    Rest {
        http: reqwest::Client,
        base: String,
        key: Option<String>,
    },
}

impl Caller {
    /// Creates a user; returns its id.
    async fn create(&self, email: &str) -> String {
        let (name, hash) = ("Bench User", "$2b$10$abcdefghijklmnopqrstuv");
        let user = match self {
            Self::Rpc(client) => client.create(name, email, hash).await.expect("create"),
            Self::Rest { http, base, key } => {
                let body = json!({"name": name, "email": email, "password": hash});
                let req = http.post(format!("{base}/api/internal/users")).json(&body);
                let req = match key {
                    Some(k) => req.header("x-api-key", k),
                    None => req,
                };
                let resp = req.send().await.expect("create");
                resp.json::<serde_json::Value>().await.expect("JSON")
            }
        };
        user["id"].as_str().expect("id").to_owned()
    }

    /// One `users.get`; true when it answered 200.
    async fn get(&self, id: &str) -> bool {
        match self {
            Self::Rpc(client) => matches!(
                client.request("users.get", &json!({"id": id})).await,
                Ok(reply) if reply["status"] == 200
            ),
            Self::Rest { http, base, key } => {
                let req = http.get(format!("{base}/api/internal/users/{id}"));
                let req = match key {
                    Some(k) => req.header("x-api-key", k),
                    None => req,
                };
                match req.send().await {
                    Ok(resp) => resp.status() == 200 && resp.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        }
    }
}
