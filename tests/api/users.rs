//! users.create, get, getByEmail, exists, update, delete, recordLogin.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{HASH, TestApp, assert_error};

const USERS: &str = "/api/internal/users";

#[tokio::test]
async fn create_then_read_with_defaults_filled_in() {
    let app = TestApp::spawn().await;
    let created = app.create_user("  John Doe ", "User@Example.com").await;
    assert_eq!(created["name"], "John Doe");
    assert_eq!(created["email"], "user@example.com");
    assert!(created.get("passwordHash").is_none() && created.get("password").is_none());
    let id = created["id"].as_str().unwrap();

    let (status, user) = app.get(&format!("{USERS}/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user, created);
    assert_eq!(user["preferences"]["language"], "ru");
    assert_eq!(user["preferences"]["timezone"], "Europe/Moscow");
    assert_eq!(
        user["preferences"]["downloadSettings"]["maxConcurrentDownloads"],
        3
    );
    assert_eq!(user["privacySettings"]["profileVisibility"], "public");
    assert_eq!(user["billingStats"]["totalSpent"], "0.00");
    assert_eq!(user["isActive"], true);
    let created_at = user["createdAt"].as_str().unwrap();
    assert!(
        created_at.ends_with('Z') && created_at.len() == 24,
        "RFC 3339 with millis: {created_at}"
    );
}

#[tokio::test]
async fn create_rejects_bad_input_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            json!({"name": "A", "email": "not-an-email", "password": HASH}),
            "email",
        ),
        (
            json!({"name": "x".repeat(101), "email": "a@example.com", "password": HASH}),
            "name",
        ),
        (
            json!({"name": "   ", "email": "a@example.com", "password": HASH}),
            "name",
        ),
        (
            json!({"name": "A", "email": "a@example.com", "password": "plaintext123"}),
            "password",
        ),
        (
            json!({"name": "A", "email": "a@example.com", "password": HASH, "role": "admin"}),
            "role",
        ),
        (
            json!({"name": 42, "email": "a@example.com", "password": HASH}),
            "name",
        ),
        (json!({"email": "a@example.com", "password": HASH}), "name"),
    ];
    for (body, field) in cases {
        let (status, err) = app.post(USERS, body.clone()).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        assert_eq!(err["details"][0]["field"], field, "{body} → {err}");
    }
    let (status, err) = crate::helpers::send(
        app.req(Method::POST, USERS)
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let count = app.count("SELECT count(*) FROM users").await;
    assert_eq!(count, 0, "rejected requests change nothing");
}

#[tokio::test]
async fn duplicate_email_is_a_conflict_case_insensitively() {
    let app = TestApp::spawn().await;
    app.create_user("A", "dup@example.com").await;
    let (status, err) = app
        .post(
            USERS,
            json!({"name": "B", "email": "DUP@example.com", "password": HASH}),
        )
        .await;
    assert_error(status, &err, StatusCode::CONFLICT, "EMAIL_TAKEN");
}

#[tokio::test]
async fn concurrent_creates_of_one_email_give_one_201_and_one_409() {
    let app = TestApp::spawn().await;
    for round in 0..5 {
        let email = format!("race{round}@example.com");
        let body = json!({"name": "Racer", "email": email, "password": HASH});
        let (a, b) = tokio::join!(app.post(USERS, body.clone()), app.post(USERS, body.clone()));
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::CREATED, StatusCode::CONFLICT],
            "round {round}"
        );
    }
}

#[tokio::test]
async fn malformed_uuid_is_400_and_unknown_id_is_404() {
    let app = TestApp::spawn().await;
    for path in [
        "/not-a-uuid",
        "/not-a-uuid/exists",
        "/123/preferences",
        "/zz/profile",
    ] {
        let (status, err) = app.get(&format!("{USERS}{path}")).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        assert_eq!(err["details"][0]["field"], "id");
    }
    let missing = uuid::Uuid::new_v4();
    let (status, err) = app.get(&format!("{USERS}/{missing}")).await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "USER_NOT_FOUND");
}

#[tokio::test]
async fn get_projects_fields_including_dotted_paths() {
    let app = TestApp::spawn().await;
    let id = app.create_user("Proj", "proj@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = app
        .get(&format!("{USERS}/{id}?fields=name,avatarUrl,preferences.gameSettings,privacySettings.profileVisibility"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"id": id, "name": "Proj", "avatarUrl": null,
               "preferences": {"gameSettings": {"autoDownload": false, "cloudSave": true,
                                                "achievementNotifications": true, "preferredGenres": []}},
               "privacySettings": {"profileVisibility": "public"}})
    );
    let (status, err) = app
        .get(&format!("{USERS}/{id}?fields=name,passwordHash"))
        .await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert!(
        err["message"].as_str().unwrap().contains("allowed"),
        "{err}"
    );
    let (status, err) = app.get(&format!("{USERS}/{id}?fields=nope")).await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let (status, err) = app.get(&format!("{USERS}/{id}?verbose=1")).await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
}

#[tokio::test]
async fn get_by_email_and_credentials_for_readers_only() {
    let app = TestApp::spawn().await;
    app.create_user("Mail", "Mail@Example.com").await;
    let (status, body) = app.get(&format!("{USERS}/email/MAIL%40example.com")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["email"], "mail@example.com");
    assert!(body.get("passwordHash").is_none());

    let (status, body) = app
        .get(&format!(
            "{USERS}/email/mail@example.com?includeCredentials=true"
        ))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "auth-service reads credentials: {body}"
    );
    assert_eq!(body["passwordHash"], HASH);

    let catalog = app.with_key(Some(crate::helpers::CATALOG_KEY));
    let (status, err) = catalog
        .get(&format!(
            "{USERS}/email/mail@example.com?includeCredentials=true"
        ))
        .await;
    assert_error(status, &err, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (status, err) = catalog
        .get(&format!("{USERS}/email/nobody@example.com"))
        .await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "USER_NOT_FOUND");
    let (status, err) = catalog.get(&format!("{USERS}/email/not-an-email")).await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
}

#[tokio::test]
async fn exists_answers_200_either_way() {
    let app = TestApp::spawn().await;
    let id = app.create_user("E", "e@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.get(&format!("{USERS}/{id}/exists")).await,
        (StatusCode::OK, json!({"exists": true}))
    );
    let other = uuid::Uuid::new_v4();
    assert_eq!(
        app.get(&format!("{USERS}/{other}/exists")).await,
        (StatusCode::OK, json!({"exists": false}))
    );
}

#[tokio::test]
async fn update_merges_and_null_clears() {
    let app = TestApp::spawn().await;
    let id = app.create_user("Up", "up@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("{USERS}/{id}");
    let (status, body) = app
        .patch(
            &path,
            json!({"name": "Upd", "avatarUrl": "https://cdn.example.com/a.png",
                             "metadata": {"level": {"xp": 10, "rank": "b"}, "tag": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "Upd");
    let (status, body) = app
        .patch(
            &path,
            json!({"avatarUrl": null, "isActive": false, "metadata": {"level": {"rank": null}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["avatarUrl"], json!(null));
    assert_eq!(body["isActive"], false);
    assert_eq!(body["metadata"], json!({"level": {"xp": 10}, "tag": "x"}));
    assert_eq!(app.get(&path).await.1, body, "the answer is what is stored");

    for (bad, field) in [
        (json!({"name": null}), "name"),
        (json!({"avatarUrl": "ftp://x.example.com/a"}), "avatarUrl"),
        (json!({"isActive": "yes"}), "isActive"),
        (json!({"password": HASH}), "password"),
        (json!({"id": id}), "id"),
        (
            json!({"metadata": {"blob": "x".repeat(17 * 1024)}}),
            "metadata",
        ),
    ] {
        let (status, err) = app.patch(&path, bad.clone()).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        assert_eq!(err["details"][0]["field"], field, "{bad} → {err}");
    }
    assert_eq!(
        app.get(&path).await.1,
        body,
        "rejected patches change nothing"
    );
}

#[tokio::test]
async fn update_email_respects_uniqueness() {
    let app = TestApp::spawn().await;
    app.create_user("A", "a@example.com").await;
    let id = app.create_user("B", "b@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, err) = app
        .patch(&format!("{USERS}/{id}"), json!({"email": "A@example.com"}))
        .await;
    assert_error(status, &err, StatusCode::CONFLICT, "EMAIL_TAKEN");
}

#[tokio::test]
async fn delete_is_soft_and_frees_the_email() {
    let app = TestApp::spawn().await;
    let id = app.create_user("Del", "del@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = app.delete(&format!("{USERS}/{id}")).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, json!(null)));
    let (status, err) = app.get(&format!("{USERS}/{id}")).await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "USER_NOT_FOUND");
    assert_eq!(
        app.get(&format!("{USERS}/{id}/exists")).await.1,
        json!({"exists": false})
    );
    let (status, err) = app.delete(&format!("{USERS}/{id}")).await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "USER_NOT_FOUND");
    let (status, err) = app
        .patch(&format!("{USERS}/{id}"), json!({"name": "Ghost"}))
        .await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "USER_NOT_FOUND");
    let again = app.create_user("Del again", "DEL@example.com").await;
    assert_ne!(again["id"], id);
    let kept = app
        .count("SELECT count(*) FROM users WHERE deleted_at IS NOT NULL")
        .await;
    assert_eq!(kept, 1, "the row is kept, marked deleted");
}

#[tokio::test]
async fn record_login_defaults_to_now() {
    let app = TestApp::spawn().await;
    let id = app.create_user("L", "l@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("{USERS}/{id}/last-login");
    let (status, body) = app
        .patch(
            &path,
            json!({"lastLoginAt": "2024-01-01T10:00:00.000Z", "ipAddress": "192.168.1.100"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["lastLoginAt"], "2024-01-01T10:00:00.000Z");
    assert_eq!(body["lastLoginIp"], "192.168.1.100");
    let (status, body) = app.patch(&path, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(body["lastLoginAt"], "2024-01-01T10:00:00.000Z");
    assert!(body["lastLoginAt"].is_string());
    for bad in [
        json!({"ipAddress": "999.1.1.1"}),
        json!({"lastLoginAt": "yesterday"}),
        json!({"when": 1}),
    ] {
        let (status, err) = app.patch(&path, bad).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    }
}
