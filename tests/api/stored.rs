//! What the service reads back is untrusted too: a row of PostgreSQL or a value of Redis that
//! breaks its rule fails the request that asked for it (500 `INTERNAL`) or is passed over,
//! never a panic, and never another request's answer.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, redis};

const USERS: &str = "/api/internal/users";

/// A column and a value it must never hold, each breaking a different conversion.
const HOSTILE: [(&str, &str); 10] = [
    ("email", "'not an address'"),
    ("email", "repeat('a', 100000) || '@example.com'"),
    ("name", "E'two\\nlines'"),
    ("name", "repeat('n', 100000)"),
    ("avatar_url", "repeat('h', 100000)"),
    ("last_login_ip", "'999.1.2.3'"),
    ("preferences", r#"'{"theme": 42}'"#),
    (
        "privacy_settings",
        r#"'{"profileVisibility": ["everyone"]}'"#,
    ),
    ("metadata", "'[1, 2, 3]'"),
    (
        "billing_info",
        r#"'{"taxId": "enc:v9:k9:not sealed by anyone"}'"#,
    ),
];

async fn user(app: &TestApp, email: &str) -> String {
    app.create_user("Stored User", email).await["id"]
        .as_str()
        .expect("an id")
        .to_owned()
}

/// Writes `value` (SQL) into `column` of user `id`, behind the service's back.
async fn corrupt(app: &TestApp, id: &str, column: &str, value: &str) {
    // The test's own constants: nothing from outside reaches this statement.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE users SET {column} = {value} WHERE id = $1::uuid"
    )))
    .bind(id)
    .execute(&mut app.db().await)
    .await
    .unwrap_or_else(|e| panic!("{column} = {value}: {e}"));
}

#[tokio::test]
async fn a_hostile_stored_row_fails_the_reads_of_that_user_only() {
    let app = TestApp::spawn().await;
    let healthy = user(&app, "healthy@example.com").await;
    let rpc = app.rpc().await;
    for (i, (column, value)) in HOSTILE.iter().enumerate() {
        let case = format!("{column} = {}", &value[..value.len().min(40)]);
        let bad = user(&app, &format!("stored{i}@example.com")).await;
        corrupt(&app, &bad, column, value).await;

        let (status, body) = app.get(&format!("{USERS}/{bad}")).await;
        assert_error(status, &body, StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.len() < 1_000,
            "{case}: a bounded message: {message}"
        );
        let ids = format!("/api/batch/users/lookup?ids={bad},{healthy}");
        let (status, body) = app.get(&ids).await;
        assert_error(status, &body, StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL");
        let reply = rpc
            .request("users.get", &json!({"id": bad}))
            .await
            .expect("an RPC reply");
        assert_eq!(reply["status"], 500, "{case}: {reply}");
        assert_eq!(reply["error"]["code"], "INTERNAL", "{case}: {reply}");

        // The rest of the service goes on: the healthy user, and pages without the bad one.
        let (status, body) = app.get(&format!("{USERS}/{healthy}")).await;
        assert_eq!(status, StatusCode::OK, "{case}: {body}");
        assert_eq!(body["id"], healthy.as_str());
        let (status, body) = app.get("/health").await;
        assert_eq!(status, StatusCode::OK, "{case}: {body}");
        // A page holding it fails as a whole; it is put right for the next case.
        let (status, body) = app.get(&format!("{USERS}?limit=100")).await;
        assert_error(status, &body, StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL");
        sqlx::query("UPDATE users SET deleted_at = now(), email = id::text || '@gone.example.com' WHERE id = $1::uuid")
            .bind(&bad)
            .execute(&mut app.db().await)
            .await
            .expect("set aside");
    }
    let (status, page) = app.get(&format!("{USERS}?limit=100")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
}

/// Misses that arrive together are fetched together: one user's broken row must not fail the
/// others' reads gathered with it.
#[tokio::test]
async fn a_hostile_row_fails_no_other_read_gathered_with_it() {
    let app = TestApp::spawn().await;
    let bad = user(&app, "gathered-bad@example.com").await;
    corrupt(&app, &bad, "last_login_ip", "'not an address'").await;
    let mut healthy = Vec::new();
    for i in 0..24 {
        healthy.push(user(&app, &format!("gathered{i}@example.com")).await);
    }
    // Every healthy user read for the first time, beside reads of the broken one.
    let reads = healthy.iter().flat_map(|id| {
        [
            (id.clone(), format!("{USERS}/{id}")),
            (bad.clone(), format!("{USERS}/{bad}")),
        ]
    });
    let answers: Vec<(String, StatusCode, Value)> = join_all(reads.map(|(id, path)| {
        let app = &app;
        async move {
            let (status, body) = app.get(&path).await;
            (id, status, body)
        }
    }))
    .await;
    for (id, status, body) in answers {
        match id == bad {
            true => assert_error(status, &body, StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
            false => {
                assert_eq!(status, StatusCode::OK, "{id}: {body}");
                assert_eq!(body["id"], id.as_str());
            }
        }
    }
}

/// What Redis holds under a user's key is checked as a stored row is: garbage, another
/// user, or a user whose fields break their rules is a miss, and the read goes on to
/// PostgreSQL.
#[tokio::test]
async fn a_hostile_cached_value_is_a_miss() {
    use deadpool_redis::redis::AsyncCommands;
    let app = TestApp::spawn().await;
    let other = user(&app, "cached-other@example.com").await;
    let (status, other_json) = app.get(&format!("{USERS}/{other}")).await;
    assert_eq!(status, StatusCode::OK, "{other_json}");
    let mut bad_name = other_json.clone();
    bad_name["name"] = json!("n".repeat(100_000));
    let hostile = [
        "{oops".to_owned(),
        "x".repeat(1 << 20),
        other_json.to_string(),
        bad_name.to_string(),
    ];
    let mut r = redis().await;
    for (i, value) in hostile.iter().enumerate() {
        let id = user(&app, &format!("cached{i}@example.com")).await;
        let key = format!("{}:user:{id}", app.db_name);
        let _: () = r.set_ex(&key, value, 60).await.expect("SET");
        let (status, body) = app.get(&format!("{USERS}/{id}")).await;
        assert_eq!(status, StatusCode::OK, "case {i}: {body}");
        assert_eq!(body["id"], id.as_str(), "case {i}");
        assert_eq!(body["email"], format!("cached{i}@example.com"), "case {i}");
    }
    let (_, health) = app.get("/health/integrations").await;
    assert_eq!(health["cachePerformance"]["redisHits"], 0, "{health}");
    // Redis was asked all along: a well-formed user under the right key is served from it.
    let planted = user(&app, "cached-planted@example.com").await;
    let mut value = other_json.clone();
    (value["id"], value["email"]) = (json!(planted), json!("from-redis@example.com"));
    let key = format!("{}:user:{planted}", app.db_name);
    let _: () = r.set_ex(&key, value.to_string(), 60).await.expect("SET");
    let (status, body) = app.get(&format!("{USERS}/{planted}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["email"], "from-redis@example.com", "{body}");
}
