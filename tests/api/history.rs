//! users.history: who changed what and when, newest first, to AUDIT_READERS only; kept
//! AUDIT_RETENTION_DAYS; erased with the user.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{AUTH_KEY, CATALOG_KEY, TestApp, assert_error, eventually, send};

const USERS: &str = "/api/internal/users";
const AUDITOR_KEY: &str = "auditor-key-0123456789";

async fn app(vars: &[(&str, &str)]) -> TestApp {
    let keys =
        format!("auth-service={AUTH_KEY},game-catalog={CATALOG_KEY},audit-desk={AUDITOR_KEY}");
    let mut all = vec![
        ("INTERNAL_API_KEYS", keys.as_str()),
        ("AUDIT_READERS", "audit-desk"),
    ];
    all.extend_from_slice(vars);
    TestApp::spawn_with(&all).await
}

async fn history(app: &TestApp, path: &str, key: &str) -> (StatusCode, Value) {
    send(app.client.get(app.url(path)).header("x-api-key", key)).await
}

/// Every entry of the user's history, a page of `limit` at a time.
async fn walk(app: &TestApp, id: &str, limit: u32) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut path = format!("{USERS}/{id}/history?limit={limit}");
    loop {
        let (status, page) = history(app, &path, AUDITOR_KEY).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit as usize);
        entries.extend(data.iter().cloned());
        match page["nextPageToken"].as_str() {
            Some(t) => path = format!("{USERS}/{id}/history?limit={limit}&pageToken={t}"),
            None => return entries,
        }
    }
}

#[tokio::test]
async fn a_users_changes_come_newest_first_with_who_and_when_and_no_billing_values() {
    let app = app(&[]).await;
    let id = app.create_user("Audited", "audited@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("{USERS}/{id}");
    let writes = [
        (path.clone(), json!({"name": "Audited Twice"})),
        (
            format!("{path}/billing-info"),
            json!({"taxId": "7707083893"}),
        ),
        (format!("{path}/preferences"), json!({"language": "en"})),
        (
            format!("{path}/last-login"),
            json!({"ipAddress": "198.51.100.7"}),
        ),
    ];
    for (i, (path, body)) in writes.into_iter().enumerate() {
        let req = app
            .req(Method::PATCH, &path)
            .header("x-correlation-id", format!("audit-{i}"))
            .json(&body);
        let (status, answer) = send(req).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }

    let entries = walk(&app, &id, 2).await;
    let types: Vec<&str> = entries
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "USER_LOGGED_IN",
            "PREFERENCES_CHANGED",
            "USER_UPDATED",
            "USER_UPDATED",
            "USER_CREATED"
        ]
    );
    for e in &entries {
        assert_eq!(e["actor"], "auth-service", "{e}");
        assert!(e["at"].as_str().unwrap().ends_with('Z'), "{e}");
    }
    let name = &entries[3];
    assert_eq!(name["correlationId"], "audit-0");
    assert_eq!(
        (&name["changed"], &name["previous"], &name["current"]),
        (
            &json!(["name"]),
            &json!({"name": "Audited"}),
            &json!({"name": "Audited Twice"})
        )
    );
    let billing = &entries[2];
    let changed = billing["changed"].as_array().unwrap();
    assert!(changed.contains(&json!("billingInfo.taxId")), "{billing}");
    assert_eq!(
        (&billing["previous"], &billing["current"]),
        (&json!({}), &json!({}))
    );
    assert!(!billing.to_string().contains("7707083893"), "{billing}");
    assert_eq!(entries[0]["current"]["ipAddress"], "198.51.100.7");
    assert_eq!(entries[4]["changed"], json!(["name", "email"]));

    // Erasing the user destroys its history; the erasure's own entry says who erased it.
    let (status, _) = app.post(&format!("{path}/erase"), json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let left = walk(&app, &id, 20).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        (&left[0]["type"], &left[0]["actor"]),
        (&json!("USER_ERASED"), &json!("auth-service"))
    );
}

#[tokio::test]
async fn only_audit_readers_read_it_on_both_transports() {
    let app = app(&[]).await;
    let id = app
        .create_user("Private", "private-history@example.com")
        .await["id"]
        .clone();
    let path = format!("{USERS}/{}/history", id.as_str().unwrap());
    for key in [AUTH_KEY, CATALOG_KEY] {
        let (status, err) = history(&app, &path, key).await;
        assert_error(status, &err, StatusCode::FORBIDDEN, "FORBIDDEN");
    }
    let uuid = id.as_str().unwrap().parse().unwrap();
    let refused = app.rpc().await.history(uuid, json!({})).await.unwrap_err();
    assert!(format!("{refused:?}").contains("Forbidden"), "{refused:?}");
    let (status, err) = history(&app, &format!("{path}?pageToken=nope"), AUDITOR_KEY).await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
}

#[tokio::test]
async fn entries_older_than_the_retention_are_pruned() {
    let app = app(&[]).await;
    let id = app.create_user("Old News", "old-news@example.com").await["id"].clone();
    let path = format!("{USERS}/{}", id.as_str().unwrap());
    let (status, _) = app.patch(&path, json!({"name": "New News"})).await;
    assert_eq!(status, StatusCode::OK);
    sqlx::query("UPDATE user_history SET created_at = now() - interval '3 days' WHERE event_type = 'USER_CREATED'")
        .execute(&mut app.db().await)
        .await
        .unwrap();
    let _pruning = app.twin(&[("AUDIT_RETENTION_DAYS", "2")]).await;
    let left = "SELECT count(*) FROM user_history";
    eventually(Duration::from_secs(20), || async {
        (app.count(left).await == 1).then_some(())
    })
    .await;
}
