//! Shared limits against the local Redis: several instances, one allowance.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::redis::Pool;

use super::*;

fn pool(url: &str) -> Pool {
    crate::redis::pool(url, 8).unwrap()
}

fn redis(url: &str) -> Redis {
    Redis::new(pool(url))
}

fn allowance(requests: u32, secs: u64) -> BTreeMap<String, RateLimit> {
    let limit = RateLimit {
        requests,
        window: Duration::from_secs(secs),
    };
    [(DEFAULT_CALLER.to_owned(), limit)].into()
}

fn prefix() -> String {
    format!("limits_test_{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn three_instances_share_one_allowance() {
    let prefix = prefix();
    let instances: Vec<RateLimits> = (0..3)
        .map(|_| RateLimits::shared(allowance(500, 60), redis("redis://127.0.0.1:6379"), &prefix))
        .collect();
    let mut accepted = 0;
    for round in 0..400 {
        for limits in &instances {
            if limits.check("game-catalog").await.is_ok() {
                accepted += 1;
            }
        }
        if round == 0 {
            assert!(instances.iter().all(|l| l.counting() == Counting::Shared));
        }
    }
    // Never more than the allowance; less only by what leases still hold at the end.
    assert!(accepted <= 500, "{accepted} accepted");
    assert!(accepted >= 490, "{accepted} accepted");
    match instances[1].check("game-catalog").await {
        Err(CoreError::RateLimited { retry_after_secs }) => {
            assert!((1..=60).contains(&retry_after_secs))
        }
        other => panic!("expected a rate limit, got {other:?}"),
    }
    // Other callers have their own allowance.
    assert!(instances[2].check("payment-service").await.is_ok());
}

#[tokio::test]
async fn a_caller_far_below_its_limit_takes_leases() {
    let prefix = prefix();
    let limits = RateLimits::shared(
        allowance(1000, 60),
        redis("redis://127.0.0.1:6379"),
        &prefix,
    );
    limits.check("social").await.unwrap();
    let mut conn = pool("redis://127.0.0.1:6379")
        .get()
        .await
        .unwrap()
        .conn
        .clone();
    let counted: u64 = deadpool_redis::redis::cmd("GET")
        .arg(format!("{prefix}:limit:social"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        counted, 62,
        "one round trip took a sixteenth of the allowance"
    );
    for _ in 0..61 {
        limits.check("social").await.unwrap();
    }
    let counted: u64 = deadpool_redis::redis::cmd("GET")
        .arg(format!("{prefix}:limit:social"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(counted, 62, "the lease was spent without asking again");
}

#[tokio::test]
async fn without_redis_each_instance_counts_alone_until_it_returns() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let limits = RateLimits::shared(
        allowance(3, 60),
        redis(&format!("redis://127.0.0.1:{port}")),
        &prefix(),
    );
    for _ in 0..3 {
        limits.check("review").await.unwrap();
    }
    assert_eq!(limits.counting(), Counting::Fallback);
    assert!(
        limits.check("review").await.is_err(),
        "the local allowance holds"
    );
    assert_eq!(limits.counting(), Counting::Fallback);
}

#[tokio::test]
async fn shared_counting_resumes_when_the_probe_sees_redis() {
    let redis = redis("redis://127.0.0.1:6379");
    let limits = RateLimits::shared(allowance(3, 60), redis.clone(), &prefix());
    redis.breaker().trip();
    assert_eq!(limits.counting(), Counting::Fallback);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while limits.counting() != Counting::Shared {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the probe closes it"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    limits.check("review").await.unwrap();
}

#[tokio::test]
async fn concurrent_checks_share_one_allowance() {
    let prefix = prefix();
    let instances: Vec<RateLimits> = (0..3)
        .map(|_| RateLimits::shared(allowance(60, 60), redis("redis://127.0.0.1:6379"), &prefix))
        .collect();
    let checks = (0..240).map(|i| instances[i % 3].check("game-catalog"));
    let answers = futures::future::join_all(checks).await;
    let accepted = answers.iter().filter(|a| a.is_ok()).count();
    let counting: Vec<Counting> = instances.iter().map(|l| l.counting()).collect();
    assert!(
        (57..=60).contains(&accepted),
        "{accepted} accepted, {counting:?}"
    );
}
