//! A stock NestJS `ClientProxy` (Transport.RMQ, from the npm registry) calling the service:
//! the contract's NestJS dialect, proven with the real client rather than an imitation.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{AMQP_URL, AUTH_KEY, TestApp, eventually};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/nestjs")
}

/// `npm ci` once, when the fixture has no node_modules yet.
fn install_fixture() {
    let dir = fixture();
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is needed for the NestJS test (Node.js 20+)"
    );
    if dir.join("node_modules/@nestjs/microservices").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .status()
        .expect("npm runs");
    assert!(status.success(), "npm ci in tests/nestjs failed");
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
