//! Redis frozen under load (issue 20): connections stay open and nothing answers. Requests
//! must not wait for it: after a few timeouts the Redis breaker opens, reads are answered from
//! the in-process copy and PostgreSQL without asking Redis, writes commit, shared rate limits
//! count locally; after the thaw the breaker closes and what was written meanwhile is what
//! Redis serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool_redis::redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{AUTH_KEY, TestApp, eventually, redis};
use crate::relay::Relay;

/// A request not answered within this is a failure: a frozen Redis must cost far less.
const ANSWERED_WITHIN: Duration = Duration::from_secs(5);
/// Counted in Redis by both instances: the load must not reach it.
const UNLIMITED: (&str, &str) = ("RATE_LIMITS", "auth-service=1000000/60");
/// The longest deadline of a Redis call (the cache manager's check): calls begun before the
/// breaker opened have ended this long after.
const LONGEST_REDIS_DEADLINE: Duration = Duration::from_secs(1);

async fn health(app: &TestApp) -> Value {
    app.get("/health").await.1
}

async fn redis_errors(app: &TestApp) -> u64 {
    let (_, body) = app.get("/health/integrations").await;
    body["cachePerformance"]["redisErrors"]
        .as_u64()
        .expect("redisErrors")
}

fn breaker_gauge(metrics: &str) -> Option<&str> {
    metrics
        .lines()
        .find(|l| l.starts_with("user_service_breaker_open{dependency=\"redis\"}"))
        .and_then(|l| l.split_whitespace().last())
}

/// Reads known users (each must come back exactly as it was) and unknown ids (404: a miss
/// that would ask Redis every time) until `done`; returns how many.
fn reader(
    app: &TestApp,
    users: Arc<Vec<(String, Value)>>,
    done: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    first: usize,
) -> tokio::task::JoinHandle<()> {
    let client = reqwest::Client::builder()
        .timeout(ANSWERED_WITHIN)
        .build()
        .unwrap();
    let base = app.url("/api/internal/users");
    tokio::spawn(async move {
        let mut n = first;
        while !done.load(Ordering::Relaxed) {
            n += 1;
            let (id, expected) = &users[n % users.len()];
            let unknown = uuid::Uuid::new_v4().to_string();
            let (path, want) = match n % 2 {
                0 => (id.as_str(), StatusCode::OK),
                _ => (unknown.as_str(), StatusCode::NOT_FOUND),
            };
            let resp = client
                .get(format!("{base}/{path}"))
                .header("x-api-key", AUTH_KEY)
                .send()
                .await
                .expect("answered within 5 s");
            assert_eq!(resp.status(), want, "{path}");
            let body: Value = resp.json().await.unwrap();
            if want == StatusCode::OK {
                assert_eq!(&body, expected, "the right user, unchanged");
            }
            reads.fetch_add(1, Ordering::Relaxed);
        }
    })
}

#[tokio::test]
async fn a_frozen_redis_is_cut_off_and_changes_no_answer() {
    let relay = Relay::redis().await;
    let app = TestApp::spawn_with(&[("REDIS_URL", &relay.redis_url()), UNLIMITED]).await;
    eventually(Duration::from_secs(10), || async {
        let h = health(&app).await;
        (h["components"]["redis"]["status"] == "up"
            && h["components"]["rateLimits"]["shared"] == true)
            .then_some(())
    })
    .await;
    let mut users = Vec::new();
    for i in 0..12 {
        let id = app
            .create_user(&format!("Frozen {i}"), &format!("frozen{i}@example.com"))
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (_, body) = app.get(&format!("/api/internal/users/{id}")).await;
        users.push((id, body));
    }
    // The user written while Redis is frozen; Redis holds its old name until then.
    let (written, _) = users.pop().unwrap();
    let written_path = format!("/api/internal/users/{written}");
    let key = format!("{}:user:{written}", app.db_name);
    let mut r = redis().await;
    // This instance fills a share of its misses only, as Redis answered lately (half of
    // what its readers asked was unknown); one that has not judged Redis yet fills each.
    let filler = app.twin(&[("CACHE_PREFIX", &app.db_name), UNLIMITED]).await;
    eventually(Duration::from_secs(10), || {
        let mut r = r.clone();
        let (app, path, key) = (&filler, &written_path, &key);
        async move {
            app.get(path).await;
            r.exists::<_, bool>(key).await.unwrap().then_some(())
        }
    })
    .await;

    let users = Arc::new(users);
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..8)
        .map(|i| reader(&app, users.clone(), done.clone(), reads.clone(), i))
        .collect();
    let reads_after = |more: u64| {
        let target = reads.load(Ordering::Relaxed) + more;
        let reads = reads.clone();
        eventually(Duration::from_secs(30), move || {
            let now = reads.load(Ordering::Relaxed);
            async move { (now >= target).then_some(()) }
        })
    };
    reads_after(50).await;

    relay.freeze();
    eventually(Duration::from_secs(10), || async {
        let h = health(&app).await;
        let redis = &h["components"]["redis"];
        (redis["breaker"] == "open" && redis["status"] == "down" && h["status"] == "degraded")
            .then_some(())
    })
    .await;
    let opened = Instant::now();
    assert_eq!(breaker_gauge(&app.metrics().await), Some("1"));
    let (_, integrations) = app.get("/health/integrations").await;
    assert_eq!(integrations["redis"]["breaker"], "open", "{integrations}");
    assert_eq!(integrations["redis"]["status"], "down", "{integrations}");
    // Shared limits are counted locally at once.
    eventually(Duration::from_secs(5), || async {
        (health(&app).await["components"]["rateLimits"]["shared"] == false).then_some(())
    })
    .await;

    // Redis is no longer asked: calls made before the breaker opened end within their
    // deadline, and then the figure stops.
    let settled = eventually(Duration::from_secs(10), || async {
        let late = opened.elapsed() > LONGEST_REDIS_DEADLINE;
        let before = redis_errors(&app).await;
        reads_after(100).await;
        (late && redis_errors(&app).await == before).then_some(before)
    })
    .await;
    reads_after(400).await;
    assert_eq!(
        redis_errors(&app).await,
        settled,
        "400 reads, half of them misses, and none asked Redis"
    );

    // Writes commit, and this instance reads them at once.
    let (status, _) = app.patch(&written_path, json!({"name": "Thawed"})).await;
    assert_eq!(status, StatusCode::OK, "writes go on with Redis frozen");
    let created = app.create_user("During", "during@example.com").await;
    assert_eq!(created["name"], "During");
    let (status, body) = app.get(&written_path).await;
    assert_eq!(
        (status, body["name"].clone()),
        (StatusCode::OK, json!("Thawed"))
    );
    reads_after(100).await;

    relay.thaw();
    eventually(Duration::from_secs(15), || async {
        let h = health(&app).await;
        let (_, i) = app.get("/health/integrations").await;
        (h["components"]["redis"]["breaker"] == "closed"
            && h["components"]["rateLimits"]["shared"] == true
            && i["cachePerformance"]["unclean"] == 0)
            .then_some(())
    })
    .await;
    assert_eq!(breaker_gauge(&app.metrics().await), Some("0"));
    reads_after(100).await;
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.expect("every read answered right");
    }

    // The write made during the freeze is what Redis serves now: the old entry is gone, a
    // read fills the new one, and an instance with nothing in process reads it from Redis.
    // The read is a new instance's: this one holds the user in process, and its misses
    // during the freeze taught it to fill only a share of its misses (see `filler`).
    let cached: Option<String> = r.get(&key).await.unwrap();
    assert!(
        cached.is_none_or(|c| c.contains("Thawed")),
        "the stale entry was invalidated"
    );
    let refiller = app.twin(&[("CACHE_PREFIX", &app.db_name), UNLIMITED]).await;
    eventually(Duration::from_secs(10), || {
        let mut r = r.clone();
        let (app, path, key) = (&refiller, &written_path, &key);
        async move {
            app.get(path).await;
            let cached: Option<String> = r.get(key).await.unwrap();
            cached.filter(|c| c.contains("Thawed")).map(|_| ())
        }
    })
    .await;
    let twin = app.twin(&[("CACHE_PREFIX", &app.db_name), UNLIMITED]).await;
    let (status, body) = twin.get(&written_path).await;
    assert_eq!(
        (status, body["name"].clone()),
        (StatusCode::OK, json!("Thawed"))
    );
    let (_, i) = twin.get("/health/integrations").await;
    assert_eq!(i["cachePerformance"]["redisHits"], 1, "{i}");
}
