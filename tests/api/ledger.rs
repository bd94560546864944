//! The ledger of applied requests over REST (`Idempotency-Key`): a keyed write happens once
//! and is answered the same every time; a key reused for other content is refused.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{HASH, TestApp, assert_error, send};

const USERS: &str = "/api/internal/users";

/// Sends a write with an `Idempotency-Key`.
pub async fn keyed(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = app.req(method, path).header("idempotency-key", key);
    send(match body {
        Some(b) => req.json(&b),
        None => req,
    })
    .await
}

async fn events(app: &TestApp, event_type: &str) -> i64 {
    let sql = "SELECT count(*) FROM outbox WHERE event_type = $1";
    sqlx::query_scalar(sql)
        .bind(event_type)
        .fetch_one(&mut app.db().await)
        .await
        .unwrap()
}

/// Every kind of edit: update A (key 1), update B (key 2), key 1 again → A's reply, the user
/// keeps B, and no third event.
#[tokio::test]
async fn a_replay_after_a_newer_write_answers_the_first_reply_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let id = app.create_user("Ann", "ann@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cases = [
        (
            "",
            json!({"name": "A"}),
            json!({"name": "B"}),
            "USER_UPDATED",
        ),
        (
            "/preferences",
            json!({"language": "en"}),
            json!({"language": "de"}),
            "PREFERENCES_CHANGED",
        ),
        (
            "/privacy-settings",
            json!({"profileVisibility": "friends"}),
            json!({"profileVisibility": "private"}),
            "PROFILE_UPDATED",
        ),
        (
            "/last-login",
            json!({"lastLoginAt": "2024-01-01T00:00:00.000Z", "ipAddress": "10.0.0.1"}),
            json!({"lastLoginAt": "2024-02-01T00:00:00.000Z", "ipAddress": "10.0.0.2"}),
            "USER_LOGGED_IN",
        ),
    ];
    for (i, (tail, a, b, event)) in cases.into_iter().enumerate() {
        let path = format!("{USERS}/{id}{tail}");
        let (k1, k2) = (format!("edit-{i}-a"), format!("edit-{i}-b"));
        let (status, first) = keyed(&app, Method::PATCH, &path, &k1, Some(a.clone())).await;
        assert_eq!(status, StatusCode::OK, "{path}: {first}");
        let (status, second) = keyed(&app, Method::PATCH, &path, &k2, Some(b)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {second}");
        assert_ne!(first, second, "{path}");
        let (status, replay) = keyed(&app, Method::PATCH, &path, &k1, Some(a)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {replay}");
        assert_eq!(replay, first, "{path}: the first reply, word for word");
        // A login answers with the user; every other edit with what it edits.
        let read = if tail == "/last-login" {
            format!("{USERS}/{id}")
        } else {
            path.clone()
        };
        let (_, now) = app.get(&read).await;
        assert_eq!(now, second, "{path}: the newer write stands");
        assert_eq!(
            events(&app, event).await,
            2,
            "{path}: no event for the replay"
        );
    }
}

#[tokio::test]
async fn a_replayed_billing_update_keeps_the_newer_values() {
    let app = TestApp::spawn().await;
    let id = app.create_user("Bo", "bo@example.com").await["id"].clone();
    let path = format!("{USERS}/{}/billing-info", id.as_str().unwrap());
    let a = json!({"billingAddress": "Moscow"});
    let (_, first) = keyed(&app, Method::PATCH, &path, "bill-1", Some(a.clone())).await;
    let b = json!({"billingAddress": "Kazan"});
    let (status, _) = keyed(&app, Method::PATCH, &path, "bill-2", Some(b)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, replay) = keyed(&app, Method::PATCH, &path, "bill-1", Some(a)).await;
    assert_eq!((status, &replay), (StatusCode::OK, &first));
    assert_eq!(first["billingInfo"]["billingAddress"], "Moscow");
    let (_, now) = app.get(&path).await;
    assert_eq!(now["billingInfo"]["billingAddress"], "Kazan");
    assert_eq!(events(&app, "USER_UPDATED").await, 2);
}

#[tokio::test]
async fn a_key_reused_for_other_content_is_422_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let id = app.create_user("Cy", "cy@example.com").await["id"].clone();
    let path = format!("{USERS}/{}", id.as_str().unwrap());
    let (status, _) = keyed(&app, Method::PATCH, &path, "k", Some(json!({"name": "A"}))).await;
    assert_eq!(status, StatusCode::OK);
    // Same key, other body; and same key, other operation.
    let (status, err) = keyed(&app, Method::PATCH, &path, "k", Some(json!({"name": "C"}))).await;
    assert_error(
        status,
        &err,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    );
    let (status, err) = keyed(&app, Method::DELETE, &path, "k", None).await;
    assert_error(
        status,
        &err,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    );
    let (status, user) = app.get(&path).await;
    assert_eq!((status, &user["name"]), (StatusCode::OK, &json!("A")));
    assert_eq!(events(&app, "USER_UPDATED").await, 1);
    assert_eq!(events(&app, "USER_DELETED").await, 0);
    // Key order does not make content different.
    let body = json!({"metadata": {"a": 1, "b": 2}, "name": "A"});
    let reordered = json!({"name": "A", "metadata": {"b": 2, "a": 1}});
    let (_, first) = keyed(&app, Method::PATCH, &path, "order", Some(body)).await;
    let (status, again) = keyed(&app, Method::PATCH, &path, "order", Some(reordered)).await;
    assert_eq!((status, again), (StatusCode::OK, first));
}

#[tokio::test]
async fn failed_writes_record_nothing() {
    let app = TestApp::spawn().await;
    let id = app.create_user("Di", "di@example.com").await["id"].clone();
    let path = format!("{USERS}/{}", id.as_str().unwrap());
    let (status, _) = keyed(&app, Method::PATCH, &path, "f", Some(json!({"name": ""}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let missing = format!("{USERS}/{}", uuid::Uuid::new_v4());
    let (status, _) = keyed(
        &app,
        Method::PATCH,
        &missing,
        "f",
        Some(json!({"name": "X"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A failed write lets go of its key before it answers: retried at once, the same
    // request fails the same way, never with 409 (key still being processed).
    for _ in 0..20 {
        let patch = Some(json!({"name": "X"}));
        let (status, _) = keyed(&app, Method::PATCH, &missing, "f", patch).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = keyed(&app, Method::DELETE, &missing, "g", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    assert_eq!(app.count("SELECT count(*) FROM applied_requests").await, 0);
    // The key is still free for a request that succeeds.
    let (status, user) = keyed(&app, Method::PATCH, &path, "f", Some(json!({"name": "Ok"}))).await;
    assert_eq!((status, &user["name"]), (StatusCode::OK, &json!("Ok")));
    assert_eq!(app.count("SELECT count(*) FROM applied_requests").await, 1);
}

#[tokio::test]
async fn creates_and_deletes_replay_their_first_answer() {
    let app = TestApp::spawn().await;
    let new = json!({"name": "Ed", "email": "ed@example.com", "password": HASH});
    let (status, first) = keyed(&app, Method::POST, USERS, "c1", Some(new.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = keyed(&app, Method::POST, USERS, "c1", Some(new.clone())).await;
    assert_eq!((status, &again), (StatusCode::CREATED, &first));
    let (status, err) = keyed(&app, Method::POST, USERS, "c2", Some(new.clone())).await;
    assert_error(status, &err, StatusCode::CONFLICT, "EMAIL_TAKEN");

    let path = format!("{USERS}/{}", first["id"].as_str().unwrap());
    let (status, _) = keyed(&app, Method::DELETE, &path, "d1", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = keyed(&app, Method::DELETE, &path, "d1", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "a replay, not a 404");
    let (status, _) = keyed(&app, Method::DELETE, &path, "d2", None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another delete finds no user"
    );
    // The create again, after the delete: still its first answer, and no second user.
    let (status, again) = keyed(&app, Method::POST, USERS, "c1", Some(new)).await;
    assert_eq!((status, &again), (StatusCode::CREATED, &first));
    assert_eq!(app.count("SELECT count(*) FROM users").await, 1);
    assert_eq!(events(&app, "USER_CREATED").await, 1);
    assert_eq!(events(&app, "USER_DELETED").await, 1);

    let batch = json!({"users": [
        {"name": "F", "email": "f@example.com", "password": HASH},
        {"name": "G", "email": "bad", "password": HASH},
    ]});
    let path = "/api/batch/users/create";
    let (status, first) = keyed(&app, Method::POST, path, "b1", Some(batch.clone())).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["stats"]["created"], 1, "{first}");
    let (status, again) = keyed(&app, Method::POST, path, "b1", Some(batch)).await;
    assert_eq!((status, again), (StatusCode::OK, first));
    assert_eq!(events(&app, "USER_CREATED").await, 2);
}

#[tokio::test]
async fn keyed_payments_replay_and_conflicts_are_refused() {
    let app = TestApp::spawn().await;
    let id = app.create_user("Fe", "fe@example.com").await["id"].clone();
    let path = format!("{USERS}/{}/billing-stats", id.as_str().unwrap());
    let pay = json!({"paymentId": "p1", "amount": "10.00", "currency": "RUB",
                     "paidAt": "2024-03-01T09:30:00.000Z"});
    let (status, first) = keyed(&app, Method::POST, &path, "pay-1", Some(pay.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = keyed(&app, Method::POST, &path, "pay-1", Some(pay.clone())).await;
    assert_eq!((status, &again), (StatusCode::CREATED, &first), "a replay");
    let (status, same) = keyed(&app, Method::POST, &path, "pay-2", Some(pay.clone())).await;
    assert_eq!(status, StatusCode::OK, "the same payment under a new key");
    assert_eq!(same["billingStats"], first["billingStats"]);
    let mut more = pay.clone();
    more["amount"] = json!("11.00");
    let (status, err) = keyed(&app, Method::POST, &path, "pay-3", Some(more)).await;
    assert_error(status, &err, StatusCode::CONFLICT, "CONFLICT");

    // Totals are in one currency: the billing currency, and that of earlier payments.
    let mut usd = pay.clone();
    usd["paymentId"] = json!("p2");
    usd["currency"] = json!("USD");
    let (status, err) = keyed(&app, Method::POST, &path, "pay-4", Some(usd.clone())).await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(err["details"][0]["field"], "currency", "{err}");
    let billing = format!("{USERS}/{}/billing-info", id.as_str().unwrap());
    let (status, _) = app.patch(&billing, json!({"currency": "USD"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = keyed(&app, Method::POST, &path, "pay-5", Some(usd)).await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let (_, read) = app.get(&billing).await;
    assert_eq!(read["billingStats"]["totalSpent"], "10.00");
    assert_eq!(read["billingStats"]["paymentsCount"], 1);
    assert_eq!(app.count("SELECT count(*) FROM payments").await, 1);
}

/// While another transaction holds the key's lock (a first delivery still at work), a retry
/// is told so (409) and changes nothing; once the lock is free the request goes through.
#[tokio::test]
async fn a_key_still_being_processed_is_409() {
    let app = TestApp::spawn().await;
    let id = app.create_user("Gi", "gi@example.com").await["id"].clone();
    let path = format!("{USERS}/{}", id.as_str().unwrap());
    let mut holder = app.db().await;
    let lock = user_core::store::ledger::lock_id("auth-service:busy");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(lock)
        .execute(&mut holder)
        .await
        .unwrap();
    let body = Some(json!({"name": "Busy"}));
    let (status, err) = keyed(&app, Method::PATCH, &path, "busy", body.clone()).await;
    assert_error(status, &err, StatusCode::CONFLICT, "CONFLICT");
    let (_, user) = app.get(&path).await;
    assert_eq!(user["name"], "Gi", "nothing was done");
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(lock)
        .execute(&mut holder)
        .await
        .unwrap();
    let (status, user) = keyed(&app, Method::PATCH, &path, "busy", body).await;
    assert_eq!((status, &user["name"]), (StatusCode::OK, &json!("Busy")));
}

#[tokio::test]
async fn ledger_rows_are_pruned_after_the_retention_window() {
    let app = TestApp::spawn().await;
    let id = app.create_user("Hu", "hu@example.com").await["id"].clone();
    let path = format!("{USERS}/{}", id.as_str().unwrap());
    for (k, name) in [("old", "Old"), ("new", "New")] {
        let (status, _) = keyed(&app, Method::PATCH, &path, k, Some(json!({"name": name}))).await;
        assert_eq!(status, StatusCode::OK);
    }
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", app.db_name);
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("UPDATE applied_requests SET created_at = now() - interval '2 hours' WHERE request_key = 'auth-service:old'")
        .execute(&pool)
        .await
        .unwrap();
    let pruned = user_core::store::ledger::prune(&pool, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let keys: Vec<String> = sqlx::query_scalar("SELECT request_key FROM applied_requests")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(keys, ["auth-service:new"]);
    pool.close().await;
}
