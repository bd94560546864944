//! Failed authentications, limited per source without ever refusing a valid credential.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use user_core::limits::RateLimit;

use super::source::Key;

/// Counts, per source and window, the *different* credentials that failed. Past the
/// allowance every further failure from that source is over the limit until its window ends
/// (slowed over REST, 429 over RPC: see `Authenticator`);
/// a valid credential never reaches the gate (it is only asked about failures), so a
/// guessing or misconfigured neighbour behind the same NAT or proxy locks nobody out. A
/// client retrying one stale key is not guessing: it keeps getting the 401 it must fix.
///
/// Bounded: at most [`FailureGate::MAX_SOURCES`] sources are kept, each with at most the
/// allowance's fingerprints (keyed hashes, never the credentials); while every slot holds a
/// live window, new sources share one more.
pub(super) struct FailureGate {
    limit: RateLimit,
    hasher: RandomState,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    windows: HashMap<Key, Window>,
    /// When expired windows were last swept out of a full table.
    swept: Option<Instant>,
}

struct Window {
    opened: Instant,
    /// Fingerprints of the credentials that failed in this window, while under the limit.
    seen: Vec<u64>,
    blocked: bool,
}

/// What the gate says about one failure.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Counted (or already counted): answer the failure as it is.
    Counted,
    /// Over the limit, until this `Retry-After`. `first` for the failure that
    /// crossed it (logged once per window).
    Blocked { retry_after_secs: u64, first: bool },
}

impl FailureGate {
    /// Sources kept at once (beyond them, new sources share one).
    pub(super) const MAX_SOURCES: usize = 4096;
    /// A full table is swept of expired windows at most this often.
    const SWEEP_EVERY: Duration = Duration::from_secs(1);

    pub(super) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            hasher: RandomState::new(),
            table: Mutex::default(),
        }
    }

    /// A keyed fingerprint of what a request presented (a process-local key: it means
    /// nothing outside this instance).
    pub(super) fn fingerprint(&self, presented: impl std::hash::Hash) -> u64 {
        self.hasher.hash_one(presented)
    }

    pub(super) fn failed(&self, key: Key, fingerprint: u64) -> Verdict {
        self.failed_at(key, fingerprint, Instant::now())
    }

    fn failed_at(&self, key: Key, fingerprint: u64, now: Instant) -> Verdict {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let key = table.slot(key, now, self.limit.window);
        let window = table.windows.entry(key).or_insert_with(|| Window::new(now));
        if now.saturating_duration_since(window.opened) >= self.limit.window {
            *window = Window::new(now);
        }
        let mut first = false;
        if !window.blocked {
            if window.seen.contains(&fingerprint) {
                return Verdict::Counted;
            }
            if window.seen.len() < self.limit.requests as usize {
                window.seen.push(fingerprint);
                return Verdict::Counted;
            }
            *window = Window {
                seen: Vec::new(),
                blocked: true,
                ..*window
            };
            first = true;
        }
        let left = (window.opened + self.limit.window).saturating_duration_since(now);
        Verdict::Blocked {
            retry_after_secs: left.as_millis().div_ceil(1000).max(1) as u64,
            first,
        }
    }

    /// How many sources are kept now.
    #[cfg(test)]
    fn sources(&self) -> usize {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.windows.len()
    }
}

impl Window {
    fn new(opened: Instant) -> Self {
        Self {
            opened,
            seen: Vec::new(),
            blocked: false,
        }
    }
}

impl Table {
    /// `key` itself when it is kept or there is room (after sweeping expired windows out of
    /// a full table); else the shared overflow source.
    fn slot(&mut self, key: Key, now: Instant, window: Duration) -> Key {
        if self.windows.contains_key(&key) || self.windows.len() < FailureGate::MAX_SOURCES {
            return key;
        }
        let due = self
            .swept
            .is_none_or(|at| now.saturating_duration_since(at) >= FailureGate::SWEEP_EVERY);
        if due {
            self.swept = Some(now);
            self.windows.retain(|k, w| {
                *k == Key::Overflow || now.saturating_duration_since(w.opened) < window
            });
        }
        if self.windows.len() < FailureGate::MAX_SOURCES {
            key
        } else {
            Key::Overflow
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn gate(requests: u32) -> FailureGate {
        FailureGate::new(RateLimit {
            requests,
            window: Duration::from_secs(60),
        })
    }

    fn ip(n: u32) -> Key {
        Key::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn different_failed_credentials_are_counted_per_source_and_window() {
        let g = gate(3);
        let t0 = Instant::now();
        for guess in 0..3 {
            assert_eq!(g.failed_at(ip(1), guess, t0), Verdict::Counted);
        }
        // The same stale credential again is not a new guess.
        assert_eq!(g.failed_at(ip(1), 2, t0), Verdict::Counted);
        let later = t0 + Duration::from_millis(20_500);
        assert_eq!(
            g.failed_at(ip(1), 3, later),
            Verdict::Blocked {
                retry_after_secs: 40,
                first: true
            }
        );
        // Once past the limit every failure from there is refused, a known one too.
        assert_eq!(
            g.failed_at(ip(1), 0, later),
            Verdict::Blocked {
                retry_after_secs: 40,
                first: false
            }
        );
        // Another source has its own allowance.
        assert_eq!(g.failed_at(ip(2), 3, later), Verdict::Counted);
        // The next window starts afresh.
        let next = t0 + Duration::from_secs(60);
        for guess in 10..13 {
            assert_eq!(g.failed_at(ip(1), guess, next), Verdict::Counted);
        }
        assert!(matches!(
            g.failed_at(ip(1), 13, next),
            Verdict::Blocked { .. }
        ));
    }

    #[test]
    fn the_table_is_bounded_and_new_sources_then_share_one_slot() {
        let g = gate(1);
        let t0 = Instant::now();
        for n in 0..FailureGate::MAX_SOURCES as u32 {
            g.failed_at(ip(n), 0, t0);
        }
        assert_eq!(g.sources(), FailureGate::MAX_SOURCES);
        // Full of live windows: two newcomers share the overflow source.
        let a = ip(u32::MAX);
        let b = ip(u32::MAX - 1);
        assert_eq!(g.failed_at(a, 1, t0), Verdict::Counted);
        assert!(matches!(
            g.failed_at(b.clone(), 2, t0),
            Verdict::Blocked { .. }
        ));
        assert_eq!(g.sources(), FailureGate::MAX_SOURCES + 1);
        // Once the windows expire, the next newcomer sweeps them away and gets its own.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(g.failed_at(b, 2, later), Verdict::Counted);
        assert_eq!(g.sources(), 2, "the overflow source and the newcomer");
    }
}
