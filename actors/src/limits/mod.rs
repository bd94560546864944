//! Per-caller rate limits: `requests` per `window`, as NestJS's throttler counts them (the
//! seed's `{limit, ttl}`): a caller's window opens with its first request, at most `requests`
//! pass in it, and the allowance is whole again when the next window opens.
//!
//! The allowance is the service's, not the instance's: with Redis configured every instance
//! counts in Redis ([`shared`]), spending leases locally so a caller far below its limit
//! costs no round trip. While Redis' breaker is open (see [`crate::redis`]), each instance
//! counts alone with the whole allowance ([`local`]), until the breaker's probe sees Redis
//! again; the `rateLimits` health component says which it is. The [`RateLimiter`] actor owns
//! the counters' lifetime: it forgets callers idle for a whole window.

mod local;
mod shared;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context};
use user_domain::error::CoreError;

pub use self::local::{DEFAULT_CALLER, LocalLimits, RateLimit};
use self::shared::Shared;
use crate::health::{Figures, Health, Report, Status};
use crate::redis::Redis;

const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often the actor looks at how limits are counted, to report a change.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// How limits are being counted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    /// In Redis, by every instance together.
    Shared,
    /// By this instance alone: Redis is configured but does not answer.
    Fallback,
    /// By this instance alone: no Redis is configured.
    Local,
}

/// Cheap to clone; every clone shares the counters.
#[derive(Clone)]
pub struct RateLimits {
    local: LocalLimits,
    shared: Option<Arc<Shared>>,
}

impl RateLimits {
    /// Limits counted by this instance alone. `limits` by caller name; [`DEFAULT_CALLER`]
    /// applies to everyone else (without it, callers not named are not limited).
    pub fn new(limits: BTreeMap<String, RateLimit>) -> Self {
        Self {
            local: LocalLimits::new(limits),
            shared: None,
        }
    }

    /// Limits shared through Redis, under `prefix`, by every instance that uses it.
    pub fn shared(limits: BTreeMap<String, RateLimit>, redis: Redis, prefix: &str) -> Self {
        Self {
            local: LocalLimits::new(limits),
            shared: Some(Arc::new(Shared::new(redis, prefix))),
        }
    }

    /// Takes one request from the caller's allowance, or says when to come back.
    pub async fn check(&self, caller: &str) -> Result<(), CoreError> {
        let Some(limit) = self.local.limit_of(caller) else {
            return Ok(());
        };
        if let Some(shared) = &self.shared {
            if shared.is_up()
                && let Some(answer) = shared.check(caller, limit).await
            {
                return answer;
            }
            crate::metrics::record_local_limit_check();
        }
        self.local.check(caller)
    }

    pub fn counting(&self) -> Counting {
        match &self.shared {
            None => Counting::Local,
            Some(s) if s.is_up() => Counting::Shared,
            Some(_) => Counting::Fallback,
        }
    }

    /// Forgets callers idle for a whole window. Returns how many are counted locally.
    pub fn sweep(&self) -> usize {
        if let Some(shared) = &self.shared {
            shared.sweep();
        }
        self.local.sweep()
    }

    /// How many sweeps were done since start.
    pub fn sweeps(&self) -> u64 {
        self.local.sweeps()
    }
}

/// Owns the counters' lifetime (sweeps idle callers away every minute) and reports how they
/// are counted, each second while that is not shared.
pub struct RateLimiter {
    limits: RateLimits,
    health: Health,
    callers: usize,
    /// How limits were counted at the last report.
    reported: Counting,
}

impl RateLimiter {
    pub fn new(limits: RateLimits, health: Health) -> Self {
        let reported = limits.counting();
        Self {
            limits,
            health,
            callers: 0,
            reported,
        }
    }

    fn sweep(&mut self) {
        self.callers = self.limits.sweep();
        tracing::debug!(callers = self.callers, "rate limit counters swept");
        self.report();
    }

    fn report(&mut self) {
        let counting = self.limits.counting();
        self.reported = counting;
        let (status, detail) = match counting {
            Counting::Fallback => (
                Status::Degraded,
                Some("Redis does not answer: each instance counts its callers alone".to_owned()),
            ),
            _ => (Status::Up, None),
        };
        let mut figures = Figures::new();
        figures.insert("callers", self.callers.into());
        figures.insert("sweeps", self.limits.sweeps().into());
        figures.insert("shared", (counting == Counting::Shared).into());
        self.health.report(Report {
            component: "rateLimits",
            status,
            detail,
            figures,
        });
    }

    /// Reports a change of counting (Redis' breaker opened or closed), and every second
    /// while counting locally.
    fn watch(&mut self) {
        let now = self.limits.counting();
        if now != self.reported || now == Counting::Fallback {
            self.report();
        }
    }
}

impl Actor for RateLimiter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.sweep();
        ctx.run_interval(SWEEP_EVERY, |act, _| act.sweep());
        ctx.run_interval(WATCH_EVERY, |act, _| act.watch());
    }
}

#[cfg(test)]
mod tests;
