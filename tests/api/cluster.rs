//! The cluster set-up of `rabbitmq/definitions.json`: it imports, and the service runs on it.

use std::process::Command;

use serde_json::json;

use crate::amqp::{Raw, key};
use crate::helpers::{AUTH_KEY, TestApp};

fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A vhost of its own, deleted at the end whatever happens.
struct Vhost(String);

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.0])
            .output();
    }
}

#[tokio::test]
async fn the_cluster_definitions_import_and_the_service_serves_on_their_quorum_queues() {
    let vhost = Vhost(format!("us-defs-{}", uuid::Uuid::new_v4().simple()));
    rabbitmqctl(&["add_vhost", &vhost.0]);
    rabbitmqctl(&["set_permissions", "-p", &vhost.0, "guest", ".*", ".*", ".*"]);
    let definitions = include_str!("../../rabbitmq/definitions.json")
        .replace(r#""vhost": "/""#, &format!(r#""vhost": "{}""#, vhost.0));
    let file = std::env::temp_dir().join(format!("{}.json", vhost.0));
    std::fs::write(&file, definitions).unwrap();
    rabbitmqctl(&["import_definitions", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    let queues = rabbitmqctl(&[
        "list_queues",
        "-q",
        "-p",
        &vhost.0,
        "name",
        "type",
        "policy",
    ]);
    assert!(
        queues.contains("user-service.rpc\tquorum\tuser-service-rpc"),
        "{queues}"
    );

    let url = format!("amqp://guest:guest@127.0.0.1:5672/{}", vhost.0);
    let app = TestApp::spawn_with(&[
        ("AMQP_URL", url.as_str()),
        ("RPC_QUEUE", "user-service.rpc"),
        ("RPC_QUEUE_TYPE", "quorum"),
        ("EVENTS_EXCHANGE", "user-service.events"),
    ])
    .await;
    app.until_broker(true).await;
    let mut raw = Raw::connect_to(&url).await;
    let request = json!({"method": "users.exists", "params": {"id": uuid::Uuid::new_v4()}});
    let reply = raw
        .call_json("user-service.rpc", request, &key(AUTH_KEY))
        .await;
    assert_eq!(reply["status"], 200, "{reply}");
    assert_eq!(reply["data"]["exists"], false, "{reply}");
}
