//! The dead-letter queue: where a request goes that failed with nobody to tell. Whatever the
//! request carried, its dead letter fits the broker's frame: a message's properties travel
//! in one frame, and a larger one makes the broker close the connection.

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use user_domain::CoreError;
use user_domain::quote::cut;
use user_domain::trace::TraceContext;

use super::wire::MAX_BODY_BYTES;
use super::{Channels, RpcEdge, RpcError, publish};

/// Headers that carry credentials: never copied into a dead letter.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "x-internal-service"];
/// The headers the service sets itself: never copied from the request.
const OWN_HEADERS: [&str; 8] = [
    "x-error",
    "x-original-queue",
    "x-caller",
    "x-body-dropped",
    "x-headers-dropped",
    "x-repeat",
    "traceparent",
    "tracestate",
];
/// Most bytes one copied header takes (name and value as sent).
pub(super) const HEADER_BYTES: usize = 4 * 1024;
/// Most bytes the copied headers take together; less when the broker's frames are small.
pub(super) const HEADERS_BYTES: usize = 16 * 1024;
/// Room left in a frame for everything else a dead letter's properties hold (`x-error`,
/// the queue's name, the ids, the trace: each at most a few hundred bytes).
const FRAME_RESERVE: usize = 4 * 1024;
/// Most characters of `x-error`.
const ERROR_CHARS: usize = 512;

/// How much of the request a dead letter keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keep {
    /// Its headers (bounded) and its body (billing values sealed).
    All,
    /// Its body only if its billing values need no parsing to hide: the body of a request
    /// that did not authenticate is never parsed.
    Unparsed,
    /// Only the bounded essentials: a request whose settlement failed before.
    Minimal,
}

/// Moves a request that failed and has no reply address to the dead-letter queue, with the
/// reason in `x-error` and the authenticated caller in `x-caller`; credentials are left
/// out. Its `expiration` is dropped so that it stays there.
pub(super) async fn dead_letter(
    edge: &RpcEdge,
    channels: &Channels,
    delivery: &Delivery,
    e: &CoreError,
    caller: Option<&str>,
    keep: Keep,
) -> Result<(), RpcError> {
    let props = &delivery.properties;
    let reason = cut(&format!("{}: {e}", e.code().as_str()), ERROR_CHARS).into_owned();
    let budget = HEADERS_BYTES.min(frame_room(channels.frame_max));
    let (mut headers, dropped) = match keep {
        Keep::Minimal => (FieldTable::default(), 0),
        Keep::All | Keep::Unparsed => dead_letter_headers(props.headers().as_ref(), budget),
    };
    let mut text = |name: &str, value: &str| {
        headers.insert(
            ShortString::from(name),
            AMQPValue::LongString(LongString::from(value.as_bytes())),
        );
    };
    text("x-error", &reason);
    text("x-original-queue", &edge.config.queue);
    // The request's trace, continued by the service's span (checked, never as it came).
    let trace = TraceContext::continue_from(
        super::properties::header(props, "traceparent"),
        super::properties::header(props, "tracestate"),
    );
    text("traceparent", &trace.traceparent());
    if let Some(state) = trace.tracestate() {
        text("tracestate", state);
    }
    if let Some(caller) = caller {
        text("x-caller", caller);
    }
    if dropped > 0 {
        text(
            "x-headers-dropped",
            &format!("{dropped} (over {HEADER_BYTES} bytes each or {budget} in all)"),
        );
    }
    if keep == Keep::Minimal {
        text("x-repeat", "settling it failed before; set aside unhandled");
    }
    let (body, body_dropped) = body(edge, delivery, keep);
    if let Some(why) = body_dropped {
        text(
            "x-body-dropped",
            &format!("{} bytes: {why}", delivery.data.len()),
        );
    }
    // Per message, so that it holds on a queue declared before, whatever its arguments.
    let ttl = edge.config.dead_letter_ttl.as_millis().to_string();
    let mut out = BasicProperties::default()
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_expiration(ttl.into());
    if let Some(t) = props.content_type() {
        out = out.with_content_type(t.clone());
    }
    if let Some(c) = props.correlation_id() {
        out = out.with_correlation_id(c.clone());
    }
    if let Some(m) = props.message_id() {
        out = out.with_message_id(m.clone());
    }
    tracing::warn!(error = %reason, ?keep, "unanswerable request moved to the dead-letter queue");
    let queue = edge.config.dead_letter_queue();
    publish(&channels.confirmed, "", &queue, &body, out).await
}

/// What a frame of the connection holds besides the essentials.
fn frame_room(frame_max: u32) -> usize {
    let frame = usize::try_from(frame_max).unwrap_or(usize::MAX);
    // 0 means "no limit" in AMQP; 4096 is the least a broker may ask for.
    let frame = if frame == 0 { usize::MAX } else { frame };
    frame.saturating_sub(FRAME_RESERVE)
}

/// The body a dead letter keeps, and why it keeps none. Billing values never rest in plain
/// text: sealed whatever their JSON type, or the body is not kept.
fn body(edge: &RpcEdge, delivery: &Delivery, keep: Keep) -> (Vec<u8>, Option<&'static str>) {
    let data = &delivery.data;
    if data.len() > MAX_BODY_BYTES {
        return (Vec::new(), Some("over the size limit"));
    }
    let names_billing = || {
        user_domain::BillingInfo::SECRET_FIELDS
            .iter()
            .any(|f| data.windows(f.len()).any(|w| w == f.as_bytes()))
    };
    if keep != Keep::All {
        return match names_billing() {
            true => (Vec::new(), Some("names a billing field and was not read")),
            false => (data.clone(), None),
        };
    }
    match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(mut doc) => {
            if !edge.billing_keys.seal_billing_fields(&mut doc) {
                return (data.clone(), None);
            }
            match serde_json::to_vec(&doc) {
                Ok(sealed) => (sealed, None),
                Err(_) => (Vec::new(), Some("billing values could not be sealed")),
            }
        }
        Err(_) if names_billing() => (Vec::new(), Some("not JSON, and names a billing field")),
        Err(_) => (data.clone(), None),
    }
}

/// The request's headers without credentials or anything the service sets itself, each at
/// most [`HEADER_BYTES`] and together at most `budget`; and how many were left out for size.
fn dead_letter_headers(headers: Option<&FieldTable>, budget: usize) -> (FieldTable, usize) {
    let mut out = FieldTable::default();
    let (mut used, mut dropped) = (0usize, 0usize);
    for (name, value) in headers.map(|h| h.inner().iter()).into_iter().flatten() {
        let name_str = name.as_str();
        let ours = CREDENTIAL_HEADERS
            .iter()
            .chain(&OWN_HEADERS)
            .any(|c| name_str.eq_ignore_ascii_case(c));
        if ours {
            continue;
        }
        let size = 1 + name_str.len() + wire_size(value);
        if size > HEADER_BYTES || used + size > budget {
            dropped += 1;
            continue;
        }
        used += size;
        out.insert(name.clone(), value.clone());
    }
    (out, dropped)
}

/// The bytes an AMQP 0-9-1 field value takes in a frame: its type octet and its data.
pub(super) fn wire_size(value: &AMQPValue) -> usize {
    1 + match value {
        AMQPValue::Void => 0,
        AMQPValue::Boolean(_) | AMQPValue::ShortShortInt(_) | AMQPValue::ShortShortUInt(_) => 1,
        AMQPValue::ShortInt(_) | AMQPValue::ShortUInt(_) => 2,
        AMQPValue::LongInt(_) | AMQPValue::LongUInt(_) | AMQPValue::Float(_) => 4,
        AMQPValue::DecimalValue(_) => 5,
        AMQPValue::LongLongInt(_) | AMQPValue::Double(_) | AMQPValue::Timestamp(_) => 8,
        AMQPValue::ShortString(s) => 1 + s.as_str().len(),
        AMQPValue::LongString(s) => 4 + s.as_bytes().len(),
        AMQPValue::ByteArray(b) => 4 + b.as_slice().len(),
        AMQPValue::FieldArray(a) => 4 + a.as_slice().iter().map(wire_size).sum::<usize>(),
        AMQPValue::FieldTable(t) => {
            let entries = t.inner().iter();
            4 + entries
                .map(|(k, v)| 1 + k.as_str().len() + wire_size(v))
                .sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_props::{long, props_with};
    use super::*;
    use lapin::types::FieldArray;

    #[test]
    fn dead_letters_carry_no_credentials() {
        let props = props_with(&[
            ("Authorization", long("Bearer k")),
            ("X-API-Key", long("k")),
            ("x-internal-service", long("s")),
            ("x-caller", long("forged")),
            ("x-headers-dropped", long("forged")),
            ("x-service-name", long("auth-service")),
            ("x-trace", AMQPValue::LongLongInt(7)),
        ]);
        let (out, dropped) = dead_letter_headers(props.headers().as_ref(), HEADERS_BYTES);
        let names: Vec<&str> = out.inner().keys().map(ShortString::as_str).collect();
        assert_eq!(names, ["x-service-name", "x-trace"]);
        assert_eq!(dropped, 0);
    }

    #[test]
    fn copied_headers_are_bounded_each_and_together() {
        let big = "b".repeat(130_000);
        let mid = "m".repeat(3000);
        let mut nested = FieldArray::default();
        for _ in 0..100 {
            nested.push(long(&mid));
        }
        let props = props_with(&[
            ("x-big", long(&big)),
            ("x-nested", AMQPValue::FieldArray(nested)),
            ("x-a", long(&mid)),
            ("x-b", long(&mid)),
            ("x-c", long(&mid)),
            ("x-d", long(&mid)),
            ("x-e", long(&mid)),
            ("x-f", long(&mid)),
            ("x-small", long("kept")),
        ]);
        let (out, dropped) = dead_letter_headers(props.headers().as_ref(), HEADERS_BYTES);
        let size: usize = out
            .inner()
            .iter()
            .map(|(k, v)| 1 + k.as_str().len() + wire_size(v))
            .sum();
        assert!(size <= HEADERS_BYTES, "{size}");
        assert!(out.inner().contains_key("x-small") && out.inner().contains_key("x-a"));
        assert!(!out.inner().contains_key("x-big") && !out.inner().contains_key("x-nested"));
        assert_eq!(dropped, 2 + 1, "the two too big, and one past the total");
        let (_, dropped) = dead_letter_headers(props.headers().as_ref(), 100);
        assert_eq!(dropped, 8, "a small frame keeps only what fits");
    }

    #[test]
    fn sizes_are_what_the_wire_takes() {
        assert_eq!(wire_size(&long("abc")), 1 + 4 + 3);
        assert_eq!(wire_size(&AMQPValue::LongLongInt(1)), 9);
        let mut t = FieldTable::default();
        t.insert("k".into(), AMQPValue::Boolean(true));
        assert_eq!(wire_size(&AMQPValue::FieldTable(t)), 1 + 4 + (1 + 1 + 2));
    }
}
