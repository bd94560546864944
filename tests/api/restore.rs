//! users.restore: a soft-deleted user brought back as it was, over both transports.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, assert_error};

const USERS: &str = "/api/internal/users";
const RESTORED: &str = "SELECT count(*) FROM outbox WHERE event_type = 'USER_RESTORED'";

async fn created(app: &TestApp, name: &str, email: &str) -> String {
    app.create_user(name, email).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The user as answered, without what a write moves on.
fn unchanging(mut user: Value) -> Value {
    user.as_object_mut().unwrap().remove("updatedAt");
    user
}

#[tokio::test]
async fn a_deleted_user_comes_back_with_everything_it_had() {
    let app = TestApp::spawn().await;
    let id = created(&app, "Lazarus", "lazarus@example.com").await;
    let path = format!("{USERS}/{id}");
    let (status, _) = app
        .patch(
            &path,
            json!({"metadata": {"guild": "phoenix"}, "avatarUrl": "https://a.example/l.png"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, before) = app.get(&path).await;
    assert_eq!(app.delete(&path).await.0, StatusCode::NO_CONTENT);
    // Read while deleted, so that any cached absence must give way.
    assert_eq!(app.get(&path).await.0, StatusCode::NOT_FOUND);

    let (status, restored) = app.post(&format!("{path}/restore"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{restored}");
    assert_eq!(unchanging(restored.clone()), unchanging(before.clone()));
    assert_ne!(restored["updatedAt"], before["updatedAt"]);
    let (status, read) = app.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, restored);
    let by_email = app.get(&format!("{USERS}/email/lazarus@example.com")).await;
    assert_eq!(by_email.0, StatusCode::OK);
    assert_eq!(app.count(RESTORED).await, 1);
}

#[tokio::test]
async fn a_live_user_is_answered_as_it_is_and_an_unknown_one_is_not_found() {
    let app = TestApp::spawn().await;
    let id = created(&app, "Alive", "alive@example.com").await;
    let path = format!("{USERS}/{id}");
    let (_, before) = app.get(&path).await;
    let (status, answer) = app.post(&format!("{path}/restore"), json!({})).await;
    assert_eq!((status, answer), (StatusCode::OK, before));
    assert_eq!(
        app.count(RESTORED).await,
        0,
        "nothing happened, nothing told"
    );

    let unknown = format!("{USERS}/{}/restore", Uuid::new_v4());
    let (status, err) = app.post(&unknown, json!({})).await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "USER_NOT_FOUND");
    let (status, err) = app.post(&format!("{USERS}/nope/restore"), json!({})).await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
}

#[tokio::test]
async fn an_email_taken_meanwhile_keeps_the_user_deleted() {
    let app = TestApp::spawn().await;
    let id = created(&app, "First", "taken@example.com").await;
    let path = format!("{USERS}/{id}");
    assert_eq!(app.delete(&path).await.0, StatusCode::NO_CONTENT);
    created(&app, "Second", "Taken@example.com").await;

    let (status, err) = app.post(&format!("{path}/restore"), json!({})).await;
    assert_error(status, &err, StatusCode::CONFLICT, "EMAIL_TAKEN");
    assert_eq!(app.get(&path).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.count(RESTORED).await, 0);
}

#[tokio::test]
async fn restore_over_rpc_is_applied_once_by_its_key() {
    let app = TestApp::spawn().await;
    let id = created(&app, "Twice", "twice@example.com").await;
    let client = app.rpc().await;
    let uuid: Uuid = id.parse().unwrap();
    client.delete(uuid).await.unwrap();
    let restored = client.restore(uuid).await.unwrap();
    assert_eq!(restored["id"], id.as_str());
    assert_eq!(restored["email"], "twice@example.com");
    let key = user_service_client::RequestKey::Given("restore-once".to_owned());
    client.delete(uuid).await.unwrap();
    for _ in 0..2 {
        let params = json!({"id": id});
        let again = client
            .call_with(user_domain::Method::Restore, params, key.clone())
            .await
            .unwrap();
        assert_eq!(again["id"], id.as_str());
    }
    assert_eq!(
        app.count(RESTORED).await,
        2,
        "one per restore, not per repeat"
    );
}
