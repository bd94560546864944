//! users.erase and users.export: a user's personal data destroyed everywhere the service
//! keeps it, and everything held about a user given out, to the callers allowed.

use std::time::Duration;

use deadpool_redis::redis::AsyncCommands;
use lapin::options::BasicGetOptions;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::amqp::{Raw, key, table};
use crate::helpers::{AUTH_KEY, CATALOG_KEY, TestApp, assert_error, eventually, redis, send};

const USERS: &str = "/api/internal/users";
const NAME: &str = "Ermintrude Zabriskie";
const IP: &str = "203.0.113.77";
const TAX_ID: &str = "7707083893";
const ADDRESS: &str = "Moscow, Tverskaya 13";

/// A user with everything a user can hold: a keyed create, a keyed update, a login from
/// `IP`, billing values, a payment, and a batch create that collided with its e-mail (whose
/// reply names the address). Answers its id.
async fn a_user_with_everything(app: &TestApp, email: &str) -> String {
    let keyed = |method: Method, path: &str, key: &str, body: Value| {
        send(
            app.req(method, path)
                .header("idempotency-key", key)
                .json(&body),
        )
    };
    let (status, user) = keyed(
        Method::POST,
        USERS,
        "create-1",
        json!({"name": NAME, "email": email, "password": crate::helpers::HASH}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let id = user["id"].as_str().unwrap().to_owned();
    let path = format!("{USERS}/{id}");
    let writes = [
        (
            Method::PATCH,
            path.clone(),
            json!({"metadata": {"motto": NAME}}),
        ),
        (
            Method::PATCH,
            format!("{path}/last-login"),
            json!({"ipAddress": IP}),
        ),
        (
            Method::PATCH,
            format!("{path}/billing-info"),
            json!({"taxId": TAX_ID, "billingAddress": ADDRESS, "currency": "RUB"}),
        ),
        (
            Method::POST,
            format!("{path}/billing-stats"),
            json!({"paymentId": format!("pay-{id}"), "amount": "199.99"}),
        ),
        (
            Method::POST,
            "/api/batch/users/create".to_owned(),
            json!({"users": [{"name": "Other", "email": email, "password": crate::helpers::HASH}]}),
        ),
    ];
    for (i, (method, path, body)) in writes.into_iter().enumerate() {
        let (status, answer) = keyed(method, &path, &format!("write-{i}"), body).await;
        assert!(status.is_success(), "{path}: {status} {answer}");
    }
    // Cached in Redis, too.
    assert_eq!(app.get(&path).await.0, StatusCode::OK);
    id
}

/// Every row of every table of the test's database, as text.
async fn every_row(app: &TestApp) -> String {
    let mut db = app.db().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert!(tables.len() >= 4, "{tables:?}");
    let mut all = String::new();
    for t in tables {
        let sql = format!("SELECT coalesce(string_agg(t::text, '\n'), '') FROM \"{t}\" t");
        let rows: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut db)
            .await
            .unwrap();
        all.push_str(&rows);
    }
    all
}

/// Every key of the test's Redis prefix, with its value.
async fn every_redis_entry(prefix: &str) -> String {
    let mut r = redis().await;
    let keys: Vec<String> = r.keys(format!("{prefix}:*")).await.unwrap();
    let mut all = String::new();
    for k in keys {
        let value: Option<String> = r.get(&k).await.unwrap_or(None);
        all.push_str(&format!("{k} {}\n", value.unwrap_or_default()));
    }
    all
}

#[tokio::test]
async fn an_erase_leaves_no_personal_data_in_postgres_redis_or_the_service_queues() {
    let app = TestApp::spawn().await;
    app.until_broker(true).await;
    let email = format!(
        "erase-{}@example.com",
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let id = a_user_with_everything(&app, &email).await;
    let path = format!("{USERS}/{id}");
    let secrets = [email.as_str(), NAME, IP, TAX_ID, ADDRESS];
    let before = every_row(&app).await;
    assert!(
        before.contains(&email) && before.contains(IP),
        "the data was there"
    );

    // A request the service cannot answer (no reply-to) names the user: it waits in the
    // dead-letter queue, out of the service's reach, and expires there.
    let raw = Raw::connect().await;
    let unanswerable = json!({"method": "users.getByEmail", "params": {"email": email, "x": 1}});
    let props = lapin::BasicProperties::default().with_headers(table(&key(AUTH_KEY)));
    raw.publish(&app.rpc_queue, unanswerable.to_string().as_bytes(), props)
        .await;
    let dlq = format!("{}.dlq", app.rpc_queue);
    let letter = eventually(Duration::from_secs(10), || async {
        raw.channel
            .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
    })
    .await;
    let week_ms = (7 * 24 * 3600 * 1000).to_string();
    assert_eq!(
        letter
            .delivery
            .properties
            .expiration()
            .as_ref()
            .map(|e| e.as_str()),
        Some(week_ms.as_str()),
        "a dead letter expires after DEAD_LETTER_TTL_HOURS"
    );

    let erase = format!("{path}/erase");
    for _ in 0..2 {
        let (status, body) = app.post(&erase, json!({})).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let erased = "SELECT count(*) FROM outbox WHERE event_type = 'USER_ERASED'";
    assert_eq!(
        app.count(erased).await,
        1,
        "one event, however many erasures"
    );
    let after = every_row(&app).await;
    for secret in secrets {
        assert!(
            !after.contains(secret),
            "{secret} is still in PostgreSQL:\n{after}"
        );
    }
    let cached = every_redis_entry(&app.db_name).await;
    for secret in secrets {
        assert!(
            !cached.contains(secret),
            "{secret} is still in Redis:\n{cached}"
        );
    }
    for queue in [app.rpc_queue.as_str(), dlq.as_str()] {
        let left = raw
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        assert!(left.is_none(), "{queue} holds a message");
    }

    // What accounting needs stays: the payment and the totals, under the id.
    let mut db = app.db().await;
    let (payments, total): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM payments WHERE user_id = u.id), u.total_spent_minor
           FROM users u WHERE u.id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!((payments, total), (1, 19999));
    // The event is the user's only one, and says nothing personal.
    let events: Vec<(String, Value)> =
        sqlx::query_as("SELECT routing_key, payload::jsonb FROM outbox WHERE user_id = $1::uuid")
            .bind(&id)
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "user.erased");
    assert_eq!(events[0].1["data"], json!({}));

    // Gone for every operation; its e-mail is free; it cannot come back.
    assert_eq!(app.get(&path).await.0, StatusCode::NOT_FOUND);
    let erased_answer = |(status, err): (StatusCode, Value)| {
        assert_error(status, &err, StatusCode::NOT_FOUND, "USER_NOT_FOUND");
        let message = err["message"].as_str().unwrap_or_default();
        assert!(message.contains(&id) && message.contains("erased"), "{err}");
    };
    erased_answer(app.post(&format!("{path}/restore"), json!({})).await);
    // A keyed write delivered again does not write the user back.
    let again = app
        .req(Method::PATCH, &path)
        .header("idempotency-key", "write-0")
        .json(&json!({"metadata": {"motto": NAME}}));
    erased_answer(send(again).await);
    app.create_user("Someone Else", &email).await;
    // A listing shows the erased user as its id and dates, so that copies drop it.
    let (status, page) = app.get(&format!("{USERS}?deleted=deleted")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let listed = &page["data"][0];
    assert_eq!(listed["id"], id.as_str());
    assert!(
        listed["erasedAt"].is_string() && listed["deletedAt"].is_string(),
        "{listed}"
    );
    assert_eq!(listed.as_object().unwrap().len(), 5, "{listed}");
}

#[tokio::test]
async fn a_deleted_user_is_erased_over_rpc_and_an_unknown_one_is_not_found() {
    let app = TestApp::spawn().await;
    let id = app.create_user("Gone Soon", "gone@example.com").await["id"].clone();
    let uuid: Uuid = id.as_str().unwrap().parse().unwrap();
    let client = app.rpc().await;
    client.delete(uuid).await.unwrap();
    client.erase(uuid).await.unwrap();
    client.erase(uuid).await.unwrap();
    let stored: (String, String, bool) =
        sqlx::query_as("SELECT email, name, erased_at IS NOT NULL FROM users WHERE id = $1")
            .bind(uuid)
            .fetch_one(&mut app.db().await)
            .await
            .unwrap();
    assert_eq!(stored, (String::new(), String::new(), true));
    let unknown = client.erase(Uuid::new_v4()).await.unwrap_err();
    assert!(unknown.is_not_found(), "{unknown:?}");
    let (status, err) = app.post(&format!("{USERS}/nope/erase"), json!({})).await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
}

#[tokio::test]
async fn users_deleted_long_ago_are_erased_in_the_background_when_configured() {
    let app = TestApp::spawn().await;
    let old = app.create_user("Old", "old@example.com").await["id"].clone();
    let recent = app.create_user("Recent", "recent@example.com").await["id"].clone();
    for id in [&old, &recent] {
        let path = format!("{USERS}/{}", id.as_str().unwrap());
        assert_eq!(app.delete(&path).await.0, StatusCode::NO_CONTENT);
    }
    sqlx::query("UPDATE users SET deleted_at = now() - interval '3 days' WHERE id = $1::uuid")
        .bind(old.as_str().unwrap())
        .execute(&mut app.db().await)
        .await
        .unwrap();
    let _erasing = app.twin(&[("ERASE_DELETED_AFTER_DAYS", "2")]).await;
    let erased = "SELECT count(*) FROM users WHERE erased_at IS NOT NULL";
    eventually(Duration::from_secs(20), || async {
        (app.count(erased).await == 1).then_some(())
    })
    .await;
    let name: String = sqlx::query_scalar("SELECT name FROM users WHERE erased_at IS NOT NULL")
        .fetch_one(&mut app.db().await)
        .await
        .unwrap();
    assert_eq!(name, "", "the old one, not the recent one");
}

#[tokio::test]
async fn an_export_holds_everything_and_only_allowed_callers_get_it() {
    let app = TestApp::spawn_with(&[
        (
            "INTERNAL_API_KEYS",
            &format!("auth-service={AUTH_KEY},game-catalog={CATALOG_KEY},support-desk=support-key-0123456789"),
        ),
        ("EXPORT_READERS", "support-desk"),
    ])
    .await;
    let id = a_user_with_everything(&app, "exported@example.com").await;
    let path = format!("{USERS}/{id}/export");

    let (status, doc) = app.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let user = &doc["user"];
    assert_eq!(user["email"], "exported@example.com");
    assert_eq!(user["lastLoginIp"], IP);
    assert_eq!(user["billingInfo"]["taxId"], TAX_ID, "opened");
    assert_eq!(user["billingStats"]["totalSpent"], "199.99");
    assert_eq!(doc["payments"][0]["paymentId"], format!("pay-{id}"));
    assert_eq!(doc["payments"][0]["amount"], "199.99");
    assert_eq!(doc["deletedAt"], Value::Null);
    assert!(doc.get("passwordHash").is_none() && user.get("passwordHash").is_none());

    let support = send(
        app.client
            .get(app.url(&path))
            .header("x-api-key", "support-key-0123456789"),
    )
    .await;
    assert_eq!(support.0, StatusCode::OK, "an EXPORT_READERS caller");
    let catalog = send(
        app.client
            .get(app.url(&path))
            .header("x-api-key", CATALOG_KEY),
    )
    .await;
    assert_error(catalog.0, &catalog.1, StatusCode::FORBIDDEN, "FORBIDDEN");
    let claimed = send(
        app.client
            .get(app.url(&path))
            .header("x-internal-service", crate::helpers::SECRET)
            .header("x-service-name", "support-desk"),
    )
    .await;
    assert!(
        matches!(claimed.0, StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED),
        "a name claimed with the secret: {claimed:?}"
    );

    // A deleted user is exported with its deletion; an erased one has nothing to export.
    assert_eq!(
        app.delete(&format!("{USERS}/{id}")).await.0,
        StatusCode::NO_CONTENT
    );
    let client = app.rpc().await;
    let uuid: Uuid = id.parse().unwrap();
    let doc = client.export(uuid).await.unwrap();
    assert!(doc["deletedAt"].is_string(), "{doc}");
    client.erase(uuid).await.unwrap();
    let gone = client.export(uuid).await.unwrap_err();
    assert!(gone.is_not_found(), "{gone:?}");
}
