//! Limits counted by this instance alone: each caller has a leaky bucket refilled with its
//! whole allowance once per window; `Retry-After` is the time left until then. Checked on the
//! request path with no actor hop (lock-free per caller). Used while shared counting is off,
//! and for counts that are per instance by nature (failed authentications per address).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use dashmap::DashMap;
use user_domain::call::Caller;
use user_domain::error::CoreError;

/// The caller name whose limit applies to callers not named in the configuration.
pub const DEFAULT_CALLER: &str = "default";

/// Requests allowed per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub window: Duration,
}

struct Bucket {
    limiter: leaky_bucket::RateLimiter,
    limit: RateLimit,
    /// When the first window opened; the bucket refills at every whole window since.
    opened: Instant,
    /// Milliseconds since the limits were made, at the last request.
    last_used: AtomicU64,
}

impl Bucket {
    /// Whole seconds until the next window opens (at least 1).
    fn retry_after_secs(&self) -> u64 {
        let window = self.limit.window.as_millis().max(1);
        let into = self.opened.elapsed().as_millis() % window;
        (window - into).div_ceil(1000).max(1) as u64
    }
}

/// Cheap to clone; every clone shares the buckets.
#[derive(Clone)]
pub struct LocalLimits {
    inner: Arc<Inner>,
}

struct Inner {
    limits: BTreeMap<String, RateLimit>,
    buckets: DashMap<String, Bucket>,
    epoch: Instant,
    /// Sweeps done since start, by every RateLimiter.
    sweeps: AtomicU64,
}

impl LocalLimits {
    /// `limits` by caller name; [`DEFAULT_CALLER`] applies to everyone else. Without it,
    /// callers not named are not limited.
    pub fn new(limits: BTreeMap<String, RateLimit>) -> Self {
        Self {
            inner: Arc::new(Inner {
                limits,
                buckets: DashMap::new(),
                epoch: Instant::now(),
                sweeps: AtomicU64::new(0),
            }),
        }
    }

    /// Takes one request from the caller's allowance, or says when to come back.
    pub fn check(&self, caller: &str) -> Result<(), CoreError> {
        let Some(limit) = self.limit_of(caller) else {
            return Ok(());
        };
        let now = self.inner.epoch.elapsed().as_millis() as u64;
        let buckets = &self.inner.buckets;
        let bucket = match buckets.get(caller) {
            Some(b) => b,
            None => buckets
                .entry(caller.to_owned())
                .or_insert_with(|| Bucket {
                    limiter: leaky_bucket::RateLimiter::builder()
                        .max(limit.requests as usize)
                        .initial(limit.requests as usize)
                        .refill(limit.requests as usize)
                        .interval(limit.window)
                        .build(),
                    limit,
                    opened: Instant::now(),
                    last_used: AtomicU64::new(now),
                })
                .downgrade(),
        };
        bucket.last_used.store(now, Ordering::Relaxed);
        if bucket.limiter.try_acquire(1) {
            Ok(())
        } else {
            Err(CoreError::RateLimited {
                retry_after_secs: bucket.retry_after_secs(),
            })
        }
    }

    pub fn limit_of(&self, caller: &str) -> Option<RateLimit> {
        let limits = &self.inner.limits;
        limits.get(caller).copied().or_else(|| {
            // Local open mode is a developer's machine: not limited unless named.
            (caller != Caller::LOCAL)
                .then(|| limits.get(DEFAULT_CALLER).copied())
                .flatten()
        })
    }

    /// Forgets callers idle for a whole window: their bucket is full again, as a new one
    /// would be. Returns how many buckets remain.
    pub fn sweep(&self) -> usize {
        let now = self.inner.epoch.elapsed().as_millis() as u64;
        self.inner.buckets.retain(|_, b| {
            let idle =
                Duration::from_millis(now.saturating_sub(b.last_used.load(Ordering::Relaxed)));
            idle < b.limit.window
        });
        self.inner.sweeps.fetch_add(1, Ordering::Relaxed);
        self.inner.buckets.len()
    }

    /// How many sweeps were done since start.
    pub fn sweeps(&self) -> u64 {
        self.inner.sweeps.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(spec: &[(&str, u32, u64)]) -> LocalLimits {
        LocalLimits::new(
            spec.iter()
                .map(|(c, r, s)| {
                    let limit = RateLimit {
                        requests: *r,
                        window: Duration::from_secs(*s),
                    };
                    (c.to_string(), limit)
                })
                .collect(),
        )
    }

    #[tokio::test]
    async fn a_caller_gets_its_allowance_then_a_retry_time() {
        let l = limits(&[("game-catalog", 3, 60), ("default", 1, 60)]);
        for _ in 0..3 {
            l.check("game-catalog").unwrap();
        }
        match l.check("game-catalog") {
            Err(CoreError::RateLimited { retry_after_secs }) => assert_eq!(retry_after_secs, 60),
            other => panic!("expected a rate limit, got {other:?}"),
        }
        // Callers do not share buckets; unnamed ones get the default.
        l.check("payment-service").unwrap();
        assert!(l.check("payment-service").is_err());
        l.check("social").unwrap();
    }

    #[tokio::test]
    async fn without_a_default_unnamed_callers_and_local_mode_are_free() {
        let l = limits(&[("auth-service", 1, 60)]);
        for _ in 0..10 {
            l.check("someone").unwrap();
        }
        let l = limits(&[("default", 1, 60)]);
        for _ in 0..10 {
            l.check(Caller::LOCAL).unwrap();
        }
        let l = limits(&[("local", 1, 60)]);
        l.check(Caller::LOCAL).unwrap();
        assert!(l.check(Caller::LOCAL).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_allowance_is_whole_again_when_the_next_window_opens() {
        let l = limits(&[("default", 2, 10)]);
        l.check("a").unwrap();
        tokio::time::advance(Duration::from_secs(4)).await;
        l.check("a").unwrap();
        match l.check("a") {
            Err(CoreError::RateLimited { retry_after_secs }) => assert_eq!(retry_after_secs, 6),
            other => panic!("expected a rate limit, got {other:?}"),
        }
        tokio::time::advance(Duration::from_millis(5_900)).await;
        assert!(l.check("a").is_err(), "still the first window");
        tokio::time::advance(Duration::from_millis(100)).await;
        l.check("a").unwrap();
        l.check("a").unwrap();
        assert!(
            l.check("a").is_err(),
            "no more than the allowance in a window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_callers_are_forgotten_after_a_window() {
        let l = limits(&[("default", 5, 10)]);
        l.check("busy").unwrap();
        l.check("idle").unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        l.check("busy").unwrap();
        assert_eq!(l.sweep(), 2);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(l.sweep(), 1, "only the caller seen within the window stays");
        assert_eq!(l.sweeps(), 2);
    }
}
