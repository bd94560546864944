//! Instances sharing one database and cache stay coherent: a write drops the others' copies,
//! racing readers leave nothing stale, no read after an acknowledged write returns older data.

use std::time::Duration;

use deadpool_redis::redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::user_key;
use crate::helpers::{TestApp, eventually, redis};

#[tokio::test]
async fn other_instances_drop_their_copies_when_one_writes() {
    let first = TestApp::spawn().await;
    let db_url = format!("postgres://postgres@127.0.0.1:5432/{}", first.db_name);
    let second =
        TestApp::spawn_with(&[("DATABASE_URL", &db_url), ("CACHE_PREFIX", &first.db_name)]).await;
    let id = first.create_user("Shared", "shared@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/internal/users/{id}/preferences");
    // The second instance reads and keeps a copy in process (it does once it listens for
    // invalidations); then the first writes.
    eventually(Duration::from_secs(10), || async {
        let (_, health) = second.get("/health").await;
        (health["components"]["redis"]["status"] == "up").then_some(())
    })
    .await;
    for _ in 0..3 {
        let (_, prefs) = second.get(&path).await;
        assert_eq!(prefs["language"], "ru");
    }
    let (_, health) = second.get("/health/integrations").await;
    assert!(
        health["cachePerformance"]["localHits"].as_u64().unwrap() >= 2,
        "{health}"
    );
    let (status, _) = first.patch(&path, json!({"language": "en"})).await;
    assert_eq!(status, StatusCode::OK);
    eventually(Duration::from_secs(5), || async {
        let (_, prefs) = second.get(&path).await;
        (prefs["language"] == "en").then_some(())
    })
    .await;
}

/// Two instances on one database and one cache prefix, without rate limits.
async fn two_instances() -> (TestApp, TestApp) {
    let unlimited = ("RATE_LIMITS", "auth-service=1000000/60");
    let first = TestApp::spawn_with(&[unlimited]).await;
    let db_url = format!("postgres://postgres@127.0.0.1:5432/{}", first.db_name);
    let second = TestApp::spawn_with(&[
        ("DATABASE_URL", &db_url),
        ("CACHE_PREFIX", &first.db_name),
        unlimited,
    ])
    .await;
    (first, second)
}

/// Readers on two instances race a writer; once the writer is done, nothing stale remains:
/// the writer's instance answers the last write at once, the other one shortly after, and
/// Redis holds no older copy.
#[tokio::test]
async fn racing_reads_never_leave_a_stale_copy_behind() {
    let (first, second) = two_instances().await;
    let id = first.create_user("Race", "race@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/internal/users/{id}");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..8)
        .map(|i| {
            let (done, path) = (done.clone(), path.clone());
            let app = if i % 2 == 0 { &first } else { &second };
            let (client, url) = (app.client.clone(), app.url(&path));
            tokio::spawn(async move {
                let mut reads = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let resp = client
                        .get(&url)
                        .header("x-api-key", crate::helpers::AUTH_KEY)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), StatusCode::OK);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let last = 150;
    for n in 1..=last {
        let (status, _) = first.patch(&path, json!({"metadata": {"n": n}})).await;
        assert_eq!(status, StatusCode::OK);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut reads = 0;
    for r in readers {
        reads += r.await.unwrap();
    }
    assert!(reads > 100, "the readers raced the writer ({reads} reads)");

    let (_, now) = first.get(&path).await;
    assert_eq!(
        now["metadata"]["n"], last,
        "the writer's instance reads its write"
    );
    eventually(Duration::from_secs(5), || async {
        let (_, now) = second.get(&path).await;
        (now["metadata"]["n"] == last).then_some(())
    })
    .await;
    let mut r = redis().await;
    let cached: Option<String> = r.get(user_key(&first, &id)).await.unwrap();
    if let Some(cached) = cached {
        let cached: Value = serde_json::from_str(&cached).unwrap();
        assert_eq!(cached["metadata"]["n"], last, "Redis holds no older copy");
    }
}

/// Writers on two instances and readers on both race over the same users. No read that
/// starts after a write was acknowledged returns data older than that write: on the writer's
/// own instance never, on the other one only until the invalidation arrives, within the bound
/// `docs/interface.md` documents (1 s while Redis takes every invalidation within its
/// deadline; well under a millisecond on an idle machine).
#[tokio::test]
async fn no_read_after_an_acknowledged_write_returns_older_data() {
    use std::time::Instant;
    const USERS: usize = 8;
    const WRITES: u64 = 60;
    const OTHER_INSTANCE: Duration = Duration::from_secs(1);
    const OTHER_INSTANCE_BUSY: Duration = Duration::from_secs(5);
    let (first, second) = two_instances().await;
    let apps = [&first, &second];
    let redis_errors = async || {
        let mut errors = 0;
        for app in apps {
            let (_, body) = app.get("/health/integrations").await;
            errors += body["cachePerformance"]["redisErrors"]
                .as_u64()
                .expect("redisErrors");
        }
        errors
    };
    let errors_before = redis_errors().await;
    let mut paths = Vec::new();
    for u in 0..USERS {
        let user = first
            .create_user(&format!("Fresh {u}"), &format!("fresh{u}@example.com"))
            .await;
        paths.push(format!(
            "/api/internal/users/{}",
            user["id"].as_str().unwrap()
        ));
    }
    let paths = std::sync::Arc::new(paths);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Reader r reads every user in turn on instance r % 2: (user, instance, began, n seen).
    let readers: Vec<_> = (0..6)
        .map(|r| {
            let (done, paths) = (done.clone(), paths.clone());
            let app = apps[r % 2];
            let (client, base) = (app.client.clone(), app.url(""));
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut u = r;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    u = (u + 1) % USERS;
                    let began = Instant::now();
                    let resp = client
                        .get(format!("{base}{}", paths[u]))
                        .header("x-api-key", crate::helpers::AUTH_KEY)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), StatusCode::OK);
                    let body: Value = resp.json().await.unwrap();
                    let n = body["metadata"]["n"].as_u64().unwrap_or(0);
                    seen.push((u, r % 2, began, n));
                }
                seen
            })
        })
        .collect();
    // User u is written through instance u % 2: (user, n, acknowledged at).
    let writers: Vec<_> = (0..USERS)
        .map(|u| {
            let paths = paths.clone();
            let app = apps[u % 2];
            let (client, url) = (app.client.clone(), app.url(&paths[u]));
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 1..=WRITES {
                    let resp = client
                        .patch(&url)
                        .header("x-api-key", crate::helpers::AUTH_KEY)
                        .json(&json!({"metadata": {"n": n}}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), StatusCode::OK);
                    acked.push(Instant::now());
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for w in writers {
        acked.push(w.await.unwrap());
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut reads = Vec::new();
    for r in readers {
        reads.extend(r.await.unwrap());
    }
    assert!(
        reads.len() > 200,
        "the readers raced the writers ({} reads)",
        reads.len()
    );

    // A read is late by how long before it began the first write it missed was acknowledged.
    let (mut late_same, mut late_other) = (Duration::ZERO, Duration::ZERO);
    for &(u, instance, began, n) in &reads {
        let Some(missed) = acked[u].get(n as usize) else {
            continue; // it saw the last write
        };
        let late = began.saturating_duration_since(*missed);
        if instance == u % 2 {
            late_same = late_same.max(late);
        } else {
            late_other = late_other.max(late);
        }
    }
    // The bound holds while Redis takes every invalidation within its deadline. On a machine
    // too busy for that (CI runs this beside the fuzzer and a broker cluster on two cores),
    // a missed one is retried, and the other instance sees the write once one gets through.
    let missed = redis_errors().await - errors_before;
    eprintln!(
        "{} reads; most late: {late_same:?} on the writer's instance, {late_other:?} on the \
         other; {missed} Redis calls missed their deadline",
        reads.len()
    );
    assert_eq!(
        late_same,
        Duration::ZERO,
        "an instance reads its own writes"
    );
    let bound = match missed {
        0 => OTHER_INSTANCE,
        _ => OTHER_INSTANCE_BUSY,
    };
    assert!(
        late_other <= bound,
        "{late_other:?} late on the other instance ({missed} Redis calls missed their deadline)"
    );
}
