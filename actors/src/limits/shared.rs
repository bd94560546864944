//! Limits counted in Redis, shared by every instance. A caller's window is one Redis key,
//! `CACHE_PREFIX:limit:{caller}`, created by the caller's first request anywhere and expiring
//! with the window. An instance takes a few requests of the allowance at a time (a lease, one
//! atomic script, one round trip) and spends them locally; it never holds more than a
//! sixteenth of what remained when it asked, so near the limit every request asks, and the
//! instances together never let more than the allowance through. One request per caller
//! asks at a time; the others wait for what it brings. While Redis' breaker is open nobody
//! asks: every check counts locally at once.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use deadpool_redis::redis::Script;
use tokio::time::Instant;
use user_domain::error::CoreError;

use super::local::RateLimit;
use crate::redis::Redis;

/// The longest a limit check waits for Redis before counting locally.
const REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// The most requests one lease takes.
const MAX_LEASE: u32 = 1024;
/// A lease takes at most this fraction (1/n) of what remains of the allowance.
const LEASE_SHARE: u32 = 16;

/// KEYS: the caller's window. ARGV: the requests to take, the window (ms). Counts them and
/// opens the window if this is its first request. Returns the count and the ms left.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {n, ttl}
",
    )
});

/// What this instance holds of a caller's window.
#[derive(Default)]
struct Lease {
    /// Requests taken from Redis and not yet spent.
    tokens: u32,
    /// When the window ends.
    until: Option<Instant>,
    /// The window's count at the last lease: what remained then sizes the next one.
    seen: u64,
    /// The allowance of this window is spent: refuse without asking until it ends.
    spent: bool,
}

impl Lease {
    fn current(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    /// Answers from what is held, if it can.
    fn spend(&mut self, now: Instant) -> Option<Result<(), CoreError>> {
        if !self.current(now) {
            return None;
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            return Some(Ok(()));
        }
        self.spent.then(|| Err(refused(self.until, now)))
    }
}

/// One caller's lease, and the right to ask Redis for the next one: one request per
/// caller asks at a time, the others wait and spend what it brings.
#[derive(Default)]
struct Caller {
    lease: Mutex<Lease>,
    asking: tokio::sync::Mutex<()>,
}

impl Caller {
    fn spend(&self, now: Instant) -> Option<Result<(), CoreError>> {
        self.lease.lock().ok()?.spend(now)
    }
}

pub(super) struct Shared {
    redis: Redis,
    prefix: String,
    callers: DashMap<String, Arc<Caller>>,
}

impl Shared {
    pub(super) fn new(redis: Redis, prefix: &str) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            callers: DashMap::new(),
        }
    }

    /// May checks ask Redis? Not while its breaker is open (one atomic load).
    pub(super) fn is_up(&self) -> bool {
        self.redis.breaker().allows()
    }

    /// Takes one request from the caller's shared allowance. `None` when Redis did not
    /// answer in time, or its breaker opened while this request waited its turn: this
    /// request is then counted locally, and so is everyone's while the breaker is open.
    pub(super) async fn check(
        &self,
        caller: &str,
        limit: RateLimit,
    ) -> Option<Result<(), CoreError>> {
        let state = match self.callers.get(caller) {
            Some(state) => state.clone(),
            None => self.callers.entry(caller.to_owned()).or_default().clone(),
        };
        if let Some(answer) = state.spend(Instant::now()) {
            return Some(answer);
        }
        let _asking = state.asking.lock().await;
        // Whoever asked before us may have brought enough for us too.
        let now = Instant::now();
        if let Some(answer) = state.spend(now) {
            return Some(answer);
        }
        if !self.is_up() {
            return None;
        }
        let seen = match state.lease.lock().ok()? {
            lease if lease.current(now) => lease.seen,
            _ => 0,
        };
        let want = lease_size(limit.requests, seen);
        // Boxed: the Redis call's future is kilobytes, and every request's would carry it.
        let (count, left) = Box::pin(self.take(caller, want, limit.window)).await?;
        let granted = granted(limit.requests, want, count);
        let until = Some(now + left);
        let mut lease = state.lease.lock().ok()?;
        if !lease.current(now) || count < lease.seen {
            // A new window: what was held belonged to the old one.
            *lease = Lease::default();
        }
        lease.until = until;
        lease.seen = lease.seen.max(count);
        if granted == 0 {
            lease.spent = true;
            return Some(Err(refused(until, now)));
        }
        lease.tokens += granted - 1;
        Some(Ok(()))
    }

    /// Runs the script within [`REDIS_TIMEOUT`]: the window's count after taking `want`,
    /// and the time left in it.
    async fn take(&self, caller: &str, want: u32, window: Duration) -> Option<(u64, Duration)> {
        let key = format!("{}:limit:{caller}", self.prefix);
        let window_ms = window.as_millis().clamp(1, u64::MAX as u128) as u64;
        let script = async |conn: &mut crate::redis::Connection| {
            TAKE.key(key)
                .arg(want)
                .arg(window_ms)
                .invoke_async::<(i64, i64)>(conn)
                .await
        };
        let (count, left) = self
            .redis
            .call(REDIS_TIMEOUT, script)
            .await
            .map_err(|e| tracing::debug!(error = %e, "rate limit script failed"))
            .ok()?;
        let left = u64::try_from(left).unwrap_or(window_ms).clamp(1, window_ms);
        Some((
            u64::try_from(count).unwrap_or(0),
            Duration::from_millis(left),
        ))
    }

    /// Forgets leases of windows that have ended.
    pub(super) fn sweep(&self) {
        let now = Instant::now();
        self.callers.retain(|_, state| {
            Arc::strong_count(state) > 1 || state.lease.lock().is_ok_and(|l| l.current(now))
        });
    }
}

/// How many requests to take at once, when `seen` of `allowance` were counted already.
fn lease_size(allowance: u32, seen: u64) -> u32 {
    let remaining = u64::from(allowance).saturating_sub(seen);
    (remaining / u64::from(LEASE_SHARE)).clamp(1, u64::from(MAX_LEASE)) as u32
}

/// How many of the `want` requests just counted (bringing the window to `count`) fit in the
/// allowance.
fn granted(allowance: u32, want: u32, count: u64) -> u32 {
    let before = count.saturating_sub(u64::from(want));
    let room = u64::from(allowance).saturating_sub(before);
    room.min(u64::from(want)) as u32
}

fn refused(until: Option<Instant>, now: Instant) -> CoreError {
    let left = until.map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
    CoreError::RateLimited {
        retry_after_secs: left.as_millis().div_ceil(1000).max(1) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_shrink_as_the_allowance_runs_out() {
        assert_eq!(lease_size(1000, 0), 62);
        assert_eq!(lease_size(10_000, 0), 625);
        assert_eq!(lease_size(1_000_000, 0), MAX_LEASE);
        assert_eq!(lease_size(1000, 990), 1);
        assert_eq!(lease_size(5, 0), 1);
        assert_eq!(
            lease_size(5, 50),
            1,
            "past the allowance still asks for one"
        );
    }

    #[test]
    fn only_what_fits_in_the_allowance_is_granted() {
        assert_eq!(granted(100, 6, 6), 6);
        assert_eq!(granted(100, 6, 100), 6);
        assert_eq!(granted(100, 6, 103), 3);
        assert_eq!(granted(100, 6, 106), 0);
        assert_eq!(granted(100, 1, 5000), 0);
        assert_eq!(granted(0, 1, 1), 0);
    }
}
