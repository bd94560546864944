//! Events that cannot be published are set aside as dead, each alone, holding nothing back:
//! one the broker keeps refusing (after its retries), corrupt outbox rows (at once).

use std::time::Duration;

use lapin::Connection;
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Events, exchange, pool, two_instances_and_two_users, wake_publisher};
use crate::helpers::{AMQP_URL, TestApp, eventually};

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
