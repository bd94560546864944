//! An entry of `users.history`.

use user_domain::Timestamp;
use utoipa::ToSchema;

/// One change to a user: what changed (paths, with the values before and after; a billing
/// change by its paths only), who made it and when.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HistoryEntry {
    /// The event type (`USER_UPDATED`, `PREFERENCES_CHANGED`, …).
    r#type: String,
    /// The dotted paths changed; for a creation or a login, the fields it set.
    changed: Vec<String>,
    #[schema(value_type = Object)]
    previous: serde_json::Value,
    #[schema(value_type = Object)]
    current: serde_json::Value,
    /// Who made the change: a caller's name, `internal`, `open` or `user-service`.
    actor: String,
    correlation_id: String,
    /// The W3C trace the change was part of; null until the service reads traces.
    trace_id: Option<String>,
    at: Timestamp,
}
