//! Settles one channel's deliveries. Every ack and nack of the channel goes through one task,
//! which sees them together: acks that cover the oldest unsettled deliveries leave as one
//! `multiple` ack, so a busy consumer sends the broker one frame for many requests instead of
//! one each. Any other settles alone and at once, so a slow request never holds back the acks
//! of those delivered after it (nor the prefetch slots they take).
//!
//! A `multiple` ack settles every unsettled delivery up to its tag, so the task must know
//! which are still being handled: the consumer loop notes each delivery before the
//! delivery's handler starts (without waking the task).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::DeliveryTag;
use tokio::sync::{mpsc, oneshot};

use super::TimedChannel;

/// Most settlements taken in one turn of the task.
const TURN: usize = 512;

/// Sends one channel's settlements; cheap to clone.
#[derive(Clone)]
pub(crate) struct Settler {
    // Unbounded, yet bounded by the prefetch: one note per delivery.
    notes: mpsc::UnboundedSender<Note>,
    unsettled: Unsettled,
}

/// The channel's deliveries not yet settled, oldest first.
#[derive(Clone, Default)]
struct Unsettled(Arc<Mutex<BTreeSet<DeliveryTag>>>);

impl Unsettled {
    fn lock(&self) -> MutexGuard<'_, BTreeSet<DeliveryTag>> {
        // Its operations cannot leave the set half-changed.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How a delivery is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settlement {
    Ack,
    Nack { requeue: bool },
}

struct Note(DeliveryTag, Settlement, oneshot::Sender<bool>);

impl Settler {
    /// Starts the task for `channel`; it ends with the last clone.
    pub(crate) fn start(channel: TimedChannel) -> (Self, tokio::task::JoinHandle<()>) {
        let (notes, queue) = mpsc::unbounded_channel();
        let unsettled = Unsettled::default();
        let task = tokio::spawn(run(channel, queue, unsettled.clone()));
        (Self { notes, unsettled }, task)
    }

    /// Before the delivery's handler starts.
    pub(crate) fn delivered(&self, tag: DeliveryTag) {
        self.unsettled.lock().insert(tag);
    }

    /// Whether the broker was told; when not, the connection is gone and the broker will
    /// deliver the request again.
    pub(crate) async fn settle(&self, tag: DeliveryTag, how: Settlement) -> bool {
        let (done, sent) = oneshot::channel();
        if self.notes.send(Note(tag, how, done)).is_err() {
            return false;
        }
        sent.await.unwrap_or(false)
    }
}

async fn run(
    channel: TimedChannel,
    mut queue: mpsc::UnboundedReceiver<Note>,
    unsettled: Unsettled,
) {
    let mut notes = Vec::with_capacity(TURN);
    while queue.recv_many(&mut notes, TURN).await > 0 {
        let (mut settling, mut waiting) = (Vec::new(), Vec::new());
        let oldest_handled = {
            let mut unsettled = unsettled.lock();
            for Note(tag, how, done) in notes.drain(..) {
                if unsettled.remove(&tag) {
                    settling.push((tag, how));
                    waiting.push(Some(done));
                } else {
                    // Settled twice (or never delivered here): the broker would close the
                    // channel.
                    let _ = done.send(false);
                }
            }
            // Deliveries noted after this are newer than any settled here.
            unsettled.first().copied()
        };
        let frames = plan(&settling, oldest_handled);
        // No frame's meaning depends on another's, so they may leave in any order.
        let sent = futures::future::join_all(frames.iter().map(|f| f.send(&channel))).await;
        for (frame, ok) in frames.iter().zip(sent) {
            for done in frame.members.iter().filter_map(|&i| waiting[i].take()) {
                let _ = done.send(ok);
            }
        }
    }
}

/// One frame to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    tag: DeliveryTag,
    how: Settlement,
    /// Settles every unsettled delivery up to `tag`.
    multiple: bool,
    /// The settlements it carries (indices into the turn's).
    members: Vec<usize>,
}

impl Frame {
    /// False when the broker was not told in time.
    async fn send(&self, channel: &TimedChannel) -> bool {
        let multiple = self.multiple;
        let sent = match self.how {
            Settlement::Ack => {
                let ack = channel
                    .get()
                    .basic_ack(self.tag, BasicAckOptions { multiple });
                channel.within(ack).await
            }
            Settlement::Nack { requeue } => {
                let options = BasicNackOptions { multiple, requeue };
                channel
                    .within(channel.get().basic_nack(self.tag, options))
                    .await
            }
        };
        sent.is_ok()
    }
}

/// The frames for one turn's settlements, given the oldest delivery still being handled.
/// Nacks go alone. The acks older than every delivery still being handled and every nack go
/// as one `multiple` ack: they are all the unsettled deliveries up to the newest of them, so
/// the frames mean the same in whatever order they leave. The other acks go alone.
fn plan(settling: &[(DeliveryTag, Settlement)], oldest_handled: Option<DeliveryTag>) -> Vec<Frame> {
    let alone = |i: usize| Frame {
        tag: settling[i].0,
        how: settling[i].1,
        multiple: false,
        members: vec![i],
    };
    let (acks, nacks): (Vec<usize>, Vec<usize>) =
        (0..settling.len()).partition(|&i| settling[i].1 == Settlement::Ack);
    let bound = nacks
        .iter()
        .map(|&i| settling[i].0)
        .chain(oldest_handled)
        .min();
    let mut frames: Vec<Frame> = nacks.into_iter().map(alone).collect();
    let (mut together, apart): (Vec<usize>, Vec<usize>) = acks
        .into_iter()
        .partition(|&i| bound.is_none_or(|b| settling[i].0 < b));
    if together.len() > 1 {
        together.sort_unstable_by_key(|&i| settling[i].0);
        let newest = together[together.len() - 1];
        frames.push(Frame {
            tag: settling[newest].0,
            how: Settlement::Ack,
            multiple: true,
            members: together,
        });
    } else {
        frames.extend(together.into_iter().map(alone));
    }
    frames.extend(apart.into_iter().map(alone));
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACK: Settlement = Settlement::Ack;
    const REQUEUE: Settlement = Settlement::Nack { requeue: true };

    fn summary(frames: &[Frame]) -> Vec<(DeliveryTag, bool, usize)> {
        frames
            .iter()
            .map(|f| (f.tag, f.multiple, f.members.len()))
            .collect()
    }

    #[test]
    fn acks_older_than_everything_in_hand_go_as_one() {
        let settling = [(3, ACK), (1, ACK), (2, ACK)];
        let frames = plan(&settling, Some(7));
        assert_eq!(summary(&frames), [(3, true, 3)]);
        assert_eq!(plan(&settling, None)[0].members, [1, 2, 0]);
    }

    #[test]
    fn acks_behind_a_request_in_hand_go_alone() {
        let frames = plan(&[(1, ACK), (2, ACK), (4, ACK), (6, ACK)], Some(3));
        assert_eq!(
            summary(&frames),
            [(2, true, 2), (4, false, 1), (6, false, 1)]
        );
    }

    #[test]
    fn a_single_ack_is_not_multiple() {
        assert_eq!(summary(&plan(&[(5, ACK)], None)), [(5, false, 1)]);
    }

    #[test]
    fn nacks_go_alone_and_no_multiple_ack_covers_one() {
        let frames = plan(&[(1, ACK), (2, ACK), (3, REQUEUE), (4, ACK)], None);
        assert_eq!(
            summary(&frames),
            [(3, false, 1), (2, true, 2), (4, false, 1)]
        );
        assert_eq!(frames[0].how, REQUEUE);
    }

    #[test]
    fn every_settlement_is_carried_exactly_once() {
        let settling: Vec<_> = (1..=40u64)
            .map(|t| (t * 7 % 41, if t % 5 == 0 { REQUEUE } else { ACK }))
            .collect();
        for oldest in [None, Some(1), Some(20), Some(41)] {
            let frames = plan(&settling, oldest);
            let mut carried: Vec<usize> = frames.iter().flat_map(|f| f.members.clone()).collect();
            carried.sort_unstable();
            assert_eq!(carried, (0..settling.len()).collect::<Vec<_>>());
            let nacked = settling.iter().filter(|(_, how)| *how != ACK);
            let lowest_nack = nacked.map(|(t, _)| *t).min().unwrap_or(u64::MAX);
            for f in frames.iter().filter(|f| f.multiple) {
                assert!(oldest.is_none_or(|o| f.tag < o));
                assert!(f.tag < lowest_nack, "a multiple ack would cover a nack");
                assert!(f.members.iter().all(|&i| settling[i].0 <= f.tag));
            }
        }
    }
}
