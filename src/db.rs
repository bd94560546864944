//! The PostgreSQL pool: database created if missing, migrations applied, bounded waits.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use user_core::breaker::{Breaker, Probe};
use user_core::retry::Backoff;
use user_core::store::Readers;

use crate::config::Config;

/// Connects, creating the database and applying migrations. Retries with backoff while
/// PostgreSQL is not reachable or does not answer, for at most `patience`.
pub async fn connect(config: &Config, patience: Duration) -> anyhow::Result<PgPool> {
    let options = options(&config.database.url)?;
    let deadline = tokio::time::Instant::now() + patience;
    let mut backoff = Backoff::reconnect();
    loop {
        let delay = backoff.next_delay();
        // Reaching the database is bounded by the patience; the migrations after it, by
        // their own timeout.
        let attempt = async {
            let pool = tokio::time::timeout_at(deadline, try_connect(config, &options))
                .await
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "PostgreSQL did not answer within {} s",
                        patience.as_secs()
                    ))
                })?;
            let (reach, limit) = (
                config.database.acquire_timeout,
                config.database.migration_timeout,
            );
            migrate(&options, &MIGRATOR, reach, limit).await?;
            anyhow::Ok(pool)
        };
        match attempt.await {
            Ok(pool) => return Ok(pool),
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "database not ready");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How every connection of the service is made. Nothing it holds outlives its use for long:
/// a query that hangs is cancelled (so a live server answers within `statement_timeout`, and
/// one that has not for `user_core::store::HUNG_AFTER` has stopped), a lock is waited for 5 s at most, and should an instance
/// vanish mid-transaction (its host gone, no FIN), PostgreSQL ends the transaction it left
/// idle and, through keepalive probes, the idle sessions it left (the outbox's leader lock):
/// their locks go to the instances still there.
pub fn options(database_url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(database_url)?
        .application_name("user-service")
        .options([
            ("statement_timeout", "15s"),
            ("lock_timeout", "5s"),
            ("idle_in_transaction_session_timeout", "15s"),
            ("tcp_keepalives_idle", "15"),
            ("tcp_keepalives_interval", "5"),
            ("tcp_keepalives_count", "3"),
        ]))
}

async fn try_connect(config: &Config, options: &PgConnectOptions) -> anyhow::Result<PgPool> {
    // A server that accepts connections and never answers (a frozen process) would hold a
    // connection's handshake forever; the pool's own are bounded by its acquire timeout.
    let patience = config.database.acquire_timeout;
    tokio::time::timeout(patience, ensure_database(options))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "PostgreSQL did not answer within {} ms",
                patience.as_millis()
            )
        })??;
    let pool = pool_options(config, config.database.pool_size)
        .connect_with(options.clone())
        .await?;
    Ok(pool)
}

/// The service's migrations, applied at start.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Applies `migrator`'s migrations on a connection of their own, whose statements may each
/// run for `limit` (and all of them together as long) rather than the 15 s every other
/// statement has: an index built over millions of users takes minutes. Locks are still
/// waited for 5 s at most, so that a migration never queues the service's own queries behind
/// it for long (another instance's migration included: start-up then tries again). Their
/// connection is opened and set up within `reach`, as any other: only the migrations
/// themselves may take `limit`.
pub async fn migrate(
    options: &PgConnectOptions,
    migrator: &Migrator,
    reach: Duration,
    limit: Duration,
) -> anyhow::Result<()> {
    let work = async {
        let setup = async {
            // A migration that builds an index takes minutes by design: not worth a warning.
            let options = options
                .clone()
                .log_slow_statements(log::LevelFilter::Info, Duration::from_secs(1));
            let mut conn = options.connect().await?;
            sqlx::query("SELECT set_config('statement_timeout', $1, false)")
                .bind(format!("{}ms", limit.as_millis()))
                .execute(&mut conn)
                .await?;
            anyhow::Ok(conn)
        };
        let mut conn = tokio::time::timeout(reach, setup).await.map_err(|_| {
            anyhow::anyhow!("PostgreSQL did not answer within {} ms", reach.as_millis())
        })??;
        migrator.run(&mut conn).await?;
        conn.close().await?;
        anyhow::Ok(())
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| anyhow::anyhow!("migrations did not end within {} s", limit.as_secs()))?
}

/// Both pools: `size` connections at most, opened when needed, waited for as long as a
/// request waits for the database.
fn pool_options(config: &Config, size: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        .acquire_timeout(config.database.acquire_timeout)
        .idle_timeout(Duration::from_secs(300))
}

/// The pool of reads that the cache could not answer (see `Store::reading_from`), which
/// hands out a connection used a moment ago without a ping ([`Readers`]). A read is work for
/// the database's cores: more at once than it has only share them out, and the time-slicing
/// spreads every read's latency. At 32 callers on the 2-core development machine, 4
/// connections rather than 16 nearly halved a listing page's p99 for the same throughput; a
/// turn of 4 among 16 connections did less than half as well (each server process stays warm
/// when few take turns). Without the ping before each, listing pages were 15–20 % faster at a
/// million users, searches 5–10 %. See docs/performance.md. Writes, which mostly wait for
/// their commit's flush, keep the main pool, which pings every connection it hands out:
/// writes and readiness work at once after an outage.
pub fn readers(config: &Config) -> anyhow::Result<Readers> {
    Ok(Readers::new(
        pool_options(config, config.database.read_connections),
        options(&config.database.url)?,
    ))
}

/// Creates the configured database when it does not exist yet. Two instances starting at
/// once may race; the loser's "already exists" is success.
async fn ensure_database(options: &PgConnectOptions) -> anyhow::Result<()> {
    let name = options.get_database().unwrap_or("postgres").to_owned();
    let mut conn = options.clone().database("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    conn.close().await?;
    Ok(())
}

/// Does the database answer, within `timeout`?
pub async fn ping(pool: &PgPool, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(pool)).await,
        Ok(Ok(_))
    )
}

/// Timeouts in a row that open PostgreSQL's breaker.
const BREAKER_THRESHOLD: u32 = 3;
/// Waits between probes of an open breaker: often enough that service resumes within a
/// couple of seconds of the database's return (the longest wait, with its jitter, is 2 s).
const PROBE_EVERY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));
/// A probe's own deadline: a database that answers does so in milliseconds.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// PostgreSQL's breaker (see `user_core::store::PgGuard`), probing with `SELECT 1`.
pub fn breaker(pool: &PgPool) -> Breaker {
    let pool = pool.clone();
    let probe: Probe = std::sync::Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move { ping(&pool, PROBE_TIMEOUT).await })
    });
    Breaker::new("database", BREAKER_THRESHOLD, PROBE_EVERY, probe)
}
