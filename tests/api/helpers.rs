//! A real service per test: its own database on the local PostgreSQL (a copy of the migrated
//! template, see `databases`), its own port, its own actix System on a thread, stopped and
//! dropped when the test ends.

// By path, so that tests/broker.rs, which takes this file by path too, finds them: a file
// taken by path looks for its modules beside it, not in `helpers/`.
#[path = "databases.rs"]
pub mod databases;
#[path = "helpers/process.rs"]
mod process;
#[path = "helpers/servers.rs"]
mod servers;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use user_service::app::{Actors, Application};
use user_service::config::Config;

// tests/broker.rs, which takes this file too, uses only some of them.
#[allow(unused_imports)]
pub use process::{captured_logs, free_port, service_process};
use servers::delete_broker_objects;
#[allow(unused_imports)]
pub use servers::{
    AMQP_URL, REDIS_URL, bind_events_queue, ipv6_loopback, redis, redis_client, rpc_queue_type,
};

pub const AUTH_KEY: &str = "auth-key-0123456789";
pub const CATALOG_KEY: &str = "catalog-key-0123456789";
pub const SECRET: &str = "internal-secret-0123456789";
pub const HASH: &str = "$2b$10$abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX";
/// How long a test reads a user until Redis holds it. A fill a busy moment made miss (Redis
/// late to answer the read: nothing is filled) is made again only after the in-process copy,
/// which serves the reads meanwhile, ages out (30 s).
pub const UNTIL_FILLED: std::time::Duration = std::time::Duration::from_secs(40);

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub db_name: String,
    /// Sent with every request made by [`TestApp::req`]; `None` sends no credentials.
    pub api_key: Option<&'static str>,
    /// The queue this instance consumes.
    pub rpc_queue: String,
    /// Its supervised actors, to inject faults into.
    pub actors: Actors,
    shutdown: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    stopped: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl TestApp {
    /// The service with two API keys (`auth-service`, a credential reader, and
    /// `game-catalog`) and an internal secret.
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// As [`TestApp::spawn`], with extra or overriding environment variables. `{db}` in a
    /// value stands for this test's database name.
    pub async fn spawn_with(vars: &[(&str, &str)]) -> Self {
        let db_name = format!("us_test_{}", uuid::Uuid::new_v4().simple());
        let keys = format!("auth-service={AUTH_KEY},game-catalog={CATALOG_KEY}");
        let mut env: Vec<(String, String)> = vec![
            (
                "DATABASE_URL".into(),
                format!("postgres://postgres@127.0.0.1:5432/{db_name}"),
            ),
            ("HTTP_ADDR".into(), "127.0.0.1:0".into()),
            ("INTERNAL_API_KEYS".into(), keys),
            ("INTERNAL_SERVICE_SECRET".into(), SECRET.into()),
            ("DB_POOL_SIZE".into(), "8".into()),
            ("RPC_QUEUE".into(), format!("{db_name}.rpc")),
            ("RPC_QUEUE_TYPE".into(), rpc_queue_type().into()),
            ("EVENTS_EXCHANGE".into(), format!("{db_name}.events")),
            ("CACHE_PREFIX".into(), db_name.clone()),
        ];
        for (k, v) in vars {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.replace("{db}", &db_name)));
        }
        let own_database = format!("postgres://postgres@127.0.0.1:5432/{db_name}");
        if env.contains(&("DATABASE_URL".into(), own_database)) {
            databases::create(&db_name).await;
        }
        Self::start(db_name, env).await
    }

    async fn start(db_name: String, env: Vec<(String, String)>) -> Self {
        let rpc_queue = env
            .iter()
            .find(|(k, _)| k == "RPC_QUEUE")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let config =
            Config::from_lookup(|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
                .expect("test configuration is valid");
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            actix::System::with_tokio_rt(move || rt).block_on(async move {
                // Says at once which server is missing and what starts it (`scripts/test` does).
                user_service::preflight::check(&config)
                    .await
                    .expect("the servers the tests use are up");
                let app = Application::build(config).await.expect("service starts");
                addr_tx
                    .send((app.local_addr().expect("bound"), app.actors()))
                    .expect("test is waiting");
                app.run_until(async {
                    let _ = shutdown_rx.await;
                })
                .await;
            });
            let _ = stopped_tx.send(());
        });
        let (addr, actors) = addr_rx.await.expect("service started");
        Self {
            addr,
            client: reqwest::Client::new(),
            db_name,
            api_key: Some(AUTH_KEY),
            rpc_queue,
            actors,
            shutdown: Mutex::new(Some(shutdown_tx)),
            stopped: Mutex::new(stopped_rx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let r = self.client.request(method, self.url(path));
        match self.api_key {
            Some(key) => r.header("x-api-key", key),
            None => r,
        }
    }

    pub fn with_key(mut self, key: Option<&'static str>) -> Self {
        self.api_key = key;
        self
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        send(self.req(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        send(self.req(Method::POST, path).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        send(self.req(Method::PATCH, path).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        send(self.req(Method::DELETE, path)).await
    }

    /// The client configuration for this instance's queue, as `auth-service`.
    pub fn client_config(&self) -> user_service_client::ClientConfig {
        let config = user_service_client::ClientConfig::new(AMQP_URL)
            .queue(self.rpc_queue.clone())
            .api_key(AUTH_KEY);
        match rpc_queue_type() {
            "quorum" => config.quorum(),
            _ => config,
        }
    }

    /// Waits until the RPC edge consumes, then connects a client (as `auth-service`).
    pub async fn rpc(&self) -> user_service_client::Client {
        self.until_broker(true).await;
        user_service_client::Client::connect(self.client_config())
            .await
            .expect("client connects")
    }

    /// Waits until `/health` shows RabbitMQ up (or down).
    pub async fn until_broker(&self, up: bool) {
        let want = if up { "up" } else { "down" };
        eventually(Duration::from_secs(30), || async {
            let (_, health) = self.get("/health").await;
            (health["components"]["rabbitmq"]["status"] == want).then_some(())
        })
        .await;
    }

    /// Creates a user and returns its JSON view.
    pub async fn create_user(&self, name: &str, email: &str) -> Value {
        let (status, body) = self
            .post(
                "/api/internal/users",
                json!({"name": name, "email": email, "password": HASH}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Another instance of the service on this test's database, with `vars` on top (e.g.
    /// the same `EVENTS_EXCHANGE`, `RPC_QUEUE` or `CACHE_PREFIX`).
    pub async fn twin(&self, vars: &[(&str, &str)]) -> TestApp {
        let db_url = format!("postgres://postgres@127.0.0.1:5432/{}", self.db_name);
        let mut all = vec![("DATABASE_URL", db_url.as_str())];
        all.extend_from_slice(vars);
        TestApp::spawn_with(&all).await
    }

    /// A connection in an open transaction that holds these users' rows locked, as a write
    /// would; `COMMIT` on it releases them.
    pub async fn lock_users(&self, ids: &[&str]) -> sqlx::PgConnection {
        let mut locker = self.db().await;
        sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
        sqlx::query("SELECT 1 FROM users WHERE id = ANY($1::uuid[]) FOR UPDATE")
            .bind(ids)
            .execute(&mut locker)
            .await
            .unwrap();
        locker
    }

    /// Waits until at least `n` of this service's queries wait on a lock.
    pub async fn until_waiting_on_locks(&self, n: i64) {
        let mut observer = self.db().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = $1 AND application_name = 'user-service'
                    AND wait_event_type = 'Lock'",
            )
            .bind(&self.db_name)
            .fetch_one(&mut observer)
            .await
            .unwrap();
            if waiting >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{n} queries never waited on a lock"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await;
        response
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Runs one SQL query against this test's database.
    pub async fn db(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&format!(
            "postgres://postgres@127.0.0.1:5432/{}",
            self.db_name
        ))
        .await
        .expect("test database")
    }

    /// `SELECT count(*) …` against this test's database.
    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&mut self.db().await)
            .await
            .expect("count query")
    }

    /// Asks the service to stop, as SIGTERM does; in-flight requests go on.
    pub fn begin_stop(&self) {
        if let Some(tx) = self.shutdown.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }

    /// True once the service has stopped (its System has exited).
    pub fn has_stopped(&self) -> bool {
        self.stopped.lock().unwrap().try_recv().is_ok()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.begin_stop();
        clean_up(self.db_name.clone());
    }
}

/// Drops a test's database and its broker objects (named after it). Runs on a thread of its
/// own, so it can be called from a test's runtime, and from `Drop`.
pub fn clean_up(db: String) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            databases::remove(&db).await;
            delete_broker_objects(&db).await;
        });
    })
    .join();
}

/// Sends and decodes; an empty body reads as `null`.
pub async fn send(req: RequestBuilder) -> (StatusCode, Value) {
    let resp: Response = req.send().await.expect("request sent");
    let status = resp.status();
    let bytes = resp.bytes().await.expect("body read");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    (status, body)
}

/// Asserts the contract's error body and returns it.
#[track_caller]
pub fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["statusCode"], expected.as_u16(), "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert!(body["correlationId"].is_string(), "{body}");
    assert!(body["error"].is_string(), "{body}");
}

/// Polls `check` until it returns `Some`, or panics after `timeout` (a check still running
/// then included), naming the line that waited.
#[track_caller]
pub fn eventually<T, F, Fut>(
    timeout: Duration,
    mut check: F,
) -> impl std::future::Future<Output = T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let waiter = std::panic::Location::caller();
    async move {
        let deadline = Instant::now() + timeout;
        loop {
            // A check that hangs (a server that accepts and never answers) ends at the deadline.
            let until = tokio::time::Instant::from_std(deadline);
            if let Ok(Some(v)) = tokio::time::timeout_at(until, check()).await {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "condition not met within {timeout:?} (waited at {waiter})"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
