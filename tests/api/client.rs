//! The Rust client crate (`client/`) against the real RabbitMQ and a real service: a typed
//! call for every operation, typed errors, request keys, the quickstart example and the command
//! line. Retries, timeouts, the circuit breaker and a list of nodes are in `resilience`.

use std::process::Command;

use serde_json::{Value, json};
use user_domain::Method;
use user_service_client::{
    BatchItemStatus, BatchProfilesOptions, ErrorCode, Login, NewUser, Payment, ProfileOptions,
    RequestKey, UserPatch, Uuid,
};

use crate::helpers::{AMQP_URL, AUTH_KEY, HASH, TestApp};

/// The quickstart example, compiled here as written and run against a test's service.
#[allow(dead_code)] // its `main`
#[path = "../../client/examples/quickstart.rs"]
mod quickstart;

mod resilience;

fn id_of(user: &Value) -> Uuid {
    user["id"].as_str().expect("an id").parse().expect("a UUID")
}

#[tokio::test]
async fn typed_calls_for_a_users_life() {
    let app = TestApp::spawn().await;
    let client = app.rpc().await;

    let created = client
        .create(&NewUser::new("Typed", "Typed@Example.com", HASH))
        .await
        .unwrap();
    assert_eq!(created["email"], "typed@example.com");
    let id = id_of(&created);
    let err = client
        .create(&NewUser::new("Twin", "typed@example.com", HASH))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.status()),
        (Some(ErrorCode::EmailTaken), Some(409))
    );

    assert_eq!(
        client.get(id, &["name"]).await.unwrap(),
        json!({"id": id, "name": "Typed"})
    );
    assert!(client.exists(id).await.unwrap());
    assert!(!client.exists(Uuid::new_v4()).await.unwrap());

    let by_email = client
        .get_by_email("TYPED@example.com", true)
        .await
        .unwrap();
    let by_email = by_email.expect("found");
    assert_eq!(
        (id_of(&by_email), &by_email["passwordHash"]),
        (id, &json!(HASH))
    );
    assert!(
        client
            .get_by_email("nobody@example.com", false)
            .await
            .unwrap()
            .is_none()
    );

    client
        .record_login(id, &Login::now().ip("10.1.2.3"))
        .await
        .unwrap();
    let login = client
        .get(id, &["lastLoginIp", "lastLoginAt"])
        .await
        .unwrap();
    assert_eq!(login["lastLoginIp"], "10.1.2.3");
    assert!(login["lastLoginAt"].is_string(), "{login}");

    let patch = UserPatch::new()
        .name("Renamed")
        .avatar_url(Some("https://cdn.example.com/a.png"))
        .metadata(json!({"level": 3}));
    let updated = client.update(id, &patch).await.unwrap();
    assert_eq!(
        (
            &updated["name"],
            &updated["avatarUrl"],
            &updated["metadata"]
        ),
        (
            &json!("Renamed"),
            &json!("https://cdn.example.com/a.png"),
            &json!({"level": 3})
        )
    );
    let cleared = client
        .update(id, &UserPatch::new().avatar_url(None))
        .await
        .unwrap();
    assert_eq!(cleared["avatarUrl"], Value::Null);

    client.delete(id).await.unwrap();
    assert!(!client.exists(id).await.unwrap());
    assert!(client.get(id, &[]).await.unwrap_err().is_not_found());
    let (status, _) = app.get(&format!("/api/internal/users/{id}")).await;
    assert_eq!(status, 404, "REST agrees");
}

#[tokio::test]
async fn typed_calls_for_profiles_and_batches() {
    let app = TestApp::spawn().await;
    let client = app.rpc().await;
    let batch = client
        .batch_create(&[
            NewUser::new("Ann", "ann@example.com", HASH),
            NewUser::new("Bad", "not-an-email", HASH),
            NewUser::new("Ann Twin", "ANN@example.com", HASH),
            NewUser::new("Bob", "bob@example.com", HASH),
        ])
        .await
        .unwrap();
    let statuses: Vec<BatchItemStatus> = batch.results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            BatchItemStatus::Created,
            BatchItemStatus::Invalid,
            BatchItemStatus::Conflict,
            BatchItemStatus::Created
        ]
    );
    assert_eq!(
        (batch.stats.requested, batch.stats.created),
        (4, 2),
        "{batch:?}"
    );
    let ann = batch.results[0].id.expect("created with an id");
    let bob = batch.results[3].id.expect("created with an id");
    assert!(batch.results[1].error.is_some() && batch.results[1].id.is_none());

    let public = client
        .get_profile(ann, ProfileOptions::default().public_only())
        .await
        .unwrap();
    assert_eq!(public["name"], "Ann");
    assert!(public.get("email").is_none(), "public only: {public}");
    let full = client
        .get_profile(ann, ProfileOptions::default().with_preferences())
        .await
        .unwrap();
    assert_eq!(full["preferences"]["language"], "ru", "{full}");

    let missing = Uuid::new_v4();
    let profiles = client
        .batch_profiles(
            &[bob, missing, ann],
            &BatchProfilesOptions::default().fields(&["name"]),
        )
        .await
        .unwrap();
    assert_eq!(
        profiles["profiles"],
        json!([{"id": bob, "name": "Bob"}, {"id": ann, "name": "Ann"}])
    );
    assert_eq!(profiles["missing"], json!([missing]));

    let lookup = client
        .batch_lookup(&[ann, missing], &["email"])
        .await
        .unwrap();
    assert_eq!(
        lookup["data"],
        json!([{"id": ann, "email": "ann@example.com"}])
    );
    assert_eq!(lookup["stats"]["missing"], 1);
}

#[tokio::test]
async fn typed_calls_for_billing_preferences_and_privacy() {
    let app = TestApp::spawn().await;
    let client = app.rpc().await;
    let id = id_of(
        &client
            .create(&NewUser::new("Payer", "payer@example.com", HASH))
            .await
            .unwrap(),
    );

    let billing = client
        .update_billing_info(
            id,
            json!({"currency": "RUB", "paymentMethods": ["card", "sbp"]}),
        )
        .await
        .unwrap();
    assert_eq!(
        billing["billingInfo"]["paymentMethods"],
        json!(["card", "sbp"])
    );
    let payment = Payment::new("pay-typed-1", "14.99").currency("RUB");
    let paid = client.record_payment(id, &payment).await.unwrap();
    assert_eq!(paid["billingStats"]["totalSpent"], "14.99");
    // The same payment again changes nothing; another amount under its id is a CONFLICT.
    client.record_payment(id, &payment).await.unwrap();
    let read = client.get_billing_info(id).await.unwrap();
    assert_eq!(
        (
            &read["billingStats"]["totalSpent"],
            &read["billingStats"]["paymentsCount"]
        ),
        (&json!("14.99"), &json!(1))
    );
    let clash = Payment::new("pay-typed-1", "1.00").currency("RUB");
    let err = client.record_payment(id, &clash).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Conflict), "{err}");

    let prefs = client
        .update_preferences(
            id,
            json!({"theme": "dark", "gameSettings": {"autoDownload": true}}),
        )
        .await
        .unwrap();
    assert_eq!(prefs, client.get_preferences(id).await.unwrap());
    assert_eq!(
        (
            &prefs["theme"],
            &prefs["gameSettings"]["autoDownload"],
            &prefs["language"]
        ),
        (&json!("dark"), &json!(true), &json!("ru"))
    );
    let err = client
        .update_preferences(id, json!({"theme": "neon"}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ValidationFailed));

    let privacy = client
        .update_privacy_settings(id, json!({"profileVisibility": "friends"}))
        .await
        .unwrap();
    assert_eq!(privacy["profileVisibility"], "friends");
    assert_eq!(client.get_privacy_settings(id).await.unwrap(), privacy);
}

#[tokio::test]
async fn a_request_key_makes_a_repeated_write_happen_once() {
    let app = TestApp::spawn().await;
    let client = app.rpc().await;
    let key = || RequestKey::Given(format!("create-{}", app.db_name));
    let params = json!({"name": "Once", "email": "once@example.com", "password": HASH});
    let first = client
        .call_with(Method::Create, params.clone(), key())
        .await
        .unwrap();
    let again = client
        .call_with(Method::Create, params, key())
        .await
        .unwrap();
    assert_eq!(first, again, "the stored reply, not EMAIL_TAKEN");
    let other = json!({"name": "Other", "email": "other@example.com", "password": HASH});
    let err = client
        .call_with(Method::Create, other, key())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::IdempotencyKeyReused), "{err}");
    assert_eq!(app.count("SELECT count(*) FROM users").await, 1);
}

#[tokio::test]
async fn the_quickstart_example_runs_against_a_service() {
    let app = TestApp::spawn().await;
    app.until_broker(true).await;
    let user = quickstart::run(app.client_config(), "Quick@Example.com")
        .await
        .expect("the quickstart runs");
    assert_eq!(user["email"], "quick@example.com");
    assert_eq!(user["preferences"]["language"], "en", "{user}");
    let (status, _) = app
        .get(&format!(
            "/api/internal/users/{}",
            user["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 404, "and deleted at the end");
}

#[tokio::test]
async fn the_command_line_calls_the_service() {
    let app = TestApp::spawn().await;
    let id = app.create_user("Cli", "cli@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.until_broker(true).await;
    let queue = app.rpc_queue.clone();
    let run = move |args: Vec<String>| {
        let queue = queue.clone();
        tokio::task::spawn_blocking(move || {
            let env = |name: &str| match name {
                "AMQP_URL" => Some(AMQP_URL.to_owned()),
                "RPC_QUEUE" => Some(queue.clone()),
                "RPC_QUEUE_TYPE" => Some(crate::helpers::rpc_queue_type().to_owned()),
                "USER_SERVICE_API_KEY" => Some(AUTH_KEY.to_owned()),
                _ => None,
            };
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let code =
                user_service_client::cli::run("user-service call", &args, env, &mut out, &mut err);
            let out: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
            (code, out, String::from_utf8_lossy(&err).into_owned())
        })
    };
    let (code, out, _) = run(vec![
        "users.get".into(),
        json!({"id": id, "fields": ["email"]}).to_string(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        out,
        json!({"status": 200, "data": {"id": id, "email": "cli@example.com"}})
    );
    let (code, out, _) = run(vec![
        "users.get".into(),
        json!({"id": Uuid::new_v4()}).to_string(),
    ])
    .await
    .unwrap();
    assert_eq!((code, &out["error"]["code"]), (1, &json!("USER_NOT_FOUND")));

    // The server's binary delegates to it; every command has --help.
    let bin = env!("CARGO_BIN_EXE_user-service");
    for args in [&["--help"][..], &["call", "--help"], &["rekey", "--help"]] {
        let output = Command::new(bin).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{args:?}: {text}");
        assert!(text.starts_with("usage:"), "{args:?}: {text}");
    }
    let call_help = Command::new(bin).args(["call", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&call_help.stdout);
    assert!(text.contains("USER_SERVICE_API_KEY") && text.contains("users.batchCreate"));
    let bad = Command::new(bin).args(["call"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
