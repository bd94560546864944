//! The user cache (contract section 7): an in-process copy in front of shared Redis, read
//! through by the store. Entries hold the full public user, the JSON of `users.get`, under
//! `{prefix}:user:{id}` and `{prefix}:email:{email}`; a batch reads the per-user keys with
//! one `MGET`. Password hashes are never cached; the billing fields `taxId` and
//! `billingAddress` are sealed (see [`crate::crypto`]), as in the users table.
//!
//! Staying correct:
//! * Every write, after its commit, deletes the user's keys and publishes `{userId}` on
//!   `{prefix}:cache:invalidate`, which every instance's [`CacheManager`] turns into dropping
//!   its in-process copy. The in-process copy is only used while that subscription is up.
//! * A read that started before a write must not put the old user back. The invalidation
//!   leaves a marker with Redis' clock; a fill only writes when its read began (by the same
//!   clock) after the last marker. In process, the same rule holds with `Instant`s.
//! * An invalidation that cannot reach Redis is remembered: that user is not read from Redis
//!   until the [`CacheManager`] has delivered it.
//! * Redis slow or down never fails a request: every call has a short timeout and a failure
//!   is a miss. A Redis that hangs is not asked at all once its breaker is open (see
//!   [`crate::redis`]); meanwhile no invalidation can arrive from other instances, so the
//!   in-process copy serves only users read in the last [`MAX_AGE_WITHOUT_REDIS`], which bounds
//!   how late this instance sees another's write.

mod doorkeeper;
mod local;
mod lookup;
mod manager;
mod recent;
mod remote;
mod scripts;
mod warmth;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::crypto::BillingKeys;
use crate::metrics;
use crate::redis::Redis;
#[cfg(test)]
use user_domain::views::Rendered;
use user_domain::{Email, UserId};

pub use local::MAX_AGE_WITHOUT_REDIS;
use local::{LOCAL_TTL, LocalEmails, LocalUsers};
pub use lookup::Key;
pub use manager::CacheManager;

/// A read older than this fills nothing: what it found may have changed since.
const MAX_FILL_AGE: Duration = Duration::from_secs(30);
/// How soon an invalidation that missed Redis' deadline is tried again, and again at growing
/// waits up to [`RETRY_SOON_MAX`], for [`RETRY_SOON_FOR`]; after that, at every check.
const RETRY_SOON: Duration = Duration::from_millis(50);
const RETRY_SOON_MAX: Duration = Duration::from_millis(200);
/// The bound `docs/interface.md` gives other instances to see a write.
const RETRY_SOON_FOR: Duration = Duration::from_secs(1);
/// Fills running at once, in the background; a read whose fill finds none free fills nothing
/// (a later read of those users does).
const FILLS_RUNNING: usize = 16;

/// Invalidations remembered while Redis is away; past this, Redis is distrusted as a whole
/// and this instance's keys are purged once it is back.
const MAX_UNCLEAN: usize = 10_000;

#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Namespace of every key and channel.
    pub prefix: String,
    /// Lifetime of a Redis entry; zero turns the cache off.
    pub ttl: Duration,
}

/// Cheap to clone; every clone is the same cache.
#[derive(Clone)]
pub struct UserCache {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    redis: Redis,
    prefix: String,
    ttl: Duration,
    /// Seal and open the billing fields of the Redis entries.
    keys: Arc<BillingKeys>,
    local: LocalUsers,
    /// Whether `local` is full, weighed now and then.
    fullness: local::Fullness,
    /// Which users may enter `local` once it is full.
    doorkeeper: doorkeeper::Doorkeeper,
    emails: LocalEmails,
    /// How long an in-process entry is served: the cache's TTL, at most [`LOCAL_TTL`].
    local_ttl: Duration,
    /// When each user was last invalidated here.
    /// Invalidations seen, to refuse fills read before them.
    recent: recent::Recent,
    /// Whether the invalidation subscription is up (the in-process copy is usable).
    listening: AtomicBool,
    /// Invalidations Redis has not seen yet, with the addresses to drop.
    unclean: std::sync::Mutex<HashMap<UserId, Vec<Email>>>,
    /// Too many invalidations were missed: Redis is not read until its keys are purged.
    purge: AtomicBool,
    /// Missed invalidations are being retried shortly ([`RETRY_SOON`]).
    retrying: AtomicBool,
    /// Room for fills in the background: at most [`FILLS_RUNNING`].
    fills: Arc<tokio::sync::Semaphore>,
    /// How much of what PostgreSQL answers is filled into Redis.
    warmth: warmth::Warmth,
    stats: Stats,
}

/// Where reads were answered from, since start.
#[derive(Debug, Default)]
struct Stats {
    local: AtomicU64,
    redis: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheFigures {
    pub enabled: bool,
    /// The invalidation subscription is up, so the in-process copy is in use.
    pub listening: bool,
    pub local_hits: u64,
    pub redis_hits: u64,
    pub misses: u64,
    pub redis_errors: u64,
    pub local_entries: u64,
    pub unclean: u64,
    /// Of the keys reads asked Redis for lately, the share it had (0–1); that share of what
    /// PostgreSQL answered is filled into Redis (at least one in eight).
    pub redis_hit_share: f64,
}

/// When a read began, by both clocks; a fill is allowed only if no invalidation came later.
#[derive(Debug, Clone, Copy)]
pub struct ReadMark {
    at: Instant,
    /// Redis' clock in microseconds, when Redis answered.
    redis_time: Option<u64>,
}

/// What a lookup is keyed by, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    Email,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Email => "email",
        }
    }
}

impl UserCache {
    pub fn new(redis: Option<Redis>, settings: CacheSettings, keys: Arc<BillingKeys>) -> Self {
        let inner = redis.filter(|_| !settings.ttl.is_zero()).map(|redis| {
            let local_ttl = settings.ttl.min(LOCAL_TTL);
            Arc::new(Inner {
                redis,
                prefix: settings.prefix,
                ttl: settings.ttl,
                keys,
                local: local::local_users(),
                fullness: Default::default(),
                doorkeeper: Default::default(),
                emails: local::local_emails(),
                local_ttl,
                recent: recent::Recent::new(),
                listening: AtomicBool::new(false),
                unclean: Default::default(),
                purge: AtomicBool::new(false),
                retrying: AtomicBool::new(false),
                fills: Arc::new(tokio::sync::Semaphore::new(FILLS_RUNNING)),
                warmth: Default::default(),
                stats: Stats::default(),
            })
        });
        Self { inner }
    }

    /// A cache that never holds anything: every read goes to the database.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// After a committed write: forget the user everywhere. `emails` are the addresses the
    /// user had before and after the write.
    pub async fn invalidate(&self, id: UserId, emails: &[&Email]) {
        self.invalidate_all(vec![(id, emails.iter().copied().cloned().collect())])
            .await;
    }

    /// [`Self::invalidate`] for many users in one round trip (a batch create).
    pub async fn invalidate_all(&self, users: Vec<(UserId, Vec<Email>)>) {
        let Some(c) = &self.inner else { return };
        if users.is_empty() {
            return;
        }
        for (id, _) in &users {
            c.drop_local(*id);
        }
        if !c.deliver(&users).await {
            {
                let mut unclean = c.unclean.lock().unwrap_or_else(|p| p.into_inner());
                for (id, emails) in users {
                    unclean.entry(id).or_default().extend(emails);
                }
                if unclean.len() > MAX_UNCLEAN {
                    c.purge.store(true, Ordering::Release);
                    unclean.clear();
                }
            }
            // A missed deadline with the breaker closed is most often a busy moment: tried
            // again shortly, and again, not only at the next check a second later, during
            // which the other instances would still serve the old user.
            if c.redis.breaker().allows() && !c.retrying.swap(true, Ordering::AcqRel) {
                let c = c.clone();
                tokio::spawn(async move {
                    let since = Instant::now();
                    let mut backoff = crate::retry::Backoff::new(RETRY_SOON, RETRY_SOON_MAX);
                    loop {
                        tokio::time::sleep(backoff.next_delay()).await;
                        let more = c.redis.breaker().allows() && since.elapsed() < RETRY_SOON_FOR;
                        if !more || c.deliver_unclean().await {
                            break;
                        }
                    }
                    c.retrying.store(false, Ordering::Release);
                });
            }
        }
    }

    pub fn figures(&self) -> CacheFigures {
        let Some(c) = &self.inner else {
            return CacheFigures::default();
        };
        CacheFigures {
            enabled: true,
            listening: c.listening.load(Ordering::Acquire),
            local_hits: c.stats.local.load(Ordering::Relaxed),
            redis_hits: c.stats.redis.load(Ordering::Relaxed),
            misses: c.stats.misses.load(Ordering::Relaxed),
            redis_errors: c.stats.errors.load(Ordering::Relaxed),
            local_entries: c.local.len() as u64,
            unclean: c.unclean.lock().map_or(0, |u| u.len()) as u64,
            redis_hit_share: c.warmth.share() as f64 / 1000.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    Local,
    Redis,
    Miss,
}

impl Inner {
    fn count(&self, caller: &str, kind: Kind, tier: Tier, n: usize) {
        if n == 0 {
            return;
        }
        let n = n as u64;
        let (stat, series) = match tier {
            Tier::Local => (&self.stats.local, metrics::CACHE_HITS),
            Tier::Redis => (&self.stats.redis, metrics::CACHE_HITS),
            Tier::Miss => (&self.stats.misses, metrics::CACHE_MISSES),
        };
        stat.fetch_add(n, Ordering::Relaxed);
        ::metrics::counter!(series, "service" => caller.to_owned(), "cache_type" => kind.as_str())
            .increment(n);
    }

    fn is_unclean(&self, id: &UserId) -> bool {
        let unclean = self.unclean.lock().unwrap_or_else(|p| p.into_inner());
        unclean.contains_key(id)
    }
}

#[cfg(test)]
mod tests;
