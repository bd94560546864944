//! When an idle RPC consumer subscribes again. A subscription can be lost while no request
//! waits, because another instance takes them all: the broker counts the consumer and sends
//! it nothing (seen on RabbitMQ 3.10 after a node rejoined its cluster: 17 s, until the
//! connection was lost). Nothing a client can ask the broker tells that from a quiet hour, so
//! a consumer that receives nothing subscribes again on a new connection, each time to the
//! next node: every node is tried once at [`STALLED_AFTER`], then the wait doubles up to
//! [`IDLE_MOST`], about one new connection a minute for an instance nobody calls.

use std::time::Duration;

/// A consumer with room for more that has received nothing for this long, while requests
/// wait in the queue, has lost its subscription: a quorum queue can take a `basic.consume`
/// and forward it to a leader that is paused, and deliver nothing until that node returns.
pub(super) const STALLED_AFTER: Duration = Duration::from_secs(2);
/// The longest an idle consumer keeps a subscription that delivers nothing.
const IDLE_MOST: Duration = Duration::from_secs(60);

/// How long the current subscription may receive nothing before it is made again.
#[derive(Debug)]
pub(super) struct Renewal {
    nodes: usize,
    /// Renewals since the last delivery.
    idle_rounds: u32,
}

impl Renewal {
    pub(super) fn new(nodes: usize) -> Self {
        Self {
            nodes: nodes.max(1),
            idle_rounds: 0,
        }
    }

    pub(super) fn after(&self) -> Duration {
        let nodes = u32::try_from(self.nodes).unwrap_or(u32::MAX);
        let doublings = self
            .idle_rounds
            .saturating_add(1)
            .saturating_sub(nodes)
            .min(6);
        (STALLED_AFTER * 2u32.pow(doublings)).min(IDLE_MOST)
    }

    /// A request came: the next silence is suspect again after [`STALLED_AFTER`].
    pub(super) fn delivered(&mut self) {
        self.idle_rounds = 0;
    }

    pub(super) fn renewed(&mut self) {
        self.idle_rounds = self.idle_rounds.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waits(nodes: usize, rounds: usize) -> Vec<u64> {
        let mut r = Renewal::new(nodes);
        (0..rounds)
            .map(|_| {
                let after = r.after().as_secs();
                r.renewed();
                after
            })
            .collect()
    }

    #[test]
    fn every_node_is_tried_at_once_then_the_wait_doubles_to_a_minute() {
        assert_eq!(waits(1, 8), [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(waits(3, 9), [2, 2, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(waits(0, 2), [2, 4]);
    }

    #[test]
    fn a_delivery_starts_the_count_again() {
        let mut r = Renewal::new(1);
        (0..100_000).for_each(|_| r.renewed());
        assert_eq!(r.after(), IDLE_MOST);
        r.idle_rounds = u32::MAX;
        r.renewed();
        assert_eq!(r.after(), IDLE_MOST, "no overflow, however long idle");
        r.delivered();
        assert_eq!(r.after(), STALLED_AFTER);
    }
}
