//! What the service takes from a delivery's properties (every value checked against its
//! rule, none trusted, no conversion that can panic), and what it puts in a reply's.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use tokio::time::Instant;
use user_domain::CorrelationId;
use user_domain::trace::TraceContext;

use super::RpcConfig;
use super::wire::Dialect;

/// What the broker names a direct reply-to address on delivery.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to.";
/// An `expiration` longer than this is no deadline worth keeping.
const LONGEST_DEADLINE: Duration = Duration::from_secs(24 * 3600);
/// What the service takes from a message's properties, each value checked.
pub(super) struct Properties<'a> {
    /// Where the answer goes; `None` when absent or empty.
    pub(super) reply_to: Option<&'a ShortString>,
    /// Echoed on the reply only when it follows the id rule.
    pub(super) correlation: Option<&'a ShortString>,
    /// For logs and events: the caller's when valid, else fresh.
    pub(super) correlation_id: CorrelationId,
    /// Identifies the request across redeliveries (`message_id`, else `correlation_id`).
    pub(super) request_key: Option<&'a str>,
    /// The W3C trace of its `traceparent` and `tracestate` headers (where the NestJS
    /// OpenTelemetry instrumentation puts them), else a new one.
    pub(super) trace: TraceContext,
}

impl<'a> Properties<'a> {
    pub(super) fn read(props: &'a BasicProperties, dialect: &'a Dialect) -> Self {
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
            request_key: request_key(props),
            trace: TraceContext::continue_from(
                header(props, "traceparent"),
                header(props, "tracestate"),
            ),
        }
    }
}

/// The key by which a write is applied once: `message_id`, else `correlation_id`, when it
/// follows the id rule.
pub(super) fn request_key(props: &BasicProperties) -> Option<&str> {
    [props.message_id(), props.correlation_id()]
        .into_iter()
        .flatten()
        .map(ShortString::as_str)
        .find(|s| CorrelationId::is_valid(s))
}

/// A header's text value; names are matched case-insensitively.
pub(super) fn header<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a str> {
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
pub(super) fn deadline(props: &BasicProperties) -> Result<Option<Instant>, ()> {
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

/// `traceparent` (the service's span) and `tracestate`, as a reply's headers: the caller's
/// trace goes on.
pub(super) fn trace_headers(trace: &TraceContext) -> FieldTable {
    let mut headers = FieldTable::default();
    let parent = trace.traceparent();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(parent.as_str().into()),
    );
    if let Some(state) = trace.tracestate() {
        headers.insert("tracestate".into(), AMQPValue::LongString(state.into()));
    }
    headers
}

/// Whether a request that did not authenticate may be answered at `reply_to`: direct
/// reply-to (the broker names it `amq.rabbitmq.reply-to.…` on delivery), or a configured
/// prefix.
pub(super) fn may_answer_anyone(config: &RpcConfig, reply_to: &str) -> bool {
    let prefix = config.unauthenticated_reply_prefix.as_str();
    reply_to.starts_with(DIRECT_REPLY_TO) || (!prefix.is_empty() && reply_to.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::super::test_props::{long, props_with};
    use super::*;

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
        let e = Properties::read(&props, &dialect);
        assert!(e.correlation.is_none() && e.request_key.is_none() && e.reply_to.is_none());
        assert!(CorrelationId::is_valid(e.correlation_id.as_str()));
        assert_ne!(e.correlation_id.as_str(), long_id);

        let good = BasicProperties::default()
            .with_correlation_id(ShortString::from("req-1"))
            .with_message_id(ShortString::from("msg-1"));
        let e = Properties::read(&good, &Dialect::Plain);
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
