//! The in-process copy: which users it may serve (none without the invalidation subscription;
//! with it, all while Redis answers and only recent reads while Redis' breaker is open, since
//! no invalidation can come through a Redis that hangs), filling it, and dropping from it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use user_domain::views::Rendered;
use user_domain::{Email, UserId};

use super::{Inner, ReadMark};

/// The in-process copy is bounded in time as well as by invalidations.
pub(super) const LOCAL_TTL: Duration = Duration::from_secs(30);
/// While Redis' breaker is open, invalidations from other instances cannot arrive: an
/// in-process user is served only if it was read (from PostgreSQL or Redis) this recently;
/// older ones are read again from PostgreSQL.
pub const MAX_AGE_WITHOUT_REDIS: Duration = Duration::from_secs(5);
/// The in-process copy is bounded by the memory its users take, as [`Weight`] estimates it
/// (about 2 KiB for a user of the default shape, so some 12,000 users); the least used
/// go first.
pub(super) const LOCAL_BYTES: u64 = 24 * 1024 * 1024;
/// Users the in-process copy is sized for (its table is allocated for them).
pub(super) const LOCAL_USERS: usize = 12_000;
/// Addresses kept in process, each an address and an id.
pub(super) const LOCAL_EMAILS: usize = 20_000;

/// The in-process copy: users by id, weighed. Hashed with foldhash (seeded per process), not
/// SipHash: a warm batch of 100 is mostly its lookups (docs/performance.md).
pub(super) type LocalUsers =
    quick_cache::sync::Cache<UserId, Local, Weight, foldhash::fast::RandomState>;
/// The addresses held in process, each with its user's id and when it was read.
pub(super) type LocalEmails = quick_cache::sync::Cache<
    Email,
    (UserId, Instant),
    quick_cache::UnitWeighter,
    foldhash::fast::RandomState,
>;

pub(super) fn local_users() -> LocalUsers {
    LocalUsers::with(
        LOCAL_USERS,
        LOCAL_BYTES,
        Weight,
        Default::default(),
        Default::default(),
    )
}

pub(super) fn local_emails() -> LocalEmails {
    let n = LOCAL_EMAILS;
    LocalEmails::with(
        n,
        n as u64,
        quick_cache::UnitWeighter,
        Default::default(),
        Default::default(),
    )
}

/// Fills between two weighings of the in-process copy.
pub(super) const WEIGH_EVERY: u64 = 64;

/// Whether the in-process copy is nearly full. Weighing it takes a lock on each of its shards
/// in turn (8 here), which cost a fill more than the rest of it (at a million users read at
/// random, 6 % of the service's time in a batch of 100); its weight changes by one user a
/// fill, so it is weighed once every [`WEIGH_EVERY`] fills.
#[derive(Default)]
pub(super) struct Fullness {
    full: AtomicBool,
    fills: AtomicU64,
}

impl Fullness {
    pub(super) fn full(&self, local: &LocalUsers) -> bool {
        if self
            .fills
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(WEIGH_EVERY)
        {
            let full = local.weight() >= LOCAL_BYTES - LOCAL_BYTES / 8;
            self.full.store(full, Ordering::Relaxed);
        }
        self.full.load(Ordering::Relaxed)
    }
}

/// A user held in process, and when the read that found it began.
#[derive(Clone)]
pub(super) struct Local {
    pub(super) user: Arc<Rendered>,
    pub(super) read_at: Instant,
}

/// Which in-process users may be served now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Serve {
    /// Every one: subscribed, and invalidations arrive.
    All,
    /// Those read within [`MAX_AGE_WITHOUT_REDIS`]: subscribed, but Redis does not answer.
    Recent,
    /// None: not subscribed, so invalidations may be missed.
    Nothing,
}

/// Bytes a cached user holds, estimated: the struct, its rendered JSON, and as much again
/// for the fields the struct points to (the same text, parsed).
#[derive(Clone)]
pub(super) struct Weight;

impl quick_cache::Weighter<UserId, Local> for Weight {
    fn weight(&self, _: &UserId, l: &Local) -> u64 {
        let json = l.user.json().get().len();
        (size_of::<Rendered>() + size_of::<Local>() + 2 * json) as u64
    }
}

impl Inner {
    /// What the in-process copy may serve now: two atomic loads.
    pub(super) fn serve(&self) -> Serve {
        if !self.listening.load(Ordering::Acquire) {
            Serve::Nothing
        } else if self.redis.breaker().allows() {
            Serve::All
        } else {
            Serve::Recent
        }
    }

    /// The user held in process, if `serve` allows it and it is fresh at `now`.
    pub(super) fn local_user(
        &self,
        id: &UserId,
        serve: Serve,
        now: Instant,
    ) -> Option<Arc<Rendered>> {
        let max_age = match serve {
            Serve::Nothing => return None,
            Serve::All => self.local_ttl,
            Serve::Recent => MAX_AGE_WITHOUT_REDIS.min(self.local_ttl),
        };
        self.local
            .get(id)
            .filter(|l| now.saturating_duration_since(l.read_at) <= max_age)
            .map(|l| l.user)
    }

    /// The id held in process for this address, while it is fresh at `now`.
    pub(super) fn local_email(&self, email: &Email, now: Instant) -> Option<UserId> {
        self.emails
            .get(email)
            .filter(|(_, read_at)| now.saturating_duration_since(*read_at) <= self.local_ttl)
            .map(|(id, _)| id)
    }

    pub(super) fn keep_local(&self, u: &Arc<Rendered>, mark: ReadMark, by_email: bool) {
        if self.serve() == Serve::Nothing {
            return;
        }
        let id = u.user.id;
        if self.recent.since(id, mark.at) {
            return;
        }
        // Full, it takes only users read before lately (see `doorkeeper`).
        if self.fullness.full(&self.local) && !self.doorkeeper.seen_before(&id) {
            return;
        }
        let local = Local {
            user: u.clone(),
            read_at: mark.at,
        };
        self.local.insert(id, local);
        // An invalidation between the check above and this insert may have removed nothing:
        // looked at again, it takes the user out (its record precedes its removal).
        if self.recent.since(id, mark.at) {
            self.local.remove(&id);
            return;
        }
        if by_email {
            self.emails.insert(u.user.email.clone(), (id, mark.at));
        }
    }

    /// Frees what has expired in process (an entry past its age is never served, but held
    /// until evicted or swept), so an idle instance gives its memory back.
    pub(super) fn sweep(&self) {
        let (now, ttl) = (Instant::now(), self.local_ttl);
        let fresh = |read_at: &Instant| now.saturating_duration_since(*read_at) <= ttl;
        self.local.retain(|_, l| fresh(&l.read_at));
        self.emails.retain(|_, (_, read_at)| fresh(read_at));
    }

    pub(super) fn drop_local(&self, id: UserId) {
        self.recent.record(id);
        self.local.remove(&id);
    }

    /// Turns the in-process copy on or off; either way it starts empty, since invalidations
    /// may have been missed.
    pub(super) fn set_listening(&self, on: bool) {
        self.listening.store(false, Ordering::Release);
        self.local.clear();
        self.emails.clear();
        self.listening.store(on, Ordering::Release);
    }
}
