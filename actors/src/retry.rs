//! The one reconnect policy. Every loop that waits for a server (the RPC consumer, the event
//! publisher, the cache listener, the database at start-up) and every actor restart waits
//! with the same exponential backoff with jitter, built on `backon`, so a recovering server
//! is not hit by every instance in step.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::watch;

/// Growing waits between attempts; [`Backoff::reset`] after a success.
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    last: Duration,
    /// A loss after a success that held at least this long is retried at once.
    at_once_after: Option<Duration>,
    /// Since the last [`Backoff::reset`], until the next wait.
    worked_since: Option<Instant>,
    /// The connection did real work since the last wait ([`Backoff::proven`]).
    proven: bool,
}

/// How long a broker connection must have worked for its loss to be retried at once.
const BROKER_HELD: Duration = Duration::from_secs(1);

impl Backoff {
    /// Reconnecting to PostgreSQL, RabbitMQ or Redis: from a quarter second up to ten.
    pub fn reconnect() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(10))
    }

    /// Reconnecting to RabbitMQ: at once after a connection that worked for a second or
    /// did real work ([`Backoff::proven`]; the next attempt goes to the next node of the
    /// cluster), then from a quarter second up
    /// to two (four with the jitter). A broker is only ever reconnected to by the RPC
    /// consumer and the publisher, one connection each, and every attempt is itself bounded
    /// (`AMQP_TIMEOUT_MS`), so a short cap costs the broker little and brings RPC back
    /// within seconds of its return. A connection that fails as soon as it is made is never
    /// retried in a tight loop.
    pub fn broker() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(2)).at_once_after(BROKER_HELD)
    }

    /// The first wait after a success that held at least `held` is none.
    pub fn at_once_after(mut self, held: Duration) -> Self {
        self.at_once_after = Some(held);
        self
    }

    /// From `min` (first wait) doubling up to `max`, each wait stretched by up to itself at random.
    pub fn new(min: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Self {
            delays: builder.build(),
            builder,
            last: min,
            at_once_after: None,
            worked_since: None,
            proven: false,
        }
    }

    /// The next wait; the sequence never ends.
    pub fn next_delay(&mut self) -> Duration {
        let worked = self.worked_since.take().map(|since| since.elapsed());
        let proven = std::mem::take(&mut self.proven);
        if let Some(held) = self.at_once_after
            && (proven || worked.is_some_and(|w| w >= held))
        {
            return Duration::ZERO;
        }
        self.last = self.delays.next().unwrap_or(self.last);
        self.last
    }

    /// Back to the shortest wait, after the thing waited for worked.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
        self.worked_since = Some(Instant::now());
    }

    /// The connection did real work (it delivered a request): its loss is retried at once
    /// however short its life. A broker that closes the connection over one message (a
    /// reply to a caller on a node that died) costs a reconnect per such message, not a
    /// growing wait; each is set aside on its return, so this ends.
    pub fn proven(&mut self) {
        self.proven = true;
    }

    /// Sleeps the next wait; false when `stop` turned true first (the caller should end).
    pub async fn wait(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            _ = stop.wait_for(|s| *s) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_and_reset() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(1));
        let mut b = Backoff::new(min, max);
        let first = b.next_delay();
        assert!(first >= min && first <= min * 2, "{first:?}");
        let later: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(later.iter().all(|d| *d <= max * 2), "{later:?}");
        assert!(later[9] >= max, "reaches the cap: {later:?}");
        b.reset();
        assert!(b.next_delay() <= min * 2);
    }

    #[test]
    fn a_loss_after_a_success_that_held_is_retried_at_once_then_backed_off() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(1));
        let mut b = Backoff::new(min, max).at_once_after(Duration::ZERO);
        assert!(b.next_delay() >= min, "no success yet");
        b.reset();
        assert_eq!(b.next_delay(), Duration::ZERO);
        assert!(b.next_delay() >= min, "once only");
        // A connection that fails as soon as it is made is backed off from.
        let mut b = Backoff::broker();
        b.reset();
        assert!(b.next_delay() >= Duration::from_millis(250));
        // One that did real work is, however short its life.
        b.reset();
        b.proven();
        assert_eq!(b.next_delay(), Duration::ZERO);
        assert!(b.next_delay() >= Duration::from_millis(250), "once only");
        // Without the setting, a reset only shortens the waits.
        let mut plain = Backoff::new(min, max);
        plain.reset();
        assert!(plain.next_delay() >= min);
    }

    #[tokio::test]
    async fn a_stop_ends_the_wait() {
        let (tx, mut rx) = watch::channel(false);
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        tx.send(true).unwrap();
        assert!(!b.wait(&mut rx).await);
    }
}
