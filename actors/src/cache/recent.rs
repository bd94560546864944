//! When each user was last invalidated in this process, as far as a fill needs to know.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Instant;
use user_domain::UserId;

/// Slots the users share: 512 KiB, whatever the rate of writes.
const SLOTS: usize = 1 << 16;

/// The latest invalidation of each slot's users. A fill whose read began before its slot's
/// latest invalidation is refused: at worst for another user's write (one later miss, never
/// a stale copy). Unlike a map of recent writes, it cannot overflow and forget one: at
/// 10,000 writes a second and a read taking 5 ms, one fill in 1,300 is refused needlessly.
pub(super) struct Recent {
    origin: Instant,
    hasher: RandomState,
    slots: Box<[AtomicU64]>,
}

impl Recent {
    pub(super) fn new() -> Self {
        Self {
            origin: Instant::now(),
            hasher: RandomState::new(),
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// `id` was invalidated now.
    pub(super) fn record(&self, id: UserId) {
        self.record_at(id, Instant::now());
    }

    fn record_at(&self, id: UserId, at: Instant) {
        self.slot(id).fetch_max(self.micros(at), Ordering::AcqRel);
    }

    /// Was `id` (or a user sharing its slot) invalidated at or after `at`?
    pub(super) fn since(&self, id: UserId, at: Instant) -> bool {
        self.slot(id).load(Ordering::Acquire) >= self.micros(at)
    }

    fn slot(&self, id: UserId) -> &AtomicU64 {
        let i = self.hasher.hash_one(id) as usize % SLOTS;
        &self.slots[i]
    }

    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_micros()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_began_before_an_invalidation_is_refused_and_a_later_one_is_not() {
        let recent = Recent::new();
        let at = |ms| recent.origin + std::time::Duration::from_millis(ms);
        let (a, b) = (UserId::generate(), UserId::generate());
        recent.record_at(a, at(10));
        assert!(recent.since(a, at(5)));
        assert!(
            recent.since(a, at(10)),
            "the same instant is refused: the safe side"
        );
        assert!(!recent.since(a, at(11)));
        // Another user is refused only when it shares a's slot.
        let shares = std::ptr::eq(recent.slot(a), recent.slot(b));
        assert_eq!(recent.since(b, at(5)), shares);
        recent.record_at(a, at(3));
        assert!(
            !recent.since(a, at(11)),
            "an older time never moves a slot back"
        );
        assert!(recent.since(a, at(10)));
    }
}
