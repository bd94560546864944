//! Deliveries whose settlement failed. When one comes back it is not handled into the same
//! failure again (a dead letter larger than the broker's frame closed the connection, the
//! request came back, and the cycle went on): it is set aside with a minimal dead letter,
//! and dropped if even that failed. A keyed request is handled once more first: a lost node
//! fails the settlement of every request in hand, and handling a keyed one again only
//! replays its stored reply, to a caller that may still wait for it; an unkeyed write would
//! be applied twice. A classic queue only says `redelivered`, so this
//! instance remembers what it failed to settle; a quorum queue counts the returns of a
//! message in `x-delivery-count`, which holds across instances.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

use lapin::message::Delivery;
use lapin::types::AMQPValue;

/// Failures remembered; the newest replaces the oldest.
const SLOTS: usize = 256;
/// A quorum queue's count of returns from which a request is set aside whatever this instance
/// remembers: RabbitMQ 4's default delivery limit, past which the broker would drop it.
pub(super) const POISON_DELIVERY_COUNT: i64 = 20;

/// What to do with a delivery, given its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Repeat {
    /// Handle it.
    First,
    /// Its settlement failed before: a minimal dead letter instead.
    Again,
    /// Even its minimal dead letter failed: drop it.
    Hopeless,
}

/// The record; only a redelivery or a failure takes its lock.
#[derive(Default)]
pub struct Repeats(Mutex<Ring>);

#[derive(Default)]
struct Ring {
    /// (fingerprint, failures)
    slots: Vec<(u64, u8)>,
    next: usize,
}

impl Repeats {
    fn lock(&self) -> MutexGuard<'_, Ring> {
        // No operation leaves the ring half-changed.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that settling `delivery` failed (once more).
    pub(super) fn failed(&self, delivery: &Delivery) {
        let print = fingerprint(delivery);
        let mut ring = self.lock();
        if let Some(slot) = ring.slots.iter_mut().find(|(p, _)| *p == print) {
            slot.1 = slot.1.saturating_add(1);
        } else if ring.slots.len() < SLOTS {
            ring.slots.push((print, 1));
        } else {
            let at = ring.next;
            ring.slots[at % SLOTS] = (print, 1);
            ring.next = (at + 1) % SLOTS;
        }
    }

    /// `quorum`: whether the queue is a quorum queue, whose `x-delivery-count` the broker
    /// sets (on a classic queue the header would be the sender's word). `keyed`: whether the
    /// request carries a request key.
    pub(super) fn check(&self, delivery: &Delivery, quorum: bool, keyed: bool) -> Repeat {
        let returns = if quorum { delivery_count(delivery) } else { 0 };
        if !delivery.redelivered && returns == 0 {
            return Repeat::First;
        }
        let print = fingerprint(delivery);
        let failures = self
            .lock()
            .slots
            .iter()
            .find(|(p, _)| *p == print)
            .map_or(0, |(_, n)| *n);
        let set_aside_at = if keyed { 2 } else { 1 };
        match failures {
            n if n < set_aside_at && returns < POISON_DELIVERY_COUNT => Repeat::First,
            n if n <= set_aside_at => Repeat::Again,
            _ => Repeat::Hopeless,
        }
    }
}

/// How often a quorum queue says the message was returned (0 when it does not say).
fn delivery_count(delivery: &Delivery) -> i64 {
    let headers = delivery.properties.headers().as_ref();
    match headers.and_then(|h| h.inner().get("x-delivery-count")) {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        Some(AMQPValue::LongUInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortUInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortShortInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortShortUInt(n)) => i64::from(*n),
        _ => 0,
    }
}

/// Identifies a message across its redeliveries: what the broker keeps of it unchanged.
fn fingerprint(delivery: &Delivery) -> u64 {
    let p = &delivery.properties;
    let mut h = DefaultHasher::new();
    delivery.data.hash(&mut h);
    let text = |s: &Option<lapin::types::ShortString>| s.as_ref().map(|s| s.as_str().to_owned());
    text(p.message_id()).hash(&mut h);
    text(p.correlation_id()).hash(&mut h);
    text(p.reply_to()).hash(&mut h);
    p.timestamp().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::super::test_props::props_with;
    use super::*;
    use lapin::BasicProperties;

    fn delivery(body: &[u8], redelivered: bool, props: BasicProperties) -> Delivery {
        let mut d = Delivery::mock(1, "".into(), "q".into(), redelivered, body.to_vec());
        d.properties = props;
        d
    }

    #[test]
    fn a_failed_settlement_is_set_aside_then_dropped_when_it_comes_back() {
        let repeats = Repeats::default();
        let plain = BasicProperties::default;
        assert_eq!(
            repeats.check(&delivery(b"a", false, plain()), false, false),
            Repeat::First
        );
        repeats.failed(&delivery(b"a", false, plain()));
        assert_eq!(
            repeats.check(&delivery(b"a", false, plain()), false, false),
            Repeat::First,
            "only a redelivery is looked up"
        );
        assert_eq!(
            repeats.check(&delivery(b"a", true, plain()), false, false),
            Repeat::Again
        );
        assert_eq!(
            repeats.check(&delivery(b"b", true, plain()), false, false),
            Repeat::First,
            "another message"
        );
        repeats.failed(&delivery(b"a", true, plain()));
        assert_eq!(
            repeats.check(&delivery(b"a", true, plain()), false, false),
            Repeat::Hopeless
        );
    }

    #[test]
    fn a_keyed_request_is_handled_once_more_before_it_is_set_aside() {
        let repeats = Repeats::default();
        let keyed = delivery(b"k", true, BasicProperties::default());
        repeats.failed(&keyed);
        assert_eq!(repeats.check(&keyed, false, true), Repeat::First);
        repeats.failed(&keyed);
        assert_eq!(repeats.check(&keyed, false, true), Repeat::Again);
        repeats.failed(&keyed);
        assert_eq!(repeats.check(&keyed, false, true), Repeat::Hopeless);
    }

    #[test]
    fn a_quorum_count_past_the_limit_is_set_aside() {
        let repeats = Repeats::default();
        let counted = |n: i64| props_with(&[("x-delivery-count", AMQPValue::LongLongInt(n))]);
        let few = delivery(b"a", true, counted(POISON_DELIVERY_COUNT - 1));
        assert_eq!(repeats.check(&few, true, false), Repeat::First);
        let many = delivery(b"a", false, counted(POISON_DELIVERY_COUNT));
        assert_eq!(repeats.check(&many, true, false), Repeat::Again);
        assert_eq!(
            repeats.check(&many, false, false),
            Repeat::First,
            "on a classic queue the header is the sender's"
        );
    }

    #[test]
    fn the_record_is_bounded() {
        let repeats = Repeats::default();
        for i in 0..(SLOTS * 3) {
            repeats.failed(&delivery(
                &i.to_le_bytes(),
                true,
                BasicProperties::default(),
            ));
        }
        assert_eq!(repeats.lock().slots.len(), SLOTS);
        let newest = delivery(
            &(SLOTS * 3 - 1).to_le_bytes(),
            true,
            BasicProperties::default(),
        );
        assert_eq!(repeats.check(&newest, false, false), Repeat::Again);
        let oldest = delivery(&0usize.to_le_bytes(), true, BasicProperties::default());
        assert_eq!(repeats.check(&oldest, false, false), Repeat::First);
    }
}
