//! The RPC edge over the real RabbitMQ: parity with REST, credentials in headers, malformed
//! messages, the dead-letter queue. Expiration, redelivery and competing consumers are in
//! `deliveries`.

use std::time::Duration;

use lapin::BasicProperties;
use reqwest::StatusCode;
use serde_json::json;
use user_domain::Method;
use user_service_client::{NewUser, ProfileOptions, Uuid};

use crate::amqp::{Raw, dead_letters, key, table};
use crate::helpers::{AUTH_KEY, CATALOG_KEY, HASH, SECRET, TestApp, eventually};

mod deliveries;

#[tokio::test]
async fn rpc_answers_exactly_what_rest_answers() {
    let app = TestApp::spawn().await;
    let client = app.rpc().await;
    let created = client
        .create(&NewUser::new("Parity", "Parity@Example.com", HASH))
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    let uid: Uuid = id.parse().unwrap();
    let rest = |path: String| {
        let app = &app;
        async move { app.get(&path).await }
    };
    let u = format!("/api/internal/users/{id}");

    assert_eq!(created, rest(u.clone()).await.1);
    assert_eq!(client.get(uid, &[]).await.unwrap(), rest(u.clone()).await.1);
    assert_eq!(
        client
            .get(uid, &["name", "preferences.gameSettings"])
            .await
            .unwrap(),
        rest(format!("{u}?fields=name,preferences.gameSettings"))
            .await
            .1
    );
    let prefs = client
        .update_preferences(uid, json!({"language": "en"}))
        .await
        .unwrap();
    assert_eq!(prefs, rest(format!("{u}/preferences")).await.1);
    let profile = client
        .get_profile(uid, ProfileOptions::default().public_only())
        .await
        .unwrap();
    assert_eq!(
        profile,
        rest(format!("{u}/profile?publicOnly=true")).await.1
    );
    let lookup = client.batch_lookup(&[uid], &["name"]).await.unwrap();
    assert_eq!(
        lookup,
        rest(format!("/api/batch/users/lookup?ids={id}&fields=name"))
            .await
            .1
    );
    assert!(client.exists(uid).await.unwrap());

    // Errors: the same codes and details.
    let missing = Uuid::new_v4();
    let err = client.get(missing, &[]).await.unwrap_err();
    let (status, rest_err) = rest(format!("/api/internal/users/{missing}")).await;
    assert_eq!((err.status(), status), (Some(404), StatusCode::NOT_FOUND));
    let user_service_client::ClientError::Service { code, message, .. } = err else {
        panic!()
    };
    assert_eq!(
        (code.as_str(), message.as_str()),
        (
            rest_err["code"].as_str().unwrap(),
            rest_err["message"].as_str().unwrap()
        )
    );
    let bad = client
        .call(Method::Get, json!({"id": "nope"}))
        .await
        .unwrap_err();
    let user_service_client::ClientError::Service {
        status,
        code,
        details,
        ..
    } = bad
    else {
        panic!()
    };
    let (_, rest_bad) = rest("/api/internal/users/nope".to_owned()).await;
    assert_eq!((status, code.as_str()), (400, "VALIDATION_FAILED"));
    assert_eq!(details, rest_bad["details"]);
    let taken = client
        .create(&NewUser::new("Again", "parity@example.com", HASH))
        .await
        .unwrap_err();
    assert_eq!(taken.status(), Some(409));
    assert!(
        client
            .get_by_email("nobody@example.com", false)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn credentials_travel_in_headers() {
    let app = TestApp::spawn().await;
    app.until_broker(true).await;
    let mut raw = Raw::connect().await;
    let q = app.rpc_queue.clone();
    let exists = json!({"method": "users.exists", "params": {"id": uuid::Uuid::new_v4()}});

    let none = raw.call_json(&q, exists.clone(), &[]).await;
    assert_eq!(
        (none["status"].clone(), none["error"]["code"].clone()),
        (json!(401), json!("UNAUTHENTICATED"))
    );
    let wrong = raw.call_json(&q, exists.clone(), &key("wrong")).await;
    assert_eq!(wrong["status"], 401);
    assert_eq!(
        raw.call_json(&q, exists.clone(), &key(AUTH_KEY)).await["status"],
        200
    );
    let bearer = format!("Bearer {CATALOG_KEY}");
    assert_eq!(
        raw.call_json(&q, exists.clone(), &[("authorization", &bearer)])
            .await["status"],
        200
    );
    let secret = [
        ("x-internal-service", SECRET),
        ("x-service-name", "library-service"),
    ];
    assert_eq!(
        raw.call_json(&q, exists.clone(), &secret).await["status"],
        200
    );

    app.create_user("Cred", "cred@example.com").await;
    let creds = json!({"method": "users.getByEmail", "params": {"email": "cred@example.com", "includeCredentials": true}});
    let denied = raw.call_json(&q, creds.clone(), &key(CATALOG_KEY)).await;
    assert_eq!(
        (denied["status"].clone(), denied["error"]["code"].clone()),
        (json!(403), json!("FORBIDDEN"))
    );
    let allowed = raw.call_json(&q, creds, &key(AUTH_KEY)).await;
    assert_eq!(allowed["data"]["passwordHash"], HASH);
}

#[tokio::test]
async fn malformed_messages_get_error_replies_and_the_consumer_goes_on() {
    let app = TestApp::spawn().await;
    app.until_broker(true).await;
    let mut raw = Raw::connect().await;
    let q = app.rpc_queue.clone();
    let props = || BasicProperties::default().with_headers(table(&key(AUTH_KEY)));

    let (_, not_json) = raw.call(&q, b"{oops", props()).await;
    assert_eq!(
        (
            not_json["status"].clone(),
            not_json["error"]["code"].clone()
        ),
        (json!(400), json!("VALIDATION_FAILED"))
    );
    let unknown = raw
        .call_json(
            &q,
            json!({"method": "users.teleport", "params": {}}),
            &key(AUTH_KEY),
        )
        .await;
    assert_eq!(
        (unknown["status"].clone(), unknown["error"]["code"].clone()),
        (json!(404), json!("NOT_FOUND"))
    );
    let wrong = raw
        .call_json(
            &q,
            json!({"method": "users.create", "params": {"name": 1}}),
            &key(AUTH_KEY),
        )
        .await;
    assert_eq!(wrong["status"], 400);
    assert_eq!(wrong["error"]["details"][0]["field"], "name");
    let nest = raw
        .call_json(
            &q,
            json!({"pattern": "users.get", "data": {"id": "x"}, "id": "n-1"}),
            &key(AUTH_KEY),
        )
        .await;
    assert_eq!(nest["isDisposed"], true);
    assert_eq!(nest["err"]["status"], 400);
    assert_eq!(nest["id"], "n-1");

    let fine = raw
        .call_json(
            &q,
            json!({"method": "users.exists", "params": {"id": uuid::Uuid::new_v4()}}),
            &key(AUTH_KEY),
        )
        .await;
    assert_eq!(
        fine,
        json!({"status": 200, "data": {"exists": false}}),
        "still consuming"
    );
}

#[tokio::test]
async fn failures_without_a_reply_address_go_to_the_dead_letter_queue() {
    let app = TestApp::spawn().await;
    app.until_broker(true).await;
    let raw = Raw::connect().await;
    let q = app.rpc_queue.clone();
    let with_key = || BasicProperties::default().with_headers(table(&key(AUTH_KEY)));

    raw.publish(
        &q,
        json!({"method": "users.get", "params": {"id": "nope"}})
            .to_string()
            .as_bytes(),
        with_key(),
    )
    .await;
    raw.publish(
        &q,
        json!({"method": "users.exists", "params": {"id": uuid::Uuid::new_v4()}})
            .to_string()
            .as_bytes(),
        BasicProperties::default(),
    )
    .await;
    // A valid request without reply address is carried out, and nothing is dead-lettered for it.
    let create = json!({"method": "users.create", "params": {"name": "Quiet", "email": "quiet@example.com", "password": HASH}});
    raw.publish(&q, create.to_string().as_bytes(), with_key())
        .await;
    eventually(Duration::from_secs(10), || async {
        (app.get("/api/internal/users/email/quiet@example.com")
            .await
            .0
            == StatusCode::OK)
            .then_some(())
    })
    .await;

    let dlq = format!("{q}.dlq");
    let mut all = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while all.len() < 2 && std::time::Instant::now() < deadline {
        all.extend(dead_letters(&raw.channel, &dlq).await);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let errors: Vec<&str> = all
        .iter()
        .map(|(_, e, _)| e.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        errors.contains(&"VALIDATION_FAILED") && errors.contains(&"UNAUTHENTICATED"),
        "{errors:?}"
    );
    assert!(
        all.iter()
            .any(|(body, _, _)| body["params"]["id"] == "nope"),
        "the original body is kept"
    );
}
