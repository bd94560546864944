//! In front of the in-process copy once it is full: a user is kept only if it was read
//! before, lately. A long tail of one-off reads (a million users read at random) would
//! otherwise insert, and evict, on every miss, for a copy that answers one read in a hundred;
//! users read again and again (the popular ones) still get in on their second read.
//! Forgetting is cheap: two bit sets of recently seen ids, the older cleared and reused when
//! the newer has taken its share.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use user_domain::UserId;

/// Bits per set (512 KiB each).
const BITS: usize = 1 << 22;
const WORDS: usize = BITS / 64;
/// Ids marked in the newer set before the sets turn (32 768, about a quarter of a second of
/// one-off reads of a batch workload, far longer at a steady trickle): a 128th of its bits,
/// so that an id never seen is taken for one seen about one time in 64 at worst (both
/// sets). The popular users of a Zipf mix come back well within it; four times as long a
/// window let a fifth of a uniform batch workload's users in, each one more insert and
/// eviction for nothing (docs/performance.md).
const TURN_AFTER: u64 = (BITS / 128) as u64;

pub(super) struct Doorkeeper {
    sets: [Box<[AtomicU64]>; 2],
    /// Which set is the newer (its low bit).
    newer: AtomicUsize,
    /// Ids marked in the newer set so far.
    marked: AtomicU64,
}

impl Default for Doorkeeper {
    fn default() -> Self {
        let set = || (0..WORDS).map(|_| AtomicU64::new(0)).collect();
        Self {
            sets: [set(), set()],
            newer: AtomicUsize::new(0),
            marked: AtomicU64::new(0),
        }
    }
}

impl Doorkeeper {
    /// Whether `id` was seen lately; marks it seen either way. Races between threads lose a
    /// mark or keep one a little longer: an admission more or less, never a wrong answer.
    pub(super) fn seen_before(&self, id: &UserId) -> bool {
        let (word, bit) = slot(id);
        let newer = self.newer.load(Ordering::Relaxed) & 1;
        if self.sets[1 - newer][word].load(Ordering::Relaxed) & bit != 0 {
            return true;
        }
        let was = self.sets[newer][word].fetch_or(bit, Ordering::Relaxed);
        if was & bit != 0 {
            return true;
        }
        if self.marked.fetch_add(1, Ordering::Relaxed) + 1 == TURN_AFTER {
            self.turn(newer);
        }
        false
    }

    /// The older set is cleared and becomes the newer.
    fn turn(&self, newer: usize) {
        let older = 1 - newer;
        for word in self.sets[older].iter() {
            word.store(0, Ordering::Relaxed);
        }
        self.newer.store(older, Ordering::Relaxed);
        self.marked.store(0, Ordering::Relaxed);
    }
}

/// The word and bit of `id`: its last 64 bits (random in a v4 or v7 id), mixed.
fn slot(id: &UserId) -> (usize, u64) {
    let uuid = id.as_uuid();
    let mut low = [0u8; 8];
    low.copy_from_slice(&uuid.as_bytes()[8..]);
    let h = u64::from_le_bytes(low).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // The high bits of the product are the well mixed ones.
    let index = (h >> (64 - BITS.trailing_zeros())) as usize;
    (index / 64, 1 << (index % 64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> UserId {
        UserId::generate()
    }

    #[test]
    fn an_id_gets_in_on_its_second_read() {
        let d = Doorkeeper::default();
        let a = id();
        assert!(!d.seen_before(&a));
        assert!(d.seen_before(&a));
    }

    #[test]
    fn ids_are_forgotten_after_two_turns_and_few_strangers_pass() {
        let d = Doorkeeper::default();
        let old = id();
        assert!(!d.seen_before(&old));
        let turns = || d.newer.load(Ordering::Relaxed);
        let (mut strangers, mut passed, mut flips, mut last) = (0usize, 0usize, 0, turns());
        // Two turns: the set that marked `old` was cleared and is the newer now.
        while flips < 2 {
            strangers += 1;
            passed += usize::from(d.seen_before(&id()));
            if turns() != last {
                (flips, last) = (flips + 1, turns());
            }
        }
        assert_eq!(turns(), 0, "the first set is the newer again");
        let (word, bit) = slot(&old);
        assert_eq!(
            d.sets[0][word].load(Ordering::Relaxed) & bit,
            0,
            "old forgotten"
        );
        // The two sets never hold more than a sixteenth of their bits together.
        assert!(
            passed < strangers / 16,
            "{passed} of {strangers} strangers let in"
        );
    }
}
