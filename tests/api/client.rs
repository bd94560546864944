//! The Rust client crate (`client/`) against the real RabbitMQ and a real service: a typed
//! call for every operation, typed errors, retries, timeouts, the circuit breaker, the
//! quickstart example and the command line.

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use user_domain::Method;
use user_service_client::{
    BatchItemStatus, BatchProfilesOptions, BreakerConfig, BreakerState, Client, ClientConfig,
    ClientError, ErrorCode, Login, NewUser, Payment, ProfileOptions, RequestKey, UserPatch, Uuid,
};

use crate::helpers::{AMQP_URL, AUTH_KEY, HASH, TestApp, eventually};
use crate::relay::Relay;

/// The quickstart example, compiled here as written and run against a test's service.
#[allow(dead_code)] // its `main`
#[path = "../../client/examples/quickstart.rs"]
mod quickstart;

fn id_of(user: &Value) -> Uuid {
    user["id"].as_str().expect("an id").parse().expect("a UUID")
}

type Seen = (Option<String>, String);

/// The next `n` requests that reached the watched queue.
async fn attempts(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>, n: usize) -> Vec<Seen> {
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("an attempt")
                .expect("watching"),
        );
    }
    got
}

#[tokio::test]
async fn idempotent_calls_are_retried_then_the_breaker_opens() {
    // A queue that nobody answers: every attempt times out. Each attempt also expires in
    // the queue after the timeout: at 200 ms, a machine busy with the other tests once let
    // one expire before the watcher below took it.
    let queue = format!("client-test.{}", Uuid::new_v4().simple());
    let mut config = ClientConfig::new(AMQP_URL)
        .queue(queue.clone())
        .api_key("any")
        .timeout(Duration::from_millis(500))
        .retries(2);
    config.backoff_min = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(20);
    config.breaker = BreakerConfig {
        min_calls: 8,
        reset_after: Duration::from_secs(60),
        ..Default::default()
    };
    let client = Client::connect(config).await.unwrap();

    // Watch what reaches the queue: (message id, method).
    let conn = lapin::Connection::connect(AMQP_URL, Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut seen = ch
        .basic_consume(
            queue.clone().into(),
            "".into(),
            no_ack,
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(d)) = seen.next().await {
            let id = d
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.as_str().to_owned());
            let body: Value = serde_json::from_slice(&d.data).unwrap();
            let _ = tx.send((id, body["method"].as_str().unwrap_or_default().to_owned()));
        }
    });
    // A read: three attempts, one message id.
    let err = client.exists(Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    let read = attempts(&mut rx, 3).await;
    assert!(read.iter().all(|a| a.1 == "users.exists"));
    assert!(
        read.iter().all(|a| a.0.is_some() && a.0 == read[0].0),
        "one message id for every attempt: {read:?}"
    );

    // A keyed write (the typed calls key every write): retried too, under one request key.
    let err = client.delete(Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    let delete = attempts(&mut rx, 3).await;
    assert!(delete.iter().all(|a| a.1 == "users.delete"));
    assert!(delete.iter().all(|a| a.0.is_some() && a.0 == delete[0].0));
    assert_ne!(delete[0].0, read[0].0, "a fresh key per call");

    // An unkeyed write: sent once, without a message id.
    let err = client
        .call_with(
            Method::Delete,
            json!({"id": Uuid::new_v4()}),
            RequestKey::Unkeyed,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)));
    let once = attempts(&mut rx, 1).await;
    assert_eq!(once[0], (None, "users.delete".to_owned()));
    let nothing = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    assert!(nothing.is_err(), "not retried");
    assert_eq!(client.breaker_state(), BreakerState::Closed, "7 of 8");

    // The eighth failure in a row opens it; the next call fails at once, sending nothing.
    let given = RequestKey::Given("my-operation-42".to_owned());
    let _ = client
        .call_with(Method::RecordLogin, json!({"id": Uuid::new_v4()}), given)
        .await;
    assert_eq!(
        attempts(&mut rx, 1).await[0].0.as_deref(),
        Some("my-operation-42")
    );
    assert!(matches!(client.breaker_state(), BreakerState::Open { .. }));
    let err = client.exists(Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(err, ClientError::CircuitOpen), "{err}");
    let nothing = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    assert!(nothing.is_err(), "nothing was sent while open");
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .unwrap();
}

/// A cluster's list, walked: a node that is gone and one that accepts TCP and never speaks
/// are passed over, each within the connect deadline, and calls go through the one that
/// answers.
#[tokio::test]
async fn the_client_walks_a_list_of_nodes_past_dead_and_silent_ones() {
    let app = TestApp::spawn().await;
    app.until_broker(true).await;
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone_url = format!("amqp://guest:guest@{}/%2f", gone.local_addr().unwrap());
    drop(gone);
    // Accepts, then says nothing: a paused node (the kernel completes the handshake).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("amqp://guest:guest@{}/%2f", silent.local_addr().unwrap());
    let mut config = app.client_config();
    config.broker.nodes = vec![gone_url, silent_url, AMQP_URL.to_owned()];
    // Each wait's bound, the link's own declarations through the node that answers included:
    // beside the cluster test a declaration took over 500 ms.
    config.broker.timeout = Duration::from_secs(1);
    let started = std::time::Instant::now();
    let client = Client::connect(config)
        .await
        .expect("the third node answers");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!client.exists(Uuid::new_v4()).await.unwrap());
    drop(silent);
}

/// A link on which nothing comes back for a whole timeout is given up: the next call opens
/// another, on the next node, rather than wait on a channel the broker holds back (as a quorum
/// queue does for about 10 s after losing its leader) until its heartbeat gives out.
#[tokio::test]
async fn a_link_that_answers_nothing_for_a_timeout_is_replaced() {
    let app = TestApp::spawn().await;
    app.until_broker(true).await;
    let relay = Relay::rabbitmq().await;
    let mut config = app
        .client_config()
        .heartbeat(60)
        .timeout(Duration::from_secs(1))
        .retries(0);
    config.broker.nodes = vec![
        format!("amqp://guest:guest@{}/%2f", relay.addr),
        AMQP_URL.to_owned(),
    ];
    // Each wait's bound, the first link's declarations included (beside the cluster test one
    // took over 500 ms). After the freeze the next link starts at the node after the relay's.
    config.broker.timeout = Duration::from_secs(2);
    let client = Client::connect(config).await.expect("through the relay");
    assert!(!client.exists(Uuid::new_v4()).await.unwrap());
    relay.freeze();
    let silent = client.exists(Uuid::new_v4()).await;
    assert!(matches!(silent, Err(ClientError::Timeout(_))), "{silent:?}");
    // The frozen link still counts as connected (its heartbeat allows a minute): only a new
    // link, on the next node, answers. (On a loaded machine the new link's set-up can take
    // longer than the call's 1 s, hence more than one call.)
    eventually(Duration::from_secs(20), || async {
        matches!(client.exists(Uuid::new_v4()).await, Ok(false)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn service_errors_are_typed_not_retried_and_do_not_open_the_breaker() {
    let app = TestApp::spawn().await;
    let client = app.rpc().await;
    for _ in 0..10 {
        let err = client.get(Uuid::new_v4(), &[]).await.unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert_eq!(err.status(), Some(404));
    }
    assert_eq!(
        client.breaker_state(),
        BreakerState::Closed,
        "a 404 is an answer, not a failure"
    );
    let err = client
        .call(Method::Get, json!({"id": "x"}))
        .await
        .unwrap_err();
    let ClientError::Service {
        status,
        code,
        details,
        ..
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!((status, code), (400, ErrorCode::ValidationFailed));
    assert_eq!(details[0]["field"], "id", "{details}");
    // A bad argument is refused before anything is sent.
    let err = client
        .update_preferences(Uuid::new_v4(), json!(["not", "an", "object"]))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidArgument(_)), "{err}");
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
