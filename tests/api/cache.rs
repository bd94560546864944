//! The shared Redis cache (contract section 7), seen from outside: its keys, their lifetime,
//! invalidation on every write, reads without Redis or while it is cut. Instances sharing it
//! are in `coherence`.

use std::time::Duration;

use deadpool_redis::redis::{AsyncCommands, aio::MultiplexedConnection};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, UNTIL_FILLED, eventually, redis, redis_client};
use crate::relay::Relay;

mod coherence;

/// What Redis holds under `key` once the fill that follows a read has put it there: the
/// answer does not wait for the fill.
async fn filled(r: &MultiplexedConnection, key: &str) -> String {
    eventually(Duration::from_secs(5), || {
        let mut r = r.clone();
        async move { r.get::<_, Option<String>>(key).await.ok().flatten() }
    })
    .await
}

/// Reads `path` until its user is in Redis: a fill has 100 ms to get there, which a busy
/// machine may miss once (see [`UNTIL_FILLED`]).
async fn cached_by_reading(app: &TestApp, path: &str, r: &MultiplexedConnection, key: &str) {
    eventually(UNTIL_FILLED, || {
        let mut r = r.clone();
        async move {
            app.get(path).await;
            r.exists::<_, bool>(key).await.unwrap().then_some(())
        }
    })
    .await;
}

fn user_key(app: &TestApp, id: &str) -> String {
    format!("{}:user:{id}", app.db_name)
}

/// Reads this instance answered from its cache (either tier), from `/health/integrations`.
async fn cache_hits(app: &TestApp) -> u64 {
    let (_, health) = app.get("/health/integrations").await;
    let figure = |name: &str| health["cachePerformance"][name].as_u64().unwrap();
    figure("localHits") + figure("redisHits")
}

#[tokio::test]
async fn reads_fill_the_keys_and_every_write_invalidates_them() {
    let app = TestApp::spawn().await;
    let mut r = redis().await;
    let mut invalidations = redis_client().get_async_pubsub().await.unwrap();
    invalidations
        .subscribe(format!("{}:cache:invalidate", app.db_name))
        .await
        .unwrap();
    let mut next_invalidation = async || {
        let message =
            tokio::time::timeout(Duration::from_secs(5), invalidations.on_message().next())
                .await
                .expect("an invalidation within 5 s")
                .unwrap();
        serde_json::from_slice::<Value>(message.get_payload_bytes()).unwrap()
    };
    let id = app.create_user("Cached", "Cached@Example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        next_invalidation().await,
        json!({"userId": id}),
        "every write, creates too"
    );
    let key = user_key(&app, &id);
    let email_key = format!("{}:email:cached@example.com", app.db_name);
    assert!(
        !r.exists::<_, bool>(&key).await.unwrap(),
        "a create caches nothing"
    );

    let (_, got) = app.get(&format!("/api/internal/users/{id}")).await;
    let cached = filled(&r, &key).await;
    assert_eq!(serde_json::from_str::<Value>(&cached).unwrap(), got);
    let ttl: i64 = r.ttl(&key).await.unwrap();
    assert!((1..=300).contains(&ttl), "TTL {ttl}");

    let (_, with_hash) = app
        .get("/api/internal/users/email/cached@example.com?includeCredentials=true")
        .await;
    assert!(with_hash["passwordHash"].is_string());
    app.get("/api/internal/users/email/CACHED@example.com")
        .await;
    let by_email = filled(&r, &email_key).await;
    assert!(
        !by_email.contains("passwordHash"),
        "hashes are never cached"
    );

    let (status, _) = app
        .patch(
            &format!("/api/internal/users/{id}"),
            json!({"name": "Renamed", "email": "renamed@example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for k in [&key, &email_key] {
        assert!(
            !r.exists::<_, bool>(k).await.unwrap(),
            "{k} is gone when the write answers"
        );
    }
    assert_eq!(next_invalidation().await, json!({"userId": id}));

    let (_, again) = app.get(&format!("/api/internal/users/{id}")).await;
    assert_eq!(
        (again["name"].clone(), again["email"].clone()),
        (json!("Renamed"), json!("renamed@example.com"))
    );
    let (status, _) = app
        .get("/api/internal/users/email/cached@example.com")
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the old address is forgotten"
    );

    // Every other kind of write invalidates too.
    let writes = [
        (
            reqwest::Method::PATCH,
            "preferences",
            json!({"theme": "dark"}),
        ),
        (
            reqwest::Method::PATCH,
            "privacy-settings",
            json!({"showOnlineStatus": false}),
        ),
        (
            reqwest::Method::PATCH,
            "billing-info",
            json!({"currency": "USD"}),
        ),
        (
            reqwest::Method::PATCH,
            "last-login",
            json!({"ipAddress": "10.0.0.1"}),
        ),
        (
            reqwest::Method::POST,
            "billing-stats",
            json!({"paymentId": "pay-1", "amount": "9.99"}),
        ),
    ];
    for (method, path, body) in writes {
        cached_by_reading(&app, &format!("/api/internal/users/{id}"), &r, &key).await;
        let req = app.req(method, &format!("/api/internal/users/{id}/{path}"));
        let status = req.json(&body).send().await.unwrap().status();
        assert!(status.is_success(), "{path}: {status}");
        assert!(
            !r.exists::<_, bool>(&key).await.unwrap(),
            "{path} invalidates"
        );
    }
    let (_, last) = app.get(&format!("/api/internal/users/{id}")).await;
    assert_eq!(last["billingStats"]["totalSpent"], "9.99");
    assert_eq!(last["preferences"]["theme"], "dark");

    let (status, _) = app.delete(&format!("/api/internal/users/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!r.exists::<_, bool>(&key).await.unwrap());
    let (status, _) = app.get(&format!("/api/internal/users/{id}")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a deleted user is not served from cache"
    );
}

#[tokio::test]
async fn a_batch_is_served_from_the_per_user_keys() {
    let app = TestApp::spawn().await;
    let r = redis().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let u = app
            .create_user(&format!("B{i}"), &format!("b{i}@example.com"))
            .await;
        ids.push(u["id"].as_str().unwrap().to_owned());
    }
    let mut asked = ids.clone();
    asked.push(uuid::Uuid::new_v4().to_string());
    let lookup = || {
        app.post(
            "/api/batch/users/lookup",
            json!({"ids": asked, "fields": ["name"]}),
        )
    };

    let (status, first) = lookup().await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let mut expected: Vec<String> = ids.iter().map(|id| user_key(&app, id)).collect();
    expected.sort();
    // The answer does not wait for the fill: Redis has the users a moment later.
    let cached = eventually(Duration::from_secs(5), || async {
        let keys: Vec<String> = r.clone().keys(format!("{}:*", app.db_name)).await.ok()?;
        // Not cache entries: write markers, and the shared rate limiter's counters.
        let mut cached: Vec<String> = keys
            .into_iter()
            .filter(|k| !k.contains(":written:") && !k.contains(":limit:"))
            .collect();
        cached.sort();
        (cached.len() >= expected.len()).then_some(cached)
    })
    .await;
    assert_eq!(cached, expected, "one key per user, none per batch");

    let before = cache_hits(&app).await;
    let (_, second) = lookup().await;
    assert_eq!(
        second, first,
        "the cache answers exactly what the database did"
    );
    let after = cache_hits(&app).await;
    assert_eq!(after - before, 3, "the three users came from the cache");

    // An instance with nothing in process reads them from Redis.
    let db_url = format!("postgres://postgres@127.0.0.1:5432/{}", app.db_name);
    let other =
        TestApp::spawn_with(&[("DATABASE_URL", &db_url), ("CACHE_PREFIX", &app.db_name)]).await;
    let (_, third) = other
        .post(
            "/api/batch/users/lookup",
            json!({"ids": asked, "fields": ["name"]}),
        )
        .await;
    assert_eq!(third, first);
    let (_, health) = other.get("/health/integrations").await;
    assert_eq!(health["cachePerformance"]["redisHits"], 3, "{health}");
}

#[tokio::test]
async fn without_redis_every_read_goes_to_the_database() {
    let app = TestApp::spawn_with(&[("REDIS_URL", "redis://127.0.0.1:1")]).await;
    let id = app.create_user("NoCache", "nocache@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..2 {
        let (status, body) = app.get(&format!("/api/internal/users/{id}")).await;
        assert_eq!(
            (status, body["name"].clone()),
            (StatusCode::OK, json!("NoCache"))
        );
        let (status, body) = app
            .post("/api/batch/users/lookup", json!({"ids": [id]}))
            .await;
        assert_eq!(
            (status, body["stats"]["found"].clone()),
            (StatusCode::OK, json!(1))
        );
    }
    let (status, _) = app
        .patch(
            &format!("/api/internal/users/{id}"),
            json!({"name": "Still"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "a write needs no Redis either");
    let (_, body) = app.get(&format!("/api/internal/users/{id}")).await;
    assert_eq!(body["name"], "Still");
    let (_, health) = app.get("/health/integrations").await;
    assert_eq!(health["cachePerformance"]["localHits"], 0);
    assert_eq!(health["cachePerformance"]["redisHits"], 0);
}

/// Redis goes away while the service runs: requests go on, the invalidation Redis missed is
/// remembered (that user is not read from Redis meanwhile) and delivered once it is back,
/// and the instance listens again.
#[tokio::test]
async fn redis_cut_mid_run_changes_no_answer() {
    let relay = Relay::redis().await;
    let app = TestApp::spawn_with(&[("REDIS_URL", &relay.redis_url())]).await;
    let redis_status = || async {
        let (_, health) = app.get("/health").await;
        health["components"]["redis"]["status"].clone()
    };
    let unclean = || async {
        let (_, health) = app.get("/health/integrations").await;
        health["cachePerformance"]["unclean"].as_u64().unwrap()
    };
    eventually(Duration::from_secs(10), || async {
        (redis_status().await == "up").then_some(())
    })
    .await;
    let id = app.create_user("Before", "cut@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/internal/users/{id}");
    let mut r = redis().await;
    let key = user_key(&app, &id);
    cached_by_reading(&app, &path, &r, &key).await;

    relay.cut();
    let (status, _) = app.patch(&path, json!({"name": "After"})).await;
    assert_eq!(status, StatusCode::OK, "writes go on without Redis");
    assert_eq!(unclean().await, 1, "the missed invalidation is remembered");
    assert!(
        r.exists::<_, bool>(&key).await.unwrap(),
        "Redis still holds the old user"
    );
    let (status, body) = app.get(&path).await;
    assert_eq!(
        (status, body["name"].clone()),
        (StatusCode::OK, json!("After"))
    );
    eventually(Duration::from_secs(10), || async {
        (redis_status().await == "down").then_some(())
    })
    .await;

    relay.restore();
    eventually(Duration::from_secs(15), || async {
        (unclean().await == 0 && redis_status().await == "up").then_some(())
    })
    .await;
    assert!(
        !r.exists::<_, bool>(&key).await.unwrap(),
        "the invalidation was delivered"
    );
    let (_, body) = app.get(&path).await;
    assert_eq!(body["name"], "After");
}
