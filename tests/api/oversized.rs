//! Every message the service sends fits the broker's frame, whatever it received (issue 20):
//! error texts quote a short prefix of input, dead letters keep bounded headers, a delivery
//! whose settlement failed is not handled into the same failure again, and a request that
//! fails authentication is neither read nor answered into an arbitrary queue.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::amqp::{Raw, dead_letters, key, table};
use crate::helpers::{AUTH_KEY, HASH, TestApp, captured_logs, eventually, send};
use crate::relay::Relay;

fn authed() -> BasicProperties {
    BasicProperties::default().with_headers(table(&key(AUTH_KEY)))
}

fn with_header(props: BasicProperties, name: &str, bytes: &[u8]) -> BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(
        ShortString::from(name),
        AMQPValue::LongString(LongString::from(bytes)),
    );
    props.with_headers(headers)
}

fn exists() -> Vec<u8> {
    json!({"method": "users.exists", "params": {"id": uuid::Uuid::new_v4()}})
        .to_string()
        .into_bytes()
}

/// `/health`'s RabbitMQ status and when it last changed: a lost connection changes both.
async fn rabbitmq(app: &TestApp) -> (Value, Value) {
    let (_, health) = app.get("/health").await;
    let part = &health["components"]["rabbitmq"];
    (part["status"].clone(), part["since"].clone())
}

/// Messages waiting in `queue`.
async fn waiting(raw: &Raw, queue: &str) -> u32 {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    raw.channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .map(|q| q.message_count())
        .unwrap_or(0)
}

/// Takes at least `n` dead letters off `queue`, within 10 s.
async fn letters(raw: &Raw, queue: &str, n: usize) -> Vec<(Value, String, FieldTable)> {
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.len() < n && std::time::Instant::now() < deadline {
        got.extend(dead_letters(&raw.channel, queue).await);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    got
}

fn header<'a>(headers: &'a FieldTable, name: &str) -> Option<&'a AMQPValue> {
    headers.inner().get(name)
}

/// The two messages, with no credentials and no reply address, and two that do
/// authenticate: each is dead-lettered once, in a letter of bounded size; the calls behind
/// them are answered at once, the service's connection to the broker is never lost, and no
/// log line quotes more than a short prefix of the name.
#[tokio::test]
async fn oversized_requests_are_dead_lettered_once_and_the_connection_stays() {
    let logs = captured_logs();
    let app = TestApp::spawn_with(&[("RPC_PREFETCH", "8")]).await;
    app.until_broker(true).await;
    let before = rabbitmq(&app).await;
    assert_eq!(before.0, "up");
    let mut raw = Raw::connect().await;
    let q = app.rpc_queue.clone();
    // A character no other test sends, to find it in the process's logs.
    let name = "ж".repeat(200_000);
    let mut unknown_field: Value = serde_json::from_slice(&exists()).unwrap();
    unknown_field[name.as_str()] = json!(1);
    let mut unknown_param: Value = serde_json::from_slice(&exists()).unwrap();
    unknown_param["params"][name.as_str()] = json!(1);
    let big = vec![b'h'; 130_000];
    let bad_id = json!({"method": "users.get", "params": {"id": "nope"}});
    let cases = [
        (
            unknown_field.to_string().into_bytes(),
            BasicProperties::default(),
        ),
        (
            exists(),
            with_header(BasicProperties::default(), "x-big", &big),
        ),
        (unknown_param.to_string().into_bytes(), authed()),
        (
            bad_id.to_string().into_bytes(),
            with_header(authed(), "x-big", &big),
        ),
    ];
    for (body, props) in &cases {
        raw.publish(&q, body, props.clone()).await;
    }

    for _ in 0..3 {
        let body = exists();
        let call = raw.call(&q, &body, authed());
        let (_, answer) = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("answered at once behind them");
        assert_eq!(answer["status"], 200, "{answer}");
    }
    // A reply quotes the name cut short.
    let (_, refused) = raw
        .call(&q, unknown_param.to_string().as_bytes(), authed())
        .await;
    assert_eq!(refused["error"]["code"], "VALIDATION_FAILED", "{refused}");
    assert!(refused.to_string().len() < 1000, "{refused}");

    let dlq = format!("{q}.dlq");
    let letters = letters(&raw, &dlq, cases.len()).await;
    assert_eq!(letters.len(), cases.len());
    let mut dropped = 0;
    for (_, error, headers) in &letters {
        assert!(
            error.len() < 600 && !error.contains(&"ж".repeat(65)),
            "{error}"
        );
        let size = format!("{headers:?}").len();
        assert!(size < 40_000, "headers of {size} bytes");
        dropped += usize::from(header(headers, "x-headers-dropped").is_some());
    }
    assert_eq!(dropped, 2, "the big header is left out, and said so");
    let errors: Vec<&str> = letters.iter().map(|(_, e, _)| e.as_str()).collect();
    let unauthenticated = errors.iter().filter(|e| e.starts_with("UNAUTHENTICATED"));
    assert_eq!(unauthenticated.count(), 2, "{errors:?}");

    // Nothing comes back for a second round.
    let (_, after) = raw.call(&q, &exists(), authed()).await;
    assert_eq!(after["status"], 200);
    assert_eq!(waiting(&raw, &q).await, 0);
    assert_eq!(waiting(&raw, &dlq).await, 0, "each dead-lettered once");
    assert_eq!(
        rabbitmq(&app).await,
        before,
        "the connection was never lost"
    );
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("ж"), "the name was logged, cut");
    assert!(
        !text.contains(&"ж".repeat(65)),
        "a log line quotes the name whole"
    );
}

/// REST quotes an unknown field's name cut short too.
#[tokio::test]
async fn rest_errors_quote_a_short_prefix_of_a_name() {
    let app = TestApp::spawn().await;
    let mut body = json!({"name": "Long", "email": "long@example.com", "password": HASH});
    body["f".repeat(200_000).as_str()] = json!(1);
    let (status, error) = send(app.req(Method::POST, "/api/internal/users").json(&body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error.to_string().len() < 1000, "{error}");
    let field = error["details"][0]["field"].as_str().unwrap();
    assert!(
        field.starts_with("fff") && field.chars().count() <= 65,
        "{field}"
    );
}

/// `user_service_rpc_deliveries_total{outcome="unsettled"}` (shared by the tests of this process).
async fn deliveries(app: &TestApp, outcome: &str) -> f64 {
    let text = app.metrics().await;
    let prefix = format!("user_service_rpc_deliveries_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|n| n.parse::<f64>().ok())
        .sum()
}

const LOGINS: &str = "SELECT count(*) FROM outbox WHERE event_type = 'USER_LOGGED_IN'";

/// A NestJS `emit` of a login (with `props`) applied while its ack fails: the connection goes
/// while the login waits on a row lock. Returns once the service is connected again.
async fn login_whose_ack_fails(props: BasicProperties) -> (TestApp, Raw, Relay) {
    let relay = Relay::rabbitmq().await;
    let url = format!("amqp://guest:guest@{}/%2f", relay.addr);
    let app = TestApp::spawn_with(&[("AMQP_URL", &url)]).await;
    let id = app.create_user("Once", "once@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.until_broker(true).await;
    let raw = Raw::connect().await;
    let mut locker = app.lock_users(&[&id]).await;
    let login = json!({"pattern": "users.recordLogin", "data": {"id": id}}).to_string();
    raw.publish(&app.rpc_queue, login.as_bytes(), props).await;
    app.until_waiting_on_locks(1).await;

    let before = deliveries(&app, "unsettled").await;
    relay.cut();
    app.until_broker(false).await;
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    eventually(Duration::from_secs(10), || async {
        (app.count(LOGINS).await == 1 && deliveries(&app, "unsettled").await > before).then_some(())
    })
    .await;
    relay.restore();
    app.until_broker(true).await;
    (app, raw, relay)
}

/// An unkeyed login whose ack failed comes back redelivered: it is set aside with a minimal
/// dead letter, not applied a second time.
#[tokio::test]
async fn a_request_whose_settlement_failed_is_set_aside_when_it_comes_back() {
    let (app, mut raw, _relay) = login_whose_ack_fails(authed()).await;
    let q = app.rpc_queue.clone();
    let dlq = format!("{q}.dlq");
    let letters = letters(&raw, &dlq, 1).await;
    let (body, error, headers) = &letters[0];
    assert!(header(headers, "x-repeat").is_some(), "{headers:?}");
    assert!(
        header(headers, "x-api-key").is_none(),
        "minimal: {headers:?}"
    );
    assert!(error.starts_with("INTERNAL"), "{error}");
    assert_eq!(body["pattern"], "users.recordLogin");
    let (_, fine) = raw.call(&q, &exists(), authed()).await;
    assert_eq!(fine["status"], 200);
    assert_eq!(app.count(LOGINS).await, 1, "the login was applied once");
    assert_eq!(waiting(&raw, &dlq).await, 0);
}

/// A keyed one (a node lost with requests in hand fails every settlement) is handled once
/// more: its write replays from the ledger, nothing is set aside, and it is applied once.
#[tokio::test]
async fn a_keyed_request_whose_settlement_failed_is_handled_again_and_applied_once() {
    let keyed = authed().with_message_id(ShortString::from("login-once"));
    let (app, raw, _relay) = login_whose_ack_fails(keyed).await;
    eventually(Duration::from_secs(10), || async {
        (deliveries(&app, "done").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(waiting(&raw, &app.rpc_queue).await, 0);
    assert_eq!(waiting(&raw, &format!("{}.dlq", app.rpc_queue)).await, 0);
    assert_eq!(app.count(LOGINS).await, 1, "the login was applied once");
}

/// A billing value of any JSON type is sealed in a dead letter and quoted nowhere: not in
/// its headers, not in an error text, not in a log line.
#[tokio::test]
async fn billing_values_of_any_type_are_sealed_in_dead_letters() {
    let logs = captured_logs();
    let app = TestApp::spawn().await;
    let id = app.create_user("Bill", "bill@example.com").await["id"].clone();
    app.until_broker(true).await;
    let raw = Raw::connect().await;
    let q = app.rpc_queue.clone();
    let requests = [
        json!({"method": "users.updateBillingInfo", "params": {"id": id, "taxId": 7707083893u64}}),
        json!({"method": "users.updateBillingInfo",
               "params": {"id": id, "billingAddress": {"street": "Tverskaya 13"}}}),
        json!({"method": "users.updateBillingInfo",
               "params": {"id": id, "billingAddress": 5001007322u64, "taxId": true}}),
    ];
    for r in &requests {
        raw.publish(&q, r.to_string().as_bytes(), authed()).await;
    }
    let letters = letters(&raw, &format!("{q}.dlq"), requests.len()).await;
    assert_eq!(letters.len(), requests.len());
    for (body, error, headers) in &letters {
        assert!(error.starts_with("VALIDATION_FAILED"), "{error}");
        let text = format!("{body} {error} {headers:?}");
        for plain in ["7707083893", "Tverskaya", "5001007322"] {
            assert!(!text.contains(plain), "{plain} in {text}");
        }
        let params = body["params"].as_object().unwrap();
        for field in ["taxId", "billingAddress"] {
            if let Some(v) = params.get(field) {
                assert!(v.as_str().is_some_and(|s| s.starts_with("enc:")), "{v}");
            }
        }
    }
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        text.contains("VALIDATION_FAILED"),
        "the failures were logged"
    );
    for plain in ["7707083893", "Tverskaya", "5001007322"] {
        assert!(!text.contains(plain), "{plain} in the logs");
    }
}

/// A request that fails authentication is answered only through direct reply-to or a queue
/// with the configured prefix, is never read (a body that is not JSON is a 401, not a 400),
/// and otherwise goes to the dead-letter queue.
#[tokio::test]
async fn an_unauthenticated_request_is_never_answered_into_an_arbitrary_queue() {
    let app = TestApp::spawn_with(&[("RPC_UNAUTHENTICATED_REPLY_PREFIX", "{db}.replies.")]).await;
    app.until_broker(true).await;
    let mut raw = Raw::connect().await;
    let q = app.rpc_queue.clone();
    let own = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let victim = format!("{}.victim", app.db_name);
    let allowed = format!("{}.replies.a", app.db_name);
    for queue in [&victim, &allowed] {
        let declared = raw
            .channel
            .queue_declare(queue.as_str().into(), own, FieldTable::default());
        declared.await.unwrap();
    }

    let (_, reply) = raw.call(&q, b"{oops", BasicProperties::default()).await;
    assert_eq!(reply["status"], 401, "not read, so not a 400: {reply}");
    assert_eq!(reply["error"]["code"], "UNAUTHENTICATED");

    let to = |queue: &str, props: BasicProperties| props.with_reply_to(queue.into());
    raw.publish(&q, &exists(), to(&victim, BasicProperties::default()))
        .await;
    raw.publish(&q, &exists(), to(&allowed, BasicProperties::default()))
        .await;
    let (_, fine) = raw.call(&q, &exists(), authed()).await;
    assert_eq!(fine["status"], 200);
    let dlq = format!("{q}.dlq");
    let letters = letters(&raw, &dlq, 1).await;
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].1.starts_with("UNAUTHENTICATED"),
        "{}",
        letters[0].1
    );
    eventually(Duration::from_secs(10), || async {
        (waiting(&raw, &allowed).await == 1).then_some(())
    })
    .await;
    assert_eq!(waiting(&raw, &victim).await, 0, "never answered there");

    raw.publish(&q, &exists(), to(&victim, authed())).await;
    eventually(Duration::from_secs(10), || async {
        (waiting(&raw, &victim).await == 1).then_some(())
    })
    .await;
    assert_eq!(waiting(&raw, &dlq).await, 0);
}
