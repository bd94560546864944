//! The database going away and coming back; concurrency of the store.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{HASH, TestApp, assert_error, eventually, send};
use crate::relay::Relay;

#[tokio::test]
async fn database_outage_is_503_quickly_and_recovers_by_itself() {
    let proxy = Relay::postgres().await;
    let url = format!("postgres://postgres@{}/{{db}}", proxy.addr);
    let app =
        TestApp::spawn_with(&[("DATABASE_URL", &url), ("DB_ACQUIRE_TIMEOUT_MS", "500")]).await;
    let id = app.create_user("Out", "out@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/internal/users/{id}");

    proxy.cut();
    // A hang would trip reqwest's timeout and fail the test.
    let (status, err) = send(app.req(Method::GET, &path).timeout(Duration::from_secs(10))).await;
    assert_error(status, &err, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    // Reads that miss the cache (unknown ids) find it unreachable, not merely a connection
    // lost: a few of them open the breaker, and the next is refused without trying.
    for _ in 0..3 {
        let unknown = format!("/api/internal/users/{}", uuid::Uuid::new_v4());
        let (status, _) = send(
            app.req(Method::GET, &unknown)
                .timeout(Duration::from_secs(10)),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let health = app.get("/health").await.1;
    assert_eq!(
        health["components"]["database"]["breaker"], "open",
        "{health}"
    );
    let (status, _) = send(
        app.req(Method::GET, "/health")
            .timeout(Duration::from_secs(2)),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "liveness never touches the database"
    );
    let (status, _) = send(
        app.req(Method::GET, "/health/ready")
            .timeout(Duration::from_secs(10)),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    proxy.restore();
    let user = eventually(Duration::from_secs(20), || async {
        let (status, body) = app.get(&path).await;
        (status == StatusCode::OK).then_some(body)
    })
    .await;
    assert_eq!(user["email"], "out@example.com");
    assert_eq!(app.get("/health/ready").await.0, StatusCode::OK);
}

/// Two updates blocked on row locks held by the test are both inside PostgreSQL at the same
/// time: the store does not serialise requests.
#[tokio::test]
async fn slow_queries_run_concurrently() {
    let app = TestApp::spawn().await;
    let a = app.create_user("A", "a@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = app.create_user("B", "b@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut locker = app.lock_users(&[&a, &b]).await;

    let release_when_both_wait = async {
        app.until_waiting_on_locks(2).await;
        sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    };
    let (path_a, path_b) = (
        format!("/api/internal/users/{a}"),
        format!("/api/internal/users/{b}"),
    );
    let (first, second, ()) = tokio::join!(
        app.patch(&path_a, json!({"name": "New A"})),
        app.patch(&path_b, json!({"name": "New B"})),
        release_when_both_wait,
    );
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    assert_eq!(second.0, StatusCode::OK, "{}", second.1);
}

/// A request in flight when the stop signal arrives still gets its answer; then the
/// service stops.
#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let app = TestApp::spawn().await;
    let id = app.create_user("S", "s@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut locker = app.lock_users(&[&id]).await;

    let path = format!("/api/internal/users/{id}");
    let stop_while_in_flight = async {
        app.until_waiting_on_locks(1).await;
        app.begin_stop();
        sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    };
    let ((status, body), ()) = tokio::join!(
        app.patch(&path, json!({"name": "Finished"})),
        stop_while_in_flight
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "Finished");
    eventually(Duration::from_secs(10), || async {
        app.has_stopped().then_some(())
    })
    .await;
}

#[tokio::test]
async fn integrations_report_each_part() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/health/integrations").await;
    assert_eq!(status, StatusCode::OK);
    for part in [
        "redis",
        "database",
        "internalApis",
        "eventPublishing",
        "cachePerformance",
    ] {
        assert!(body[part]["status"].is_string(), "{part} in {body}");
    }
    assert_eq!(body["database"]["status"], "ok");
    assert!(body["database"]["latencyMs"].is_number());
    assert_eq!(body["redis"]["status"], "ok");
    assert_eq!(body["internalApis"]["mode"], "authenticated");
    assert_eq!(
        body["internalApis"]["apiKeyCallers"],
        json!(["auth-service", "game-catalog"])
    );
    assert!(
        !body.to_string().contains(crate::helpers::AUTH_KEY),
        "never a key"
    );
    crate::helpers::eventually(Duration::from_secs(10), || async {
        let (_, b) = app.get("/health/integrations").await;
        (b["eventPublishing"]["status"] == "ok" && b["eventPublishing"]["outboxPending"] == 0)
            .then_some(())
    })
    .await;

    let no_redis = TestApp::spawn_with(&[("REDIS_URL", "redis://127.0.0.1:1")]).await;
    let (status, body) = no_redis.get("/health/integrations").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["redis"]["status"].clone(), body["status"].clone()),
        (json!("down"), json!("degraded"))
    );
    let id = no_redis.create_user("NoRedis", "nr@example.com").await["id"].clone();
    assert!(id.is_string(), "Redis down never fails a request");
}

#[tokio::test]
async fn metrics_count_requests_by_caller_operation_and_transport() {
    let app = TestApp::spawn().await;
    let id = app.create_user("Met", "met@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.get(&format!("/api/internal/users/{}", uuid::Uuid::new_v4()))
        .await;
    let client = app.rpc().await;
    client.exists(id.parse().unwrap()).await.unwrap();
    crate::helpers::eventually(Duration::from_secs(10), || async {
        let text = app.client.get(app.url("/metrics")).send().await.ok()?.text().await.ok()?;
        let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
        let created = has(r#"user_service_integration_requests_total{service="auth-service",endpoint="users.create",status="201",transport="rest"}"#);
        let not_found = has(r#"user_service_integration_errors_total{service="auth-service",error_type="USER_NOT_FOUND"}"#);
        let rpc = has(r#"user_service_integration_requests_total{service="auth-service",endpoint="users.exists",status="200",transport="rpc"}"#);
        let histogram = has("user_service_integration_duration_seconds_bucket{");
        let outbox = has("user_service_outbox_pending");
        (created && not_found && rpc && histogram && outbox).then_some(())
    })
    .await;
}

/// An instance that vanishes mid-transaction (its host gone: no FIN, no more statements)
/// must not keep its locks — a request key's, a user row's — for the hours TCP takes to
/// notice: PostgreSQL ends a transaction its client left idle, and probes idle sessions.
#[tokio::test]
async fn postgres_ends_a_transaction_the_service_left_idle() {
    use sqlx::ConnectOptions;
    let app = TestApp::spawn().await;
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", app.db_name);
    let mut vanished = user_service::db::options(&url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let keepalive: String = sqlx::query_scalar("SHOW tcp_keepalives_idle")
        .fetch_one(&mut vanished)
        .await
        .unwrap();
    assert_eq!(
        keepalive, "15",
        "idle sessions of a vanished host are probed"
    );
    let idle: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
        .fetch_one(&mut vanished)
        .await
        .unwrap();
    assert_eq!(idle, "15s", "a transaction left idle is ended");
    // The same rule, not waited out for 15 s: this session's own timeout shortened.
    sqlx::query("SET idle_in_transaction_session_timeout = '500ms'")
        .execute(&mut vanished)
        .await
        .unwrap();
    let lock = 0x5eed_i64;
    sqlx::query("BEGIN").execute(&mut vanished).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock)
        .execute(&mut vanished)
        .await
        .unwrap();
    // Nothing more comes from `vanished`. Its lock, a transaction's, is free once the
    // transaction has ended.
    eventually(Duration::from_secs(40), || async {
        let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(lock)
            .fetch_one(&mut app.db().await)
            .await
            .unwrap();
        free.then_some(())
    })
    .await;
    let gone = sqlx::query("SELECT 1").execute(&mut vanished).await;
    assert!(gone.is_err(), "the server closed the session");
}

/// The server processes of the service's connections to its database, each ended as an
/// operator's `pg_terminate_backend` (or a restart) ends it.
async fn drop_connections(app: &TestApp) -> Vec<i32> {
    sqlx::query_scalar(
        "WITH service AS MATERIALIZED (SELECT pid FROM pg_stat_activity \
           WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND application_name = 'user-service') \
         SELECT pid FROM service WHERE pg_terminate_backend(pid)",
    )
    .fetch_all(&mut app.db().await)
    .await
    .unwrap()
}

/// The readers' pool hands out a connection used a moment ago without asking the server
/// first (`user_core::store::TRUSTED_IDLE`); one idle for longer is asked, so connections the
/// server dropped meanwhile (a restart, an operator, a proxy) are replaced unseen. (The main
/// pool asks every time.)
#[tokio::test]
async fn connections_the_database_dropped_while_idle_are_replaced_before_a_request_sees_them() {
    let app = TestApp::spawn().await;
    app.create_user("Idle", "idle@example.com").await;
    let (status, _) = app.get("/api/internal/users?limit=10").await;
    assert_eq!(status, StatusCode::OK, "the readers' pool has a connection");
    let dropped = drop_connections(&app).await;
    assert!(
        dropped.len() >= 2,
        "both pools had connections: {dropped:?}"
    );
    eventually(Duration::from_secs(10), || async {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
                .bind(&dropped)
                .fetch_one(&mut app.db().await)
                .await
                .unwrap();
        (left == 0).then_some(())
    })
    .await;
    // Not a wait for something to happen: the connections' idleness is what is tested.
    tokio::time::sleep(user_core::store::TRUSTED_IDLE + Duration::from_millis(100)).await;
    let (status, body) = app.get("/api/internal/users?limit=10").await;
    assert_eq!(status, StatusCode::OK, "a read: {body}");
    app.create_user("Again", "again@example.com").await; // a write: 201
}

/// The database dropping every connection at once (a restart, a failover, an operator) under a
/// steady load of reads and writes: no read sees it. A read whose connection the server closed
/// under it is asked again on a connection known to be alive, and the connections left idle
/// since are checked before they are handed out again. A write in flight may fail (503: its
/// outcome is for its request key to tell), but lost connections do not open the breaker: the
/// reads and writes after them go on.
#[tokio::test]
async fn reads_under_load_do_not_see_the_database_drop_its_connections() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    // As fast as the machine goes: auth-service's 1 000 a minute would end it in a fast hour.
    let unlimited = ("RATE_LIMITS", "auth-service=1000000/60");
    let app = Arc::new(TestApp::spawn_with(&[unlimited]).await);
    app.create_user("Steady", "steady@example.com").await;
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, writes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let callers: Vec<_> = (0..16)
        .map(|n| {
            let (app, stop) = (app.clone(), stop.clone());
            let done = if n < 8 { reads.clone() } else { writes.clone() };
            tokio::spawn(async move {
                let mut failed = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (status, body) = match n < 8 {
                        true => app.get("/api/internal/users?limit=10").await,
                        false => {
                            let email = format!("w{n}.{i}@example.com");
                            let new = json!({"name": "W", "email": email, "password": HASH});
                            app.post("/api/internal/users", new).await
                        }
                    };
                    if !status.is_success() {
                        failed.push((status, body));
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                (n < 8, failed)
            })
        })
        .collect();
    let past = |counter: &Arc<AtomicUsize>, more: usize| {
        let (counter, from) = (counter.clone(), counter.load(Ordering::Relaxed));
        eventually(Duration::from_secs(20), move || {
            let counter = counter.clone();
            async move { (counter.load(Ordering::Relaxed) >= from + more).then_some(()) }
        })
    };
    for _ in 0..3 {
        past(&reads, 100).await;
        let dropped = drop_connections(&app).await;
        assert!(!dropped.is_empty(), "the service was connected");
    }
    past(&reads, 100).await;
    past(&writes, 100).await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        let (reading, failed) = caller.await.unwrap();
        if reading {
            assert!(failed.is_empty(), "reads failed: {failed:?}");
        }
        for (status, body) in failed {
            assert_error(
                status,
                &body,
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
            );
        }
    }
}
