//! Domain events. Each write builds its events from the same diff it applies; the store
//! puts them in the outbox inside the write's transaction.

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::json::Changes;
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
    pub source: &'static str,
    pub data: Value,
}

impl Event {
    pub fn new(
        event_type: EventType,
        user_id: UserId,
        correlation_id: &CorrelationId,
        data: Value,
    ) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type,
            user_id,
            timestamp: Timestamp::now(),
            correlation_id: correlation_id.clone(),
            source: "user-service",
            data,
        }
    }

    /// A diff event, or none when nothing changed.
    pub fn for_changes(
        event_type: EventType,
        user_id: UserId,
        correlation_id: &CorrelationId,
        changes: Changes,
    ) -> Option<Self> {
        if changes.is_empty() {
            return None;
        }
        let data = serde_json::to_value(&changes).unwrap_or(Value::Null);
        Some(Self::new(event_type, user_id, correlation_id, data))
    }
}
