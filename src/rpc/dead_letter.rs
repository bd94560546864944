//! The dead-letter queue: where a request goes that failed with nobody to tell.

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use user_domain::CoreError;

use super::wire::MAX_BODY_BYTES;
use super::{RpcEdge, RpcError, TimedChannel, publish};

/// Headers that carry credentials: never copied into a dead letter.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "x-internal-service"];

/// Moves a request that failed and has no reply address to the dead-letter queue, with the
/// reason in `x-error` and the authenticated caller in `x-caller`; credentials are left
/// out. Its `expiration` is dropped so that it stays there.
pub(super) async fn dead_letter(
    edge: &RpcEdge,
    channel: &TimedChannel,
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
    if delivery.data.len() > MAX_BODY_BYTES {
        text("x-body-dropped", &format!("{} bytes", delivery.data.len()));
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
    // Billing values in the body are sealed: they never rest in plain text. A body over the
    // limit is not kept at all (its size is).
    let body = if delivery.data.len() > MAX_BODY_BYTES {
        Vec::new()
    } else {
        serde_json::from_slice::<serde_json::Value>(&delivery.data)
            .ok()
            .and_then(|mut doc| {
                let sealed = edge.billing_keys.seal_billing_fields(&mut doc);
                sealed.then(|| serde_json::to_vec(&doc).ok()).flatten()
            })
            .unwrap_or_else(|| delivery.data.clone())
    };
    publish(channel, "", &edge.config.dead_letter_queue(), &body, out).await
}

/// The request's headers without credentials or anything the service sets itself.
fn dead_letter_headers(headers: Option<&FieldTable>) -> FieldTable {
    let mut out = FieldTable::default();
    for (name, value) in headers.map(|h| h.inner().iter()).into_iter().flatten() {
        let name_str = name.as_str();
        let dropped = CREDENTIAL_HEADERS
            .iter()
            .chain(&["x-error", "x-original-queue", "x-caller", "x-body-dropped"])
            .any(|c| name_str.eq_ignore_ascii_case(c));
        if !dropped {
            out.insert(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_props::{long, props_with};
    use super::*;

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
}
