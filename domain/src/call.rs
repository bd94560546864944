//! What travels into the core with a request, and what comes back: the caller, the call's
//! context, and a successful reply in a transport-neutral form.

use std::sync::Arc;

use serde::{Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::CorrelationId;
use crate::error::CoreError;
use crate::operations::Permission;
use crate::trace::TraceContext;
use crate::views::Rendered;

/// Who is calling, as the edge authenticated them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    /// What it may do beyond what every caller may.
    pub rights: Rights,
}

/// What a caller may do beyond what every caller may, from the configuration, and only when
/// its own key proved its name (never a name claimed with the shared secret).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rights {
    /// `CREDENTIAL_READERS`: password hashes; also exports.
    pub read_credentials: bool,
    /// `EXPORT_READERS`: everything held about a user.
    pub export: bool,
    /// `AUDIT_READERS`: a user's history of changes.
    pub audit: bool,
}

impl Rights {
    pub fn allow(self, needed: Permission) -> bool {
        match needed {
            Permission::Caller => true,
            Permission::Exporter => self.export || self.read_credentials,
            Permission::CredentialReader => self.read_credentials,
            Permission::AuditReader => self.audit,
        }
    }
}

impl Caller {
    /// The caller of local open mode (no keys configured, loopback only).
    pub const LOCAL: &str = "local";
    /// A holder of the shared secret that named no declared service.
    pub const INTERNAL: &str = "internal";
    /// A request that did not authenticate (for metrics only).
    pub const ANONYMOUS: &str = "anonymous";
}

/// What travels with every request into the core: the caller and the correlation id that
/// ties logs, replies and events together.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub caller: Caller,
    pub correlation_id: CorrelationId,
    /// Identifies one request across redeliveries and retries (an RPC message id, an
    /// `Idempotency-Key`): a write that carries a key it already succeeded with answers as it
    /// did then, from the ledger of applied requests, and changes nothing.
    pub request_key: Option<String>,
    /// Work not finished by then is abandoned and rolled back (an RPC `expiration`).
    pub deadline: Option<tokio::time::Instant>,
    /// The broker delivers this request again: the delivery before it was never settled, so
    /// whoever took it is gone (its connection closed) or gave it back. Its request key may
    /// still be held for a moment, until PostgreSQL has rolled that work back: it is waited
    /// for, not answered 409 as a caller's own concurrent retry is.
    pub redelivered: bool,
    /// The W3C trace the request's work belongs to.
    pub trace: TraceContext,
}

impl CallContext {
    /// A request of `trace` (the one it came with, continued, or a new one: see
    /// [`TraceContext::continue_from`]).
    pub fn new(caller: Caller, correlation_id: CorrelationId, trace: TraceContext) -> Self {
        Self {
            caller,
            correlation_id,
            request_key: None,
            deadline: None,
            redelivered: false,
            trace,
        }
    }

    /// Sets the key that identifies this request across deliveries (an RPC message id, an
    /// `Idempotency-Key`). Keys are the caller's own: two callers may use the same one.
    /// A key that breaks the id rule (1–128 printable ASCII characters) is not used.
    pub fn keyed(mut self, key: Option<&str>) -> Self {
        self.request_key = key
            .filter(|k| CorrelationId::is_valid(k))
            .map(|k| format!("{}:{k}", self.caller.name));
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStatus {
    Ok,
    Created,
    NoContent,
}

impl ReplyStatus {
    pub fn code(self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::Created => 201,
            Self::NoContent => 204,
        }
    }

    pub fn from_code(code: u16) -> Option<Self> {
        [Self::Ok, Self::Created, Self::NoContent]
            .into_iter()
            .find(|s| s.code() == code)
    }
}

/// A successful answer, whichever transport carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: ReplyStatus,
    pub data: Data,
}

impl Reply {
    pub fn ok(data: impl Into<Data>) -> Self {
        Self {
            status: ReplyStatus::Ok,
            data: data.into(),
        }
    }

    pub fn created(data: impl Into<Data>) -> Self {
        Self {
            status: ReplyStatus::Created,
            data: data.into(),
        }
    }

    pub fn no_content() -> Self {
        Self {
            status: ReplyStatus::NoContent,
            data: Data::Value(Value::Null),
        }
    }
}

/// A reply's JSON: a value, or text already serialised (a cached user is rendered once,
/// so a read, or a batch of them, is a copy rather than a walk), or a cached user itself,
/// whose text the REST edge sends without copying it.
#[derive(Debug, Clone)]
pub enum Data {
    Value(Value),
    Raw(Box<RawValue>),
    User(Arc<Rendered>),
}

impl Data {
    /// Serialises `v` now; only fails for a type whose `Serialize` fails.
    pub fn render(v: &impl Serialize) -> Result<Self, CoreError> {
        serde_json::value::to_raw_value(v)
            .map(Self::Raw)
            .map_err(|e| CoreError::Internal(format!("a reply does not serialise: {e}")))
    }

    /// As a value (for the ledger, and for tests).
    pub fn to_value(&self) -> Value {
        match self {
            Self::Value(v) => v.clone(),
            Self::Raw(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
            Self::User(u) => serde_json::from_str(u.json().get()).unwrap_or(Value::Null),
        }
    }

    /// The JSON text; a cached user's is the text it holds, not a copy.
    pub fn into_bytes(self) -> bytes::Bytes {
        /// A cached user's JSON text, as bytes that keep the user.
        struct Text(Arc<Rendered>);
        impl AsRef<[u8]> for Text {
            fn as_ref(&self) -> &[u8] {
                self.0.json().get().as_bytes()
            }
        }
        match self {
            Self::Value(v) => serde_json::to_vec(&v).unwrap_or_default().into(),
            Self::Raw(raw) => String::from(Box::<str>::from(raw)).into(),
            Self::User(u) => bytes::Bytes::from_owner(Text(u)),
        }
    }
}

impl From<Value> for Data {
    fn from(v: Value) -> Self {
        Self::Value(v)
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Value(v) => v.serialize(s),
            Self::Raw(raw) => raw.serialize(s),
            Self::User(u) => u.json().serialize(s),
        }
    }
}

impl PartialEq for Data {
    fn eq(&self, other: &Self) -> bool {
        self.to_value() == other.to_value()
    }
}

impl PartialEq<Value> for Data {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_keys_belong_to_their_caller() {
        let ctx = |name: &str| {
            let caller = Caller {
                name: name.to_owned(),
                rights: Rights::default(),
            };
            CallContext::new(caller, CorrelationId::generate(), Default::default())
        };
        let (a, b) = (ctx("a").keyed(Some("k")), ctx("b").keyed(Some("k")));
        assert_eq!(a.request_key.as_deref(), Some("a:k"));
        assert_ne!(a.request_key, b.request_key);
        assert_eq!(ctx("a").keyed(None).request_key, None);
        let long = "k".repeat(129);
        assert_eq!(ctx("a").keyed(Some(&long)).request_key, None);
        assert_eq!(ctx("a").keyed(Some("a b")).request_key, None);
    }
}
