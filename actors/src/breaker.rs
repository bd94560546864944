//! A circuit breaker per dependency (PostgreSQL, Redis, RabbitMQ). A dependency that hangs
//! would otherwise cost every request its full timeout: after a few failures in a row the
//! breaker opens, requests stop asking (they take their fallback at once: a miss, a local
//! count, a 503), and one background task probes the dependency with the common backoff until
//! it answers, then closes the breaker. On the healthy path a check is one atomic load.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use crate::retry::Backoff;

/// The background check of an open breaker: true when the dependency answered.
pub type Probe = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// Cheap to clone; every clone is the same breaker.
#[derive(Clone)]
pub struct Breaker(Arc<Inner>);

struct Inner {
    name: &'static str,
    open: AtomicBool,
    /// Failures in a row since the last success.
    failures: AtomicU32,
    threshold: u32,
    /// Waits between probes: from `min_probe`, doubling up to `max_probe`.
    min_probe: Duration,
    max_probe: Duration,
    probe: Probe,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &self.0.name)
            .field("open", &self.is_open())
            .finish()
    }
}

impl Breaker {
    /// Opens after `threshold` failures in a row; while open, `probe` runs in the background
    /// (on the current tokio runtime), waiting `min_probe` doubling to `max_probe` between
    /// tries (with jitter), and the first success closes the breaker.
    pub fn new(
        name: &'static str,
        threshold: u32,
        (min_probe, max_probe): (Duration, Duration),
        probe: Probe,
    ) -> Self {
        Self(Arc::new(Inner {
            name,
            open: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            threshold: threshold.max(1),
            min_probe,
            max_probe,
            probe,
        }))
    }

    /// The dependency's name, as metrics and `/health` show it.
    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// May a request ask the dependency now?
    #[inline]
    pub fn allows(&self) -> bool {
        !self.0.open.load(Ordering::Acquire)
    }

    pub fn is_open(&self) -> bool {
        !self.allows()
    }

    /// A call answered in time.
    #[inline]
    pub fn success(&self) {
        if self.0.failures.load(Ordering::Relaxed) != 0 {
            self.0.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A call timed out or could not reach the dependency. The failure that reaches the
    /// threshold opens the breaker and starts the probe.
    pub fn failure(&self) {
        let failures = self.0.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.0.threshold {
            self.trip();
        }
    }

    /// Opens the breaker now (a dependency known to be down), starting the probe.
    pub fn trip(&self) {
        if self.0.open.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(
            dependency = self.0.name,
            "breaker open: requests stop waiting for it until a probe answers"
        );
        metrics::gauge!(crate::metrics::BREAKER_OPEN, "dependency" => self.0.name).set(1.0);
        metrics::counter!(crate::metrics::BREAKER_TRIPS, "dependency" => self.0.name).increment(1);
        let breaker = self.clone();
        let spawned = tokio::runtime::Handle::try_current().map(|rt| {
            rt.spawn(async move { breaker.probe_until_closed().await });
        });
        if spawned.is_err() {
            // No runtime to probe on (never in the service): do not stay open for good.
            self.close();
        }
    }

    fn close(&self) {
        self.0.failures.store(0, Ordering::Relaxed);
        if self.0.open.swap(false, Ordering::AcqRel) {
            tracing::info!(
                dependency = self.0.name,
                "breaker closed: the dependency answers"
            );
            metrics::gauge!(crate::metrics::BREAKER_OPEN, "dependency" => self.0.name).set(0.0);
        }
    }

    async fn probe_until_closed(self) {
        let mut backoff = Backoff::new(self.0.min_probe, self.0.max_probe);
        loop {
            tokio::time::sleep(backoff.next_delay()).await;
            if (self.0.probe)().await {
                self.close();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    fn breaker(answers: Arc<AtomicBool>) -> Breaker {
        let probe: Probe = Arc::new(move || {
            let up = answers.load(Ordering::SeqCst);
            Box::pin(async move { up })
        });
        let wait = Duration::from_millis(5);
        Breaker::new("test", 3, (wait, wait), probe)
    }

    #[tokio::test]
    async fn opens_after_failures_in_a_row_and_a_success_resets_the_count() {
        let b = breaker(Arc::new(AtomicBool::new(false)));
        b.failure();
        b.failure();
        b.success();
        b.failure();
        b.failure();
        assert!(b.allows(), "a success in between resets the count");
        b.failure();
        assert!(b.is_open());
    }

    #[tokio::test]
    async fn closes_once_the_probe_answers() {
        let up = Arc::new(AtomicBool::new(false));
        let b = breaker(up.clone());
        b.trip();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(b.is_open(), "stays open while the probe fails");
        up.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while b.is_open() {
            assert!(tokio::time::Instant::now() < deadline, "never closed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        b.failure();
        assert!(b.allows(), "the count starts again after closing");
    }
}
