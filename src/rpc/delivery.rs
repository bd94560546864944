//! One delivery's life: read what the message says about itself (every property checked,
//! none trusted), call the core, and settle the delivery whatever happened: answered,
//! dead-lettered or requeued. A panic while handling is caught and still settles it, so no
//! message can hold a prefetch slot (and with enough of them, stall the consumer).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::ShortString;
use tokio::time::Instant;
use tracing::Instrument;
use user_actors::metrics::{Transport, record_delivery, record_request};
use user_domain::{CallContext, Caller, CoreError, Method, ParamForm, Reply};

use super::dead_letter::dead_letter;
use super::envelope::{Envelope, deadline, header};
use super::settle::Settlement;
use super::wire::{self, Dialect};
use super::{Channels, RpcEdge, reply};
use crate::auth::{Credentials, Source};

/// How long a request that failed for a passing reason (database down) waits before it is
/// handed back to the queue: long enough not to spin, short enough to recover promptly.
const REQUEUE_DELAY: Duration = Duration::from_secs(1);
/// How a delivery was settled; every delivery ends in exactly one (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The reply was published, then the request acked.
    Answered,
    /// Handled without a reply (no `reply_to`, or a NestJS `emit`), then acked.
    Done,
    DeadLettered,
    /// Handed back to the queue: it failed for a passing reason and nobody waits for it.
    Requeued,
    /// Its `expiration` had passed: dropped unprocessed.
    Expired,
    /// Handling and settling both failed twice: dropped (or dead-lettered by a broker policy).
    Dropped,
    /// The broker went away before the delivery could be settled; it will be redelivered.
    Unsettled,
    /// Its AMQP properties could not be parsed at all: taken off the queue unread.
    Unreadable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Done => "done",
            Self::DeadLettered => "dead_lettered",
            Self::Requeued => "requeued",
            Self::Expired => "expired",
            Self::Dropped => "dropped",
            Self::Unsettled => "unsettled",
            Self::Unreadable => "unreadable",
        }
    }
}

/// Handles one delivery to the end; never panics, always settles (or leaves the delivery to
/// the broker's redelivery when the connection is gone).
pub async fn handle(edge: Arc<RpcEdge>, channels: Channels, delivery: Delivery) {
    let handled = AssertUnwindSafe(process(&edge, &channels, &delivery))
        .catch_unwind()
        .await;
    let outcome = match handled {
        Ok(outcome) => outcome,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %what, "handling a request panicked; answering 500");
            let failed = Err(CoreError::Internal(format!("handler panicked: {what}")));
            let dialect = wire::dialect_of(&delivery.data);
            let envelope = Envelope::read(&delivery.properties, &dialect);
            let settling = settle(
                &edge, &channels, &delivery, &dialect, &envelope, failed, None,
            );
            let recovered = AssertUnwindSafe(settling).catch_unwind().await;
            match recovered {
                Ok(outcome) => outcome,
                // Even settling failed: give it back once, then drop it.
                Err(_) => {
                    let requeue = !delivery.redelivered;
                    let again = Settlement::Nack { requeue };
                    let outcome = if requeue {
                        Outcome::Requeued
                    } else {
                        Outcome::Dropped
                    };
                    settled(&channels, &delivery, again, outcome).await
                }
            }
        }
    };
    record_delivery(outcome.as_str());
}

async fn process(edge: &RpcEdge, channels: &Channels, delivery: &Delivery) -> Outcome {
    let props = &delivery.properties;
    let decoded = wire::decode(&delivery.data);
    let dialect = match &decoded {
        Ok(incoming) => incoming.dialect.clone(),
        Err(_) => wire::guess_dialect(&delivery.data),
    };
    let envelope = Envelope::read(props, &dialect);
    let method_name = decoded.as_ref().map_or("?", |i| i.method.as_str());
    let span = tracing::info_span!(
        "rpc",
        correlation_id = %envelope.correlation_id,
        method = %wire::loggable(method_name),
        caller = tracing::field::Empty,
        redelivered = delivery.redelivered,
    );
    async {
        let started = std::time::Instant::now();
        let Ok(deadline) = deadline(props) else {
            tracing::info!("expired before it could be handled; dropped");
            return ack(channels, delivery, Outcome::Expired).await;
        };
        let mut seen = Seen::default();
        let result = call(edge, delivery, decoded, &envelope, deadline, &mut seen).await;
        let status = result.as_ref().map_or_else(|e| e.code().status(), |r| r.status.code());
        if let Some(method) = seen.method {
            let caller = seen.caller.as_deref().unwrap_or(Caller::ANONYMOUS);
            let error = result.as_ref().err().map(CoreError::code);
            record_request(caller, method.as_str(), Transport::Rpc, status, started.elapsed(), error);
        }
        let caller = seen.caller.as_deref();
        let outcome = settle(edge, channels, delivery, &dialect, &envelope, result, caller).await;
        tracing::info!(status, outcome = outcome.as_str(), ms = %format_args!("{:.2}", started.elapsed().as_secs_f64() * 1e3), "request");
        outcome
    }
    .instrument(span)
    .await
}

/// Answers the caller, or when nobody waits for an answer, acks, requeues or dead-letters.
async fn settle(
    edge: &RpcEdge,
    channels: &Channels,
    delivery: &Delivery,
    dialect: &Dialect,
    envelope: &Envelope<'_>,
    result: Result<Reply, CoreError>,
    caller: Option<&str>,
) -> Outcome {
    match (envelope.reply_to, dialect.wants_reply()) {
        (Some(reply_to), true) => {
            let body = wire::encode(dialect, &result);
            let mut props = BasicProperties::default()
                .with_content_type(ShortString::from("application/json"))
                .with_app_id(ShortString::from(edge.instance.as_str()));
            if let Some(c) = envelope.correlation {
                props = props.with_correlation_id(c.clone());
            }
            match reply(&channels.replies, reply_to.as_str(), &body, props).await {
                Ok(()) => ack(channels, delivery, Outcome::Answered).await,
                Err(e) => {
                    tracing::warn!(error = %e, "could not answer; the request will be redelivered");
                    Outcome::Unsettled
                }
            }
        }
        _ => match &result {
            Ok(_) => ack(channels, delivery, Outcome::Done).await,
            Err(e) => settle_failure(edge, channels, delivery, e, caller).await,
        },
    }
}

/// What a request turned out to be, for the metrics and the dead letter.
#[derive(Default)]
struct Seen {
    method: Option<Method>,
    caller: Option<String>,
}

async fn call(
    edge: &RpcEdge,
    delivery: &Delivery,
    decoded: Result<wire::Incoming, CoreError>,
    envelope: &Envelope<'_>,
    deadline: Option<Instant>,
    seen: &mut Seen,
) -> Result<Reply, CoreError> {
    let incoming = decoded?;
    let method = Method::parse(&incoming.method).ok_or_else(|| {
        CoreError::NotFound(format!(
            "unknown method '{}'",
            wire::loggable(&incoming.method)
        ))
    })?;
    seen.method = Some(method);
    let user_id = delivery.properties.user_id().as_ref().map(|u| u.as_str());
    let caller = edge.auth.authenticate(
        &Credentials::from_headers(|n| header(&delivery.properties, n)),
        Source::Broker { user_id },
    )?;
    tracing::Span::current().record("caller", caller.name.as_str());
    seen.caller = Some(caller.name.clone());
    // The same message delivered twice carries the same id: that makes writes idempotent.
    let mut ctx =
        CallContext::new(caller, envelope.correlation_id.clone()).keyed(envelope.request_key);
    ctx.deadline = deadline;
    ctx.redelivered = delivery.redelivered;
    edge.core
        .call(ctx, method, incoming.params, ParamForm::Json)
        .await
}

/// A request that failed with nobody to tell: a passing failure goes back to the queue,
/// any other to the dead-letter queue.
async fn settle_failure(
    edge: &RpcEdge,
    channels: &Channels,
    delivery: &Delivery,
    e: &CoreError,
    caller: Option<&str>,
) -> Outcome {
    if matches!(e, CoreError::Unavailable(_)) {
        tokio::time::sleep(REQUEUE_DELAY).await;
        let requeue = Settlement::Nack { requeue: true };
        return settled(channels, delivery, requeue, Outcome::Requeued).await;
    }
    match dead_letter(edge, &channels.confirmed, delivery, e, caller).await {
        Ok(()) => ack(channels, delivery, Outcome::DeadLettered).await,
        Err(err) => {
            tracing::warn!(error = %err, "could not dead-letter; the request will be redelivered");
            Outcome::Unsettled
        }
    }
}

async fn ack(channels: &Channels, delivery: &Delivery, outcome: Outcome) -> Outcome {
    settled(channels, delivery, Settlement::Ack, outcome).await
}

/// `outcome` once the broker is told `how`; else the delivery stays with the broker.
async fn settled(
    channels: &Channels,
    delivery: &Delivery,
    how: Settlement,
    outcome: Outcome,
) -> Outcome {
    if channels.settler.settle(delivery.delivery_tag, how).await {
        return outcome;
    }
    tracing::warn!(?how, "settling failed; the request will be redelivered");
    Outcome::Unsettled
}
