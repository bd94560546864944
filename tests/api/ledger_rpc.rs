//! The ledger of applied requests over RPC: the request key is the message's `message_id`.

use std::time::Duration;

use futures::StreamExt;
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};

use crate::amqp::{Raw, key, table};
use crate::helpers::{AMQP_URL, AUTH_KEY, HASH, TestApp, eventually};

/// Calls `method` with a fixed `message_id`, as a redelivery carries it.
async fn call(
    raw: &mut Raw,
    app: &TestApp,
    message_id: &str,
    method: &str,
    params: Value,
) -> Value {
    let props = BasicProperties::default()
        .with_headers(table(&key(AUTH_KEY)))
        .with_message_id(message_id.into());
    let body = json!({"method": method, "params": params}).to_string();
    raw.call(&app.rpc_queue, body.as_bytes(), props).await.1
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    app.count(sql).await
}

#[tokio::test]
async fn a_redelivered_update_after_a_newer_one_answers_as_first_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let id = app.create_user("Ann", "ann@example.com").await["id"].clone();
    app.until_broker(true).await;
    let mut raw = Raw::connect().await;
    let a = json!({"id": id, "language": "en"});
    let first = call(&mut raw, &app, "m-1", "users.updatePreferences", a.clone()).await;
    assert_eq!(first["status"], 200, "{first}");
    let b = json!({"id": id, "language": "de"});
    let second = call(&mut raw, &app, "m-2", "users.updatePreferences", b).await;
    assert_eq!(second["data"]["language"], "de", "{second}");
    let again = call(&mut raw, &app, "m-1", "users.updatePreferences", a).await;
    assert_eq!(again, first, "the first reply again");
    let read = call(
        &mut raw,
        &app,
        "r-1",
        "users.getPreferences",
        json!({"id": id}),
    )
    .await;
    assert_eq!(read["data"]["language"], "de", "the newer write stands");
    let events = "SELECT count(*) FROM outbox WHERE event_type = 'PREFERENCES_CHANGED'";
    assert_eq!(count(&app, events).await, 2, "no event for the redelivery");

    // The same message id with other content is refused, and changes nothing.
    let other = json!({"id": id, "language": "fr"});
    let reused = call(&mut raw, &app, "m-1", "users.updatePreferences", other).await;
    assert_eq!(reused["status"], 422, "{reused}");
    assert_eq!(
        reused["error"]["code"], "IDEMPOTENCY_KEY_REUSED",
        "{reused}"
    );
    let read = call(
        &mut raw,
        &app,
        "r-2",
        "users.getPreferences",
        json!({"id": id}),
    )
    .await;
    assert_eq!(read["data"]["language"], "de");
    assert_eq!(count(&app, events).await, 2);
}

#[tokio::test]
async fn payment_conflicts_and_currency_mismatches_over_rpc() {
    let app = TestApp::spawn().await;
    let id = app.create_user("Bo", "bo@example.com").await["id"].clone();
    app.until_broker(true).await;
    let mut raw = Raw::connect().await;
    let pay = json!({"id": id, "paymentId": "p1", "amount": "5.00", "currency": "RUB"});
    let first = call(&mut raw, &app, "pay-1", "users.recordPayment", pay.clone()).await;
    assert_eq!(first["status"], 201, "{first}");
    let again = call(&mut raw, &app, "pay-1", "users.recordPayment", pay.clone()).await;
    assert_eq!(
        again, first,
        "a redelivery answers as the first delivery did"
    );

    let mut other_amount = pay.clone();
    other_amount["amount"] = json!("6.00");
    let conflict = call(&mut raw, &app, "pay-2", "users.recordPayment", other_amount).await;
    assert_eq!(conflict["status"], 409, "{conflict}");
    assert_eq!(conflict["error"]["code"], "CONFLICT");
    let stranger = app.create_user("Cy", "cy@example.com").await["id"].clone();
    let mut other_user = pay.clone();
    other_user["id"] = stranger;
    let conflict = call(&mut raw, &app, "pay-3", "users.recordPayment", other_user).await;
    assert_eq!(conflict["error"]["code"], "CONFLICT", "{conflict}");

    let eur = json!({"id": id, "paymentId": "p2", "amount": "5.00", "currency": "EUR"});
    let refused = call(&mut raw, &app, "pay-4", "users.recordPayment", eur).await;
    assert_eq!(refused["status"], 400, "{refused}");
    assert_eq!(refused["error"]["code"], "VALIDATION_FAILED");
    let read = call(
        &mut raw,
        &app,
        "r",
        "users.getBillingInfo",
        json!({"id": id}),
    )
    .await;
    assert_eq!(read["data"]["billingStats"]["totalSpent"], "5.00", "{read}");
    assert_eq!(count(&app, "SELECT count(*) FROM payments").await, 1);
}

#[tokio::test]
async fn a_message_still_being_processed_is_409_over_rpc() {
    let app = TestApp::spawn().await;
    let id = app.create_user("Di", "di@example.com").await["id"].clone();
    app.until_broker(true).await;
    let mut raw = Raw::connect().await;
    let mut holder = app.db().await;
    let lock = user_core::store::ledger::lock_id("auth-service:held");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(lock)
        .execute(&mut holder)
        .await
        .unwrap();
    let params = json!({"id": id});
    let busy = call(&mut raw, &app, "held", "users.delete", params.clone()).await;
    assert_eq!(busy["status"], 409, "{busy}");
    assert_eq!(busy["error"]["code"], "CONFLICT");
    let exists = call(&mut raw, &app, "e", "users.exists", params.clone()).await;
    assert_eq!(exists["data"]["exists"], true, "nothing was done");
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(lock)
        .execute(&mut holder)
        .await
        .unwrap();
    let done = call(&mut raw, &app, "held", "users.delete", params).await;
    assert_eq!(done["status"], 204, "{done}");
}

/// The instance that took a request dies with it: the broker gives it to another, and that
/// one waits for the request key the dead one's transaction held, instead of answering 409
/// to a request nobody processes any more. Covers a single write and a (grouped) create.
#[tokio::test]
async fn a_redelivery_waits_for_the_key_its_first_delivery_held() {
    let app = TestApp::spawn().await;
    let id = app.create_user("Eve", "eve@example.com").await["id"].clone();
    app.until_broker(true).await;
    let mut raw = Raw::connect().await;
    // The lock a dying instance's transaction still holds.
    let mut holder = app.db().await;
    let locks: Vec<i64> = ["auth-service:gone-1", "auth-service:gone-2"]
        .iter()
        .map(|k| user_core::store::ledger::lock_id(k))
        .collect();
    sqlx::query("SELECT pg_advisory_lock(l) FROM UNNEST($1::bigint[]) AS t(l)")
        .bind(&locks)
        .execute(&mut holder)
        .await
        .unwrap();

    // The first instance: a consumer the broker prefers, which takes both and never answers.
    let first = lapin::Connection::connect(AMQP_URL, Default::default())
        .await
        .unwrap();
    let channel = first.create_channel().await.unwrap();
    channel
        .basic_qos(2, BasicQosOptions::default())
        .await
        .unwrap();
    let mut preferred = FieldTable::default();
    preferred.insert("x-priority".into(), AMQPValue::LongInt(10));
    let mut taken = channel
        .basic_consume(
            app.rpc_queue.as_str().into(),
            "first-instance".into(),
            BasicConsumeOptions::default(),
            preferred,
        )
        .await
        .unwrap();
    let requests = [
        (
            "gone-1",
            json!({"method": "users.delete", "params": {"id": id}}),
        ),
        (
            "gone-2",
            json!({"method": "users.create", "params": {"name": "New", "email": "new@example.com", "password": HASH}}),
        ),
    ];
    for (message_id, body) in &requests {
        let props = BasicProperties::default()
            .with_headers(table(&key(AUTH_KEY)))
            .with_message_id((*message_id).into())
            .with_correlation_id((*message_id).into())
            .with_reply_to("amq.rabbitmq.reply-to".into());
        raw.publish(&app.rpc_queue, body.to_string().as_bytes(), props)
            .await;
    }
    for _ in &requests {
        let delivery = tokio::time::timeout(Duration::from_secs(10), taken.next())
            .await
            .expect("the preferred consumer takes the request")
            .unwrap()
            .unwrap();
        assert!(!delivery.redelivered);
    }
    first.close(200, "killed".into()).await.unwrap();

    // The service has both again and waits, each in an open transaction, for its lock.
    eventually(Duration::from_secs(10), || async {
        let waiting = app
            .count(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND pid <> pg_backend_pid()
                    AND state = 'idle in transaction'
                    AND query LIKE '%pg_try_advisory_xact_lock%'",
            )
            .await;
        (waiting == 2).then_some(())
    })
    .await;
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut holder)
        .await
        .unwrap();

    let mut replies = raw.replies(2).await;
    replies.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(replies[0].1["status"], 204, "{:?}", replies[0]);
    assert_eq!(replies[1].1["status"], 201, "{:?}", replies[1]);
    let done = count(
        &app,
        "SELECT count(*) FROM applied_requests WHERE request_key LIKE 'auth-service:gone-%'",
    )
    .await;
    assert_eq!(done, 2, "each done once, its reply kept");
}
