//! Domain events through the outbox to a real RabbitMQ consumer bound to `user.*`.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, Consumer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{AMQP_URL, HASH, TestApp, bind_events_queue, redis_client, send};

mod dead;
mod outbox;

/// A consumer of everything the app publishes, as another service would bind it.
pub struct Events {
    _conn: Connection,
    consumer: Consumer,
}

impl Events {
    pub async fn bind(exchange: &str) -> Self {
        let conn = Connection::connect(AMQP_URL, Default::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let queue = bind_events_queue(&ch, exchange, None).await;
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let consumer = ch
            .basic_consume(queue.into(), "".into(), no_ack, FieldTable::default())
            .await
            .unwrap();
        Self {
            _conn: conn,
            consumer,
        }
    }

    /// The next event: (routing key, properties, body).
    pub async fn next(&mut self) -> (String, BasicProperties, Value) {
        let d = tokio::time::timeout(Duration::from_secs(15), self.consumer.next())
            .await
            .expect("an event within 15 s")
            .expect("consumer open")
            .expect("delivery");
        (
            d.routing_key.to_string(),
            d.properties.clone(),
            serde_json::from_slice(&d.data).unwrap(),
        )
    }

    async fn take(&mut self, n: usize) -> Vec<(String, BasicProperties, Value)> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next().await);
        }
        out
    }
}

fn exchange(app: &TestApp) -> String {
    format!("{}.events", app.db_name)
}

#[tokio::test]
async fn every_event_type_arrives_in_order_with_its_payload() {
    let app = TestApp::spawn().await;
    let mut events = Events::bind(&exchange(&app)).await;
    let corr = "req-456";
    let (status, user) = send(
        app.req(Method::POST, "/api/internal/users")
            .header("x-correlation-id", corr)
            .json(&json!({"name": "Eve", "email": "eve@example.com", "password": HASH})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = user["id"].as_str().unwrap().to_owned();
    let u = format!("/api/internal/users/{id}");
    let ok = |r: (StatusCode, Value)| assert!(r.0.is_success(), "{r:?}");
    ok(send(
        app.req(Method::PATCH, &format!("{u}/preferences"))
            .header("x-correlation-id", corr)
            .json(&json!({"language": "en", "gameSettings": {"autoDownload": true}})),
    )
    .await);
    ok(app
        .patch(&format!("{u}/preferences"), json!({"language": "en"}))
        .await); // no-op: no event
    ok(app
        .patch(
            &u,
            json!({"name": "Eve A.", "avatarUrl": "https://cdn.example.com/e.png"}),
        )
        .await);
    ok(app
        .patch(
            &format!("{u}/privacy-settings"),
            json!({"profileVisibility": "friends"}),
        )
        .await);
    ok(app
        .patch(&format!("{u}/billing-info"), json!({"currency": "USD"}))
        .await);
    ok(app
        .patch(
            &format!("{u}/last-login"),
            json!({"lastLoginAt": "2024-01-01T10:00:00.000Z", "ipAddress": "192.168.1.100"}),
        )
        .await);
    ok(app.delete(&u).await);

    let got = events.take(8).await;
    let keys: Vec<&str> = got.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "user.created",
            "user.preferences_changed",
            "user.updated",
            "user.profile_updated",
            "user.profile_updated",
            "user.updated",
            "user.logged_in",
            "user.deleted",
        ]
    );
    for (key, props, event) in &got {
        assert_eq!(event["userId"], id.as_str());
        assert_eq!(event["source"], "user-service");
        // Who made the change: the test's key is auth-service's.
        assert_eq!(
            (&event["actor"], &event["schemaVersion"]),
            (&json!("auth-service"), &json!(1))
        );
        assert!(event["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            props.message_id().as_ref().unwrap().as_str(),
            event["eventId"].as_str().unwrap()
        );
        assert_eq!(
            props.kind().as_ref().unwrap().as_str(),
            event["type"].as_str().unwrap()
        );
        assert_eq!(props.delivery_mode(), &Some(2), "persistent: {key}");
        assert_eq!(
            props.correlation_id().as_ref().unwrap().as_str(),
            event["correlationId"].as_str().unwrap()
        );
    }
    let data = |i: usize| got[i].2["data"].clone();
    assert_eq!(got[0].2["type"], "USER_CREATED");
    assert_eq!(got[0].2["correlationId"], corr);
    assert_eq!(data(0), json!({"name": "Eve", "email": "eve@example.com"}));
    assert_eq!(got[1].2["type"], "PREFERENCES_CHANGED");
    assert_eq!(got[1].2["correlationId"], corr);
    assert_eq!(
        data(1),
        json!({"changed": ["gameSettings.autoDownload", "language"],
               "previous": {"gameSettings": {"autoDownload": false}, "language": "ru"},
               "current": {"gameSettings": {"autoDownload": true}, "language": "en"}})
    );
    assert_eq!(
        serde_json::to_string(&data(1)).unwrap(),
        r#"{"changed":["gameSettings.autoDownload","language"],"previous":{"gameSettings":{"autoDownload":false},"language":"ru"},"current":{"gameSettings":{"autoDownload":true},"language":"en"}}"#,
        "published byte for byte as written, keys in order"
    );
    assert_eq!(
        (got[2].2["type"].clone(), data(2)["changed"].clone()),
        (json!("USER_UPDATED"), json!(["name"]))
    );
    assert_eq!(data(2)["previous"], json!({"name": "Eve"}));
    assert_eq!(
        (got[3].2["type"].clone(), data(3)["changed"].clone()),
        (json!("PROFILE_UPDATED"), json!(["avatarUrl"]))
    );
    assert_eq!(
        data(4)["changed"],
        json!(["privacySettings.profileVisibility"])
    );
    assert_eq!(
        data(4)["current"],
        json!({"privacySettings": {"profileVisibility": "friends"}})
    );
    assert_eq!(
        data(5),
        json!({"changed": ["billingInfo.currency", "billingInfo.paymentMethods"],
               "previous": {}, "current": {}}),
        "billing info created: paths only, no billing values"
    );
    assert_eq!(
        data(6),
        json!({"lastLoginAt": "2024-01-01T10:00:00.000Z", "ipAddress": "192.168.1.100"})
    );
    assert_eq!(
        (got[7].2["type"].clone(), data(7)),
        (json!("USER_DELETED"), json!({}))
    );
}

#[tokio::test]
async fn rejected_writes_publish_nothing() {
    let app = TestApp::spawn().await;
    let mut events = Events::bind(&exchange(&app)).await;
    let id = app.create_user("R", "r@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(events.next().await.0, "user.created");
    let u = format!("/api/internal/users/{id}");
    assert_eq!(
        app.patch(&format!("{u}/preferences"), json!({"theme": "neon"}))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.post(
            "/api/internal/users",
            json!({"name": "R", "email": "r@example.com", "password": HASH})
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
    assert_eq!(app.patch(&u, json!({})).await.0, StatusCode::OK);
    assert_eq!(app.patch(&u, json!({"name": "R2"})).await.0, StatusCode::OK);
    let (key, _, event) = events.next().await;
    assert_eq!(
        (key.as_str(), event["data"]["changed"].clone()),
        ("user.updated", json!(["name"])),
        "the next event is the real change"
    );
}

#[tokio::test]
async fn nestjs_envelope_wraps_each_event() {
    let app = TestApp::spawn_with(&[("EVENT_ENVELOPE", "nestjs")]).await;
    let mut events = Events::bind(&exchange(&app)).await;
    let id = app.create_user("N", "n@example.com").await["id"].clone();
    let (key, _, body) = events.next().await;
    assert_eq!(key, "user.created");
    assert_eq!(body["pattern"], "user.created");
    assert_eq!(body["data"]["type"], "USER_CREATED");
    assert_eq!(body["data"]["userId"], id);
    assert_eq!(
        body["data"]["data"],
        json!({"name": "N", "email": "n@example.com"})
    );
}

/// Two instances on one database and exchange, a consumer bound to it, and users `A`
/// (created through the first) and `B` (through the second).
async fn two_instances_and_two_users() -> (TestApp, TestApp, Events, String, String) {
    let first = TestApp::spawn().await;
    let exchange_name = exchange(&first);
    let second = first.twin(&[("EVENTS_EXCHANGE", &exchange_name)]).await;
    let events = Events::bind(&exchange_name).await;
    let a = first.create_user("A", "a@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = second.create_user("B", "b@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (first, second, events, a, b)
}

#[tokio::test]
async fn events_are_mirrored_on_redis() {
    let app = TestApp::spawn().await;
    let mut pubsub = redis_client().get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(format!("{}:events", app.db_name))
        .await
        .unwrap();
    let id = app.create_user("M", "m@example.com").await["id"].clone();
    let message = tokio::time::timeout(Duration::from_secs(15), pubsub.on_message().next())
        .await
        .expect("a message within 15 s")
        .expect("subscribed");
    let event: Value = serde_json::from_str(&message.get_payload::<String>().unwrap()).unwrap();
    assert_eq!(
        (event["type"].clone(), event["userId"].clone()),
        (json!("USER_CREATED"), id)
    );
}

/// A pool on the test's database.
async fn pool(app: &TestApp) -> sqlx::PgPool {
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", app.db_name);
    sqlx::PgPool::connect(&url).await.unwrap()
}

/// Tells the publisher that events are waiting, as a committed write does.
async fn wake_publisher(db: &sqlx::PgPool) {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(user_core::store::NOTIFY_CHANNEL)
        .execute(db)
        .await
        .unwrap();
}

/// An event over the publisher's bounds (here: metadata nested so deep that the event would
/// be deeper than 64 levels) fails its write, which changes nothing.
#[tokio::test]
async fn a_write_whose_event_is_over_the_bounds_changes_nothing() {
    let app = TestApp::spawn().await;
    let id = app.create_user("D", "d@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deep = (0..70).fold(json!(1), |inner, _| json!({ "k": inner }));
    let (status, body) = app
        .patch(
            &format!("/api/internal/users/{id}"),
            json!({"name": "D2", "metadata": deep}),
        )
        .await;
    crate::helpers::assert_error(status, &body, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let (_, user) = app.get(&format!("/api/internal/users/{id}")).await;
    assert_eq!(
        (user["name"].clone(), user["metadata"].clone()),
        (json!("D"), json!({}))
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox").await,
        1,
        "only USER_CREATED"
    );
    let shallow = (0..10).fold(json!(1), |inner, _| json!({ "k": inner }));
    let (status, _) = app
        .patch(
            &format!("/api/internal/users/{id}"),
            json!({"metadata": shallow}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}
