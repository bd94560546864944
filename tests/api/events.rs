//! Domain events through the outbox to a real RabbitMQ consumer bound to `user.*`.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, Consumer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{AMQP_URL, HASH, TestApp, bind_events_queue, send};

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
        data(5)["changed"],
        json!(["billingInfo"]),
        "billing info created"
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

/// The service stops after committing and before publishing (here: it never reaches the
/// broker); a new instance on the same database delivers everything, in order.
#[tokio::test]
async fn events_committed_before_a_crash_are_delivered_by_the_next_instance() {
    let dead_broker = "amqp://guest:guest@127.0.0.1:1/%2f";
    let first = TestApp::spawn_with(&[("AMQP_URL", dead_broker)]).await;
    let id = first.create_user("C", "c@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for theme in ["dark", "light", "auto"] {
        let (status, _) = first
            .patch(
                &format!("/api/internal/users/{id}/preferences"),
                json!({"theme": theme}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let health = crate::helpers::eventually(Duration::from_secs(10), || async {
        let (_, h) = first.get("/health").await;
        (h["components"]["outbox"]["outboxPending"] == 4).then_some(h)
    })
    .await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(health["components"]["outbox"]["oldestPendingSeconds"].is_number());
    first.begin_stop();

    let db_url = format!("postgres://postgres@127.0.0.1:5432/{}", first.db_name);
    let exchange_name = exchange(&first);
    let mut events = Events::bind(&exchange_name).await;
    let second = TestApp::spawn_with(&[
        ("DATABASE_URL", &db_url),
        ("EVENTS_EXCHANGE", &exchange_name),
    ])
    .await;
    let got = events.take(4).await;
    let themes: Vec<Value> = got[1..]
        .iter()
        .map(|(_, _, e)| e["data"]["current"]["theme"].clone())
        .collect();
    assert_eq!(got[0].0, "user.created");
    assert_eq!(themes, [json!("dark"), json!("light"), json!("auto")]);
    crate::helpers::eventually(Duration::from_secs(10), || async {
        let (_, h) = second.get("/health").await;
        (h["components"]["outbox"]["outboxPending"] == 0).then_some(())
    })
    .await;
}

/// Writes go through two instances; one of them publishes, in commit order per user.
#[tokio::test]
async fn two_instances_keep_per_user_order() {
    let first = TestApp::spawn().await;
    let db_url = format!("postgres://postgres@127.0.0.1:5432/{}", first.db_name);
    let exchange_name = exchange(&first);
    let second = TestApp::spawn_with(&[
        ("DATABASE_URL", &db_url),
        ("EVENTS_EXCHANGE", &exchange_name),
    ])
    .await;
    let mut events = Events::bind(&exchange_name).await;
    let a = first.create_user("A", "a@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = second.create_user("B", "b@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..10 {
        let (via_a, via_b) = if i % 2 == 0 {
            (&first, &second)
        } else {
            (&second, &first)
        };
        let genre = format!("g{i}");
        let prefs = json!({"gameSettings": {"preferredGenres": [genre]}});
        let (path_a, path_b) = (
            format!("/api/internal/users/{a}/preferences"),
            format!("/api/internal/users/{b}/preferences"),
        );
        let (ra, rb) = tokio::join!(
            via_a.patch(&path_a, prefs.clone()),
            via_b.patch(&path_b, prefs.clone())
        );
        assert_eq!((ra.0, rb.0), (StatusCode::OK, StatusCode::OK));
    }
    let got = events.take(22).await;
    for user in [&a, &b] {
        let genres: Vec<String> = got
            .iter()
            .filter(|(k, _, e)| k == "user.preferences_changed" && e["userId"] == user.as_str())
            .map(|(_, _, e)| {
                e["data"]["current"]["gameSettings"]["preferredGenres"][0]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let expected: Vec<String> = (0..10).map(|i| format!("g{i}")).collect();
        assert_eq!(genres, expected, "per-user order for {user}");
    }
}

#[tokio::test]
async fn events_are_mirrored_on_redis() {
    use deadpool_redis::redis;
    let app = TestApp::spawn().await;
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
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

#[tokio::test]
async fn published_events_are_pruned_after_the_retention_window() {
    let app = TestApp::spawn().await;
    let mut events = Events::bind(&exchange(&app)).await;
    app.create_user("P", "p@example.com").await;
    events.next().await;
    let pool = sqlx::PgPool::connect(&format!(
        "postgres://postgres@127.0.0.1:5432/{}",
        app.db_name
    ))
    .await
    .unwrap();
    // Published (the consumer saw it), so only the window keeps it.
    crate::helpers::eventually(Duration::from_secs(10), || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
                .fetch_one(&pool)
                .await
                .unwrap();
        (n == 1).then_some(())
    })
    .await;
    user_core::publisher::prune(&pool, Duration::from_secs(3600))
        .await
        .unwrap();
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept, 1, "inside the window");
    sqlx::query("UPDATE outbox SET published_at = now() - interval '2 hours'")
        .execute(&pool)
        .await
        .unwrap();
    user_core::publisher::prune(&pool, Duration::from_secs(3600))
        .await
        .unwrap();
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept, 0, "pruned");
    pool.close().await;
}

/// An event the broker keeps refusing is parked as dead after its attempts; its user's later
/// events wait behind it, everyone else's flow on; once the cause is fixed and the event is
/// released, the held events follow in order.
#[tokio::test]
async fn a_refused_event_is_parked_without_blocking_other_users() {
    use lapin::options::QueueDeleteOptions;
    use lapin::types::AMQPValue;
    let app = TestApp::spawn().await;
    let exchange_name = exchange(&app);
    let mut events = Events::bind(&exchange_name).await;
    // A queue that refuses every login event: the broker nacks those publishes.
    let conn = Connection::connect(AMQP_URL, Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(0));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let refusing = format!("{}.refusing", app.db_name);
    ch.queue_declare(
        refusing.clone().into(),
        QueueDeclareOptions::default(),
        args,
    )
    .await
    .unwrap();
    ch.queue_bind(
        refusing.clone().into(),
        exchange_name.into(),
        "user.logged_in".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    let u = app.create_user("U", "u@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = app.create_user("V", "v@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.patch(
        &format!("/api/internal/users/{u}/last-login"),
        json!({"ipAddress": "10.0.0.1"}),
    )
    .await;
    app.patch(
        &format!("/api/internal/users/{u}/preferences"),
        json!({"theme": "dark"}),
    )
    .await;
    app.patch(
        &format!("/api/internal/users/{v}/preferences"),
        json!({"theme": "light"}),
    )
    .await;

    let health = crate::helpers::eventually(Duration::from_secs(30), || async {
        let (_, h) = app.get("/health").await;
        (h["components"]["outbox"]["deadEvents"] == 1).then_some(h)
    })
    .await;
    assert_eq!(health["status"], "degraded");
    assert_eq!(
        health["components"]["outbox"]["outboxPending"], 2,
        "the dead login and U's later event"
    );
    // V's change went through; U's preference change has not.
    let mut seen = Vec::new();
    while let Ok(Some(Ok(d))) =
        tokio::time::timeout(Duration::from_millis(300), events.consumer.next()).await
    {
        let e: Value = serde_json::from_slice(&d.data).unwrap();
        seen.push((
            e["type"].as_str().unwrap().to_owned(),
            e["userId"].as_str().unwrap().to_owned(),
        ));
    }
    assert!(
        seen.contains(&("PREFERENCES_CHANGED".to_owned(), v.clone())),
        "{seen:?}"
    );
    // U's change waits behind the refused login (at most one early copy, when both went out
    // in the same batch before the refusal was known).
    let early = seen
        .iter()
        .filter(|(t, id)| t == "PREFERENCES_CHANGED" && *id == u)
        .count();
    assert!(early <= 1, "{seen:?}");

    // Fix the cause, release the dead event: U's events follow, in order.
    ch.queue_delete(refusing.into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let mut db = app.db().await;
    sqlx::query("UPDATE outbox SET dead_at = NULL, attempts = 0 WHERE dead_at IS NOT NULL")
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("NOTIFY user_service_outbox")
        .execute(&mut db)
        .await
        .unwrap();
    let mut after = Vec::new();
    while after.last().map(String::as_str) != Some("PREFERENCES_CHANGED") {
        let (_, _, e) = events.next().await;
        if e["userId"] == u.as_str() {
            after.push(e["type"].as_str().unwrap().to_owned());
        }
    }
    assert!(
        after.ends_with(&[
            "USER_LOGGED_IN".to_owned(),
            "PREFERENCES_CHANGED".to_owned()
        ]),
        "{after:?}"
    );
    crate::helpers::eventually(Duration::from_secs(10), || async {
        let (_, h) = app.get("/health").await;
        (h["components"]["outbox"]["outboxPending"] == 0).then_some(())
    })
    .await;
}
