//! Hostile input on the primary path (issue 8): a corpus of malformed deliveries, several
//! prefetch windows of them. Afterwards ordinary calls are answered at once, every delivery
//! was settled and counted, events still flow, and dead letters carry no credentials.
//! The corpus's cases are in `corpus`; the same rules over REST in `rest`.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde_json::json;

use crate::amqp::{Raw, dead_letters, key, publish_unreadable, table};
use crate::events::Events;
use crate::helpers::{AUTH_KEY, HASH, SECRET, TestApp, eventually};
use corpus::corpus;

mod corpus;
mod rest;

const PREFETCH: usize = 8;
/// Each case is sent this many times: together several prefetch windows.
const COPIES: usize = 3;

fn long(bytes: &[u8]) -> AMQPValue {
    AMQPValue::LongString(LongString::from(bytes))
}

fn with_headers(headers: Vec<(&str, AMQPValue)>) -> BasicProperties {
    let mut t = FieldTable::default();
    for (k, v) in headers {
        t.insert(ShortString::from(k), v);
    }
    BasicProperties::default().with_headers(t)
}

fn authed() -> BasicProperties {
    BasicProperties::default().with_headers(table(&key(AUTH_KEY)))
}

fn reply_to(props: BasicProperties) -> BasicProperties {
    props.with_reply_to(ShortString::from("amq.rabbitmq.reply-to"))
}

fn exists() -> Vec<u8> {
    json!({"method": "users.exists", "params": {"id": uuid::Uuid::new_v4()}})
        .to_string()
        .into_bytes()
}

/// Sum of `user_service_rpc_deliveries_total` by outcome, from `/metrics`.
async fn deliveries(app: &TestApp) -> Vec<(String, f64)> {
    let text = app.metrics().await;
    text.lines()
        .filter_map(|l| l.strip_prefix("user_service_rpc_deliveries_total{outcome=\""))
        .filter_map(|l| {
            let (outcome, rest) = l.split_once('"')?;
            let n = rest.rsplit(' ').next()?.parse().ok()?;
            Some((outcome.to_owned(), n))
        })
        .collect()
}

/// Deliveries settled so far: answered, handled, dead-lettered, requeued or expired.
async fn settled(app: &TestApp) -> f64 {
    deliveries(app)
        .await
        .iter()
        .filter(|(o, _)| !matches!(o.as_str(), "unsettled" | "unreadable"))
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test]
async fn a_corpus_of_hostile_deliveries_is_settled_and_ordinary_calls_go_on() {
    let prefetch = PREFETCH.to_string();
    let app = TestApp::spawn_with(&[("RPC_PREFETCH", prefetch.as_str())]).await;
    app.until_broker(true).await;
    let mut events = Events::bind(&format!("{}.events", app.db_name)).await;
    let mut raw = Raw::connect().await;
    let q = app.rpc_queue.clone();

    let settled_before = settled(&app).await;
    let mut corpus = corpus();
    assert!(corpus.len() >= 30, "{} kinds", corpus.len());
    // More of the kind that used to kill its handler than a prefetch window holds.
    let killer = corpus
        .iter()
        .find(|(what, ..)| what.starts_with("NestJS id of 1000"))
        .cloned()
        .unwrap();
    corpus.extend(std::iter::repeat_n(killer, PREFETCH));
    let sent = corpus.len() * COPIES;
    assert!(sent > 3 * PREFETCH);
    for _ in 0..COPIES {
        for (what, body, props) in &corpus {
            raw.publish(&q, body, props.clone()).await;
            assert!(raw.channel.status().connected(), "after {what}");
        }
    }

    // Ordinary calls behind the whole corpus are answered promptly.
    for _ in 0..3 {
        let answer =
            tokio::time::timeout(Duration::from_secs(5), raw.call(&q, &exists(), authed()))
                .await
                .expect("answered within 5 s");
        assert_eq!(answer.1["status"], 200, "{}", answer.1);
    }

    // Every hostile delivery was settled one way or another, and counted. (The metrics
    // are the test process's, shared with tests running alongside: count what settled.)
    eventually(Duration::from_secs(20), || async {
        let total = settled(&app).await - settled_before;
        (total >= (sent + 3) as f64).then_some(())
    })
    .await;
    let ready = raw
        .channel
        .queue_declare(
            q.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(ready.message_count(), 0, "nothing left waiting");

    // A body over 1 MiB is told so.
    let (_, body, props) = corpus
        .iter()
        .find(|(what, ..)| *what == "over 1 MiB")
        .unwrap();
    let (_, reply) = raw.call(&q, body, props.clone()).await;
    assert_eq!(reply["status"], 413, "{reply}");
    assert_eq!(reply["error"]["code"], "PAYLOAD_TOO_LARGE");

    // A write with an overlong x-correlation-id is done; its event and later ones flow.
    let create = json!({"method": "users.create",
        "params": {"name": "Long", "email": "long@example.com", "password": HASH}});
    let props = with_headers(vec![
        ("x-api-key", long(AUTH_KEY.as_bytes())),
        ("x-correlation-id", long("q".repeat(300).as_bytes())),
    ]);
    let (_, reply) = raw.call(&q, create.to_string().as_bytes(), props).await;
    assert_eq!(reply["status"], 201, "{reply}");
    let (_, event_props, event) = events.next().await;
    assert_eq!(event["type"], "USER_CREATED");
    let corr = event["correlationId"].as_str().unwrap();
    assert!(!corr.is_empty() && corr.len() <= 128, "a fresh id: {corr}");
    assert_eq!(
        event_props.correlation_id().as_ref().map(|c| c.as_str()),
        Some(corr)
    );
    app.create_user("After", "after@example.com").await;
    let (_, _, next) = events.next().await;
    assert_eq!(next["data"]["email"], "after@example.com");
}

#[tokio::test]
async fn dead_letters_carry_no_credentials_and_name_the_caller() {
    let app = TestApp::spawn().await;
    app.until_broker(true).await;
    let raw = Raw::connect().await;
    let q = app.rpc_queue.clone();
    let bad = json!({"method": "users.get", "params": {"id": "nope"}}).to_string();
    let by_key = with_headers(vec![
        ("X-Api-Key", long(AUTH_KEY.as_bytes())),
        ("x-trace", long(b"kept")),
        ("x-caller", long(b"forged")),
        (
            "traceparent",
            long(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ),
    ]);
    let by_bearer = with_headers(vec![(
        "Authorization",
        long(format!("Bearer {AUTH_KEY}").as_bytes()),
    )]);
    let by_secret = with_headers(vec![
        ("x-internal-service", long(SECRET.as_bytes())),
        ("x-service-name", long(b"payment-service")),
    ]);
    let wrong_key = with_headers(vec![("x-api-key", long(b"not-a-key"))]);
    for props in [by_key, by_bearer, by_secret, wrong_key] {
        raw.publish(&q, bad.as_bytes(), props).await;
    }

    let dlq = format!("{q}.dlq");
    let mut letters = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while letters.len() < 4 && std::time::Instant::now() < deadline {
        letters.extend(dead_letters(&raw.channel, &dlq).await);
        tokio::task::yield_now().await;
    }
    assert_eq!(letters.len(), 4, "{letters:?}");
    let mut callers = Vec::new();
    for (body, error, headers) in &letters {
        assert_eq!(body["params"]["id"], "nope", "the request is kept");
        assert!(!error.is_empty());
        let names: Vec<String> = headers
            .inner()
            .keys()
            .map(|k| k.as_str().to_ascii_lowercase())
            .collect();
        for secret in ["authorization", "x-api-key", "x-internal-service"] {
            assert!(!names.contains(&secret.to_owned()), "{secret} in {names:?}");
        }
        let text = format!("{headers:?}");
        assert!(!text.contains(AUTH_KEY) && !text.contains(SECRET), "{text}");
        callers.push(match headers.inner().get("x-caller") {
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            _ => String::new(),
        });
    }
    assert!(
        letters
            .iter()
            .any(|(_, _, h)| h.inner().contains_key("x-trace")),
        "other headers are kept"
    );
    // Every dead letter carries on a trace: the request's, from the service's own span.
    for (_, _, h) in &letters {
        let Some(AMQPValue::LongString(parent)) = h.inner().get("traceparent") else {
            panic!("no traceparent in {h:?}")
        };
        let parent = String::from_utf8_lossy(parent.as_bytes()).into_owned();
        let continued = h.inner().contains_key("x-trace");
        assert_eq!(
            parent.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
            continued,
            "{parent}"
        );
        assert!(!parent.contains("00f067aa0ba902b7"), "{parent}");
    }
    callers.sort();
    assert_eq!(
        callers,
        ["", "auth-service", "auth-service", "payment-service"],
        "x-caller names the authenticated caller, never a forged one"
    );
}

/// A property lapin cannot parse ends the consuming connection, and the request comes back
/// at the head of the queue: it is set aside unread, and the requests behind it are served.
#[tokio::test]
async fn a_request_with_unreadable_properties_is_set_aside() {
    let app = TestApp::spawn().await;
    app.until_broker(true).await;
    let mut raw = Raw::connect().await;
    let q = app.rpc_queue.clone();
    for _ in 0..2 {
        publish_unreadable(&q, &exists()).await;
    }
    for _ in 0..3 {
        let (_, answer) =
            tokio::time::timeout(Duration::from_secs(15), raw.call(&q, &exists(), authed()))
                .await
                .expect("answered behind the unreadable requests");
        assert_eq!(answer["status"], 200, "{answer}");
    }
    let counts = deliveries(&app).await;
    let unreadable: f64 = counts
        .iter()
        .filter(|(o, _)| o == "unreadable")
        .map(|(_, n)| n)
        .sum();
    assert!(unreadable >= 2.0, "{counts:?}");
    app.until_broker(true).await;
}

/// A handler that panics anyway still settles its delivery: answered 500 when someone waits,
/// dead-lettered when not; the consumer goes on.
#[tokio::test]
async fn a_panicking_handler_still_settles_its_delivery() {
    use user_core::fault::PANIC_CORRELATION_ID;
    let app = TestApp::spawn_with(&[("RPC_PREFETCH", "2")]).await;
    app.until_broker(true).await;
    let mut raw = Raw::connect().await;
    let q = app.rpc_queue.clone();
    let doomed = with_headers(vec![
        ("x-api-key", long(AUTH_KEY.as_bytes())),
        ("x-correlation-id", long(PANIC_CORRELATION_ID.as_bytes())),
    ]);
    for _ in 0..3 {
        let (_, reply) = raw.call(&q, &exists(), doomed.clone()).await;
        assert_eq!(reply["status"], 500, "{reply}");
        assert_eq!(reply["error"]["code"], "INTERNAL");
        assert!(
            !reply.to_string().contains("injected"),
            "no internals leak: {reply}"
        );
    }
    // Nobody waiting: it goes to the dead-letter queue, more of them than the prefetch.
    for _ in 0..3 {
        raw.publish(&q, &exists(), doomed.clone()).await;
    }
    let (_, fine) = raw.call(&q, &exists(), authed()).await;
    assert_eq!(fine["status"], 200, "{fine}");
    let dlq = format!("{q}.dlq");
    let mut letters = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while letters.len() < 3 && std::time::Instant::now() < deadline {
        letters.extend(dead_letters(&raw.channel, &dlq).await);
        tokio::task::yield_now().await;
    }
    assert_eq!(letters.len(), 3);
    assert!(
        letters.iter().all(|(_, e, _)| e.starts_with("INTERNAL")),
        "{letters:?}"
    );
}
