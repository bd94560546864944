//! The cache against the local Redis: the ordering rule that keeps old reads out.

use crate::redis::Pool;
use deadpool_redis::redis::AsyncCommands;

use super::local::{LOCAL_BYTES, LOCAL_USERS, Local, Weight, local_users};
use super::*;
use user_domain::User;

const REDIS: &str = "redis://127.0.0.1:6379";

fn pool(url: &str) -> Pool {
    crate::redis::pool(url, 8).unwrap()
}

fn cache() -> (UserCache, Pool, String) {
    let prefix = format!("cache_test_{}", uuid::Uuid::new_v4().simple());
    let pool = pool(REDIS);
    let settings = CacheSettings {
        prefix: prefix.clone(),
        ttl: Duration::from_secs(300),
    };
    let keys = Arc::new(BillingKeys::development());
    (
        UserCache::new(Some(crate::redis::Redis::new(pool.clone())), settings, keys),
        pool,
        prefix,
    )
}

fn user(name: &str) -> User {
    serde_json::from_value(serde_json::json!({
        "id": UserId::generate(), "email": "ann@example.com", "name": name,
        "avatarUrl": null, "isActive": true, "lastLoginAt": null, "lastLoginIp": null,
        "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z",
        "preferences": {}, "privacySettings": {}, "billingInfo": null,
        "billingStats": {"lastPaymentAt": null, "totalSpent": "0.00", "paymentsCount": 0},
        "metadata": {}
    }))
    .unwrap()
}

fn rendered(u: &User) -> Arc<Rendered> {
    Rendered::new(u.clone()).unwrap()
}

async fn cleanup(pool: &Pool, prefix: &str) {
    let mut conn = pool.get().await.unwrap().conn.clone();
    let keys: Vec<String> = conn.keys(format!("{prefix}:*")).await.unwrap();
    if !keys.is_empty() {
        let _: i64 = conn.del(keys).await.unwrap();
    }
}

#[tokio::test]
async fn a_read_that_began_before_a_write_does_not_put_the_old_user_back() {
    let (cache, pool, prefix) = cache();
    let old = user("Old");
    let (found, before_write) = cache.get_many(&[old.id], "test").await;
    assert!(found.is_empty());
    assert!(before_write.redis_time.is_some(), "Redis answered");

    // A write commits and invalidates while that read is still at the database.
    cache.invalidate(old.id, &[&old.email]).await;
    cache.fill(before_write, &[rendered(&old)], true).await;
    let (found, after_write) = cache.get_many(&[old.id], "test").await;
    assert!(found.is_empty(), "the stale fill was refused");
    assert!(cache.get_by_email(&old.email, "test").await.0.is_none());

    // A read that began after the write fills as usual, under both keys.
    let new = User {
        name: user_domain::UserName::parse("New").unwrap(),
        ..old.clone()
    };
    cache.fill(after_write, &[rendered(&new)], true).await;
    let (found, _) = cache.get_many(&[new.id], "test").await;
    assert_eq!(found.get(&new.id).map(|r| &r.user), Some(&new));
    let by_email = cache.get_by_email(&new.email, "test").await.0;
    assert_eq!(by_email.map(|r| r.user.clone()), Some(new.clone()));
    let figures = cache.figures();
    assert_eq!((figures.redis_hits, figures.unclean), (2, 0));
    cleanup(&pool, &prefix).await;
}

#[tokio::test]
async fn a_disabled_cache_holds_nothing() {
    let cache = UserCache::disabled();
    let u = user("Ann");
    let (_, mark) = cache.get_many(&[u.id], "test").await;
    cache.fill(mark, &[rendered(&u)], true).await;
    assert!(cache.get_many(&[u.id], "test").await.0.is_empty());
    assert!(!cache.figures().enabled);
}

/// A CacheManager that dies takes the in-process copy with it: without its subscription, a
/// copy could outlive another instance's write.
#[actix::test]
async fn the_in_process_copy_is_off_as_soon_as_the_manager_dies() {
    use actix::Actor;

    use crate::fault::Crash;
    use crate::health::Health;

    let (cache, pool, prefix) = cache();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let health = Health::default();
    let manager = CacheManager::new(cache.clone(), REDIS.to_owned(), health, stopped).start();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cache.figures().listening {
        assert!(Instant::now() < deadline, "subscribed within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(manager.send(Crash::InHandler).await.is_err(), "it died");
    assert!(!cache.figures().listening);
    cleanup(&pool, &prefix).await;
}

#[test]
fn a_user_of_the_default_shape_weighs_about_what_the_budget_assumes() {
    let u = user("Ann");
    let local = Local {
        user: rendered(&u),
        read_at: Instant::now(),
    };
    let w = quick_cache::Weighter::weight(&Weight, &u.id, &local);
    assert!((1_000..=4_000).contains(&w), "{w}");
    assert!(LOCAL_BYTES / w >= 5_000);
    assert!(
        LOCAL_BYTES / w <= 2 * LOCAL_USERS as u64,
        "the table is sized for them"
    );
}

#[test]
fn the_copy_is_found_full_within_a_weighing_of_filling_it() {
    let local = local_users();
    let fullness = local::Fullness::default();
    assert!(!fullness.full(&local), "empty");
    let one = Local {
        user: rendered(&user("Ann")),
        read_at: Instant::now(),
    };
    let weight = quick_cache::Weighter::weight(&Weight, &one.user.user.id, &one);
    for _ in 0..=(LOCAL_BYTES - LOCAL_BYTES / 8) / weight {
        local.insert(UserId::generate(), one.clone());
    }
    let not_yet = (0..2 * local::WEIGH_EVERY)
        .take_while(|_| !fullness.full(&local))
        .count();
    assert!(
        not_yet < local::WEIGH_EVERY as usize,
        "full after {not_yet} more fills"
    );
    local.clear();
    let still = (0..2 * local::WEIGH_EVERY)
        .take_while(|_| fullness.full(&local))
        .count();
    assert!(
        still < local::WEIGH_EVERY as usize,
        "emptied, it is weighed again: full for {still} more fills"
    );
}

/// A cache whose Redis is an address nobody answers (its breaker closed until tripped).
fn cache_with_redis_nowhere(prefix: &str) -> (UserCache, crate::redis::Redis) {
    let settings = CacheSettings {
        prefix: prefix.to_owned(),
        ttl: Duration::from_secs(300),
    };
    let redis = crate::redis::Redis::new(pool("redis://127.0.0.1:1"));
    let keys = Arc::new(BillingKeys::development());
    (UserCache::new(Some(redis.clone()), settings, keys), redis)
}

/// An in-process user is served for `LOCAL_TTL` after the read that found it, no longer;
/// the sweep then frees it and its address, so an idle instance gives the memory back.
#[tokio::test]
async fn an_in_process_user_past_its_age_is_not_served_and_is_swept() {
    let (cache, _) = cache_with_redis_nowhere("cache_test_aged");
    let c = cache.inner.clone().unwrap();
    c.set_listening(true);
    let aged_at = Instant::now()
        .checked_sub(LOCAL_TTL + Duration::from_secs(1))
        .unwrap();
    let fresh = user("Fresh");
    let aged = User {
        email: Email::parse("aged@example.com").unwrap(),
        ..user("Aged")
    };
    for (u, read_at) in [(&fresh, Instant::now()), (&aged, aged_at)] {
        let local = Local {
            user: rendered(u),
            read_at,
        };
        c.local.insert(u.id, local);
        c.emails.insert(u.email.clone(), (u.id, read_at));
    }
    let keys = [
        Key::Id(fresh.id),
        Key::Id(aged.id),
        Key::Email(aged.email.clone()),
    ];
    let found: Vec<bool> = cache
        .local(&keys, "test")
        .iter()
        .map(Option::is_some)
        .collect();
    assert_eq!(found, [true, false, false]);
    assert_eq!((c.local.len(), c.emails.len()), (2, 2));
    c.sweep();
    assert_eq!(
        (c.local.len(), c.emails.len()),
        (1, 1),
        "the aged user is freed"
    );
    assert!(c.local.get(&fresh.id).is_some());
}

/// While Redis' breaker is open no invalidation can arrive, even on a subscription that is
/// still open: the in-process copy serves only users read within `MAX_AGE_WITHOUT_REDIS`,
/// and Redis is not asked for the others.
#[tokio::test]
async fn with_redis_cut_off_only_recent_reads_are_served_in_process() {
    let (cache, redis) = cache_with_redis_nowhere("cache_test_nowhere");
    let c = cache.inner.clone().unwrap();
    c.set_listening(true);
    let recent = user("Recent");
    let old = User {
        email: Email::parse("old@example.com").unwrap(),
        ..user("Old")
    };
    let now = ReadMark {
        at: Instant::now(),
        redis_time: None,
    };
    cache.fill(now, &[rendered(&recent)], true).await;
    // Read before the cache existed, so inserted by hand (a fill would refuse it).
    let read_at = Instant::now()
        .checked_sub(MAX_AGE_WITHOUT_REDIS + Duration::from_secs(1))
        .unwrap();
    let local = Local {
        user: rendered(&old),
        read_at,
    };
    c.local.insert(old.id, local);
    c.emails.insert(old.email.clone(), (old.id, Instant::now()));
    let both = [recent.id, old.id];
    assert_eq!(
        cache.get_many(&both, "test").await.0.len(),
        2,
        "Redis answers"
    );

    redis.breaker().trip();
    let (found, _) = cache.get_many(&both, "test").await;
    assert_eq!(found.keys().collect::<Vec<_>>(), vec![&recent.id]);
    assert!(cache.get_by_email(&old.email, "test").await.0.is_none());
    assert!(cache.get_by_email(&recent.email, "test").await.0.is_some());
    let figures = cache.figures();
    assert_eq!(
        (figures.local_hits, figures.redis_errors),
        (4, 0),
        "{figures:?}"
    );
}
