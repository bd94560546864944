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
use opentelemetry::KeyValue;
use tokio::time::Instant;
use tracing::Instrument;
use user_core::metrics::{Transport, record_delivery, record_request, record_unsendable};
use user_core::telemetry;
use user_domain::quote::{QUOTE_CHARS, cut};
use user_domain::{CallContext, Caller, CoreError, Method, ParamForm, Reply};

use super::acks::Settlement;
use super::dead_letter::{Keep, dead_letter};
use super::properties::{self, Properties, deadline, header, may_answer_anyone, trace_headers};
use super::repeats::Repeat;
use super::wire::{self, Dialect};
use super::{Channels, QueueType, RpcEdge, RpcError, reply};
use crate::auth::{Credentials, Source};

/// How long a request that failed for a passing reason (database down) waits before it is
/// handed back to the queue: long enough not to spin, short enough to recover promptly.
const REQUEUE_DELAY: Duration = Duration::from_secs(1);
/// Replies above this size are replaced by an error: RabbitMQ 4 refuses larger messages by
/// default (`max_message_size`), closing the channel that sent one.
const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024 - 64 * 1024;
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
    /// Taken off the queue unhandled and not kept: handling and settling both failed twice,
    /// its dead letter was refused, or it came back after even its minimal dead letter failed.
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
            let what = cut(&what, QUOTE_CHARS);
            tracing::error!(panic = %what, "handling a request panicked; answering 500");
            let failed = Err(CoreError::Internal(format!("handler panicked: {what}")));
            // Whether it authenticated is not known: its body is not read again.
            let dialect = wire::guess_dialect(&delivery.data);
            let properties = Properties::read(&delivery.properties, &dialect);
            let seen = Seen::default();
            let settling = settle(
                &edge,
                &channels,
                &delivery,
                &dialect,
                &properties,
                failed,
                &seen,
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
                    settled(&edge, &channels, &delivery, again, outcome).await
                }
            }
        }
    };
    record_delivery(outcome.as_str());
}

async fn process(edge: &RpcEdge, channels: &Channels, delivery: &Delivery) -> Outcome {
    let quorum = edge.config.queue_type == QueueType::Quorum;
    let keyed = properties::request_key(&delivery.properties).is_some();
    match edge.repeats.check(delivery, quorum, keyed) {
        Repeat::First => {}
        Repeat::Again => return set_aside(edge, channels, delivery).await,
        Repeat::Hopeless => {
            tracing::error!("a request whose dead letter failed twice was dropped");
            record_unsendable("dead_letter");
            return ack(edge, channels, delivery, Outcome::Dropped).await;
        }
    }
    let props = &delivery.properties;
    // Credentials travel in headers: the body of a request that does not authenticate is
    // never read.
    let user_id = props.user_id().as_ref().map(|u| u.as_str());
    let caller = edge.auth.authenticate(
        &Credentials::from_headers(|n| header(props, n)),
        Source::Broker { user_id },
    );
    let decoded = caller.is_ok().then(|| wire::decode(&delivery.data));
    let dialect = match &decoded {
        Some(Ok(incoming)) => incoming.dialect.clone(),
        _ => wire::guess_dialect(&delivery.data),
    };
    let mut properties = Properties::read(props, &dialect);
    let method_name = match &decoded {
        Some(Ok(incoming)) => incoming.method.as_str(),
        _ => "?",
    };
    let span = tracing::info_span!(
        "rpc",
        correlation_id = %properties.correlation_id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        method = %cut(method_name, QUOTE_CHARS),
        caller = tracing::field::Empty,
        redelivered = delivery.redelivered,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    telemetry::begin(
        &span,
        &mut properties.trace,
        || format!("process {}", edge.config.queue),
        "consumer",
        || {
            vec![
                KeyValue::new("messaging.system", "rabbitmq"),
                KeyValue::new("messaging.operation", "process"),
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.operation.name", "process"),
                KeyValue::new("messaging.destination.name", edge.config.queue.clone()),
                KeyValue::new(
                    "messaging.rabbitmq.destination.routing_key",
                    cut(delivery.routing_key.as_str(), QUOTE_CHARS).into_owned(),
                ),
                KeyValue::new(
                    "messaging.message.conversation_id",
                    properties.correlation_id.as_str().to_owned(),
                ),
                KeyValue::new("messaging.message.body.size", delivery.data.len() as i64),
                KeyValue::new("rpc.system", "rabbitmq"),
                KeyValue::new("rpc.method", cut(method_name, QUOTE_CHARS).into_owned()),
            ]
        },
    );
    telemetry::log_ids(&span, &properties.trace);
    async {
        let started = std::time::Instant::now();
        let Ok(deadline) = deadline(props) else {
            tracing::info!("expired before it could be handled; dropped");
            return ack(edge, channels, delivery, Outcome::Expired).await;
        };
        let mut seen = Seen::default();
        let result = call(edge, delivery, caller, decoded, &properties, deadline, &mut seen).await;
        let status = result.as_ref().map_or_else(|e| e.code().status(), |r| r.status.code());
        if let Some(method) = seen.method {
            let caller = seen.caller.as_deref().unwrap_or(Caller::ANONYMOUS);
            let error = result.as_ref().err().map(CoreError::code);
            record_request(caller, method.as_str(), Transport::Rpc, status, started.elapsed(), error);
        }
        telemetry::answered(&tracing::Span::current(), "rpc.response.status_code", status);
        let outcome = settle(edge, channels, delivery, &dialect, &properties, result, &seen).await;
        tracing::info!(status, outcome = outcome.as_str(), ms = %format_args!("{:.2}", started.elapsed().as_secs_f64() * 1e3), "request");
        outcome
    }
    .instrument(span)
    .await
}

/// Answers the caller, or when nobody waits for an answer, acks, requeues or dead-letters.
/// A request that failed authentication is answered only through direct reply-to (or a
/// queue named with the configured prefix): never into an arbitrary queue.
async fn settle(
    edge: &RpcEdge,
    channels: &Channels,
    delivery: &Delivery,
    dialect: &Dialect,
    properties: &Properties<'_>,
    result: Result<Reply, CoreError>,
    seen: &Seen,
) -> Outcome {
    let reply_to = properties
        .reply_to
        .filter(|r| seen.caller.is_some() || may_answer_anyone(&edge.config, r.as_str()));
    match (reply_to, dialect.wants_reply()) {
        (Some(reply_to), true) => {
            let mut body = wire::encode(dialect, &result);
            if body.len() > MAX_REPLY_BYTES {
                tracing::warn!(
                    bytes = body.len(),
                    "a reply over the size limit was replaced by an error"
                );
                record_unsendable("reply");
                let too_large = Err(CoreError::Internal("reply over the size limit".to_owned()));
                body = wire::encode(dialect, &too_large);
            }
            let mut props = BasicProperties::default()
                .with_content_type(ShortString::from("application/json"))
                .with_app_id(ShortString::from(edge.instance.as_str()));
            if let Some(c) = properties.correlation {
                props = props.with_correlation_id(c.clone());
            }
            props = props.with_headers(trace_headers(&properties.trace));
            match reply(&channels.replies, reply_to.as_str(), &body, props).await {
                Ok(()) => ack(edge, channels, delivery, Outcome::Answered).await,
                Err(e) => {
                    tracing::warn!(error = %e, "could not answer; the request will be redelivered");
                    edge.repeats.failed(delivery);
                    Outcome::Unsettled
                }
            }
        }
        _ => match &result {
            Ok(_) => ack(edge, channels, delivery, Outcome::Done).await,
            Err(e) => settle_failure(edge, channels, delivery, e, seen).await,
        },
    }
}

/// What a request turned out to be, for the metrics, the dead letter and its reply.
#[derive(Default)]
struct Seen {
    method: Option<Method>,
    /// The authenticated caller's name.
    caller: Option<String>,
}

async fn call(
    edge: &RpcEdge,
    delivery: &Delivery,
    caller: Result<Caller, CoreError>,
    decoded: Option<Result<wire::Incoming, CoreError>>,
    properties: &Properties<'_>,
    deadline: Option<Instant>,
    seen: &mut Seen,
) -> Result<Reply, CoreError> {
    let caller = caller?;
    tracing::Span::current().record("caller", caller.name.as_str());
    seen.caller = Some(caller.name.clone());
    let incoming = decoded.unwrap_or_else(|| wire::decode(&delivery.data))?;
    let method = Method::parse(&incoming.method).ok_or_else(|| {
        CoreError::NotFound(format!(
            "unknown method '{}'",
            cut(&incoming.method, QUOTE_CHARS)
        ))
    })?;
    seen.method = Some(method);
    // The same message delivered twice carries the same id: that makes writes idempotent.
    let mut ctx = CallContext::new(
        caller,
        properties.correlation_id.clone(),
        properties.trace.clone(),
    )
    .keyed(properties.request_key);
    ctx.deadline = deadline;
    ctx.redelivered = delivery.redelivered;
    edge.core
        .call(ctx, method, incoming.params, ParamForm::Json)
        .await
}

/// A request that failed with nobody to tell: a passing failure goes back to the queue,
/// any other to the dead-letter queue. A dead letter the broker refuses is dropped, counted:
/// holding the request would only bring it back to the same refusal.
async fn settle_failure(
    edge: &RpcEdge,
    channels: &Channels,
    delivery: &Delivery,
    e: &CoreError,
    seen: &Seen,
) -> Outcome {
    if matches!(e, CoreError::Unavailable(_)) {
        tokio::time::sleep(REQUEUE_DELAY).await;
        let requeue = Settlement::Nack { requeue: true };
        return settled(edge, channels, delivery, requeue, Outcome::Requeued).await;
    }
    let keep = if seen.caller.is_some() {
        Keep::All
    } else {
        Keep::Unparsed
    };
    let caller = seen.caller.as_deref();
    let lettered = dead_letter(edge, channels, delivery, e, caller, keep).await;
    after_dead_letter(edge, channels, delivery, lettered).await
}

/// A request that came back after its settlement failed: only a minimal dead letter.
async fn set_aside(edge: &RpcEdge, channels: &Channels, delivery: &Delivery) -> Outcome {
    tracing::warn!(
        redelivered = delivery.redelivered,
        "a request whose settlement failed came back; setting it aside"
    );
    let why = CoreError::Internal("its settlement failed before".to_owned());
    let lettered = dead_letter(edge, channels, delivery, &why, None, Keep::Minimal).await;
    after_dead_letter(edge, channels, delivery, lettered).await
}

async fn after_dead_letter(
    edge: &RpcEdge,
    channels: &Channels,
    delivery: &Delivery,
    lettered: Result<(), RpcError>,
) -> Outcome {
    match lettered {
        Ok(()) => ack(edge, channels, delivery, Outcome::DeadLettered).await,
        Err(RpcError::Nacked) => {
            tracing::error!("the broker refused a dead letter; the request was dropped");
            record_unsendable("dead_letter");
            ack(edge, channels, delivery, Outcome::Dropped).await
        }
        Err(err) => {
            tracing::warn!(error = %err, "could not dead-letter; the request will be redelivered");
            edge.repeats.failed(delivery);
            Outcome::Unsettled
        }
    }
}

async fn ack(
    edge: &RpcEdge,
    channels: &Channels,
    delivery: &Delivery,
    outcome: Outcome,
) -> Outcome {
    settled(edge, channels, delivery, Settlement::Ack, outcome).await
}

/// `outcome` once the broker is told `how`; else the delivery stays with the broker, and
/// is remembered as one whose settlement failed.
async fn settled(
    edge: &RpcEdge,
    channels: &Channels,
    delivery: &Delivery,
    how: Settlement,
    outcome: Outcome,
) -> Outcome {
    if channels.settler.settle(delivery.delivery_tag, how).await {
        return outcome;
    }
    tracing::warn!(?how, "settling failed; the request will be redelivered");
    if how == Settlement::Ack {
        edge.repeats.failed(delivery);
    }
    Outcome::Unsettled
}
