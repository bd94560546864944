//! Domain events through the outbox to a real RabbitMQ consumer bound to `user.*`.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, Consumer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{AMQP_URL, HASH, TestApp, bind_events_queue, eventually, send};

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

    let exchange_name = exchange(&first);
    let mut events = Events::bind(&exchange_name).await;
    let second = first.twin(&[("EVENTS_EXCHANGE", &exchange_name)]).await;
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

/// Writes go through two instances; one of them publishes, in commit order per user.
#[tokio::test]
async fn two_instances_keep_per_user_order() {
    let (first, second, mut events, a, b) = two_instances_and_two_users().await;
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

/// The publishing instance vacuums the outbox as it goes: each published event leaves a dead
/// entry in the pending-events index, which every poll would otherwise read through.
#[tokio::test]
async fn the_publisher_vacuums_the_outbox_as_it_publishes() {
    let app = TestApp::spawn().await;
    let db = pool(&app).await;
    let vacuums = || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'outbox'",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        n
    };
    assert_eq!(vacuums().await, 0);
    sqlx::query(
        "INSERT INTO outbox (event_id, user_id, event_type, routing_key, payload)
         SELECT e, u, 'USER_UPDATED', 'user.updated',
                json_build_object('eventId', e, 'type', 'USER_UPDATED', 'userId', u,
                                  'timestamp', '2024-01-01T00:00:00.000Z', 'correlationId', 'c',
                                  'source', 'user-service',
                                  'data', json_build_object('changed', '[]'::json))
           FROM (SELECT gen_random_uuid() AS e, gen_random_uuid() AS u
                   FROM generate_series(1, 5000)) g",
    )
    .execute(&db)
    .await
    .unwrap();
    wake_publisher(&db).await;
    // 5,000 events to publish and confirm first: beside the cluster test in CI that once
    // took longer than 30 s.
    eventually(Duration::from_secs(90), || async {
        (vacuums().await > 0).then_some(())
    })
    .await;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(pending, 0, "all published, none set aside");
}

/// An event the broker keeps refusing is retried, each time after a longer wait; meanwhile its
/// user's later events wait and everyone else's flow on. After its attempts it is dead, set
/// aside for itself alone: its user's later events follow. Released by an operator once the
/// cause is fixed, it is delivered.
#[tokio::test]
async fn a_refused_event_is_retried_then_set_aside_without_holding_anything() {
    use lapin::options::QueueDeleteOptions;
    use lapin::types::AMQPValue;
    // Production's schedule, shortened: 20 ms doubling to 200 ms spends 1.3 s where 100 ms
    // to 10 s spends half a minute; the refusals and their order are the same.
    let app = TestApp::spawn_with(&[
        ("EVENT_RETRY_FIRST_MS", "20"),
        ("EVENT_RETRY_MAX_MS", "200"),
    ])
    .await;
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
    let ok = |r: (StatusCode, Value)| assert_eq!(r.0, StatusCode::OK, "{r:?}");
    ok(app
        .patch(
            &format!("/api/internal/users/{u}/last-login"),
            json!({"ipAddress": "10.0.0.1"}),
        )
        .await);
    ok(app
        .patch(
            &format!("/api/internal/users/{u}/preferences"),
            json!({"theme": "dark"}),
        )
        .await);
    ok(app
        .patch(
            &format!("/api/internal/users/{v}/preferences"),
            json!({"theme": "light"}),
        )
        .await);

    // While the login is retried, V's change goes through...
    loop {
        let (key, _, e) = events.next().await;
        if key == "user.preferences_changed" && e["userId"] == v.as_str() {
            break;
        }
    }
    let db = pool(&app).await;
    let state = |what: &str| {
        format!(
            "SELECT {what} FROM outbox l, outbox p
              WHERE l.user_id = '{u}' AND l.event_type = 'USER_LOGGED_IN'
                AND p.user_id = '{u}' AND p.event_type = 'PREFERENCES_CHANGED'"
        )
    };
    // ... and U's waits behind it (read in one snapshot).
    let sql = state(
        "l.attempts, l.dead_at IS NULL, l.next_attempt_at IS NOT NULL, p.published_at IS NULL",
    );
    let retried = eventually(Duration::from_secs(20), || async {
        let r: (i32, bool, bool, bool) = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_one(&db)
            .await
            .unwrap();
        (r.0 >= 2 && r.1).then_some(r)
    })
    .await;
    assert_eq!(
        retried,
        (retried.0, true, true, true),
        "refused at least twice, waiting for its next attempt, U's later event held"
    );

    // After its attempts the login is dead, and holds nothing: U's change is published.
    let health = eventually(Duration::from_secs(60), || async {
        let (_, h) = app.get("/health").await;
        let o = &h["components"]["outbox"];
        (o["deadEvents"] == 1 && o["outboxPending"] == 0).then_some(h)
    })
    .await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["components"]["outbox"]["retryingEvents"], 0);
    let sql =
        state("l.attempts, l.last_error, l.next_attempt_at IS NULL, p.published_at >= l.dead_at");
    let dead: (i32, String, bool, bool) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(
        dead,
        (
            user_core::publisher::MAX_ATTEMPTS,
            "refused by the broker".to_owned(),
            true,
            true
        ),
        "U's change was published only once the login was dead"
    );
    assert!(
        dead_counter(&app, "refused").await >= 1,
        "counted in user_service_events_dead_total"
    );

    // Fix the cause, release the dead event: it is delivered.
    ch.queue_delete(refusing.into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    sqlx::query(
        "UPDATE outbox SET dead_at = NULL, attempts = 0, next_attempt_at = NULL
          WHERE dead_at IS NOT NULL",
    )
    .execute(&db)
    .await
    .unwrap();
    wake_publisher(&db).await;
    eventually(Duration::from_secs(10), || async {
        let (_, h) = app.get("/health").await;
        let o = &h["components"]["outbox"];
        (o["outboxPending"] == 0 && o["deadEvents"] == 0).then_some(())
    })
    .await;
    let sql = state("l.published_at IS NOT NULL");
    let published: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(published, "the released login is published");
}

/// A pool on the test's database.
async fn pool(app: &TestApp) -> sqlx::PgPool {
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", app.db_name);
    sqlx::PgPool::connect(&url).await.unwrap()
}

/// `user_service_events_dead_total{reason}` as `/metrics` shows it (one recorder per test
/// process, so other tests may add to it).
async fn dead_counter(app: &TestApp, reason: &str) -> u64 {
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    let text = response.text().await.unwrap();
    let series = format!("user_service_events_dead_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Tells the publisher that events are waiting, as a committed write does.
async fn wake_publisher(db: &sqlx::PgPool) {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(user_core::store::NOTIFY_CHANNEL)
        .execute(db)
        .await
        .unwrap();
}

/// Writes an outbox row directly, as a bug or a hand edit could; returns its event id.
async fn insert_raw(db: &sqlx::PgPool, user: &str, key: &str, payload: &str) -> String {
    let event_id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO outbox (event_id, user_id, event_type, routing_key, payload)
         VALUES ($1, $2::uuid, 'USER_UPDATED', $3, $4::json)",
    )
    .bind(event_id)
    .bind(user)
    .bind(key)
    .bind(payload)
    .execute(db)
    .await
    .unwrap();
    wake_publisher(db).await;
    event_id.to_string()
}

/// A well-formed event body for `user`, with `corr` as its correlation id.
fn raw_event(user: &str, corr: &str) -> String {
    json!({"eventId": uuid::Uuid::now_v7(), "type": "USER_UPDATED", "userId": user,
           "timestamp": "2024-01-01T00:00:00.000Z", "correlationId": corr,
           "source": "user-service", "data": {"changed": [], "previous": {}, "current": {}}})
    .to_string()
}

/// The outbox rows set aside as dead: (event id, attempts, reason), in outbox order.
async fn dead_rows(db: &sqlx::PgPool) -> Vec<(String, i32, String)> {
    sqlx::query_as(
        "SELECT event_id::text, attempts, last_error FROM outbox
          WHERE dead_at IS NOT NULL ORDER BY id",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

/// Waits for the next PREFERENCES_CHANGED of `user` and returns its body; no event in
/// `never` may arrive meanwhile.
async fn next_change_of(events: &mut Events, user: &str, never: &[String]) -> Value {
    loop {
        let (key, _, e) = events.next().await;
        let id = e["eventId"].as_str().unwrap_or_default().to_owned();
        assert!(!never.contains(&id), "a corrupt event was published: {e}");
        if key == "user.preferences_changed" && e["userId"] == user {
            return e;
        }
    }
}

/// Corrupt rows in the outbox (a correlation id of 1000 characters, a routing key of 300,
/// a payload that is a JSON array) are each set aside as dead with the reason, at once;
/// events written after them, of their user and of others, arrive. The same after the
/// publishing instance stops and the other one takes over.
#[tokio::test]
async fn corrupt_events_are_set_aside_alone_also_after_a_leader_change() {
    let (first, second, mut events, a, b) = two_instances_and_two_users().await;
    let created = events.take(2).await;
    assert!(created.iter().all(|(k, _, _)| k == "user.created"));

    let db = pool(&first).await;
    let long_key = format!("user.{}", "x".repeat(295));
    let mut corrupt = vec![
        insert_raw(&db, &a, "user.updated", &raw_event(&a, &"c".repeat(1000))).await,
        insert_raw(&db, &a, &long_key, &raw_event(&a, "req-1")).await,
        insert_raw(&db, &b, "user.updated", "[1, 2, 3]").await,
    ];
    let prefs = |user: &str, theme: &str| {
        (
            format!("/api/internal/users/{user}/preferences"),
            json!({ "theme": theme }),
        )
    };
    let (path, body) = prefs(&a, "dark");
    assert_eq!(first.patch(&path, body).await.0, StatusCode::OK);
    let (path, body) = prefs(&b, "dark");
    assert_eq!(second.patch(&path, body).await.0, StatusCode::OK);

    // The later events of both users arrive (the corrupt ones never do)...
    for user in [&a, &b] {
        let e = next_change_of(&mut events, user, &corrupt).await;
        assert_eq!(e["data"]["current"]["theme"], "dark");
    }
    // ... and each corrupt row is dead at once, with its reason.
    let dead = eventually(Duration::from_secs(10), || async {
        let rows = dead_rows(&db).await;
        (rows.len() == 3).then_some(rows)
    })
    .await;
    let ids: Vec<String> = dead.iter().map(|r| r.0.clone()).collect();
    assert_eq!(ids, corrupt);
    for ((_, attempts, reason), expected) in dead.iter().zip([
        "correlationId must be 1–128 printable ASCII characters",
        "routing key (300 bytes) is not `user.<word>`",
        "not a JSON object",
    ]) {
        assert_eq!(*attempts, 0, "never retried: {reason}");
        assert!(reason.starts_with("cannot be encoded: "), "{reason}");
        assert!(reason.contains(expected), "{reason}");
    }
    for app in [&first, &second] {
        eventually(Duration::from_secs(10), || async {
            let (_, h) = app.get("/health").await;
            let o = &h["components"]["outbox"];
            (o["deadEvents"] == 3 && o["outboxPending"] == 0 && o["status"] == "degraded")
                .then_some(())
        })
        .await;
    }

    // The publishing instance stops; the other one takes over.
    let leader = eventually(Duration::from_secs(10), || async {
        for (i, app) in [&first, &second].into_iter().enumerate() {
            let (_, h) = app.get("/health").await;
            let p = &h["components"]["eventPublishing"];
            let publishing = p["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("publishing via "));
            if p["status"] == "up" && publishing {
                return Some(i);
            }
        }
        None
    })
    .await;
    let (stopping, survivor) = if leader == 0 {
        (&first, &second)
    } else {
        (&second, &first)
    };
    assert!(
        dead_counter(stopping, "unencodable").await >= 3,
        "counted in user_service_events_dead_total"
    );
    stopping.begin_stop();
    eventually(Duration::from_secs(15), || async {
        stopping.has_stopped().then_some(())
    })
    .await;
    corrupt.push(insert_raw(&db, &b, "user.updated", &raw_event(&b, "has space")).await);
    let (path, body) = prefs(&b, "light");
    assert_eq!(survivor.patch(&path, body).await.0, StatusCode::OK);
    let e = next_change_of(&mut events, &b, &corrupt).await;
    assert_eq!(
        e["data"]["current"]["theme"], "light",
        "through the survivor"
    );
    let dead = eventually(Duration::from_secs(10), || async {
        let rows = dead_rows(&db).await;
        (rows.len() == 4).then_some(rows)
    })
    .await;
    assert_eq!(dead[3].0, corrupt[3]);
    assert!(dead[3].2.contains("correlationId"), "{:?}", dead[3]);
    eventually(Duration::from_secs(10), || async {
        let (_, h) = survivor.get("/health").await;
        (h["components"]["outbox"]["deadEvents"] == 4).then_some(())
    })
    .await;
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
