//! The RPC wire format of contract section 5, both dialects: decoding a request body and
//! encoding the reply. Pure functions; the AMQP plumbing is in the parent module.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Value, json};
use user_domain::CorrelationId;
use user_domain::quote::{QUOTE_CHARS, cut};
use user_domain::{CoreError, Reply, ReplyStatus};

/// Bodies above this size get 413 `PAYLOAD_TOO_LARGE` unread.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How the caller spoke, and so how to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialect {
    /// `{"method", "params"}` → `{"status", "data" | "error"}`.
    Plain,
    /// NestJS `ClientProxy`: `{"pattern", "data", "id"}` → `{"response" | "err", "isDisposed"}`.
    /// Without `id` it is an `emit`, which gets no reply.
    Nestjs { id: Option<String> },
}

impl Dialect {
    pub fn wants_reply(&self) -> bool {
        !matches!(self, Self::Nestjs { id: None })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub dialect: Dialect,
    pub method: String,
    pub params: Value,
}

/// Reads a request body. On failure the caller still gets an answer, in the dialect
/// [`guess_dialect`] finds.
pub fn decode(body: &[u8]) -> Result<Incoming, CoreError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(CoreError::PayloadTooLarge(MAX_BODY_BYTES));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| CoreError::invalid("body", format!("is not valid JSON: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(CoreError::invalid("body", "must be a JSON object"));
    };
    if let Some(pattern) = map.remove("pattern") {
        let Value::String(method) = pattern else {
            return Err(CoreError::invalid(
                "pattern",
                "must be a method name such as \"users.get\"",
            ));
        };
        let id = match map.remove("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(id),
            Some(other) => Some(other.to_string()),
        };
        let params = map.remove("data").unwrap_or(Value::Null);
        return Ok(Incoming {
            dialect: Dialect::Nestjs { id },
            method,
            params,
        });
    }
    let method = match map.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => return Err(CoreError::invalid("method", "must be a string")),
        None => {
            return Err(CoreError::invalid(
                "method",
                "missing: send {\"method\": \"users.get\", \"params\": {…}}",
            ));
        }
    };
    let params = map.remove("params").unwrap_or(Value::Null);
    if let Some(extra) = map.keys().next() {
        return Err(CoreError::invalid(
            cut(extra, QUOTE_CHARS),
            "unknown field; allowed: method, params",
        ));
    }
    Ok(Incoming {
        dialect: Dialect::Plain,
        method,
        params,
    })
}

/// How to answer a body that could not be decoded: NestJS when it looks like a NestJS
/// packet (its id is not known, so none is echoed), else plain.
pub fn guess_dialect(body: &[u8]) -> Dialect {
    let head = &body[..body.len().min(4096)];
    if head.windows(9).any(|w| w == b"\"pattern\"") {
        Dialect::Nestjs {
            id: Some(String::new()),
        }
    } else {
        Dialect::Plain
    }
}

/// The reply body for `result` in the caller's dialect, serialised.
pub fn encode(dialect: &Dialect, result: &Result<Reply, CoreError>) -> Vec<u8> {
    serde_json::to_vec(&Encoded { dialect, result }).unwrap_or_default()
}

/// What a reply carries as its data: `null` for 204.
fn body(r: &Reply) -> Option<&user_domain::Data> {
    (r.status != ReplyStatus::NoContent).then_some(&r.data)
}

/// A reply written straight out: a rendered user is copied in, not rebuilt.
struct Encoded<'a> {
    dialect: &'a Dialect,
    result: &'a Result<Reply, CoreError>,
}

impl Serialize for Encoded<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match (self.dialect, self.result) {
            (Dialect::Plain, Ok(r)) => {
                m.serialize_entry("status", &r.status.code())?;
                m.serialize_entry("data", &body(r))?;
            }
            (Dialect::Plain, Err(e)) => {
                m.serialize_entry("status", &e.code().status())?;
                m.serialize_entry("error", &e.body())?;
            }
            (Dialect::Nestjs { id }, result) => {
                match result {
                    Ok(r) => m.serialize_entry("response", &body(r))?,
                    Err(e) => {
                        let mut err = json!({"status": e.code().status()});
                        if let (Value::Object(err), Value::Object(body)) = (&mut err, e.body()) {
                            err.extend(body);
                        }
                        m.serialize_entry("err", &err)?
                    }
                }
                m.serialize_entry("isDisposed", &true)?;
                // An id that breaks the id rule is not echoed.
                if let Some(id) = id.as_ref().filter(|id| CorrelationId::is_valid(id)) {
                    m.serialize_entry("id", id)?;
                }
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(dialect: &Dialect, result: &Result<Reply, CoreError>) -> Value {
        serde_json::from_slice(&encode(dialect, result)).unwrap()
    }

    #[test]
    fn plain_requests_and_replies() {
        let r = decode(br#"{"method": "users.get", "params": {"id": "x"}}"#).unwrap();
        assert_eq!(r.dialect, Dialect::Plain);
        assert_eq!(
            (r.method.as_str(), r.params),
            ("users.get", json!({"id": "x"}))
        );
        let ok = encoded(&Dialect::Plain, &Ok(Reply::created(json!({"id": "x"}))));
        assert_eq!(ok, json!({"status": 201, "data": {"id": "x"}}));
        let err = encoded(&Dialect::Plain, &Err(CoreError::UserNotFound("x".into())));
        assert_eq!(
            err,
            json!({"status": 404, "error": {"code": "USER_NOT_FOUND", "message": "user x not found"}})
        );
        let deleted = encoded(&Dialect::Plain, &Ok(Reply::no_content()));
        assert_eq!(deleted, json!({"status": 204, "data": null}));
    }

    #[test]
    fn nestjs_requests_and_replies() {
        let r =
            decode(br#"{"pattern": "users.exists", "data": {"id": "x"}, "id": "abc"}"#).unwrap();
        assert_eq!(
            r.dialect,
            Dialect::Nestjs {
                id: Some("abc".into())
            }
        );
        assert!(r.dialect.wants_reply());
        let ok = encoded(&r.dialect, &Ok(Reply::ok(json!({"exists": true}))));
        assert_eq!(
            ok,
            json!({"response": {"exists": true}, "isDisposed": true, "id": "abc"})
        );
        let err = encoded(&r.dialect, &Err(CoreError::invalid("id", "bad")));
        assert_eq!(err["err"]["status"], 400);
        assert_eq!(err["err"]["code"], "VALIDATION_FAILED");
        assert_eq!(err["err"]["details"][0]["field"], "id");
        let emit = decode(br#"{"pattern": "users.recordLogin", "data": {}}"#).unwrap();
        assert!(!emit.dialect.wants_reply());
    }

    #[test]
    fn malformed_bodies() {
        for bad in [
            &b"not json"[..],
            b"[1]",
            br#"{"params": {}}"#,
            br#"{"method": 5}"#,
            br#"{"method": "users.get", "extra": 1}"#,
            br#"{"pattern": {"cmd": "x"}}"#,
        ] {
            assert!(decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn bodies() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..200),
                r#"\{"(method|pattern|x)": ("users\.get"|\{\}|null|[0-9]+|"[a-z.]*")(, "(params|data|id)": (\{\}|null|"x"|\[\]|7))*\}"#
                    .prop_map(String::into_bytes),
            ]
        }

        proptest! {
            /// Whatever arrives on the queue decodes or is refused with a validation error.
            #[test]
            fn any_body_decodes_or_is_refused(body in bodies()) {
                if let Err(e) = decode(&body) {
                    prop_assert_eq!(e.code(), user_domain::ErrorCode::ValidationFailed);
                }
            }
        }
    }
}
