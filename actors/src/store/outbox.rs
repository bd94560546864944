//! The transactional outbox: events are rows written in the same transaction as the change
//! they describe, so an event exists if and only if its change committed.

use super::db_error;
use sqlx::{PgConnection, PgPool, types::Uuid};
use tokio::sync::mpsc;

use crate::publisher::encode;
use user_domain::error::CoreError;
use user_domain::events::Event;

/// Channel notified after commits of new events, so the publisher wakes without polling.
pub const NOTIFY_CHANNEL: &str = "user_service_outbox";

/// Tells the publishing instance that events were committed. The `NOTIFY` is sent after
/// the write's commit, on its own, and coalesced: PostgreSQL serialises the commits of
/// transactions that notify (flush included), which capped writes at one fsync at a time.
/// Commits made while a `NOTIFY` is on its way share the next one; the publisher's tick
/// is the safety net for a lost one.
#[derive(Clone)]
pub struct OutboxSignal {
    pending: mpsc::Sender<()>,
}

impl OutboxSignal {
    /// Starts the task that sends the notifications; it ends with the last handle.
    pub fn new(pool: PgPool) -> Self {
        let (pending, mut raised) = mpsc::channel(1);
        tokio::spawn(async move {
            while raised.recv().await.is_some() {
                let notify = sqlx::query("SELECT pg_notify($1, '')")
                    .bind(NOTIFY_CHANNEL)
                    .execute(&pool);
                // A frozen database holds the signal back, never the writes that raise it.
                let sent = tokio::time::timeout(super::HUNG_AFTER, notify).await;
                if let Ok(Err(e)) = sent {
                    tracing::debug!(error = %e, "outbox notification not sent; the publisher's tick will find the events");
                }
            }
        });
        Self { pending }
    }

    /// After a commit that added events. Never waits.
    pub fn raise(&self) {
        // Full: a notification is already due, and it covers this commit too.
        let _ = self.pending.try_send(());
    }
}

/// The history entries of the events a statement's `events` (outbox rows: `user_id`,
/// `event_type`, `payload`, `traceparent`) has just inserted: an insert to end it with.
macro_rules! history_of_events {
    () => {
        "INSERT INTO user_history (user_id, event_type, data, actor, correlation_id, trace_id)
         SELECT user_id, event_type, payload->'data', payload->>'actor',
                payload->>'correlationId', split_part(traceparent, '-', 2)
           FROM events"
    };
}

pub(super) use history_of_events;

/// Adds `events` to the outbox, and to their users' history. Every event is checked against
/// the publisher's bounds first: one that breaks them fails the whole write, before anything
/// is written.
pub(super) async fn append(conn: &mut PgConnection, events: &[Event]) -> Result<(), CoreError> {
    if events.is_empty() {
        return Ok(());
    }
    // Sent as text so that the stored JSON keeps the event's key order.
    let payloads = events
        .iter()
        .map(stored)
        .collect::<Result<Vec<String>, CoreError>>()?;
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let users: Vec<Uuid> = events.iter().map(|e| e.user_id.as_uuid()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let keys: Vec<&str> = events.iter().map(|e| e.event_type.routing_key()).collect();
    let parents: Vec<String> = events.iter().map(|e| e.trace.traceparent()).collect();
    let states: Vec<Option<&str>> = events.iter().map(|e| e.trace.tracestate()).collect();
    sqlx::query(concat!(
        "WITH events AS (
            INSERT INTO outbox
                   (event_id, user_id, event_type, routing_key, payload, traceparent, tracestate)
            SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[],
                                 $5::text[]::json[], $6::text[], $7::text[])
            RETURNING user_id, event_type, payload, traceparent
         ) ",
        history_of_events!()
    ))
    .bind(&ids)
    .bind(&users)
    .bind(&types)
    .bind(&keys)
    .bind(&payloads)
    .bind(&parents)
    .bind(&states)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// The event's JSON as stored, within the size and depth the publisher accepts.
pub(super) fn stored(event: &Event) -> Result<String, CoreError> {
    let value = serde_json::to_value(event)
        .map_err(|e| CoreError::Internal(format!("event not serialisable: {e}")))?;
    encode::check_bounds(&value).map_err(|refusal| {
        tracing::warn!(event_type = event.event_type.as_str(), %refusal, "event refused on write");
        CoreError::invalid(
            "",
            format!("the change cannot be published as an event: {refusal}"),
        )
    })
}
