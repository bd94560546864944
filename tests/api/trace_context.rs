//! W3C Trace Context: the trace a caller sends (REST headers, AMQP headers) goes on in the
//! service's replies, events and history; a malformed one is never echoed.

use std::time::Duration;

use futures::StreamExt;
use lapin::BasicProperties;
use lapin::options::BasicConsumeOptions;
use lapin::types::{AMQPValue, FieldTable};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::amqp::{Raw, table};
use crate::helpers::{AUTH_KEY, TestApp, bind_events_queue};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE}-{CALLER_SPAN}-01")
}

fn text(headers: &Option<FieldTable>, name: &str) -> Option<String> {
    match headers.as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

/// The trace id of a valid `traceparent` that is the service's own span (not the caller's).
fn continued(value: &str) -> String {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_ne!(parts[2], CALLER_SPAN, "the service's own span: {value}");
    parts[1].to_owned()
}

#[tokio::test]
async fn a_rest_callers_trace_goes_on_in_the_reply_the_event_and_the_history() {
    let app = TestApp::spawn_with(&[("AUDIT_READERS", "auth-service")]).await;
    app.until_broker(true).await;
    let raw = Raw::connect().await;
    let exchange = format!("{}.events", app.db_name);
    let queue = bind_events_queue(&raw.channel, &exchange, None).await;
    let id = app.create_user("Traced", "traced@example.com").await["id"].clone();
    let path = format!("/api/internal/users/{}", id.as_str().unwrap());

    let req = app
        .req(Method::PATCH, &path)
        .header("traceparent", traceparent())
        .header("tracestate", "vendor=abc")
        .json(&json!({"name": "Traced Again"}));
    let response = req.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let ours = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(continued(&ours), TRACE);

    let mut events = raw
        .channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let updated = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let d = events.next().await.unwrap().unwrap();
            if d.routing_key.as_str() == "user.updated" {
                return d;
            }
        }
    })
    .await
    .expect("the event within 15 s");
    let headers = updated.properties.headers();
    assert_eq!(
        text(headers, "traceparent").as_deref(),
        Some(ours.as_str()),
        "the event goes on from the service's span"
    );
    assert_eq!(text(headers, "tracestate").as_deref(), Some("vendor=abc"));

    let (status, history) = app.get(&format!("{path}/history?limit=1")).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    assert_eq!(history["data"][0]["traceId"], TRACE);
}

#[tokio::test]
async fn a_request_without_a_trace_or_with_a_broken_one_starts_a_new_one() {
    let app = TestApp::spawn().await;
    let long = "0".repeat(5000);
    for sent in [
        None,
        Some("garbage-value"),
        Some(long.as_str()),
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
    ] {
        let mut req = app.req(
            Method::GET,
            "/api/internal/users/00000000-0000-7000-8000-000000000000",
        );
        if let Some(v) = sent {
            req = req.header("traceparent", v);
        }
        let response = req.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let ours = response.headers()["traceparent"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(
            continued(&ours),
            "00000000000000000000000000000000",
            "{sent:?}"
        );
        assert!(
            sent.is_none_or(|s| !ours.contains(s)),
            "never echoed: {sent:?}"
        );
    }
}

#[tokio::test]
async fn an_rpc_callers_trace_goes_on_in_the_reply() {
    let app = TestApp::spawn().await;
    app.until_broker(true).await;
    let mut raw = Raw::connect().await;
    let parent = traceparent();
    let headers = table(&[("x-api-key", AUTH_KEY), ("traceparent", parent.as_str())]);
    let body = json!({"method": "users.exists", "params": {"id": uuid::Uuid::new_v4()}});
    let (props, reply) = raw
        .call(
            &app.rpc_queue,
            body.to_string().as_bytes(),
            BasicProperties::default().with_headers(headers),
        )
        .await;
    assert_eq!(reply["status"], 200, "{reply}");
    let ours = text(props.headers(), "traceparent").expect("a traceparent on the reply");
    assert_eq!(continued(&ours), TRACE);
    // Without one, a new trace, still answered.
    let (props, _) = raw
        .call(
            &app.rpc_queue,
            body.to_string().as_bytes(),
            BasicProperties::default()
                .with_headers(table(&[("x-api-key", AUTH_KEY), ("traceparent", "nope")])),
        )
        .await;
    let ours = text(props.headers(), "traceparent").expect("a traceparent on the reply");
    assert_ne!(continued(&ours), TRACE);
}

#[tokio::test]
async fn the_rust_clients_calls_carry_the_trace_they_are_made_in() {
    let app = TestApp::spawn_with(&[("AUDIT_READERS", "auth-service")]).await;
    app.until_broker(true).await;
    let client = app.rpc().await;
    let hash = crate::helpers::HASH;
    let parent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let new = user_service_client::NewUser::new("Traced Rust", "traced.rust@example.com", hash);
    let traced = user_service_client::traced(&parent, Some("vendor=abc"), client.create(&new))
        .await
        .expect("created");
    let new = user_service_client::NewUser::new("Untraced Rust", "untraced.rust@example.com", hash);
    let untraced = client.create(&new).await.expect("created");

    let trace_of = async |user: &serde_json::Value| {
        let id = user["id"].as_str().expect("an id");
        let (status, history) = app
            .get(&format!("/api/internal/users/{id}/history?limit=1"))
            .await;
        assert_eq!(status, StatusCode::OK, "{history}");
        history["data"][0]["traceId"].clone()
    };
    assert_eq!(trace_of(&traced).await, TRACE);
    let other = trace_of(&untraced).await;
    assert!(
        other.is_string() && other != TRACE,
        "a call outside traced starts its own: {other}"
    );
}
