//! Domain events. Each write builds its events from the same diff it applies; the store
//! puts them in the outbox inside the write's transaction.

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::call::{CallContext, Caller};
use crate::json::Changes;
use crate::trace::TraceContext;
use crate::{CorrelationId, Timestamp, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    UserCreated,
    UserUpdated,
    UserDeleted,
    UserRestored,
    UserErased,
    ProfileUpdated,
    PreferencesChanged,
    UserLoggedIn,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserCreated => "USER_CREATED",
            Self::UserUpdated => "USER_UPDATED",
            Self::UserDeleted => "USER_DELETED",
            Self::UserRestored => "USER_RESTORED",
            Self::UserErased => "USER_ERASED",
            Self::ProfileUpdated => "PROFILE_UPDATED",
            Self::PreferencesChanged => "PREFERENCES_CHANGED",
            Self::UserLoggedIn => "USER_LOGGED_IN",
        }
    }

    /// Exactly one word after `user.`, so a `user.*` binding receives every event.
    pub fn routing_key(self) -> &'static str {
        match self {
            Self::UserCreated => "user.created",
            Self::UserUpdated => "user.updated",
            Self::UserDeleted => "user.deleted",
            Self::UserRestored => "user.restored",
            Self::UserErased => "user.erased",
            Self::ProfileUpdated => "user.profile_updated",
            Self::PreferencesChanged => "user.preferences_changed",
            Self::UserLoggedIn => "user.logged_in",
        }
    }
}

/// Where a change comes from: the request's correlation id, and who asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub correlation_id: CorrelationId,
    /// An event's `actor`: the authenticated caller's name (`internal` for the shared secret
    /// without a declared name), `open` in local open mode, `user-service` for the service's
    /// own work (erasing users deleted long ago).
    pub actor: String,
    /// The trace the change was part of; its events carry it on.
    pub trace: TraceContext,
}

impl Origin {
    /// The actor of the service's own changes.
    pub const SERVICE: &str = "user-service";
    /// The actor of local open mode's caller.
    pub const OPEN: &str = "open";

    pub fn of(ctx: &CallContext) -> Self {
        let name = ctx.caller.name.as_str();
        Self {
            correlation_id: ctx.correlation_id.clone(),
            trace: ctx.trace.clone(),
            actor: match name {
                Caller::LOCAL => Self::OPEN,
                name => name,
            }
            .to_owned(),
        }
    }

    /// A change the service makes on its own, under a new correlation id.
    pub fn service() -> Self {
        Self {
            correlation_id: CorrelationId::generate(),
            actor: Self::SERVICE.to_owned(),
            trace: TraceContext::start(),
        }
    }
}

/// The version of the event body's shape (`schemaVersion`): raised when a field changes
/// meaning or goes away, not when one is added.
pub const SCHEMA_VERSION: u32 = 1;

/// One event as published (contract section 6).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub user_id: UserId,
    pub timestamp: Timestamp,
    pub correlation_id: CorrelationId,
    /// Who made the change ([`Origin::actor`]).
    pub actor: String,
    pub source: &'static str,
    pub schema_version: u32,
    pub data: Value,
    /// Sent as the message's `traceparent` and `tracestate` headers, not in its body.
    #[serde(skip)]
    pub trace: TraceContext,
}

impl Event {
    pub fn new(event_type: EventType, user_id: UserId, origin: &Origin, data: Value) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type,
            user_id,
            timestamp: Timestamp::now(),
            correlation_id: origin.correlation_id.clone(),
            actor: origin.actor.clone(),
            schema_version: SCHEMA_VERSION,
            trace: origin.trace.clone(),
            source: "user-service",
            data,
        }
    }

    /// A diff event, or none when nothing changed.
    pub fn for_changes(
        event_type: EventType,
        user_id: UserId,
        origin: &Origin,
        changes: Changes,
    ) -> Option<Self> {
        if changes.is_empty() {
            return None;
        }
        let data = serde_json::to_value(&changes).unwrap_or(Value::Null);
        Some(Self::new(event_type, user_id, origin, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_actor_is_the_caller_and_open_mode_is_open() {
        let ctx = |name: &str| {
            let caller = Caller {
                name: name.to_owned(),
                rights: Default::default(),
            };
            CallContext::new(caller, CorrelationId::generate(), Default::default())
        };
        assert_eq!(Origin::of(&ctx("game-catalog")).actor, "game-catalog");
        assert_eq!(Origin::of(&ctx(Caller::INTERNAL)).actor, "internal");
        assert_eq!(Origin::of(&ctx(Caller::LOCAL)).actor, "open");
        let event = Event::new(
            EventType::UserDeleted,
            UserId::generate(),
            &Origin::service(),
            Value::Null,
        );
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            (&json["actor"], &json["schemaVersion"]),
            (&"user-service".into(), &1.into())
        );
    }
}
