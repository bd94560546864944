//! NestJS against the service, with the real packages from the npm registry: a stock
//! `ClientProxy` (Transport.RMQ) speaking the contract's NestJS dialect (`tests/nestjs`), and
//! the TypeScript examples of `examples/nestjs` built with their pinned `tsc` and run as
//! written: a `ClientsModule` service calling the service, and an `@EventPattern` consumer of
//! its events.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use serde_json::{Value, json};

use crate::helpers::{AMQP_URL, AUTH_KEY, TestApp, bind_events_queue, eventually};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/nestjs")
}

pub fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/nestjs")
}

/// `npm ci` once, when `dir` has no node_modules yet.
fn npm_ci(dir: &std::path::Path) {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is needed for the NestJS tests (Node.js 20+)"
    );
    // Installed, and from the lock file as it is now (not one from before its last change).
    let installed = std::fs::metadata(dir.join("node_modules/.package-lock.json"))
        .and_then(|m| m.modified())
        .ok();
    let locked = std::fs::metadata(dir.join("package-lock.json"))
        .and_then(|m| m.modified())
        .ok();
    if installed.is_some_and(|i| locked.is_some_and(|l| l <= i)) {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .expect("npm runs");
    assert!(status.success(), "npm ci in {} failed", dir.display());
}

fn install_fixture() {
    npm_ci(&fixture());
}

/// Installs and compiles `examples/nestjs` (its own `tsc`) unless that was done since its
/// sources last changed. Tests in other processes (nextest runs each test in its own) may
/// want it at the same time: a file lock lets one do it while the others wait, and nobody
/// compiles over the scripts another test runs.
pub fn build_examples() {
    let lock =
        std::fs::File::create(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("nestjs.lock"))
            .expect("the lock file");
    lock.lock().expect("the lock");
    let dir = examples();
    let stamp = dir.join("dist/.built");
    let built = std::fs::metadata(&stamp).and_then(|m| m.modified()).ok();
    let sources = [
        dir.join("src"),
        dir.join("tsconfig.json"),
        dir.join("package-lock.json"),
    ];
    if built.is_some_and(|built| sources.iter().all(|s| last_change(s) <= built)) {
        return;
    }
    npm_ci(&dir);
    let tsc = Command::new("node")
        .args(["node_modules/typescript/bin/tsc", "-p", "tsconfig.json"])
        .current_dir(&dir)
        .output()
        .expect("tsc runs");
    assert!(
        tsc.status.success(),
        "tsc failed in examples/nestjs:\n{}",
        String::from_utf8_lossy(&tsc.stdout)
    );
    std::fs::write(&stamp, "").expect("the build's stamp");
}

/// When `path`, or anything under it, last changed.
fn last_change(path: &std::path::Path) -> std::time::SystemTime {
    let own = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
    let children = std::fs::read_dir(path).into_iter().flatten().flatten();
    children
        .map(|e| last_change(&e.path()))
        .fold(own, std::cmp::max)
}

/// Runs an example of `examples/nestjs` (built) against the service's `queue` with the test
/// key and `env`; the JSON line it printed.
pub async fn run_example(args: &[&str], queue: &str, env: &[(&str, &str)]) -> Value {
    let mut command = Command::new("node");
    command
        .args(args)
        .current_dir(examples())
        .env("AMQP_URL", AMQP_URL)
        .env("RPC_QUEUE", queue)
        .env("RPC_QUEUE_TYPE", crate::helpers::rpc_queue_type())
        .env("USER_SERVICE_API_KEY", AUTH_KEY)
        .envs(env.iter().copied());
    let output = tokio::task::spawn_blocking(move || command.output().expect("node runs"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    json_line(&stdout)
}

/// The last line of `stdout` that is a JSON object.
fn json_line(stdout: &str) -> Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("a JSON line in:\n{stdout}"));
    serde_json::from_str(line).expect("JSON")
}

#[tokio::test]
async fn a_nestjs_client_proxy_calls_the_service() {
    tokio::task::spawn_blocking(install_fixture).await.unwrap();
    let app = TestApp::spawn().await;
    app.until_broker(true).await;
    let queue = app.rpc_queue.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("client.js")
            .current_dir(fixture())
            .env("AMQP_URL", AMQP_URL)
            .env("RPC_QUEUE", queue)
            .env("RPC_QUEUE_TYPE", crate::helpers::rpc_queue_type())
            .env("API_KEY", AUTH_KEY)
            .env("EMAIL", "Nest.User@Example.com")
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client.js failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    let r: Value = serde_json::from_str(line).unwrap();

    let id = r["created"]["id"].as_str().expect("created a user");
    assert_eq!(r["created"]["email"], "nest.user@example.com");
    assert_eq!(
        (r["fetched"]["id"].as_str(), &r["fetched"]["email"]),
        (Some(id), &r["created"]["email"])
    );
    assert_eq!(
        (r["prefs"]["language"].clone(), r["prefs"]["theme"].clone()),
        (json!("en"), json!("auto"))
    );
    assert_eq!(r["exists"], json!({"exists": true}));
    assert_eq!(r["notFoundError"]["status"], 404);
    assert_eq!(r["notFoundError"]["code"], "USER_NOT_FOUND");

    // The emit (no reply) was carried out too.
    let path = format!("/api/internal/users/{id}");
    eventually(Duration::from_secs(10), || async {
        let (_, user) = app.get(&path).await;
        (user["lastLoginIp"] == "10.0.0.1").then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_nestjs_client_proxy_example_creates_reads_and_handles_errors() {
    tokio::task::spawn_blocking(build_examples).await.unwrap();
    let app = TestApp::spawn().await;
    app.until_broker(true).await;
    let r = run_example(
        &["dist/create-user.js", "Nest.Example@Example.com"],
        &app.rpc_queue,
        &[],
    )
    .await;

    let id = r["created"]["id"].as_str().expect("created a user");
    assert_eq!(r["created"]["email"], "nest.example@example.com");
    assert_eq!(
        r["fetched"], r["created"],
        "users.get returns what was created"
    );
    assert_eq!(r["preferences"]["language"], "en");
    assert_eq!(r["missing"], Value::Null, "USER_NOT_FOUND read as null");
    assert_eq!(
        r["duplicate"],
        json!({"status": 409, "code": "EMAIL_TAKEN"})
    );
    let (_, stored) = app.get(&format!("/api/internal/users/{id}")).await;
    assert_eq!(stored["name"], "Nest User");
    assert_eq!(stored["preferences"]["language"], "en");
}

/// The next line the consumer prints, within `timeout`.
async fn next_line(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    timeout: Duration,
) -> String {
    tokio::time::timeout(timeout, lines.recv())
        .await
        .expect("the consumer printed in time")
        .expect("the consumer is running")
}

/// The consumer process, killed when the test ends however it ends.
struct Consumer(Child);

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_nestjs_event_consumer_example_receives_user_events() {
    tokio::task::spawn_blocking(build_examples).await.unwrap();
    let app = TestApp::spawn_with(&[("EVENT_ENVELOPE", "nestjs")]).await;
    app.until_broker(true).await;
    let exchange = format!("{}.events", app.db_name);

    // What the service publishes, seen from a plain AMQP queue of our own.
    let conn = lapin::Connection::connect(AMQP_URL, Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let audit = bind_events_queue(&ch, &exchange, None).await;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut published = ch
        .basic_consume(audit.into(), "".into(), no_ack, FieldTable::default())
        .await
        .unwrap();

    let mut child = Command::new("node")
        .arg("dist/consume-events.js")
        .current_dir(examples())
        .env("AMQP_URL", AMQP_URL)
        .env("EVENTS_EXCHANGE", &exchange)
        .env("EVENTS_QUEUE", format!("{}.nest-events", app.db_name))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let stdout = child.stdout.take().expect("piped stdout");
    let _consumer = Consumer(child);
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // NestJS's own log lines (warnings) also go to stdout: pass them on for the reader.
            if !line.starts_with('{') {
                eprintln!("consumer: {line}");
                continue;
            }
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = next_line(&mut lines, Duration::from_secs(20)).await;
    assert_eq!(first, r#"{"listening":true}"#, "bound and consuming");

    let user = app.create_user("Evented", "evented@example.com").await;
    let id = user["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .patch(
            &format!("/api/internal/users/{id}/preferences"),
            json!({"theme": "dark"}),
        )
        .await;
    assert_eq!(status, 200);

    // The consumer's handlers print each event they get; both come, for this user.
    let mut received = std::collections::HashMap::new();
    while received.len() < 2 {
        let line = next_line(&mut lines, Duration::from_secs(20)).await;
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("{line}"));
        assert_eq!(v["event"]["userId"], id.as_str(), "{line}");
        received.insert(v["pattern"].as_str().unwrap_or_default().to_owned(), v);
    }
    let created = &received["user.created"]["event"];
    assert_eq!(created["type"], "USER_CREATED");
    assert_eq!(
        created["data"],
        json!({"name": "Evented", "email": "evented@example.com"})
    );
    let changed = &received["user.preferences_changed"]["event"];
    assert_eq!(changed["type"], "PREFERENCES_CHANGED");
    assert_eq!(changed["data"]["changed"], json!(["theme"]));

    // Exactly what was published: the NestJS envelope's `data`, with `eventId` = message_id.
    for _ in 0..2 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), published.next())
            .await
            .expect("published in time")
            .expect("a delivery")
            .expect("no channel error");
        let body: Value = serde_json::from_slice(&delivery.data).unwrap();
        let pattern = body["pattern"].as_str().expect("the NestJS envelope");
        let event = &received[pattern]["event"];
        assert_eq!(event, &body["data"]);
        assert_eq!(
            delivery
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.as_str()),
            event["eventId"].as_str()
        );
    }
    let _ = conn.close(200, "done".into()).await;
}
