//! A circuit breaker: after too many failures it fails calls at once for a while, so that a
//! struggling user-service is not buried under retries. Closed → open when the error rate over
//! the recent calls reaches the threshold; open → half-open after `reset_after`, where one
//! trial call decides between closed and open again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Open when at least this share of the recent calls failed (the seed: 50 %).
    pub error_threshold: f64,
    /// How many recent calls the rate is computed over.
    pub window: usize,
    /// No opening before this many calls are in the window.
    pub min_calls: usize,
    /// How long to stay open before letting a trial call through (the seed: 30 s).
    pub reset_after: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            error_threshold: 0.5,
            window: 20,
            min_calls: 5,
            reset_after: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { trial_running: bool },
}

#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
    /// Recent outcomes, `true` for a failure.
    recent: VecDeque<bool>,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: State::Closed,
            recent: VecDeque::with_capacity(config.window),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// May a call go out now? In half-open state only one trial at a time.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed => true,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen {
                    trial_running: true,
                };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen {
                trial_running: true,
            } => false,
            State::HalfOpen {
                trial_running: false,
            } => {
                self.state = State::HalfOpen {
                    trial_running: true,
                };
                true
            }
        }
    }

    pub fn record(&mut self, failed: bool, now: Instant) {
        if let State::HalfOpen { .. } = self.state {
            self.recent.clear();
            self.state = if failed {
                self.open(now)
            } else {
                State::Closed
            };
            return;
        }
        if self.recent.len() == self.config.window {
            self.recent.pop_front();
        }
        self.recent.push_back(failed);
        let failures = self.recent.iter().filter(|f| **f).count();
        let enough = self.recent.len() >= self.config.min_calls;
        if enough && failures as f64 / self.recent.len() as f64 >= self.config.error_threshold {
            self.recent.clear();
            self.state = self.open(now);
        }
    }

    fn open(&self, now: Instant) -> State {
        State::Open {
            until: now + self.config.reset_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            window: 10,
            min_calls: 4,
            ..Default::default()
        })
    }

    #[test]
    fn opens_at_half_failures_and_recovers_after_a_good_trial() {
        let t0 = Instant::now();
        let mut b = breaker();
        for failed in [false, true, false, true] {
            assert!(b.allow(t0));
            b.record(failed, t0);
        }
        assert!(matches!(b.state(), State::Open { .. }));
        assert!(!b.allow(t0 + Duration::from_secs(29)));
        assert!(
            b.allow(t0 + Duration::from_secs(30)),
            "one trial after reset_after"
        );
        assert!(
            !b.allow(t0 + Duration::from_secs(30)),
            "only one trial at a time"
        );
        b.record(false, t0 + Duration::from_secs(30));
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn a_failed_trial_opens_again() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..4 {
            b.record(true, t0);
        }
        let later = t0 + Duration::from_secs(31);
        assert!(b.allow(later));
        b.record(true, later);
        assert!(matches!(b.state(), State::Open { until } if until > later));
    }

    proptest! {
        #[test]
        fn never_opens_below_the_threshold(outcomes in prop::collection::vec(any::<bool>(), 0..200)) {
            let t0 = Instant::now();
            let mut b = breaker();
            let mut window: VecDeque<bool> = VecDeque::new();
            for failed in outcomes {
                if !b.allow(t0) { break; }
                b.record(failed, t0);
                if window.len() == 10 { window.pop_front(); }
                window.push_back(failed);
                let rate = window.iter().filter(|f| **f).count() as f64 / window.len() as f64;
                if matches!(b.state(), State::Open { .. }) {
                    prop_assert!(window.len() >= 4 && rate >= 0.5);
                    break;
                }
            }
        }
    }
}
