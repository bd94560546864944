//! Deliveries over time: a burst settled once each, an expired request not carried out,
//! redeliveries answered as the first delivery was, two instances competing for one queue.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::BasicProperties;
use reqwest::StatusCode;
use serde_json::json;

use crate::amqp::{Raw, dead_letters, key, table};
use crate::helpers::{AUTH_KEY, HASH, TestApp, eventually};

/// Acks are gathered into `multiple` acks where they can be: a burst of requests, some
/// answered and some dead-lettered in between, must each be settled exactly once.
#[tokio::test]
async fn a_burst_of_requests_is_settled_once_each() {
    let app = TestApp::spawn().await;
    app.until_broker(true).await;
    let mut raw = Raw::connect().await;
    let q = app.rpc_queue.clone();
    let (answered, dead) = (150, 50);
    let exists = json!({"method": "users.exists", "params": {"id": uuid::Uuid::new_v4()}});
    let bad = json!({"method": "users.get", "params": {"id": "nope"}});
    for i in 0..answered + dead {
        let props = BasicProperties::default().with_headers(table(&key(AUTH_KEY)));
        match i % 4 == 3 {
            true => raw.publish(&q, bad.to_string().as_bytes(), props).await,
            false => {
                let props = props
                    .with_reply_to("amq.rabbitmq.reply-to".into())
                    .with_correlation_id(format!("burst-{i}").into());
                raw.publish(&q, exists.to_string().as_bytes(), props).await;
            }
        }
    }
    let replies = raw.replies(answered).await;
    let ids: HashSet<&str> = replies.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), answered, "each request answered once");
    assert!(
        replies.iter().all(|(_, r)| r["status"] == 200),
        "{replies:?}"
    );

    let dlq = format!("{q}.dlq");
    let mut lettered = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lettered < dead && std::time::Instant::now() < deadline {
        lettered += dead_letters(&raw.channel, &dlq).await.len();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(lettered, dead, "each failure dead-lettered once");

    // Once the service has stopped, whatever it left unacked would be back in the queue.
    app.begin_stop();
    eventually(Duration::from_secs(10), || async {
        app.has_stopped().then_some(())
    })
    .await;
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    for queue in [q, dlq] {
        let declared = raw
            .channel
            .queue_declare(queue.as_str().into(), passive, Default::default())
            .await
            .unwrap();
        assert_eq!(declared.message_count(), 0, "nothing left in {queue}");
    }
}

#[tokio::test]
async fn an_expired_request_is_not_carried_out() {
    let app = TestApp::spawn().await;
    app.until_broker(true).await;
    let mut raw = Raw::connect().await;
    let q = app.rpc_queue.clone();
    let a_minute_ago = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    let create = json!({"method": "users.create", "params": {"name": "Late", "email": "late@example.com", "password": HASH}});
    let stale = BasicProperties::default()
        .with_headers(table(&key(AUTH_KEY)))
        .with_timestamp(a_minute_ago)
        .with_expiration("30000".into());
    raw.publish(&q, create.to_string().as_bytes(), stale).await;
    // A later request's answer means the stale one was taken off the queue first.
    let after = raw
        .call_json(
            &q,
            json!({"method": "users.exists", "params": {"id": uuid::Uuid::new_v4()}}),
            &key(AUTH_KEY),
        )
        .await;
    assert_eq!(after["status"], 200);
    let (status, _) = app.get("/api/internal/users/email/late@example.com").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "expired work is not done");
    assert!(
        dead_letters(&raw.channel, &format!("{q}.dlq"))
            .await
            .is_empty(),
        "nor dead-lettered"
    );

    // A fresh request with an expiration is served.
    let fresh = BasicProperties::default()
        .with_headers(table(&key(AUTH_KEY)))
        .with_expiration("5000".into());
    let (_, reply) = raw.call(&q, create.to_string().as_bytes(), fresh).await;
    assert_eq!(reply["status"], 201);
}

#[tokio::test]
async fn a_redelivered_create_answers_with_the_user_it_created() {
    let app = TestApp::spawn().await;
    app.until_broker(true).await;
    let mut raw = Raw::connect().await;
    let q = app.rpc_queue.clone();
    let create = json!({"method": "users.create", "params": {"name": "Twice", "email": "twice@example.com", "password": HASH}});
    let props = || {
        BasicProperties::default()
            .with_headers(table(&key(AUTH_KEY)))
            .with_message_id("msg-42".into())
    };
    let (_, first) = raw.call(&q, create.to_string().as_bytes(), props()).await;
    let (_, again) = raw.call(&q, create.to_string().as_bytes(), props()).await;
    assert_eq!(first["status"], 201);
    assert_eq!(
        again, first,
        "the same answer, not a 409 and not a second user"
    );
    let other = BasicProperties::default()
        .with_headers(table(&key(AUTH_KEY)))
        .with_message_id("msg-43".into());
    let (_, different) = raw.call(&q, create.to_string().as_bytes(), other).await;
    assert_eq!(
        different["error"]["code"], "EMAIL_TAKEN",
        "another request for the same email is a conflict"
    );
    let events = app
        .count("SELECT count(*) FROM outbox WHERE event_type = 'USER_CREATED'")
        .await;
    assert_eq!(events, 1, "one user, one event");
}

#[tokio::test]
async fn a_redelivered_delete_or_login_answers_as_the_first_delivery_did() {
    let app = TestApp::spawn().await;
    let id = app.create_user("Again", "again@example.com").await["id"].clone();
    app.until_broker(true).await;
    let mut raw = Raw::connect().await;
    let q = app.rpc_queue.clone();
    let props = |message_id: &str| {
        BasicProperties::default()
            .with_headers(table(&key(AUTH_KEY)))
            .with_message_id(message_id.into())
    };
    let login =
        json!({"method": "users.recordLogin", "params": {"id": id, "ipAddress": "10.0.0.1"}});
    let login = login.to_string();
    let (_, first) = raw.call(&q, login.as_bytes(), props("login-1")).await;
    let (_, again) = raw.call(&q, login.as_bytes(), props("login-1")).await;
    assert_eq!(first["status"], 200);
    assert_eq!(again, first, "the same login, recorded once");
    let (_, next) = raw.call(&q, login.as_bytes(), props("login-2")).await;
    assert_eq!(next["status"], 200, "another request is another login");

    let delete = json!({"method": "users.delete", "params": {"id": id}}).to_string();
    let (_, first) = raw.call(&q, delete.as_bytes(), props("delete-1")).await;
    let (_, again) = raw.call(&q, delete.as_bytes(), props("delete-1")).await;
    assert_eq!(
        (first["status"].clone(), again["status"].clone()),
        (json!(204), json!(204))
    );
    let (_, other) = raw.call(&q, delete.as_bytes(), props("delete-2")).await;
    assert_eq!(other["status"], 404, "another delete finds no user");

    let mut db = app.db().await;
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM outbox WHERE event_type IN ('USER_LOGGED_IN', 'USER_DELETED') ORDER BY id",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(events, ["USER_LOGGED_IN", "USER_LOGGED_IN", "USER_DELETED"]);
}

#[tokio::test]
async fn two_instances_share_the_queue() {
    let first = TestApp::spawn().await;
    let db_url = format!("postgres://postgres@127.0.0.1:5432/{}", first.db_name);
    let second =
        TestApp::spawn_with(&[("DATABASE_URL", &db_url), ("RPC_QUEUE", &first.rpc_queue)]).await;
    first.until_broker(true).await;
    second.until_broker(true).await;
    let mut raw = Raw::connect().await;
    let mut served_by = HashSet::new();
    for _ in 0..20 {
        let body =
            json!({"method": "users.exists", "params": {"id": uuid::Uuid::new_v4()}}).to_string();
        let props = BasicProperties::default().with_headers(table(&key(AUTH_KEY)));
        let (reply_props, reply) = raw.call(&first.rpc_queue, body.as_bytes(), props).await;
        assert_eq!(reply["status"], 200);
        served_by.insert(
            reply_props
                .app_id()
                .as_ref()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default(),
        );
    }
    assert_eq!(served_by.len(), 2, "both instances answered: {served_by:?}");
}
