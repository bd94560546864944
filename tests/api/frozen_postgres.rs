//! A frozen PostgreSQL (the server stops answering; its connections stay open and silent) is
//! answered, not waited on: under load, every request gets an answer within the patience
//! (`DB_ACQUIRE_TIMEOUT_MS`) and a margin, cached reads keep serving, what needs the database
//! gets 503, the breaker opens; after the thaw, service resumes within 5 s, and nothing
//! acknowledged is lost.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::events::Events;
use crate::helpers::{HASH, TestApp, eventually, send};
use crate::relay::Relay;

const PATIENCE_MS: &str = "1000";
/// "Answered at all": the patience and a generous margin for a loaded machine.
const ANSWERED_WITHIN: Duration = Duration::from_secs(6);
/// Between two requests of one load worker.
const PACE: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    CachedRead,
    UncachedRead,
    Create,
    Update,
}

#[derive(Debug)]
struct Outcome {
    kind: Kind,
    status: StatusCode,
    body: Value,
    started: Instant,
    ended: Instant,
    correlation: String,
}

/// What the load saw: every answer, and every request that got none.
#[derive(Default)]
struct Seen {
    outcomes: Mutex<Vec<Outcome>>,
    unanswered: Mutex<Vec<String>>,
    /// Answers so far, by worker.
    answered: [AtomicUsize; WORKERS],
}

impl Seen {
    fn answered(&self) -> Vec<usize> {
        self.answered
            .iter()
            .map(|n| n.load(Ordering::SeqCst))
            .collect()
    }
}

const WORKERS: usize = 8;

#[tokio::test]
async fn a_frozen_database_is_answered_not_waited_on_and_service_resumes_after_the_thaw() {
    let relay = Relay::postgres().await;
    let url = format!("postgres://postgres@{}/{{db}}", relay.addr);
    let app = Arc::new(
        TestApp::spawn_with(&[
            ("DATABASE_URL", &url),
            ("DB_ACQUIRE_TIMEOUT_MS", PATIENCE_MS),
            // Refusals come fast: the load must not reach the rate limits.
            ("RATE_LIMITS", "default=1000000/60"),
        ])
        .await,
    );
    let mut events = Events::bind(&format!("{}.events", app.db_name)).await;
    let id_of = |v: Value| v["id"].as_str().unwrap().to_owned();
    let cached = id_of(app.create_user("Cached", "cached@example.com").await);
    let updated = id_of(app.create_user("Updated", "updated@example.com").await);
    warm(&app, &cached).await;

    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    let targets: [(Kind, String); WORKERS] = [
        (Kind::CachedRead, cached.clone()),
        (Kind::CachedRead, cached.clone()),
        (Kind::UncachedRead, String::new()),
        (Kind::UncachedRead, String::new()),
        (Kind::Create, String::new()),
        (Kind::Create, String::new()),
        (Kind::Update, updated.clone()),
        (Kind::Update, updated.clone()),
    ];
    let kinds: Vec<Kind> = targets.iter().map(|(k, _)| *k).collect();
    for (worker, (kind, id)) in targets.into_iter().enumerate() {
        load.push(tokio::spawn(drive(
            app.clone(),
            kind,
            id,
            worker,
            seen.clone(),
            stop.clone(),
        )));
    }

    // Frozen with queries inside: the test holds the users table, so reads and writes of the
    // load wait in PostgreSQL when it stops answering (then their answers are held back).
    let mut locker = app.db().await;
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    app.until_waiting_on_locks(2).await;
    relay.freeze();
    let frozen_at = Instant::now();
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();

    // The breaker opens after a few timeouts; /health and readiness say so without waiting.
    eventually(Duration::from_secs(15), || async {
        let (_, health) = app.get("/health").await;
        (health["components"]["database"]["breaker"] == "open").then_some(())
    })
    .await;
    let opened_after = frozen_at.elapsed();
    let (status, health) = app.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["components"]["database"]["status"], "down");
    let ready = app
        .req(Method::GET, "/health/ready")
        .timeout(ANSWERED_WITHIN);
    assert_eq!(send(ready).await.0, StatusCode::SERVICE_UNAVAILABLE);
    // While open, a write is refused at once rather than waiting out the patience.
    let (status, refused) = send(
        app.req(Method::PATCH, &format!("/api/internal/users/{updated}"))
            .timeout(ANSWERED_WITHIN)
            .json(&json!({"name": "Refused"})),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
    assert_eq!(refused["code"], "UNAVAILABLE");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("without waiting")),
        "refused by the breaker: {refused}"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"user_service_breaker_open{dependency="database"} 1"#),
        "{metrics}"
    );
    // Every worker keeps being answered while the database is frozen; none hangs.
    let before = seen.answered();
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen
        .answered()
        .iter()
        .zip(&before)
        .any(|(now, then)| *now < then + 5)
    {
        assert!(
            Instant::now() < deadline,
            "a load worker is not answered while frozen: {:?} since {before:?} ({targets_seen:?})",
            seen.answered(),
            targets_seen = kinds
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    relay.thaw();
    let thawed_at = Instant::now();
    // Service resumes within 5 s: a write commits.
    eventually(Duration::from_secs(5), || async {
        let (status, _) = app
            .patch(
                &format!("/api/internal/users/{updated}"),
                json!({"name": "Thawed"}),
            )
            .await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    assert!(
        thawed_at.elapsed() < Duration::from_secs(5),
        "resumed within 5 s of the thaw"
    );
    // The load sees it too: every kind is served again.
    eventually(Duration::from_secs(10), || async {
        let outcomes = seen.outcomes.lock().unwrap();
        let served = |kind| {
            outcomes.iter().any(|o| {
                o.kind == kind
                    && o.started > thawed_at
                    && o.status != StatusCode::SERVICE_UNAVAILABLE
            })
        };
        (served(Kind::UncachedRead) && served(Kind::Create) && served(Kind::Update)).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for worker in load {
        worker.await.expect("load worker");
    }

    let resumed_after = thawed_at.elapsed();
    let unanswered = seen.unanswered.lock().unwrap().clone();
    assert!(
        unanswered.is_empty(),
        "requests not answered within {ANSWERED_WITHIN:?}: {unanswered:?}"
    );
    let outcomes = std::mem::take(&mut *seen.outcomes.lock().unwrap());
    // Asked and answered while frozen. (What was inside PostgreSQL when it froze is answered
    // too, within the bound, but may have had its answer from the database just before.)
    let during = |o: &&Outcome| o.started >= frozen_at && o.ended <= thawed_at;
    for o in outcomes.iter().filter(|o| o.kind == Kind::CachedRead) {
        assert_eq!(o.status, StatusCode::OK, "a cached read: {o:?}");
    }
    for o in outcomes.iter().filter(|o| o.kind == Kind::UncachedRead) {
        let expected = match during(&o) {
            true => StatusCode::SERVICE_UNAVAILABLE,
            false => StatusCode::NOT_FOUND,
        };
        assert!(
            o.status == expected || o.status == StatusCode::SERVICE_UNAVAILABLE,
            "an uncached read: {o:?}"
        );
    }
    assert!(
        outcomes
            .iter()
            .any(|o| o.started < frozen_at && o.ended > frozen_at && o.kind != Kind::CachedRead),
        "some requests were inside PostgreSQL when it froze"
    );
    let needing_db: Vec<&Outcome> = outcomes
        .iter()
        .filter(during)
        .filter(|o| o.kind != Kind::CachedRead)
        .collect();
    for kind in [Kind::UncachedRead, Kind::Create, Kind::Update] {
        assert!(
            needing_db.iter().any(|o| o.kind == kind),
            "{kind:?} was tried while frozen"
        );
    }
    for o in &needing_db {
        assert_eq!(
            o.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "while frozen: {o:?}"
        );
        assert_eq!(o.body["code"], "UNAVAILABLE", "{o:?}");
    }

    let slowest = |kind| {
        outcomes
            .iter()
            .filter(|o| o.kind == kind)
            .map(|o| o.ended - o.started)
            .max()
    };
    eprintln!(
        "breaker open {:?} after the freeze; slowest cached read {:?}, uncached read {:?}, \
         create {:?}, update {:?}; {} requests; all kinds served {resumed_after:?} after the thaw",
        opened_after,
        slowest(Kind::CachedRead),
        slowest(Kind::UncachedRead),
        slowest(Kind::Create),
        slowest(Kind::Update),
        outcomes.len()
    );

    // Nothing acknowledged is lost: every create answered 201 is in the database, and the
    // event of every acknowledged write is published.
    let acked: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| matches!(o.kind, Kind::Create | Kind::Update) && o.status.is_success())
        .collect();
    let created: Vec<String> = acked
        .iter()
        .filter(|o| o.kind == Kind::Create)
        .map(|o| id_of(o.body.clone()))
        .collect();
    let mut db = app.db().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE id::text = ANY($1)")
        .bind(&created)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(
        stored as usize,
        created.len(),
        "acknowledged creates stored"
    );
    let mut expected: HashSet<String> = acked.iter().map(|o| o.correlation.clone()).collect();
    while !expected.is_empty() {
        let (_, _, event) = events.next().await;
        if let Some(corr) = event["correlationId"].as_str() {
            expected.remove(corr);
        }
    }
}

/// Reads `id` until the cache answers it, so that it is served without the database.
async fn warm(app: &TestApp, id: &str) {
    eventually(Duration::from_secs(10), || async {
        assert_eq!(
            app.get(&format!("/api/internal/users/{id}")).await.0,
            StatusCode::OK
        );
        let (_, report) = app.get("/health/integrations").await;
        let hits = &report["cachePerformance"];
        let cached =
            hits["localHits"].as_u64().unwrap_or(0) + hits["redisHits"].as_u64().unwrap_or(0);
        (cached > 0).then_some(())
    })
    .await;
}

/// Sends requests of one kind until `stop`, recording every answer.
async fn drive(
    app: Arc<TestApp>,
    kind: Kind,
    id: String,
    worker: usize,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let correlation = format!("frozen-{worker}-{n}");
        let path = match kind {
            // A user that does not exist is never cached: the database is asked every time.
            Kind::UncachedRead => format!("/api/internal/users/{}", uuid::Uuid::new_v4()),
            _ => format!("/api/internal/users/{id}"),
        };
        let request = match kind {
            Kind::CachedRead | Kind::UncachedRead => app.req(Method::GET, &path),
            Kind::Create => app.req(Method::POST, "/api/internal/users").json(&json!({
                "name": "Load", "email": format!("{correlation}@example.com"), "password": HASH,
            })),
            Kind::Update => app
                .req(Method::PATCH, &path)
                .json(&json!({"name": correlation})),
        };
        let request = match kind {
            Kind::Create | Kind::Update => request.header("idempotency-key", &correlation),
            _ => request,
        };
        // Paced, not flooding: refusals come back at once.
        tokio::time::sleep(PACE).await;
        let started = Instant::now();
        let sent = request
            .header("x-correlation-id", &correlation)
            .timeout(ANSWERED_WITHIN)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                seen.unanswered
                    .lock()
                    .unwrap()
                    .push(format!("{kind:?}: {e}"));
                continue;
            }
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(e) => {
                seen.unanswered
                    .lock()
                    .unwrap()
                    .push(format!("{kind:?} body: {e}"));
                continue;
            }
        };
        seen.outcomes.lock().unwrap().push(Outcome {
            kind,
            status,
            body,
            started,
            ended: Instant::now(),
            correlation,
        });
        seen.answered[worker].fetch_add(1, Ordering::SeqCst);
    }
}
