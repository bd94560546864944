//! One delivery's life: read what the message says about itself (every property checked,
//! none trusted), call the core, and settle the delivery whatever happened: answered,
//! dead-lettered or requeued. A panic while handling is caught and still settles it, so no
//! message can hold a prefetch slot (and with enough of them, stall the consumer).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use tokio::time::Instant;
use tracing::Instrument;
use user_core::domain::CorrelationId;
use user_core::metrics::{Transport, record_delivery, record_request};
use user_core::{CallContext, Caller, CoreError, Method, ParamForm, Reply};

use super::wire::{self, Dialect};
use super::{RpcEdge, RpcError, publish};
use crate::auth::Credentials;

/// How long a request that failed for a passing reason (database down) waits before it is
/// handed back to the queue: long enough not to spin, short enough to recover promptly.
const REQUEUE_DELAY: Duration = Duration::from_secs(1);
/// An `expiration` longer than this is no deadline worth keeping.
const LONGEST_DEADLINE: Duration = Duration::from_secs(24 * 3600);
/// Headers that carry credentials: never copied into a dead letter.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "x-internal-service"];

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
pub async fn handle(edge: Arc<RpcEdge>, channel: Channel, delivery: Delivery) {
    let handled = AssertUnwindSafe(process(&edge, &channel, &delivery))
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
            let settling = settle(&edge, &channel, &delivery, &dialect, failed, None);
            let recovered = AssertUnwindSafe(settling).catch_unwind().await;
            match recovered {
                Ok(outcome) => outcome,
                // Even settling failed: give it back once, then drop it.
                Err(_) => {
                    let again = BasicNackOptions {
                        requeue: !delivery.redelivered,
                        ..Default::default()
                    };
                    match delivery.nack(again).await {
                        Ok(_) if again.requeue => Outcome::Requeued,
                        Ok(_) => Outcome::Dropped,
                        Err(_) => Outcome::Unsettled,
                    }
                }
            }
        }
    };
    record_delivery(outcome.as_str());
}

/// What the service takes from a message's properties, each value checked.
struct Envelope<'a> {
    /// Where the answer goes; `None` when absent or empty.
    reply_to: Option<&'a ShortString>,
    /// Echoed on the reply only when it follows the id rule.
    correlation: Option<&'a ShortString>,
    /// For logs and events: the caller's when valid, else fresh.
    correlation_id: CorrelationId,
    /// Identifies the request across redeliveries (`message_id`, else `correlation_id`).
    request_key: Option<&'a str>,
}

impl<'a> Envelope<'a> {
    fn read(props: &'a BasicProperties, dialect: &'a Dialect) -> Self {
        let valid =
            |s: &'a Option<ShortString>| s.as_ref().filter(|s| CorrelationId::is_valid(s.as_str()));
        let correlation = valid(props.correlation_id());
        let nest_id = match dialect {
            Dialect::Nestjs { id } => id.as_deref().filter(|id| CorrelationId::is_valid(id)),
            Dialect::Plain => None,
        };
        let candidate = header(props, "x-correlation-id")
            .filter(|c| CorrelationId::is_valid(c))
            .or(correlation.map(ShortString::as_str))
            .or(nest_id);
        Self {
            reply_to: props.reply_to().as_ref().filter(|r| !r.as_str().is_empty()),
            correlation,
            correlation_id: CorrelationId::or_generate(candidate),
            request_key: valid(props.message_id())
                .or(correlation)
                .map(ShortString::as_str),
        }
    }
}

async fn process(edge: &RpcEdge, channel: &Channel, delivery: &Delivery) -> Outcome {
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
            return ack(delivery, Outcome::Expired).await;
        };
        let mut seen = Seen::default();
        let result = call(edge, props, decoded, &envelope, deadline, &mut seen).await;
        let status = result.as_ref().map_or_else(|e| e.code().status(), |r| r.status.code());
        if let Some(method) = seen.method {
            let caller = seen.caller.as_deref().unwrap_or(Caller::ANONYMOUS);
            let error = result.as_ref().err().map(CoreError::code);
            record_request(caller, method.as_str(), Transport::Rpc, status, started.elapsed(), error);
        }
        let caller = seen.caller.as_deref();
        let outcome = settle(edge, channel, delivery, &dialect, result, caller).await;
        tracing::info!(status, outcome = outcome.as_str(), ms = %format_args!("{:.2}", started.elapsed().as_secs_f64() * 1e3), "request");
        outcome
    }
    .instrument(span)
    .await
}

/// Answers the caller, or when nobody waits for an answer, acks, requeues or dead-letters.
async fn settle(
    edge: &RpcEdge,
    channel: &Channel,
    delivery: &Delivery,
    dialect: &Dialect,
    result: Result<Reply, CoreError>,
    caller: Option<&str>,
) -> Outcome {
    let envelope = Envelope::read(&delivery.properties, dialect);
    match (envelope.reply_to, dialect.wants_reply()) {
        (Some(reply_to), true) => {
            let body = serde_json::to_vec(&wire::encode(dialect, &result)).unwrap_or_default();
            let mut reply = BasicProperties::default()
                .with_content_type(ShortString::from("application/json"))
                .with_app_id(ShortString::from(edge.instance.as_str()));
            if let Some(c) = envelope.correlation {
                reply = reply.with_correlation_id(c.clone());
            }
            match publish(channel, "", reply_to.as_str(), &body, reply).await {
                Ok(()) => ack(delivery, Outcome::Answered).await,
                Err(e) => {
                    tracing::warn!(error = %e, "could not answer; the request will be redelivered");
                    Outcome::Unsettled
                }
            }
        }
        _ => match &result {
            Ok(_) => ack(delivery, Outcome::Done).await,
            Err(e) => settle_failure(edge, channel, delivery, e, caller).await,
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
    props: &BasicProperties,
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
    let caller = edge
        .auth
        .authenticate(&Credentials::from_headers(|n| header(props, n)), None)?;
    tracing::Span::current().record("caller", caller.name.as_str());
    seen.caller = Some(caller.name.clone());
    // The same message delivered twice carries the same id: that makes writes idempotent.
    let mut ctx =
        CallContext::new(caller, envelope.correlation_id.clone()).keyed(envelope.request_key);
    ctx.deadline = deadline;
    edge.core
        .call(ctx, method, incoming.params, ParamForm::Json)
        .await
}

/// A request that failed with nobody to tell: a passing failure goes back to the queue,
/// any other to the dead-letter queue.
async fn settle_failure(
    edge: &RpcEdge,
    channel: &Channel,
    delivery: &Delivery,
    e: &CoreError,
    caller: Option<&str>,
) -> Outcome {
    if matches!(e, CoreError::Unavailable(_)) {
        tokio::time::sleep(REQUEUE_DELAY).await;
        let requeue = BasicNackOptions {
            requeue: true,
            ..Default::default()
        };
        return match delivery.nack(requeue).await {
            Ok(_) => Outcome::Requeued,
            Err(_) => Outcome::Unsettled,
        };
    }
    match dead_letter(edge, channel, delivery, e, caller).await {
        Ok(()) => ack(delivery, Outcome::DeadLettered).await,
        Err(err) => {
            tracing::warn!(error = %err, "could not dead-letter; the request will be redelivered");
            Outcome::Unsettled
        }
    }
}

async fn ack(delivery: &Delivery, outcome: Outcome) -> Outcome {
    match delivery.ack(BasicAckOptions::default()).await {
        Ok(_) => outcome,
        Err(e) => {
            tracing::warn!(error = %e, "ack failed; the request will be redelivered");
            Outcome::Unsettled
        }
    }
}

/// A header's text value; names are matched case-insensitively.
fn header<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a str> {
    let table = props.headers().as_ref()?;
    let (_, value) = table
        .inner()
        .iter()
        .find(|(k, _)| k.as_str().eq_ignore_ascii_case(name))?;
    match value {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// When the request stops being worth answering: `expiration` counted from its `timestamp`
/// when it has one, else from now. `Err` when already past.
fn deadline(props: &BasicProperties) -> Result<Option<Instant>, ()> {
    let Some(ttl) = props
        .expiration()
        .as_ref()
        .and_then(|e| e.as_str().parse::<u64>().ok())
    else {
        return Ok(None);
    };
    let elapsed_ms = props
        .timestamp()
        .and_then(|sent| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?;
            now.as_millis().checked_sub(u128::from(sent) * 1000)
        })
        .unwrap_or(0);
    let remaining = u128::from(ttl).saturating_sub(elapsed_ms);
    if remaining == 0 {
        return Err(());
    }
    let remaining = Duration::from_millis(u64::try_from(remaining).unwrap_or(u64::MAX));
    Ok((remaining <= LONGEST_DEADLINE).then(|| Instant::now() + remaining))
}

/// Moves a request that failed and has no reply address to the dead-letter queue, with the
/// reason in `x-error` and the authenticated caller in `x-caller`; credentials are left
/// out. Its `expiration` is dropped so that it stays there.
async fn dead_letter(
    edge: &RpcEdge,
    channel: &Channel,
    delivery: &Delivery,
    e: &CoreError,
    caller: Option<&str>,
) -> Result<(), RpcError> {
    let props = &delivery.properties;
    let reason = format!("{}: {e}", e.code().as_str());
    let mut headers = dead_letter_headers(props.headers().as_ref());
    let mut text = |name: &str, value: &str| {
        headers.insert(
            ShortString::from(name),
            AMQPValue::LongString(LongString::from(value.as_bytes())),
        );
    };
    text("x-error", &reason);
    text("x-original-queue", &edge.config.queue);
    if let Some(caller) = caller {
        text("x-caller", caller);
    }
    let mut out = BasicProperties::default()
        .with_headers(headers)
        .with_delivery_mode(2);
    if let Some(t) = props.content_type() {
        out = out.with_content_type(t.clone());
    }
    if let Some(c) = props.correlation_id() {
        out = out.with_correlation_id(c.clone());
    }
    if let Some(m) = props.message_id() {
        out = out.with_message_id(m.clone());
    }
    tracing::warn!(error = %reason, "unanswerable request moved to the dead-letter queue");
    publish(
        channel,
        "",
        &edge.config.dead_letter_queue(),
        &delivery.data,
        out,
    )
    .await
}

/// The request's headers without credentials or anything the service sets itself.
fn dead_letter_headers(headers: Option<&FieldTable>) -> FieldTable {
    let mut out = FieldTable::default();
    for (name, value) in headers.map(|h| h.inner().iter()).into_iter().flatten() {
        let name_str = name.as_str();
        let dropped = CREDENTIAL_HEADERS
            .iter()
            .chain(&["x-error", "x-original-queue", "x-caller"])
            .any(|c| name_str.eq_ignore_ascii_case(c));
        if !dropped {
            out.insert(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props_with(headers: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut table = FieldTable::default();
        for (k, v) in headers {
            table.insert(ShortString::from(*k), v.clone());
        }
        BasicProperties::default().with_headers(table)
    }

    fn long(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s.as_bytes()))
    }

    #[test]
    fn dead_letters_carry_no_credentials() {
        let props = props_with(&[
            ("Authorization", long("Bearer k")),
            ("X-API-Key", long("k")),
            ("x-internal-service", long("s")),
            ("x-caller", long("forged")),
            ("x-service-name", long("auth-service")),
            ("x-trace", AMQPValue::LongLongInt(7)),
        ]);
        let out = dead_letter_headers(props.headers().as_ref());
        let names: Vec<&str> = out.inner().keys().map(ShortString::as_str).collect();
        assert_eq!(names, ["x-service-name", "x-trace"]);
    }

    #[test]
    fn ids_that_break_the_rule_are_not_used() {
        let long_id = "x".repeat(200);
        let props = props_with(&[("x-correlation-id", long(&"y".repeat(129)))])
            .with_correlation_id(ShortString::from(long_id.as_str()))
            .with_message_id(ShortString::from("bad id"))
            .with_reply_to(ShortString::from(""));
        let dialect = Dialect::Nestjs {
            id: Some("z".repeat(1000)),
        };
        let e = Envelope::read(&props, &dialect);
        assert!(e.correlation.is_none() && e.request_key.is_none() && e.reply_to.is_none());
        assert!(CorrelationId::is_valid(e.correlation_id.as_str()));
        assert_ne!(e.correlation_id.as_str(), long_id);

        let good = BasicProperties::default()
            .with_correlation_id(ShortString::from("req-1"))
            .with_message_id(ShortString::from("msg-1"));
        let e = Envelope::read(&good, &Dialect::Plain);
        assert_eq!(e.correlation_id.as_str(), "req-1");
        assert_eq!(e.request_key, Some("msg-1"));
    }

    #[test]
    fn any_expiration_gives_a_deadline_or_none() {
        let at = |exp: &str, ts: Option<u64>| {
            let mut p = BasicProperties::default().with_expiration(ShortString::from(exp));
            if let Some(ts) = ts {
                p = p.with_timestamp(ts);
            }
            deadline(&p)
        };
        assert!(matches!(at("60000", None), Ok(Some(_))));
        assert!(matches!(at(&u64::MAX.to_string(), None), Ok(None)));
        assert!(matches!(at("1000", Some(1)), Err(())));
        assert!(matches!(at("5000", Some(u64::MAX)), Ok(Some(_))));
        assert!(matches!(at("-1", None), Ok(None)));
        assert!(matches!(at("abc", None), Ok(None)));
    }
}
