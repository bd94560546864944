//! Failed authentications, limited per source address.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use user_actors::limits::{DEFAULT_CALLER, LocalLimits, RateLimit};
use user_domain::CoreError;

/// Failed authentications per source address (REST): past the allowance of a window the
/// address is refused with 429 until the window ends, before its credentials are even
/// looked at, so keys cannot be guessed at speed. Counting reuses the callers' rate limits.
pub(super) struct FailureGate {
    failures: LocalLimits,
    blocked: DashMap<IpAddr, Instant>,
    recorded: AtomicU64,
}

impl FailureGate {
    /// Forget idle addresses every so many failures.
    const SWEEP_EVERY: u64 = 1024;

    pub(super) fn new(limit: RateLimit) -> Self {
        Self {
            failures: LocalLimits::new([(DEFAULT_CALLER.to_owned(), limit)].into()),
            blocked: DashMap::new(),
            recorded: AtomicU64::new(0),
        }
    }

    pub(super) fn check(&self, ip: IpAddr) -> Result<(), CoreError> {
        let Some(until) = self.blocked.get(&ip).map(|u| *u) else {
            return Ok(());
        };
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            self.blocked.remove(&ip);
            return Ok(());
        }
        Err(CoreError::RateLimited {
            retry_after_secs: left.as_secs().max(1),
        })
    }

    pub(super) fn failed(&self, ip: IpAddr) {
        if let Err(CoreError::RateLimited { retry_after_secs }) =
            self.failures.check(&ip.to_string())
        {
            let until = Instant::now() + Duration::from_secs(retry_after_secs);
            self.blocked.insert(ip, until);
        }
        if self
            .recorded
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(Self::SWEEP_EVERY)
        {
            self.failures.sweep();
            let now = Instant::now();
            self.blocked.retain(|_, until| *until > now);
        }
    }
}
