//! The RPC edge (contract section 5): consumes `RPC_QUEUE` with a bounded prefetch, decodes
//! each message into a method name and params, authenticates the caller from the message
//! headers, calls the same core as REST, and publishes the reply to `reply_to`. A message is
//! acked only after its reply was published on the same channel (the broker handles a
//! channel's frames in order, so the reply is routed before the ack takes effect), or after
//! its dead-letter copy is confirmed by the broker: a crash means redelivery, not loss. The
//! connection is re-established with backoff whenever it drops.
//!
//! A broker that hangs (paused, partitioned) costs this edge its connection, never a stall:
//! every call on the broker has the deadline `AMQP_TIMEOUT_MS`, one that misses it marks the
//! connection hung and the consumer loop drops it, and an idle connection that hears nothing
//! for two heartbeats is dropped by lapin. Requests held by a dropped connection are
//! redelivered by the broker.

mod acks;
mod dead_letter;
mod delivery;
mod properties;
mod publish;
mod renewal;
mod repeats;
pub mod wire;

pub use repeats::Repeats;

use publish::{Channels, Deadline, TimedChannel, publish, reply};
use renewal::{Renewal, STALLED_AFTER};

use std::sync::Arc;

use futures::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use user_core::Core;
use user_core::health::{Health, Report, Status};
use user_core::metrics::{record_delivery, record_resubscribed};
use user_core::retry::Backoff;
use user_domain::quote::cut;
use user_service_client::broker::{AmqpError, Broker, Connector};

use crate::auth::Authenticator;

/// How much of a broker error a log line or `/health` quotes.
const LOGGED_ERROR_CHARS: usize = 512;
/// How long setting an unreadable request aside waits for each message.
const GET_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct RpcConfig {
    pub broker: Broker,
    pub queue: String,
    pub queue_type: QueueType,
    pub prefetch: u16,
    /// Dead letters expire in the broker after this: they may hold personal data.
    pub dead_letter_ttl: std::time::Duration,
    /// Where a request that failed authentication may be answered besides direct reply-to
    /// (`RPC_UNAUTHENTICATED_REPLY_PREFIX`); empty: nowhere else.
    pub unauthenticated_reply_prefix: String,
}

/// How the request queue and its dead-letter queue are declared (`RPC_QUEUE_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// Durable, without arguments: what a NestJS client asserting `{durable: true}` expects.
    Classic,
    /// Replicated across a cluster's nodes (`x-queue-type: quorum`).
    Quorum,
}

impl QueueType {
    /// The arguments the queues are declared with; a client that asserts the queue must
    /// pass the same ones.
    pub fn arguments(self) -> FieldTable {
        let mut args = FieldTable::default();
        if self == Self::Quorum {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        args
    }
}

impl RpcConfig {
    /// Where messages that cannot be processed and cannot be answered go.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.queue)
    }
}

pub struct RpcEdge {
    pub config: RpcConfig,
    /// Names this instance in every reply's `app_id`, so callers can see who served them.
    pub instance: String,
    pub core: Core,
    pub auth: Arc<Authenticator>,
    /// Seals billing values in the bodies of dead letters.
    pub billing_keys: Arc<user_core::crypto::BillingKeys>,
    pub health: Health,
    /// Deliveries whose settlement failed, so that they are not handled into it again.
    pub repeats: Repeats,
}

#[derive(Debug, thiserror::Error)]
enum RpcError {
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    #[error("the broker refused the message")]
    Nacked,
    #[error("the broker ended the consumer")]
    ConsumerEnded,
    #[error("the task settling deliveries ended")]
    SettlerEnded,
    #[error("requests wait in the queue, yet none came for {0:?}: the subscription is lost")]
    Stalled(std::time::Duration),
    #[error("nothing came for {0:?}: subscribing again")]
    Idle(std::time::Duration),
    #[error("an unreadable request was taken off the queue")]
    SetAside,
}

impl RpcError {
    /// The broker delivered something lapin cannot parse (such as invalid UTF-8 in a
    /// short-string property): the connection is lost, and the request goes back to the
    /// queue, where it would end the next connection too.
    fn is_unreadable(&self) -> bool {
        matches!(self, Self::Amqp(AmqpError::Lapin(e)) if matches!(e.kind(), lapin::ErrorKind::ParsingError(_)))
    }
}

impl From<lapin::Error> for RpcError {
    fn from(e: lapin::Error) -> Self {
        Self::Amqp(e.into())
    }
}

impl RpcEdge {
    fn report(&self, status: Status, detail: Option<String>) {
        self.health.report(Report::new("rabbitmq", status, detail));
    }
}

/// Serves until `stop` turns true, reconnecting with the shared backoff after any failure.
pub async fn run(edge: Arc<RpcEdge>, mut stop: watch::Receiver<bool>) {
    if edge.auth.is_open() && !edge.config.broker.is_loopback() {
        let why = "local open mode: RPC is served only over a broker on this machine (AMQP_URL on \
                   localhost); configure INTERNAL_API_KEYS or INTERNAL_SERVICE_SECRET";
        tracing::warn!("{why}");
        edge.report(Status::Down, Some(why.to_owned()));
        return;
    }
    let mut backoff = Backoff::broker();
    let mut connector = edge.config.broker.connector();
    let mut resume = Resume::Anew;
    let mut renewal = Renewal::new(edge.config.broker.nodes.len());
    loop {
        let result = serve(
            &edge,
            &mut connector,
            &mut stop,
            &mut backoff,
            resume,
            &mut renewal,
        )
        .await;
        resume = Resume::Anew;
        match result {
            Ok(()) => return,
            // The connection was closed in order: subscribe again at once (on the next node).
            Err(e @ RpcError::Idle(_)) => {
                tracing::debug!(reason = %e, "RPC subscription renewed");
                record_resubscribed("idle");
                resume = Resume::Renewal;
                continue;
            }
            // Each round takes at least one unreadable request away: reconnect at once.
            Err(RpcError::SetAside) => {
                tracing::error!("an unreadable request (malformed AMQP properties) was dropped");
                record_delivery(delivery::Outcome::Unreadable.as_str());
                continue;
            }
            Err(e) if e.is_unreadable() => {
                tracing::warn!(error = %cut(&e.to_string(), LOGGED_ERROR_CHARS), "unreadable request; setting it aside");
                resume = Resume::SetAside;
                continue;
            }
            Err(e) => {
                if matches!(e, RpcError::Stalled(_)) {
                    record_resubscribed("stalled");
                }
                let e = cut(&e.to_string(), LOGGED_ERROR_CHARS).into_owned();
                tracing::warn!(error = %e, "RabbitMQ connection lost; reconnecting");
                edge.report(Status::Down, Some(e));
            }
        }
        if !backoff.wait(&mut stop).await {
            return;
        }
    }
}

/// After an unreadable delivery ended a connection, it is back among the first `prefetch`
/// requests of the queue. Takes those one at a time with auto-ack: a readable one goes back
/// to the queue as it was (its place in line is lost, nothing else); the unreadable one ends
/// this connection too, but is gone from the queue for good.
async fn set_aside_unreadable(
    channel: &TimedChannel,
    queue: &str,
    count: usize,
) -> Result<(), RpcError> {
    let take = BasicGetOptions { no_ack: true };
    for _ in 0..count {
        // A get whose answer could not be parsed never completes: the bound ends the wait.
        let got = tokio::time::timeout(GET_PATIENCE, channel.get().basic_get(queue.into(), take))
            .await
            .map_err(|_| RpcError::SetAside)?
            .map_err(|_| RpcError::SetAside)?;
        let Some(message) = got else {
            return Ok(());
        };
        let d = message.delivery;
        publish(channel, "", queue, &d.data, d.properties.clone()).await?;
    }
    Ok(())
}

/// Why a connection is being made: what it does first, and how loudly it says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    /// The first connection, or one after a loss.
    Anew,
    /// An unreadable delivery ended the last one: set it aside first.
    SetAside,
    /// An idle subscription made again (at growing waits, up to a minute): a debug line only.
    Renewal,
}

/// One connection's life: declare, consume, and hand each delivery to a task of its own.
/// At most `prefetch` deliveries are unacked, which bounds the work in flight. `renewal`:
/// how long it may receive nothing before it subscribes again.
async fn serve(
    edge: &Arc<RpcEdge>,
    connector: &mut Connector,
    stop: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
    resume: Resume,
    renewal: &mut Renewal,
) -> Result<(), RpcError> {
    let broker = &edge.config.broker;
    let conn = connector.connect("user-service rpc", None).await?;
    let node = &conn.node;
    let deadline = Deadline {
        timeout: broker.timeout,
        hung: Arc::new(Notify::new()),
    };
    let channel = deadline.within(conn.create_channel()).await?;
    let confirmed = deadline.within(conn.create_channel()).await?;
    deadline
        .within(confirmed.confirm_select(ConfirmSelectOptions::default()))
        .await?;
    let replies = TimedChannel(channel.clone(), deadline.clone());
    let confirmed = TimedChannel(confirmed, deadline.clone());
    let (settler, mut settling) = acks::Settler::start(replies.clone());
    let channels = Channels {
        replies,
        confirmed: confirmed.clone(),
        settler,
        frame_max: conn.configuration().frame_max(),
    };
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for queue in [edge.config.queue.clone(), edge.config.dead_letter_queue()] {
        let arguments = edge.config.queue_type.arguments();
        deadline
            .within(channel.queue_declare(queue.into(), durable, arguments))
            .await?;
    }
    if resume == Resume::SetAside {
        let count = usize::from(edge.config.prefetch) + 1;
        set_aside_unreadable(&confirmed, &edge.config.queue, count).await?;
    }
    deadline
        .within(channel.basic_qos(edge.config.prefetch, BasicQosOptions::default()))
        .await?;
    let tag = format!("user-service-{}", uuid::Uuid::new_v4().simple());
    let mut consumer = deadline
        .within(channel.basic_consume(
            edge.config.queue.clone().into(),
            tag.clone().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ))
        .await?;
    let (queue, prefetch) = (&edge.config.queue, edge.config.prefetch);
    match resume == Resume::Renewal {
        true => tracing::debug!(%queue, prefetch, %node, "consuming RPC requests"),
        false => tracing::info!(%queue, prefetch, %node, "consuming RPC requests"),
    }
    edge.report(Status::Up, Some(format!("consuming via {node}")));
    backoff.reset();

    let mut in_flight = JoinSet::new();
    let mut last_delivery = tokio::time::Instant::now();
    let mut watch = tokio::time::interval(STALLED_AFTER / 2);
    loop {
        tokio::select! {
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    last_delivery = tokio::time::Instant::now();
                    renewal.delivered();
                    backoff.proven();
                    channels.settler.delivered(delivery.delivery_tag);
                    in_flight.spawn(delivery::handle(edge.clone(), channels.clone(), delivery));
                }
                Some(Err(e)) => {
                    // Requests in flight cannot be acked on a dead channel; the broker
                    // redelivers them. Let them finish their work rather than cut it short.
                    in_flight.detach_all();
                    return Err(e.into());
                }
                None => {
                    in_flight.detach_all();
                    return Err(RpcError::ConsumerEnded);
                }
            },
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            // Not a branch precondition: that is read once per turn of the loop, and an idle
            // consumer's loop does not turn.
            _ = watch.tick() => {
                let full = in_flight.len() >= usize::from(edge.config.prefetch);
                if full || last_delivery.elapsed() < STALLED_AFTER {
                    continue;
                }
                let passive = QueueDeclareOptions { passive: true, ..durable };
                let queue = edge.config.queue.clone().into();
                let arguments = edge.config.queue_type.arguments();
                let waiting = deadline.within(channel.queue_declare(queue, passive, arguments)).await?;
                let idle = last_delivery.elapsed();
                if waiting.message_count() > 0 {
                    in_flight.detach_all();
                    return Err(RpcError::Stalled(idle));
                }
                if in_flight.is_empty() && idle >= renewal.after() {
                    renewal.renewed();
                    // Closed, not dropped: the broker forgets this consumer now.
                    let _ = deadline.within(conn.close(200, "subscribing again".into())).await;
                    return Err(RpcError::Idle(idle));
                }
            }
            // A call on this connection missed its deadline: the broker hangs.
            () = deadline.hung.notified() => {
                in_flight.detach_all();
                return Err(AmqpError::Timeout(deadline.timeout).into());
            }
            // It ends only with the last `Channels`, which this loop holds, or by a panic.
            _ = &mut settling => {
                in_flight.detach_all();
                return Err(RpcError::SettlerEnded);
            }
            // The guard `wait_for` returns is not `Send`: dropped before the branch runs.
            () = async { let _ = stop.wait_for(|s| *s).await; } => {
                let cancel = channel.basic_cancel(tag.into(), BasicCancelOptions::default());
                let _ = deadline.within(cancel).await;
                // Each request's own broker calls are bounded.
                while in_flight.join_next().await.is_some() {}
                let _ = deadline.within(conn.close(200, "shutting down".into())).await;
                edge.report(Status::Down, Some("stopped".to_owned()));
                return Ok(());
            }
        }
    }
}

/// Message properties for the unit tests of this edge.
#[cfg(test)]
mod test_props {
    use lapin::BasicProperties;
    use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

    pub fn props_with(headers: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut table = FieldTable::default();
        for (k, v) in headers {
            table.insert(ShortString::from(*k), v.clone());
        }
        BasicProperties::default().with_headers(table)
    }

    pub fn long(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s.as_bytes()))
    }
}
