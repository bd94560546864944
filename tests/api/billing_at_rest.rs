//! Billing data at rest (issue 9): `taxId` and `billingAddress` are sealed in PostgreSQL and
//! in Redis, never in events, while the API answers them in plain text; `rekey` re-seals
//! everything under the newest key.

use std::time::Duration;

use deadpool_redis::redis::AsyncCommands;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use user_core::crypto::{BillingKeys, DEVELOPMENT_KEYS, Place};

use crate::helpers::{TestApp, UNTIL_FILLED, captured_logs, eventually, redis, send};

const USERS: &str = "/api/internal/users";
const TAX_ID: &str = "770123456789";
const ADDRESS: &str = "Санкт-Петербург, Невский проспект, 28, кв. 4242";
const NEW_KEY: &str = "k2:ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

fn billing() -> Value {
    json!({"billingAddress": ADDRESS, "paymentMethods": ["card"], "currency": "RUB",
           "taxId": TAX_ID})
}

#[track_caller]
fn assert_no_plain(what: &str, text: &str) {
    assert!(!text.contains(TAX_ID), "{what} holds the tax id: {text}");
    assert!(
        !text.contains("Невский"),
        "{what} holds the address: {text}"
    );
}

async fn new_user(app: &TestApp, email: &str) -> String {
    app.create_user("Billing Owner", email).await["id"]
        .as_str()
        .expect("an id")
        .to_owned()
}

async fn stored_billing(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT billing_info::text FROM users WHERE billing_info IS NOT NULL")
        .fetch_all(&mut app.db().await)
        .await
        .expect("billing rows")
}

#[tokio::test]
async fn billing_values_are_sealed_in_postgres_redis_and_events() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "sealed@example.com").await;
    // A keyed write: its reply is kept in the ledger of applied requests too.
    let keyed = || {
        app.req(Method::PATCH, &format!("{USERS}/{id}/billing-info"))
            .header("idempotency-key", "billing-at-rest-1")
            .json(&billing())
    };
    let (status, body) = send(keyed()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["billingInfo"], billing(), "the API answers plain text");
    let (status, replay) = send(keyed()).await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(replay, body, "a replay answers the stored reply, opened");
    let ledger: Vec<String> = sqlx::query_scalar("SELECT body::text FROM applied_requests")
        .fetch_all(&mut app.db().await)
        .await
        .expect("ledger rows");
    assert_eq!(ledger.len(), 1);
    assert_no_plain("applied_requests.body", &ledger[0]);

    let rows = stored_billing(&app).await;
    assert_eq!(rows.len(), 1);
    assert_no_plain("users.billing_info", &rows[0]);
    let row: Value = serde_json::from_str(&rows[0]).expect("JSON");
    for field in ["taxId", "billingAddress"] {
        let v = row[field].as_str().unwrap_or_default();
        assert!(v.starts_with("enc:v2:dev:"), "{field}: {v}");
    }
    assert_eq!(row["currency"], "RUB", "only the two fields are sealed");

    let payloads: Vec<String> = sqlx::query_scalar("SELECT payload::text FROM outbox")
        .fetch_all(&mut app.db().await)
        .await
        .expect("outbox rows");
    assert!(!payloads.is_empty(), "the change made events");
    for p in &payloads {
        assert_no_plain("an outbox payload", p);
    }

    let r = redis().await;
    let user_key = format!("{}:user:{id}", app.db_name);
    let email_key = format!("{}:email:sealed@example.com", app.db_name);
    for (path, key) in [
        (format!("{USERS}/{id}"), user_key.as_str()),
        (
            format!("{USERS}/email/sealed@example.com"),
            email_key.as_str(),
        ),
    ] {
        let cached: String = eventually(UNTIL_FILLED, || {
            let (mut r, path) = (r.clone(), path.clone());
            let app = &app;
            async move {
                let (status, got) = app.get(&path).await;
                assert_eq!(status, StatusCode::OK, "{got}");
                assert_eq!(got["billingInfo"]["taxId"], TAX_ID, "{got}");
                r.get::<_, Option<String>>(key).await.ok().flatten()
            }
        })
        .await;
        assert_no_plain(key, &cached);
        assert!(cached.contains("enc:v2:dev:"), "{cached}");
    }

    // Another instance, its in-process copy empty, reads the sealed entry from Redis.
    let twin = app.twin(&[("CACHE_PREFIX", &app.db_name)]).await;
    let (status, got) = twin.get(&format!("{USERS}/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["billingInfo"], billing());
    let (_, health) = twin.get("/health/integrations").await;
    assert_eq!(health["cachePerformance"]["redisHits"], 1, "{health}");
}

#[tokio::test]
async fn legacy_rows_still_read_and_rekey_reseals_everything_under_the_newest_key() {
    let app = TestApp::spawn().await;
    let sealed = new_user(&app, "sealed-rekey@example.com").await;
    let (status, body) = app
        .patch(&format!("{USERS}/{sealed}/billing-info"), billing())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A row written before sealing existed: plain text in the table.
    let legacy = new_user(&app, "legacy@example.com").await;
    sqlx::query("UPDATE users SET billing_info = $2 WHERE id = $1::uuid")
        .bind(&legacy)
        .bind(billing())
        .execute(&mut app.db().await)
        .await
        .expect("legacy row");
    let (status, got) = app.get(&format!("{USERS}/{legacy}/billing-info")).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["billingInfo"], billing(), "a legacy row reads as it is");

    let keys = BillingKeys::parse(&format!("{DEVELOPMENT_KEYS},{NEW_KEY}")).expect("keys");
    let pool = sqlx::PgPool::connect(&format!(
        "postgres://postgres@127.0.0.1:5432/{}",
        app.db_name
    ))
    .await
    .expect("pool");
    let stats = user_core::store::rekey(&pool, &keys, 1)
        .await
        .expect("rekey");
    assert_eq!((stats.scanned, stats.changed), (2, 2));
    for row in stored_billing(&app).await {
        assert_no_plain("a rekeyed row", &row);
        assert_eq!(row.matches("enc:v2:k2:").count(), 2, "{row}");
        assert!(!row.contains(":dev:"), "{row}");
    }
    let again = user_core::store::rekey(&pool, &keys, 1)
        .await
        .expect("rekey again");
    assert_eq!(
        (again.scanned, again.changed),
        (2, 0),
        "nothing left to reseal"
    );

    // An instance with the rotated keys reads every row (the cache aside: its own prefix).
    let rotated_keys = format!("{DEVELOPMENT_KEYS},{NEW_KEY}");
    let rotated = app.twin(&[("BILLING_KEYS", &rotated_keys)]).await;
    for id in [&sealed, &legacy] {
        let (status, got) = rotated.get(&format!("{USERS}/{id}/billing-info")).await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(got["billingInfo"], billing());
    }
    // Without the new key, a value sealed under it is an internal error, never its text.
    let (status, got) = app.get(&format!("{USERS}/{sealed}/billing-info")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{got}");
    assert_no_plain("an error reply", &got.to_string());
}

/// A sealed value is bound to its user and field: copied into another user's row (by someone
/// with write access to the table, say), it does not open there. The reader gets an internal
/// error, never the other user's data.
#[tokio::test]
async fn a_sealed_value_copied_into_another_users_row_does_not_open() {
    let app = TestApp::spawn().await;
    let owner = new_user(&app, "owner-bound@example.com").await;
    let other = new_user(&app, "other-bound@example.com").await;
    let (status, body) = app
        .patch(&format!("{USERS}/{owner}/billing-info"), billing())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    sqlx::query(
        "UPDATE users SET billing_info = (SELECT billing_info FROM users WHERE id = $1::uuid)
         WHERE id = $2::uuid",
    )
    .bind(&owner)
    .bind(&other)
    .execute(&mut app.db().await)
    .await
    .expect("copy the row's billing info");
    // Read by an instance with a cache of its own: the row, not a cached copy, is read.
    let fresh = app.twin(&[]).await;
    let (status, got) = fresh.get(&format!("{USERS}/{other}/billing-info")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{got}");
    assert_no_plain("the other user's answer", &got.to_string());
    let (status, got) = fresh.get(&format!("{USERS}/{owner}/billing-info")).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(
        got["billingInfo"],
        billing(),
        "the owner's values still open"
    );
}

/// A billing update that fails with nobody to answer goes to the dead-letter queue with its
/// billing values sealed.
#[tokio::test]
async fn dead_letters_hold_no_plain_billing_values() {
    use crate::amqp::{Raw, dead_letters, key, table};
    let app = TestApp::spawn().await;
    app.until_broker(true).await;
    let raw = Raw::connect().await;
    let q = app.rpc_queue.clone();
    let body = json!({"method": "users.updateBillingInfo", "params": {
        "id": uuid::Uuid::new_v4(), "taxId": "7707083893",
        "billingAddress": "Moscow, Tverskaya 13", "nope": 1}});
    let props =
        lapin::BasicProperties::default().with_headers(table(&key(crate::helpers::AUTH_KEY)));
    raw.publish(&q, body.to_string().as_bytes(), props).await;
    let dlq = format!("{q}.dlq");
    let letter = eventually(Duration::from_secs(10), || async {
        dead_letters(&raw.channel, &dlq).await.pop()
    })
    .await;
    let (kept, error, _) = letter;
    assert!(error.starts_with("USER_NOT_FOUND"), "{error}");
    let text = kept.to_string();
    assert!(
        !text.contains("7707083893") && !text.contains("Tverskaya"),
        "{text}"
    );
    let keys = BillingKeys::parse(DEVELOPMENT_KEYS).unwrap();
    let tax = kept["params"]["taxId"].as_str().unwrap();
    assert_eq!(
        keys.open(tax, Place::Unbound, "taxId").unwrap(),
        "7707083893",
        "sealed, not lost"
    );
    assert_eq!(kept["params"]["nope"], 1, "the rest is kept");
}

/// Billing values never reach the logs, at debug level either: not from writes, replays,
/// failed writes or reads, over REST or RPC.
#[tokio::test]
async fn logs_hold_no_billing_values() {
    let logs = captured_logs();
    let app = TestApp::spawn().await;
    let id = new_user(&app, "logged@example.com").await;
    let path = format!("{USERS}/{id}/billing-info");
    let keyed = || {
        app.req(Method::PATCH, &path)
            .header("idempotency-key", "logs-1")
            .json(&billing())
    };
    assert_eq!(send(keyed()).await.0, StatusCode::OK);
    assert_eq!(send(keyed()).await.0, StatusCode::OK);
    let mut bad = billing();
    bad["unknown"] = json!(1);
    assert_eq!(app.patch(&path, bad).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(app.get(&path).await.0, StatusCode::OK);
    let rpc = app.rpc().await;
    let mut params = billing();
    params["id"] = json!(id);
    let reply = rpc
        .request("users.updateBillingInfo", &params)
        .await
        .expect("an RPC reply");
    assert_eq!(reply["status"], 200, "{reply}");
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains(&id), "the requests were logged");
    assert_no_plain("the logs", &text);
}
