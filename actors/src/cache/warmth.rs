//! How much of what PostgreSQL answered is worth filling into Redis. A fill costs Redis and
//! this service about as much as the read it later saves (measured at a million users: every
//! miss filled took a quarter of the random-read throughput), and it pays only for users read
//! again before they expire. The share of lookups Redis answered lately says how likely that
//! is: that share of the misses is filled, and never less than one in [`FLOOR`], so that a
//! cold Redis still warms. The same share says whether asking Redis pays at all: below
//! [`ASK_BELOW`] a round trip finds too little to be worth its cost (at a million users read
//! at random, Redis took a tenth of the machine to answer 1 % of the lookups), so Redis is
//! asked in one round of [`PROBE_EVERY`] only, enough to notice when it warms.

use std::sync::atomic::{AtomicU64, Ordering};

/// Keys asked of Redis between two readings of its hit share.
const WINDOW: u64 = 2_000;
/// The least share of misses filled, in thousandths.
const FLOOR: u64 = 125;
const WHOLE: u64 = 1_000;
/// Below this hit share, in thousandths, Redis is asked in one round of [`PROBE_EVERY`].
const ASK_BELOW: u64 = 100;
const PROBE_EVERY: u64 = 8;

pub(super) struct Warmth {
    asked: AtomicU64,
    found: AtomicU64,
    /// Of the keys asked in the last window, the thousandths Redis had.
    share: AtomicU64,
    /// Fills owed by earlier rounds, in thousandths of a fill.
    owed: AtomicU64,
    /// Rounds that could have asked Redis.
    rounds: AtomicU64,
}

impl Default for Warmth {
    /// Until a window says otherwise, Redis is taken to answer everything: every miss fills.
    fn default() -> Self {
        Self {
            asked: AtomicU64::new(0),
            found: AtomicU64::new(0),
            share: AtomicU64::new(WHOLE),
            owed: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
        }
    }
}

impl Warmth {
    /// What a round learned: of `asked` keys, Redis had `found`.
    pub(super) fn learned(&self, asked: usize, found: usize) {
        let (asked, found) = (asked as u64, found as u64);
        let found = self.found.fetch_add(found, Ordering::Relaxed) + found;
        let asked = self.asked.fetch_add(asked, Ordering::Relaxed) + asked;
        if asked >= WINDOW {
            self.asked.store(0, Ordering::Relaxed);
            self.found.store(0, Ordering::Relaxed);
            self.share.store(found * WHOLE / asked, Ordering::Relaxed);
        }
    }

    /// The share of lookups Redis answered in the last window, in thousandths.
    pub(super) fn share(&self) -> u64 {
        self.share.load(Ordering::Relaxed)
    }

    /// Whether this round of lookups asks Redis: always while it answers at least
    /// [`ASK_BELOW`], else one round in [`PROBE_EVERY`]. A round that does not ask cannot
    /// fill either (a fill needs the time Redis answers with).
    pub(super) fn worth_asking(&self) -> bool {
        self.share() >= ASK_BELOW
            || self
                .rounds
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(PROBE_EVERY)
    }

    /// Of `n` users read from PostgreSQL, how many to fill: the hit share of them (at least
    /// [`FLOOR`]), the fractions carried over from round to round.
    pub(super) fn to_fill(&self, n: usize) -> usize {
        let n = n as u64;
        let add = n.saturating_mul(self.share().max(FLOOR));
        // One step, so that rounds at once cannot both take the same fills: taking them in
        // two (add, then subtract what was taken) let two rounds take one debt twice, which
        // wrapped the debt to 2^64, and from then on every miss was filled.
        let mut fill = 0;
        let _ = self
            .owed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |owed| {
                let owed = owed.saturating_add(add);
                fill = (owed / WHOLE).min(n);
                Some(owed - fill * WHOLE)
            });
        usize::try_from(fill).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_miss_fills_until_a_window_says_redis_answers_less() {
        let w = Warmth::default();
        assert_eq!(w.to_fill(10), 10);
        w.learned(1_000, 300);
        assert_eq!(w.to_fill(10), 10, "no reading before a whole window");
        w.learned(1_000, 300);
        assert_eq!(w.share(), 300);
        let filled: usize = (0..100).map(|_| w.to_fill(10)).sum();
        assert_eq!(filled, 300, "30 % of 1,000 misses");
    }

    #[test]
    fn redis_is_asked_in_one_round_of_eight_while_it_answers_under_a_tenth() {
        let w = Warmth::default();
        assert!((0..100).all(|_| w.worth_asking()), "until a window says");
        w.learned(2_000, 199);
        let asked = (0..800).filter(|_| w.worth_asking()).count();
        assert_eq!(asked, 100);
        w.learned(2_000, 200);
        assert!((0..100).all(|_| w.worth_asking()), "a tenth is worth it");
    }

    #[test]
    fn rounds_at_once_never_fill_more_than_their_share() {
        let w = Warmth::default();
        w.learned(2_000, 0);
        let (threads, calls, n) = (4, 50_000, 7);
        let filled: usize = std::thread::scope(|s| {
            let each: Vec<_> = (0..threads)
                .map(|_| s.spawn(|| (0..calls).map(|_| w.to_fill(n)).sum::<usize>()))
                .collect();
            each.into_iter().map(|t| t.join().unwrap()).sum()
        });
        // One miss in eight, give or take the fraction still owed.
        let misses = threads * calls * n;
        assert!(
            filled <= misses / 8 && filled + 1 >= misses / 8,
            "{filled} of {misses}"
        );
    }

    #[test]
    fn a_cold_redis_still_gets_one_miss_in_eight() {
        let w = Warmth::default();
        w.learned(2_000, 0);
        let filled: usize = (0..1_000).map(|_| w.to_fill(1)).sum();
        assert_eq!(filled, 125);
    }
}
