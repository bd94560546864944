//! One batch of the outbox, published in order and settled event by event.

use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{Channel, Confirmation};
use serde_json::Value;
use sqlx::PgPool;
use tracing::Instrument;
use user_domain::trace::TraceContext;

use super::{PublishError, PublisherConfig, encode, pg, undelivered};
use crate::telemetry;

const BATCH: i64 = 500;

#[derive(sqlx::FromRow)]
struct Pending {
    id: i64,
    user_id: sqlx::types::Uuid,
    routing_key: String,
    attempts: i32,
    /// The stored JSON text; not even read (NULL) when it is over the bound.
    payload: Option<String>,
    payload_bytes: i64,
    /// The W3C trace of the change, sent on as headers.
    traceparent: Option<String>,
    tracestate: Option<String>,
}

/// Publishes the next batch in outbox order and settles each event: published once the
/// broker confirms it, dead at once when it cannot be encoded, retried later when refused.
/// Returns how many events it settled.
pub(super) async fn publish_batch(
    pool: &PgPool,
    config: &PublisherConfig,
    exchange: &ShortString,
    channel: &Channel,
) -> Result<usize, PublishError> {
    let batch = sqlx::query_as::<_, Pending>(
        "SELECT o.id, o.user_id, o.routing_key, o.attempts,
                CASE WHEN octet_length(o.payload::text) <= $2 THEN o.payload::text END AS payload,
                octet_length(o.payload::text)::int8 AS payload_bytes,
                o.traceparent, o.tracestate
           FROM outbox o
          WHERE o.published_at IS NULL AND o.dead_at IS NULL
            AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now())
            -- Behind a user's refused event that waits for its retry, that user's later
            -- events wait too. A dead event holds nothing back.
            AND NOT EXISTS (SELECT 1 FROM outbox p
                             WHERE p.user_id = o.user_id AND p.published_at IS NULL AND p.id < o.id
                               AND p.attempts > 0 AND p.dead_at IS NULL)
          ORDER BY o.id LIMIT $1",
    )
    .bind(BATCH)
    .bind(i64::try_from(encode::MAX_EVENT_BYTES).unwrap_or(i64::MAX))
    .fetch_all(pool);
    let batch = pg(batch).await?;
    if batch.is_empty() {
        return Ok(0);
    }
    // Publish the whole batch, then collect the confirms in order.
    let mut sent = Vec::with_capacity(batch.len());
    let mut unencodable = Vec::new();
    for event in &batch {
        let message = match &event.payload {
            Some(payload) => encode::encode(&event.routing_key, payload, config.envelope),
            None => Err(encode::Refusal::TooLarge {
                bytes: usize::try_from(event.payload_bytes).unwrap_or(usize::MAX),
            }),
        };
        let (parent, state) = (event.traceparent.as_deref(), event.tracestate.as_deref());
        let (span, producer) = producer_span(exchange.as_str(), &event.routing_key, parent, state);
        let parent = producer.as_ref().map(TraceContext::traceparent);
        let parent = parent.as_deref().or(event.traceparent.as_deref());
        match message.map(|m| encode::traced(m, parent, state)) {
            Ok(m) => {
                let confirm = config
                    .broker
                    .within(channel.basic_publish(
                        exchange.clone(),
                        m.routing_key,
                        BasicPublishOptions::default(),
                        &m.body,
                        m.properties,
                    ))
                    .instrument(span)
                    .await?;
                sent.push((event, m.event, confirm));
            }
            Err(reason) => unencodable.push((event.id, reason.to_string())),
        }
    }
    pg(undelivered::set_aside(pool, &unencodable)).await?;
    // A refused event holds back its user's later events (they are published again after
    // it); other users' confirmed events are done.
    let mut acked = Vec::with_capacity(sent.len());
    let mut mirrored = Vec::with_capacity(sent.len());
    let mut refused: Vec<&Pending> = Vec::new();
    for (event, value, confirm) in sent {
        let held = refused.iter().any(|r| r.user_id == event.user_id);
        match config.broker.within(confirm).await? {
            _ if held => {}
            Confirmation::Nack(_) => refused.push(event),
            _ => {
                acked.push(event.id);
                mirrored.push(value);
            }
        }
    }
    // Every confirm a refusal, of more than one event: the broker is failing, not the
    // events (a quorum queue without a leader while a node is lost refuses everything
    // routed to it). Start over through the next node; no event's attempts are counted.
    if acked.is_empty() && refused.len() > 1 {
        return Err(PublishError::Refused(refused.len()));
    }
    if !acked.is_empty() {
        pg(
            sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
                .bind(&acked)
                .execute(pool),
        )
        .await?;
        mirror(config, mirrored.iter()).await;
    }
    for event in refused {
        pg(undelivered::retry_later(
            pool,
            config.retry,
            event.id,
            event.attempts,
        ))
        .await?;
    }
    Ok(batch.len())
}

/// An event's publish span, for an exporter: a producer span in the trace of the change,
/// whose own ids the event then carries (a consumer's span hangs under it). Without one, a
/// disabled span and nothing to carry but what was stored.
fn producer_span(
    exchange: &str,
    routing_key: &str,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> (tracing::Span, Option<TraceContext>) {
    if !telemetry::exporting() || traceparent.is_none() {
        return (tracing::Span::none(), None);
    }
    let span = crate::otel_span!(
        parent: None,
        "publish",
        otel.name = %format_args!("publish {exchange}"),
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation = "publish",
        messaging.operation.type = "send",
        messaging.destination.name = exchange,
        messaging.rabbitmq.destination.routing_key = routing_key,
    );
    let mut trace = TraceContext::continue_from(traceparent, tracestate);
    telemetry::continue_trace(&span, &mut trace);
    (span, Some(trace))
}

/// Best effort: a slow or absent Redis never holds up publishing, and one whose breaker is
/// open is not asked. The events go in one pipeline, with one deadline.
async fn mirror<'a>(config: &PublisherConfig, events: impl Iterator<Item = &'a Value>) {
    let Some((redis, prefix)) = &config.redis else {
        return;
    };
    let channel = format!("{prefix}:events");
    let mut pipe = deadpool_redis::redis::pipe();
    for event in events {
        pipe.cmd("PUBLISH")
            .arg(&channel)
            .arg(event.to_string())
            .ignore();
    }
    let publish = async |c: &mut crate::redis::Connection| pipe.query_async::<()>(c).await;
    if let Err(e) = redis.call(Duration::from_millis(250), publish).await {
        tracing::debug!(error = %e, "events not mirrored to Redis");
    }
}
