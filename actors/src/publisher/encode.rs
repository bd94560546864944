//! From a stored outbox row to an AMQP message, or a refusal saying why not. Nothing here can
//! panic, whatever the row holds: every value that becomes an AMQP short string is checked
//! first (and converted with the fallible `ShortString::try_new`), and the JSON is bounded in
//! size and depth. The same bounds are checked when an event is written ([`check_bounds`]), so
//! an event the service wrote itself is always encodable.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, ShortString};
use serde_json::{Value, json};
use uuid::Uuid;

use super::EventFormat;
use user_domain::CorrelationId;
use user_domain::json::deeper_than;

/// Largest serialised event accepted into the outbox (and published).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
/// Deepest nesting of objects and arrays in an event; the event object itself is level 1.
/// Well under serde_json's parse limit (128), for us and for consumers, envelope included.
pub const MAX_DEPTH: usize = 64;
/// Largest message body: an event plus the NestJS envelope around it.
pub const MAX_BODY_BYTES: usize = MAX_EVENT_BYTES + 1024;
/// AMQP short strings (routing key, property values) hold at most 255 bytes.
const MAX_ROUTING_KEY: usize = 255;

/// Why a stored event cannot be published; kept in the outbox's `last_error`. Never quotes the
/// offending value (which may be huge or hostile), only what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the event is {bytes} bytes of JSON, more than {MAX_EVENT_BYTES}")]
    TooLarge { bytes: usize },
    #[error("the event nests objects and arrays deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("the payload is not JSON this service can read: {0}")]
    NotJson(String),
    #[error("the payload is not a JSON object")]
    NotAnObject,
    #[error("the routing key ({bytes} bytes) is not `user.<word>` of at most 255 bytes")]
    RoutingKey { bytes: usize },
    #[error("{field} {rule}")]
    Field {
        field: &'static str,
        rule: &'static str,
    },
    #[error("the message body would be {bytes} bytes, more than {MAX_BODY_BYTES}")]
    BodyTooLarge { bytes: usize },
}

/// A message ready for `basic_publish`.
#[derive(Debug)]
pub struct Message {
    pub routing_key: ShortString,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
    /// The event itself (mirrored to Redis once published).
    pub event: Value,
}

/// The event's JSON text as it is stored, when it is within the bounds; checked on write.
pub fn check_bounds(event: &Value) -> Result<String, Refusal> {
    if !event.is_object() {
        return Err(Refusal::NotAnObject);
    }
    if deeper_than(event, MAX_DEPTH) {
        return Err(Refusal::TooDeep);
    }
    let text = serde_json::to_string(event).map_err(|e| Refusal::NotJson(e.to_string()))?;
    if text.len() > MAX_EVENT_BYTES {
        return Err(Refusal::TooLarge { bytes: text.len() });
    }
    Ok(text)
}

/// A stored event (`routing_key`, `payload` as JSON text) as a message, or why it cannot be one.
pub fn encode(routing_key: &str, payload: &str, envelope: EventFormat) -> Result<Message, Refusal> {
    if payload.len() > MAX_EVENT_BYTES {
        return Err(Refusal::TooLarge {
            bytes: payload.len(),
        });
    }
    if !routing_key_ok(routing_key) {
        return Err(Refusal::RoutingKey {
            bytes: routing_key.len(),
        });
    }
    let routing_key = short(routing_key).ok_or(Refusal::RoutingKey {
        bytes: routing_key.len(),
    })?;
    // serde_json stops at 128 levels by itself, so parsing is safe before the depth check.
    let event: Value =
        serde_json::from_str(payload).map_err(|e| Refusal::NotJson(e.to_string()))?;
    if !event.is_object() {
        return Err(Refusal::NotAnObject);
    }
    if deeper_than(&event, MAX_DEPTH) {
        return Err(Refusal::TooDeep);
    }
    let properties = properties(&event)?;
    let body = match envelope {
        EventFormat::Plain => serde_json::to_vec(&event),
        EventFormat::Nestjs => {
            serde_json::to_vec(&json!({"pattern": routing_key.as_str(), "data": &event}))
        }
    }
    .map_err(|e| Refusal::NotJson(e.to_string()))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(Refusal::BodyTooLarge { bytes: body.len() });
    }
    Ok(Message {
        routing_key,
        body,
        properties,
        event,
    })
}

/// `m` with its change's W3C trace as the `traceparent` and `tracestate` headers (what the
/// service wrote; a value over 512 bytes is left out, as the publisher never sends more).
pub fn traced(mut m: Message, traceparent: Option<&str>, tracestate: Option<&str>) -> Message {
    let mut headers = m.properties.headers().clone().unwrap_or_default();
    for (name, value) in [("traceparent", traceparent), ("tracestate", tracestate)] {
        if let Some(v) = value.filter(|v| v.len() <= 512) {
            headers.insert(name.into(), AMQPValue::LongString(v.into()));
        }
    }
    m.properties = m.properties.with_headers(headers);
    m
}

/// `user.<word>`, exactly one word (so a `user.*` binding receives it) of lower-case letters,
/// digits and underscores, at most 255 bytes in all.
pub fn routing_key_ok(key: &str) -> bool {
    key.len() <= MAX_ROUTING_KEY
        && key.strip_prefix("user.").is_some_and(|word| {
            !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// Persistent, with the event's id, type and correlation id as message properties.
fn properties(event: &Value) -> Result<BasicProperties, Refusal> {
    let field = |field: &'static str, valid: fn(&str) -> bool, rule: &'static str| {
        event
            .get(field)
            .and_then(Value::as_str)
            .filter(|s| valid(s))
            .and_then(short)
            .ok_or(Refusal::Field { field, rule })
    };
    let message_id = field(
        "eventId",
        |s| CorrelationId::is_valid(s) && Uuid::try_parse(s).is_ok(),
        "must be a UUID",
    )?;
    let kind = field(
        "type",
        CorrelationId::is_valid,
        "must be 1–128 printable ASCII characters",
    )?;
    let correlation_id = field(
        "correlationId",
        CorrelationId::is_valid,
        "must be 1–128 printable ASCII characters",
    )?;
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(message_id)
        .with_type(kind)
        .with_correlation_id(correlation_id)
        .with_app_id(ShortString::from("user-service"));
    // A timestamp that does not parse is left out rather than refused: it is informative only.
    let timestamp = event
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .and_then(|t| u64::try_from(t.timestamp()).ok());
    Ok(match timestamp {
        Some(t) => properties.with_timestamp(t),
        None => properties,
    })
}

/// A checked value as an AMQP short string; `None` (never a panic) if it is too long.
fn short(s: &str) -> Option<ShortString> {
    ShortString::try_new(s).ok()
}

#[cfg(test)]
mod tests;
