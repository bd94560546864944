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
//! * **No poison pill.** Every stored value is checked before it becomes a message
//!   ([`encode`]): an event that cannot be encoded is set aside as dead at once, with the
//!   reason in `last_error`. An event the broker refuses alone is retried after a growing delay
//!   of its own (`next_attempt_at`, [`RetrySchedule`]); meanwhile its user's later events wait
//!   (per-user order) and every other event flows. After [`MAX_ATTEMPTS`] it is dead too. A
//!   dead event holds nothing back; dead events are counted in `/health` and in
//!   `user_service_events_dead_total`. A batch refused whole (more than one event, no confirm)
//!   is the broker failing, such as a quorum queue without a leader while a node is lost:
//!   publishing starts over through the next node, and no event's attempts are counted, so a
//!   failover never kills events.
//! * **Leads only while it can publish.** An instance takes the role only once it is connected
//!   to the broker, and every wait on the broker has a deadline ([`user_service_client::broker`]): a broker
//!   that hangs costs the connection, and with it the role, within `AMQP_TIMEOUT_MS` (two
//!   heartbeats when idle). Its writes wait in the outbox and are published, in order, by
//!   whichever instance reconnects first.

use std::time::Duration;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, WrapFuture};
use lapin::ExchangeKind;
use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;

use crate::health::{Health, Report, Status};
use crate::retry::Backoff;
use crate::store::NOTIFY_CHANNEL;
use user_service_client::broker::{AmqpError, Broker, Connector, SMALL_FRAMES};

mod batch;
pub mod encode;
mod retention;
mod undelivered;

use retention::Vacuum;
pub use retention::prune;

/// Refusals of one event before it is set aside as dead.
pub const MAX_ATTEMPTS: i32 = 10;

/// The waits between an event's refusals: `first` after the first, doubling with each further
/// one up to `max`. The default, 100 ms to 10 s, spends about half a minute before the event is
/// dead; tests shorten it (`EVENT_RETRY_FIRST_MS`, `EVENT_RETRY_MAX_MS`), its shape stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySchedule {
    pub first: Duration,
    pub max: Duration,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

/// Advisory lock key for the publishing role ("usr.outb").
const LEADER_LOCK: i64 = 0x7573_722e_6f75_7462;
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFormat {
    /// The event itself.
    Plain,
    /// `{"pattern": <routing key>, "data": <event>}` for NestJS `@EventPattern` handlers.
    Nestjs,
}

#[derive(Clone)]
pub struct PublisherConfig {
    pub broker: Broker,
    pub exchange: String,
    pub envelope: EventFormat,
    /// Published events older than this are deleted.
    pub retention: Duration,
    /// Best-effort mirror of each event on `{prefix}:events` (skipped while Redis' breaker
    /// is open).
    pub redis: Option<(crate::redis::Redis, String)>,
    /// When an event the broker refused is tried again.
    pub retry: RetrySchedule,
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

    /// Its loop runs in the actor's context: it dies with it, and its supervisor starts it
    /// again with the next publisher.
    fn started(&mut self, ctx: &mut Self::Context) {
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
    #[error("the database did not answer for {0:?}")]
    DbHung(Duration),
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] AmqpError),
    #[error("RabbitMQ connection lost")]
    Disconnected,
    #[error("the exchange name is longer than 255 bytes")]
    ExchangeName,
    #[error("RabbitMQ refused all {0} events of a batch")]
    Refused(usize),
}

/// Runs until `stop`; returns true when stopped on purpose.
async fn run(
    pool: PgPool,
    config: PublisherConfig,
    health: Health,
    mut stop: watch::Receiver<bool>,
) -> bool {
    let mut backoff = Backoff::broker();
    let mut connector = config.broker.connector();
    loop {
        let result = tokio::select! {
            r = lead(&pool, &config, &mut connector, &health, &mut backoff) => r,
            _ = stop.wait_for(|s| *s) => return true,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "event publishing interrupted");
            health.report(Report::new(
                "eventPublishing",
                Status::Down,
                Some(e.to_string()),
            ));
        }
        if !backoff.wait(&mut stop).await {
            return true;
        }
    }
}

/// Connects to the broker, waits for the publishing role, then publishes until something
/// breaks. The role is taken only with a working connection, and lost with it (the lock's
/// connection is dropped on any error).
async fn lead(
    pool: &PgPool,
    config: &PublisherConfig,
    connector: &mut Connector,
    health: &Health,
    backoff: &mut Backoff,
) -> Result<(), PublishError> {
    let exchange =
        ShortString::try_new(config.exchange.as_str()).map_err(|_| PublishError::ExchangeName)?;
    let broker = &config.broker;
    let conn = connector
        .connect("user-service events", Some(SMALL_FRAMES))
        .await?;
    let node = &conn.node;
    let channel = broker.within(conn.create_channel()).await?;
    broker
        .within(channel.confirm_select(ConfirmSelectOptions::default()))
        .await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    broker
        .within(channel.exchange_declare(
            exchange.clone(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        ))
        .await?;
    // The lock lives as long as this connection, which is not returned to the pool.
    let mut lock_conn = pool.acquire().await?.detach();
    let mut listener = PgListener::connect_with(pool).await?;
    pg(listener.listen(NOTIFY_CHANNEL)).await?;
    loop {
        let locked: bool = pg(sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut lock_conn))
        .await?;
        if locked {
            break;
        }
        health.report(Report::new(
            "eventPublishing",
            Status::Up,
            Some(format!(
                "standby: another instance publishes (connected via {node})"
            )),
        ));
        let _ = tokio::time::timeout(TICK, listener.recv()).await;
        if !conn.status().connected() {
            return Err(PublishError::Disconnected);
        }
    }
    tracing::info!(exchange = %config.exchange, %node, "publishing events");
    health.report(Report::new(
        "eventPublishing",
        Status::Up,
        Some(format!("publishing via {node}")),
    ));
    backoff.reset();

    let mut last_prune = tokio::time::Instant::now() - Duration::from_secs(3600);
    let mut vacuum = Vacuum::default();
    loop {
        // Every event of a batch is settled (published, waiting for a retry, held behind
        // one, or dead), so the next batch moves on.
        let settled = batch::publish_batch(pool, config, &exchange, &channel).await?;
        vacuum.after(pool, settled);
        if settled > 0 {
            continue;
        }
        if last_prune.elapsed() > Duration::from_secs(60) {
            pg(prune(pool, config.retention)).await?;
            last_prune = tokio::time::Instant::now();
        }
        // Idle: wait for a commit's NOTIFY, the next retry that falls due, or the tick.
        let wait = pg(undelivered::next_retry_in(pool))
            .await?
            .unwrap_or(TICK)
            .min(TICK);
        if let Ok(Err(e)) = tokio::time::timeout(wait, listener.recv()).await {
            return Err(e.into());
        }
        if !conn.status().connected() {
            return Err(PublishError::Disconnected);
        }
        // The role lasts as long as the lock's connection: if that broke, so did the lock,
        // and another instance may publish now.
        pg(sqlx::query("SELECT 1").execute(&mut lock_conn)).await?;
    }
}

/// Every wait of the publisher on PostgreSQL ends: a server silent for
/// [`HUNG_AFTER`](crate::store::HUNG_AFTER) has stopped, and the publisher starts over
/// (its lock's connection dropped, so another instance may lead once the server is back).
async fn pg<T>(
    work: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, PublishError> {
    let limit = crate::store::HUNG_AFTER;
    Ok(tokio::time::timeout(limit, work)
        .await
        .map_err(|_| PublishError::DbHung(limit))??)
}
