//! Sending on the broker from the RPC edge: the channels of one connection, each call on them
//! under the connection's deadline, replies and confirmed publishes.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};
use tokio::sync::Notify;
use user_service_client::broker::AmqpError;

use super::{RpcError, acks};

/// The channels of one connection. Requests are consumed, answered and acked on `replies`,
/// which asks for no confirms: the caller waits for the reply itself, and the ack that follows
/// on the same channel cannot overtake it (the broker handles a channel's frames in order).
/// Every ack and nack of `replies` goes through its `settler`.
/// What must be stored before its request is acked (a dead letter, a request set aside and
/// put back) goes on `confirmed` and waits for the broker's confirm.
#[derive(Clone)]
pub(crate) struct Channels {
    pub(crate) replies: TimedChannel,
    pub(crate) confirmed: TimedChannel,
    pub(crate) settler: acks::Settler,
    /// The connection's frame size: every message's properties must fit in one frame.
    pub(crate) frame_max: u32,
}

/// The deadline of one connection's calls on the broker. A call that misses it marks the
/// connection hung, and the consumer loop drops the connection.
#[derive(Clone)]
pub(crate) struct Deadline {
    pub(super) timeout: Duration,
    pub(super) hung: Arc<Notify>,
}

impl Deadline {
    pub(crate) async fn within<T>(
        &self,
        wait: impl IntoFuture<Output = lapin::Result<T>>,
    ) -> Result<T, AmqpError> {
        let done = user_service_client::broker::within(self.timeout, wait).await;
        if matches!(done, Err(AmqpError::Timeout(_))) {
            // Stored if the loop is not waiting yet: it ends at its next turn.
            self.hung.notify_one();
        }
        done
    }
}

/// A channel and its connection's [`Deadline`].
#[derive(Clone)]
pub(crate) struct TimedChannel(pub(super) Channel, pub(super) Deadline);

impl TimedChannel {
    pub(crate) fn get(&self) -> &Channel {
        &self.0
    }

    pub(crate) async fn within<T>(
        &self,
        wait: impl IntoFuture<Output = lapin::Result<T>>,
    ) -> Result<T, AmqpError> {
        self.1.within(wait).await
    }
}

/// Publishes a reply (see [`Channels`]).
pub(super) async fn reply(
    channel: &TimedChannel,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), RpcError> {
    send(channel, "", key, body, props).await?;
    Ok(())
}

/// Publishes and waits for the broker's confirm.
pub(super) async fn publish(
    channel: &TimedChannel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), RpcError> {
    let confirm = send(channel, exchange, key, body, props).await?;
    match channel.within(confirm).await? {
        Confirmation::Nack(_) => Err(RpcError::Nacked),
        _ => Ok(()),
    }
}

async fn send(
    channel: &TimedChannel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<PublisherConfirm, RpcError> {
    let options = BasicPublishOptions::default();
    let publishing = channel
        .get()
        .basic_publish(exchange.into(), key.into(), options, body, props);
    Ok(channel.within(publishing).await?)
}
