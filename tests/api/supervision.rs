//! Supervision: a panic in any actor (in a handler or in its run loop) and the actor is back
//! within moments, `/health` counts the restart, and what the actor owned works again.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use reqwest::StatusCode;
use serde_json::{Value, json};
use user_core::fault::Crash;

use crate::helpers::{AMQP_URL, TestApp, assert_error, bind_events_queue, eventually, send};

const BACK_WITHIN: Duration = Duration::from_secs(10);

/// Polls `/health` until `check` holds; returns that body.
async fn health_until(app: &TestApp, check: impl Fn(&Value) -> bool) -> Value {
    eventually(BACK_WITHIN, || async {
        let (status, health) = app.get("/health").await;
        assert_eq!(status, StatusCode::OK, "{health}");
        check(&health).then_some(health)
    })
    .await
}

/// Waits until `/health` shows the actor restarted once and up again, after `fault`.
async fn restarted(app: &TestApp, actor: &str, fault: &str) -> Value {
    let health = health_until(app, |h| {
        let a = &h["components"][actor];
        a["restarts"] == 1 && a["status"] == "up"
    })
    .await;
    let exit = health["components"][actor]["lastExit"].as_str().unwrap();
    assert_eq!(
        exit,
        format!("panicked: injected fault: crash in a {fault}")
    );
    health
}

/// Before any fault: every actor up, none restarted.
async fn all_up(app: &TestApp) {
    let (_, health) = app.get("/health").await;
    for actor in [
        "userStore",
        "cacheManager",
        "eventPublisher",
        "rateLimiter",
        "healthMonitor",
    ] {
        let a = &health["components"][actor];
        assert_eq!(
            (&a["status"], &a["restarts"]),
            (&json!("up"), &json!(0)),
            "{health}"
        );
    }
}

#[tokio::test]
async fn a_panicked_user_store_is_back_and_answers() {
    let app = TestApp::spawn().await;
    all_up(&app).await;
    let id = app.create_user("Before", "before@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    app.actors.user_store.do_send(Crash::InHandler);
    let health = restarted(&app, "userStore", "handler").await;
    assert_eq!(health["components"]["cacheManager"]["restarts"], 0);

    let (status, user) = app.get(&format!("/api/internal/users/{id}")).await;
    assert_eq!((status, &user["name"]), (StatusCode::OK, &json!("Before")));
    app.create_user("After", "after@example.com").await;
}

/// A write that panics on its task in the worker pool fails that request only (500), even
/// more of them at once than there are workers; the others go on, and no actor restarts.
#[tokio::test]
async fn a_panicking_write_fails_only_that_request() {
    use user_core::fault::PANIC_IN_WRITE_CORRELATION_ID;
    let app = TestApp::spawn().await;
    all_up(&app).await;
    let id = app.create_user("Doomed", "doomed@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/internal/users/{id}");
    let doomed = || {
        let req = app
            .req(reqwest::Method::PATCH, &path)
            .header("x-correlation-id", PANIC_IN_WRITE_CORRELATION_ID)
            .json(&json!({"name": "Never"}));
        send(req)
    };
    let (fine, doomed) = tokio::join!(
        app.patch(&path, json!({"name": "Fine"})),
        futures::future::join_all((0..8).map(|_| doomed())),
    );
    for (status, body) in doomed {
        assert_error(status, &body, StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL");
        assert!(
            !body.to_string().contains("injected"),
            "no internals leak: {body}"
        );
    }
    assert_eq!(fine.0, StatusCode::OK, "{}", fine.1);
    let (_, user) = app.get(&path).await;
    assert_eq!(user["name"], "Fine");
    app.create_user("After", "after@example.com").await;
    let (_, health) = app.get("/health").await;
    assert_eq!(health["components"]["userStore"]["restarts"], 0, "{health}");
}

#[tokio::test]
async fn a_panicked_cache_manager_subscribes_again_and_honours_invalidations() {
    let app = TestApp::spawn().await;
    let listening = || async {
        let (_, health) = app.get("/health/integrations").await;
        (health["cachePerformance"]["listening"] == true).then_some(health)
    };
    eventually(BACK_WITHIN, listening).await;
    all_up(&app).await;

    app.actors.cache_manager.do_send(Crash::InRunLoop);
    restarted(&app, "cacheManager", "run loop").await;
    health_until(&app, |h| h["components"]["redis"]["status"] == "up").await;
    let before = eventually(BACK_WITHIN, listening).await;

    // The in-process copy is in use again…
    let id = app.create_user("Cached", "cached@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/internal/users/{id}");
    for _ in 0..3 {
        let (_, user) = app.get(&path).await;
        assert_eq!(user["name"], "Cached");
    }
    let local_hits = |h: &Value| h["cachePerformance"]["localHits"].as_u64().unwrap();
    let (_, after) = app.get("/health/integrations").await;
    assert!(local_hits(&after) > local_hits(&before), "{after}");

    // …and another instance's write reaches it through the new subscription.
    let db_url = format!("postgres://postgres@127.0.0.1:5432/{}", app.db_name);
    let other =
        TestApp::spawn_with(&[("DATABASE_URL", &db_url), ("CACHE_PREFIX", &app.db_name)]).await;
    let (status, _) = other.patch(&path, json!({"name": "Changed"})).await;
    assert_eq!(status, StatusCode::OK);
    eventually(Duration::from_secs(5), || async {
        let (_, user) = app.get(&path).await;
        (user["name"] == "Changed").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_panicked_event_publisher_leads_again_and_publishes() {
    let app = TestApp::spawn().await;
    let conn = lapin::Connection::connect(AMQP_URL, Default::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let queue = bind_events_queue(&channel, &format!("{}.events", app.db_name), None).await;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = channel
        .basic_consume(queue.into(), "".into(), no_ack, FieldTable::default())
        .await
        .unwrap();
    let mut created = async |email: &str| {
        let id = app.create_user("Evented", email).await["id"].clone();
        loop {
            let delivery = tokio::time::timeout(Duration::from_secs(15), consumer.next())
                .await
                .expect("an event within 15 s")
                .expect("consumer open")
                .expect("delivery");
            let event: Value = serde_json::from_slice(&delivery.data).unwrap();
            if event["userId"] == id {
                assert_eq!(delivery.routing_key.as_str(), "user.created");
                return;
            }
        }
    };
    created("first@example.com").await;
    all_up(&app).await;

    app.actors.event_publisher.do_send(Crash::InRunLoop);
    restarted(&app, "eventPublisher", "run loop").await;
    created("second@example.com").await;
    let health = health_until(&app, |h| {
        h["components"]["eventPublishing"]["status"] == "up"
            && h["components"]["outbox"]["outboxPending"] == 0
    })
    .await;
    assert_eq!(health["status"], "ok", "{health}");
}

#[tokio::test]
async fn a_panicked_rate_limiter_sweeps_again_and_limits_still_apply() {
    let app = TestApp::spawn_with(&[("RATE_LIMITS", "auth-service=3/60")]).await;
    let sweeps = |h: &Value| h["components"]["rateLimits"]["sweeps"].as_u64();
    let health = health_until(&app, |h| sweeps(h).is_some()).await;
    let before = sweeps(&health).unwrap();
    all_up(&app).await;

    app.actors.rate_limiter.do_send(Crash::InHandler);
    restarted(&app, "rateLimiter", "handler").await;
    // The new limiter swept as it started.
    health_until(&app, |h| sweeps(h) > Some(before)).await;

    let path = format!("/api/internal/users/{}/exists", uuid::Uuid::new_v4());
    for _ in 0..3 {
        let (status, body) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _) = app.get(&path).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_panicked_health_monitor_still_knows_every_component() {
    let app = TestApp::spawn().await;
    let integrations = [
        "rabbitmq",
        "redis",
        "eventPublishing",
        "outbox",
        "rateLimits",
    ];
    let known = health_until(&app, |h| {
        integrations
            .iter()
            .all(|c| h["components"][c]["status"] == "up")
    })
    .await;
    all_up(&app).await;

    app.actors.health_monitor.do_send(Crash::InHandler);
    // From the moment it is dead, /health still shows every part: it reads their reports
    // where they write them, not from the monitor.
    let during = health_until(&app, |h| h["components"]["healthMonitor"]["restarts"] == 1).await;
    for c in integrations {
        assert!(during["components"][c].is_object(), "{c}: {during}");
    }
    let after = restarted(&app, "healthMonitor", "handler").await;
    // Reported once, before the crash, into state the monitor does not hold.
    for c in ["rabbitmq", "redis", "eventPublishing"] {
        assert_eq!(after["components"][c], known["components"][c], "{c}");
    }
    assert!(after["components"]["outbox"].is_object(), "{after}");
    assert_eq!(after["status"], "ok", "{after}");
}
