//! Profiles and the batch operations: getProfile, batchProfiles, batchLookup, batchCreate.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{HASH, TestApp, assert_error};

async fn ids(app: &TestApp, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        let u = app
            .create_user(&format!("User {i}"), &format!("u{i}@example.com"))
            .await;
        out.push(u["id"].as_str().unwrap().to_owned());
    }
    out
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort();
    k
}

#[tokio::test]
async fn profiles_default_include_and_public() {
    let app = TestApp::spawn().await;
    let id = ids(&app, 1).await.remove(0);
    let p = format!("/api/internal/users/{id}/profile");

    let (status, profile) = app.get(&p).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        keys(&profile),
        [
            "avatarUrl",
            "createdAt",
            "email",
            "id",
            "isActive",
            "lastLoginAt",
            "name",
            "updatedAt"
        ]
    );
    let (_, with) = app
        .get(&format!(
            "{p}?includePreferences=true&includePrivacySettings=true"
        ))
        .await;
    assert_eq!(with["preferences"]["language"], "ru");
    assert_eq!(with["privacySettings"]["profileVisibility"], "public");
    assert!(with.get("billingInfo").is_none());

    let (_, public) = app
        .get(&format!("{p}?publicOnly=true&includePreferences=true"))
        .await;
    assert_eq!(
        keys(&public),
        ["avatarUrl", "createdAt", "id", "name", "profileVisibility"]
    );
    assert_eq!(public["profileVisibility"], "public");
    app.patch(
        &format!("/api/internal/users/{id}/privacy-settings"),
        json!({"profileVisibility": "private"}),
    )
    .await;
    let (_, private) = app.get(&format!("{p}?publicOnly=true")).await;
    assert_eq!(
        keys(&private),
        ["avatarUrl", "id", "name", "profileVisibility"],
        "no createdAt unless public"
    );

    let (status, err) = app.get(&format!("{p}?includePreferences=maybe")).await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let (status, err) = app
        .get(&format!(
            "/api/internal/users/{}/profile",
            uuid::Uuid::new_v4()
        ))
        .await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "USER_NOT_FOUND");
}

#[tokio::test]
async fn batch_profiles_keep_order_list_missing_and_project() {
    let app = TestApp::spawn().await;
    let users = ids(&app, 3).await;
    app.delete(&format!("/api/internal/users/{}", users[2]))
        .await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let asked = json!([users[1], users[0], unknown, users[1], users[2]]);
    let (status, body) = app
        .post(
            "/api/internal/users/batch/profiles",
            json!({"userIds": asked, "includePreferences": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got: Vec<&str> = body["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        [users[1].as_str(), users[0].as_str()],
        "order as asked, once each"
    );
    assert!(body["profiles"][0]["preferences"].is_object());
    assert_eq!(
        body["missing"],
        json!([unknown, users[2]]),
        "deleted users are missing too"
    );
    assert_eq!(
        body["stats"],
        json!({"requested": 4, "found": 2, "missing": 2})
    );

    let fields = json!({"userIds": [users[0]], "includePreferences": true,
                        "fields": ["name", "preferences.gameSettings", "privacySettings.showGameActivity"]});
    let (_, body) = app.post("/api/internal/users/batch/profiles", fields).await;
    let p = &body["profiles"][0];
    assert_eq!(
        keys(p),
        ["id", "name", "preferences", "privacySettings"],
        "fields alone decide"
    );
    assert_eq!(keys(&p["preferences"]), ["gameSettings"]);
    assert_eq!(p["privacySettings"], json!({"showGameActivity": true}));

    let too_many: Vec<String> = (0..1001)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    for (bad, field) in [
        (json!({"userIds": too_many}), "userIds"),
        (json!({"userIds": [users[0], "nope"]}), "userIds[1]"),
        (json!({"userIds": [users[0]], "extra": true}), "extra"),
        (
            json!({"userIds": [users[0]], "fields": ["secret"]}),
            "fields",
        ),
        (
            json!({"userIds": "x,y", "includePreferences": "sometimes"}),
            "includePreferences",
        ),
        (json!({}), "userIds"),
    ] {
        let (status, err) = app
            .post("/api/internal/users/batch/profiles", bad.clone())
            .await;
        assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        assert_eq!(err["details"][0]["field"], field, "{bad} → {err}");
    }
}

#[tokio::test]
async fn batch_lookup_by_query_and_by_body() {
    let app = TestApp::spawn().await;
    let users = ids(&app, 2).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, body) = app
        .get(&format!(
            "/api/batch/users/lookup?ids={},{unknown},{}&fields=name,avatarUrl",
            users[1], users[0]
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"data": [{"id": users[1], "name": "User 1", "avatarUrl": null},
                        {"id": users[0], "name": "User 0", "avatarUrl": null}],
               "missing": [unknown], "stats": {"requested": 3, "found": 2, "missing": 1}})
    );
    let (_, full) = app
        .get(&format!("/api/batch/users/lookup?ids={}", users[0]))
        .await;
    assert!(
        full["data"][0]["preferences"].is_object() && full["data"][0].get("passwordHash").is_none()
    );

    let hundred: Vec<String> = (0..100).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let (status, _) = app
        .get(&format!(
            "/api/batch/users/lookup?ids={}",
            hundred.join(",")
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "100 ids fit in a query");
    let mut hundred_one = hundred.clone();
    hundred_one.push(uuid::Uuid::new_v4().to_string());
    let (status, err) = app
        .get(&format!(
            "/api/batch/users/lookup?ids={}",
            hundred_one.join(",")
        ))
        .await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(err["details"][0]["field"], "ids");
    let (status, body) = app
        .post(
            "/api/batch/users/lookup",
            json!({"ids": hundred_one, "fields": ["name"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "a body takes up to 1000: {body}");
    assert_eq!(body["stats"]["requested"], 101);
    let thousand_one: Vec<String> = (0..1001)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let (status, err) = app
        .post("/api/batch/users/lookup", json!({"ids": thousand_one}))
        .await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let (status, err) = app.get("/api/batch/users/lookup").await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(err["details"][0]["field"], "ids");
}

#[tokio::test]
async fn batch_create_answers_per_item() {
    let app = TestApp::spawn().await;
    app.create_user("Existing", "taken@example.com").await;
    let user = |name: &str, email: &str| json!({"name": name, "email": email, "password": HASH});
    let (status, body) = app
        .post(
            "/api/batch/users/create",
            json!({"users": [
                user("Fresh", "fresh@example.com"),
                user("Bad", "not-an-email"),
                user("Clash", "TAKEN@example.com"),
                user("Twin A", "twin@example.com"),
                user("Twin B", "Twin@example.com"),
                42,
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let statuses: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "created", "invalid", "conflict", "created", "conflict", "invalid"
        ]
    );
    let results = body["results"].as_array().unwrap();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i);
    }
    assert_eq!(results[1]["error"]["code"], "VALIDATION_FAILED");
    assert_eq!(results[1]["error"]["details"][0]["field"], "email");
    assert_eq!(results[2]["error"]["code"], "EMAIL_TAKEN");
    assert_eq!(
        body["stats"],
        json!({"requested": 6, "created": 2, "conflict": 2, "invalid": 2})
    );
    let fresh = results[0]["id"].as_str().unwrap();
    let (status, fetched) = app.get(&format!("/api/internal/users/{fresh}")).await;
    assert_eq!(
        (status, fetched["email"].clone()),
        (StatusCode::OK, json!("fresh@example.com"))
    );
    let count = app.count("SELECT count(*) FROM users").await;
    assert_eq!(count, 3, "the existing user and the two created");

    let too_many: Vec<Value> = (0..1001)
        .map(|i| user("Many", &format!("m{i}@example.com")))
        .collect();
    let (status, err) = app
        .post("/api/batch/users/create", json!({"users": too_many}))
        .await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let count = app.count("SELECT count(*) FROM users").await;
    assert_eq!(count, 3, "a rejected batch writes nothing");
}

#[tokio::test]
async fn batch_create_of_a_thousand_users() {
    let app = TestApp::spawn().await;
    let users: Vec<Value> = (0..1000)
        .map(|i| json!({"name": format!("Bulk {i}"), "email": format!("bulk{i}@example.com"), "password": HASH}))
        .collect();
    let (status, body) = app
        .post("/api/batch/users/create", json!({"users": users}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["stats"]["created"], 1000);
    let events = app
        .count("SELECT count(*) FROM outbox WHERE event_type = 'USER_CREATED'")
        .await;
    assert_eq!(events, 1000, "one event per created user, same transaction");
}
