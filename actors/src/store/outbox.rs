//! The transactional outbox: events are rows written in the same transaction as the change
//! they describe, so an event exists if and only if its change committed.

use sqlx::{PgConnection, types::Uuid};

use crate::events::Event;

/// Channel notified on commit of new events, so the publisher wakes without polling.
pub const NOTIFY_CHANNEL: &str = "user_service_outbox";

pub(super) async fn append(conn: &mut PgConnection, events: &[Event]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let users: Vec<Uuid> = events.iter().map(|e| e.user_id.as_uuid()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let keys: Vec<&str> = events.iter().map(|e| e.event_type.routing_key()).collect();
    // Sent as text so that the stored JSON keeps the event's key order.
    let payloads: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap_or_default())
        .collect();
    sqlx::query(
        "INSERT INTO outbox (event_id, user_id, event_type, routing_key, payload)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[]::json[])",
    )
    .bind(&ids)
    .bind(&users)
    .bind(&types)
    .bind(&keys)
    .bind(&payloads)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(NOTIFY_CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
