//! The EventPublisher actor: ships the outbox to the events exchange.
//!
//! * **Prompt.** Every write that adds events sends `NOTIFY`; the publisher `LISTEN`s and
//!   drains at once. A slow tick (1 s) is only the safety net.
//! * **Ordered per user, with several instances.** One instance at a time publishes: the one
//!   holding a PostgreSQL advisory lock on a dedicated connection. It publishes in outbox
//!   order, so per-user order holds; if it dies, its connection closes, the lock is free, and
//!   a standby instance takes over within a tick.
//! * **At least once.** An event is marked published only after the broker confirms it. A
//!   crash between confirm and mark means it is published again (a duplicate, never a loss).
//! * **No poison pill.** An event the broker keeps refusing is retried with backoff and, after
//!   [`MAX_ATTEMPTS`], parked as dead (counted in health); it and its user's later events wait,
//!   every other user's events flow on.

use std::time::Duration;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, WrapFuture};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;

use crate::health::{Figures, Health, Report, Status};
use crate::store::NOTIFY_CHANNEL;

/// Refusals of one event before it is parked as dead.
pub const MAX_ATTEMPTS: i32 = 10;
/// Advisory lock key for the publishing role ("usr.outb").
const LEADER_LOCK: i64 = 0x7573_722e_6f75_7462;
const BATCH: i64 = 500;
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// The event itself.
    Plain,
    /// `{"pattern": <routing key>, "data": <event>}` for NestJS `@EventPattern` handlers.
    Nestjs,
}

#[derive(Clone)]
pub struct PublisherConfig {
    pub amqp_url: String,
    pub exchange: String,
    pub envelope: Envelope,
    /// Published events older than this are deleted.
    pub retention: Duration,
    /// Best-effort mirror of each event on `{prefix}:events`.
    pub redis: Option<(deadpool_redis::Pool, String)>,
}

pub struct EventPublisher {
    pool: PgPool,
    config: PublisherConfig,
    health: Health,
    stop: watch::Receiver<bool>,
}

impl EventPublisher {
    pub fn new(
        pool: PgPool,
        config: PublisherConfig,
        health: Health,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            pool,
            config,
            health,
            stop,
        }
    }
}

impl Actor for EventPublisher {
    type Context = Context<Self>;

    /// Both loops run in the actor's context: they die with it, and its supervisor starts
    /// them again with the next publisher.
    fn started(&mut self, ctx: &mut Self::Context) {
        let backlog = report_backlog(self.pool.clone(), self.health.clone(), self.stop.clone());
        ctx.spawn(backlog.into_actor(self));
        let work = run(
            self.pool.clone(),
            self.config.clone(),
            self.health.clone(),
            self.stop.clone(),
        );
        ctx.spawn(work.into_actor(self).map(|stopped, _, ctx| {
            if !stopped {
                // Unexpected end: stop, and the supervisor starts the publisher again.
                ctx.stop();
            }
        }));
    }
}

#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("RabbitMQ connection lost")]
    Disconnected,
}

/// Runs until `stop`; returns true when stopped on purpose.
async fn run(
    pool: PgPool,
    config: PublisherConfig,
    health: Health,
    mut stop: watch::Receiver<bool>,
) -> bool {
    let mut backoff = Duration::from_millis(250);
    loop {
        let result = tokio::select! {
            r = lead(&pool, &config, &health, &mut backoff) => r,
            _ = stop.wait_for(|s| *s) => return true,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "event publishing interrupted");
            health.do_send(Report::new(
                "eventPublishing",
                Status::Down,
                Some(e.to_string()),
            ));
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return true,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Waits for the publishing role, then publishes until something breaks.
async fn lead(
    pool: &PgPool,
    config: &PublisherConfig,
    health: &Health,
    backoff: &mut Duration,
) -> Result<(), PublishError> {
    // The lock lives as long as this connection, which is not returned to the pool.
    let mut lock_conn = pool.acquire().await?.detach();
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    loop {
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut lock_conn)
            .await?;
        if locked {
            break;
        }
        health.do_send(Report::new(
            "eventPublishing",
            Status::Up,
            Some("standby: another instance publishes".into()),
        ));
        let _ = tokio::time::timeout(TICK, listener.recv()).await;
    }
    let properties =
        ConnectionProperties::default().with_connection_name("user-service events".into());
    let conn = Connection::connect(&config.amqp_url, properties).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            config.exchange.clone().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    tracing::info!(exchange = %config.exchange, "publishing events");
    health.do_send(Report::new("eventPublishing", Status::Up, None));
    *backoff = Duration::from_millis(250);

    let mut last_prune = tokio::time::Instant::now() - Duration::from_secs(3600);
    loop {
        let published = publish_batch(pool, config, &channel).await?;
        if published > 0 {
            continue;
        }
        if last_prune.elapsed() > Duration::from_secs(60) {
            prune(pool, config.retention).await?;
            last_prune = tokio::time::Instant::now();
        }
        // Idle: wait for a commit's NOTIFY (or the tick, in case one was missed).
        if let Ok(Err(e)) = tokio::time::timeout(TICK, listener.recv()).await {
            return Err(e.into());
        }
        if !conn.status().connected() {
            return Err(PublishError::Disconnected);
        }
        // The role lasts as long as the lock's connection: if that broke, so did the lock,
        // and another instance may publish now.
        sqlx::query("SELECT 1").execute(&mut lock_conn).await?;
    }
}

#[derive(sqlx::FromRow)]
struct Pending {
    id: i64,
    user_id: sqlx::types::Uuid,
    routing_key: String,
    payload: sqlx::types::Json<Value>,
}

/// Publishes the next batch in outbox order and marks what the broker confirmed. A refused
/// event is retried later (or parked as dead); returns how many were marked published.
async fn publish_batch(
    pool: &PgPool,
    config: &PublisherConfig,
    channel: &Channel,
) -> Result<usize, PublishError> {
    let batch: Vec<Pending> = sqlx::query_as(
        "SELECT o.id, o.user_id, o.routing_key, o.payload FROM outbox o
          WHERE o.published_at IS NULL AND o.dead_at IS NULL
            -- Behind a refused (or dead) event of the same user, an event waits its turn.
            AND NOT EXISTS (SELECT 1 FROM outbox p
                             WHERE p.user_id = o.user_id AND p.published_at IS NULL AND p.id < o.id
                               AND (p.attempts > 0 OR p.dead_at IS NOT NULL))
          ORDER BY o.id LIMIT $1",
    )
    .bind(BATCH)
    .fetch_all(pool)
    .await?;
    if batch.is_empty() {
        return Ok(0);
    }
    // Publish the whole batch, then collect the confirms in order.
    let mut confirms = Vec::with_capacity(batch.len());
    for event in &batch {
        let body = match config.envelope {
            Envelope::Plain => serde_json::to_vec(&event.payload.0),
            Envelope::Nestjs => {
                serde_json::to_vec(&json!({"pattern": event.routing_key, "data": event.payload.0}))
            }
        }
        .unwrap_or_default();
        let confirm = channel
            .basic_publish(
                config.exchange.clone().into(),
                event.routing_key.clone().into(),
                BasicPublishOptions::default(),
                &body,
                properties(&event.payload.0),
            )
            .await?;
        confirms.push(confirm);
    }
    // A refused event holds back its user's later events (they are published again after
    // it); other users' confirmed events are done.
    let mut acked = Vec::with_capacity(batch.len());
    let mut refused = Vec::new();
    for (event, confirm) in batch.iter().zip(confirms) {
        let held = refused
            .iter()
            .any(|r: &&Pending| r.user_id == event.user_id);
        match confirm.await? {
            Confirmation::Nack(_) if !held => refused.push(event),
            _ if held => {}
            Confirmation::Nack(_) => {}
            _ => acked.push(event.id),
        }
    }
    if !acked.is_empty() {
        sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&acked)
            .execute(pool)
            .await?;
        mirror(
            config,
            batch
                .iter()
                .filter(|e| acked.contains(&e.id))
                .map(|e| &e.payload.0),
        )
        .await;
    }
    let mut most_attempts = 0;
    for event in refused {
        let attempts: i32 = sqlx::query_scalar(
            "UPDATE outbox SET attempts = attempts + 1, last_error = 'refused by the broker',
                    dead_at = CASE WHEN attempts + 1 >= $2 THEN now() END
              WHERE id = $1 RETURNING attempts",
        )
        .bind(event.id)
        .bind(MAX_ATTEMPTS)
        .fetch_one(pool)
        .await?;
        tracing::warn!(
            outbox_id = event.id,
            attempts,
            dead = attempts >= MAX_ATTEMPTS,
            "the broker refused an event"
        );
        most_attempts = most_attempts.max(attempts);
    }
    if most_attempts > 0 {
        tokio::time::sleep(Duration::from_millis(100) * most_attempts.unsigned_abs().min(50)).await;
    }
    Ok(acked.len())
}

/// Persistent, with the event's id, type and correlation id as message properties.
fn properties(event: &Value) -> BasicProperties {
    let text = |k: &str| ShortString::from(event[k].as_str().unwrap_or_default().to_owned());
    let timestamp =
        chrono::DateTime::parse_from_rfc3339(event["timestamp"].as_str().unwrap_or_default())
            .map(|t| t.timestamp().max(0) as u64)
            .unwrap_or_default();
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(text("eventId"))
        .with_type(text("type"))
        .with_correlation_id(text("correlationId"))
        .with_app_id("user-service".into())
        .with_timestamp(timestamp)
}

/// Best effort: a slow or absent Redis never holds up publishing.
async fn mirror<'a>(config: &PublisherConfig, events: impl Iterator<Item = &'a Value>) {
    let Some((redis, prefix)) = &config.redis else {
        return;
    };
    let channel = format!("{prefix}:events");
    let work = async {
        let mut conn = redis.get().await.ok()?;
        for event in events {
            let payload = event.to_string();
            let _: Result<i64, _> = deadpool_redis::redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(payload)
                .query_async(&mut conn)
                .await;
        }
        Some(())
    };
    let _ = tokio::time::timeout(Duration::from_millis(250), work).await;
}

/// Deletes published events older than `retention`, so the outbox cannot grow without bound.
pub async fn prune(pool: &PgPool, retention: Duration) -> Result<(), sqlx::Error> {
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default();
    let deleted =
        sqlx::query("DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1")
            .bind(cutoff)
            .execute(pool)
            .await?
            .rows_affected();
    if deleted > 0 {
        tracing::info!(deleted, "pruned published events");
    }
    Ok(())
}

/// Every instance reports the backlog (the outbox is shared), leader or not.
async fn report_backlog(pool: PgPool, health: Health, mut stop: watch::Receiver<bool>) {
    loop {
        if let Ok(b) = backlog(&pool).await {
            crate::metrics::record_backlog(b.pending, b.dead);
            let status = if b.dead > 0 {
                Status::Degraded
            } else {
                Status::Up
            };
            let detail = (b.dead > 0)
                .then(|| format!("{} dead event(s) hold their users' later events", b.dead));
            let mut figures = Figures::new();
            figures.insert("outboxPending", json!(b.pending));
            figures.insert("oldestPendingSeconds", json!(b.oldest_seconds));
            figures.insert("deadEvents", json!(b.dead));
            health.do_send(Report {
                component: "outbox",
                status,
                detail,
                figures,
            });
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    pub pending: i64,
    pub oldest_seconds: f64,
    pub dead: i64,
}

pub async fn backlog(db: &PgPool) -> Result<Backlog, sqlx::Error> {
    let (pending, oldest_seconds, dead): (i64, f64, i64) = sqlx::query_as(
        "SELECT count(*),
                COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0),
                count(*) FILTER (WHERE dead_at IS NOT NULL)
           FROM outbox WHERE published_at IS NULL",
    )
    .fetch_one(db)
    .await?;
    Ok(Backlog {
        pending,
        oldest_seconds,
        dead,
    })
}
