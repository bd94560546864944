//! `users.history`: a user's changes, newest first, read straight from PostgreSQL; and their
//! expiry after `AUDIT_RETENTION_DAYS`. Entries are written with their events
//! ([`super::outbox::append`]).

use chrono::{DateTime, Utc};
use futures::TryFutureExt;
use serde_json::{Map, Value, json};
use sqlx::FromRow;
use sqlx::types::Json;

use super::db::Db;
use super::db_error;
use super::listing::{cut, page};
use user_domain::Timestamp;
use user_domain::call::Reply;
use user_domain::error::CoreError;
use user_domain::request::{HistoryToken, UserHistory};

#[derive(FromRow)]
struct Entry {
    id: i64,
    event_type: String,
    data: Json<Value>,
    actor: String,
    correlation_id: String,
    trace_id: Option<String>,
    created_at: DateTime<Utc>,
}

pub(super) async fn read(db: &Db, q: &UserHistory) -> Result<Reply, CoreError> {
    let fetch = || {
        sqlx::query_as::<_, Entry>(
            "SELECT id, event_type, data, actor, correlation_id, trace_id, created_at
               FROM user_history
              WHERE user_id = $1 AND id < $2
              ORDER BY id DESC LIMIT $3",
        )
        .bind(q.id.as_uuid())
        .bind(q.after.map_or(i64::MAX, |t| t.0))
        .bind(i64::from(q.limit) + 1)
        .fetch_all(db.readers.pool())
        .map_err(db_error)
    };
    let entries = db.asked("user_history", fetch).await?;
    let (entries, next) = cut(entries, q.limit, |e| HistoryToken(e.id).encode());
    page(&entries.iter().map(view).collect::<Vec<_>>(), next)
}

/// `{type, changed, previous, current, actor, correlationId, traceId, at}`: a change's paths
/// and values as its event gave them; an event without a diff (a creation, a login) lists
/// what it holds as `changed` and `current`.
fn view(e: &Entry) -> Value {
    let data = &e.data.0;
    let (changed, previous, current) = match data.get("changed") {
        Some(changed) => (
            changed.clone(),
            data["previous"].clone(),
            data["current"].clone(),
        ),
        None => {
            let fields = data.as_object().map(Map::keys).into_iter().flatten();
            let changed: Vec<&String> = fields.collect();
            (json!(changed), json!({}), data.clone())
        }
    };
    json!({
        "type": e.event_type,
        "changed": changed,
        "previous": previous,
        "current": current,
        "actor": e.actor,
        "correlationId": e.correlation_id,
        "traceId": e.trace_id,
        "at": Timestamp::from(e.created_at),
    })
}
