//! What the publishing instance removes from the outbox: published events past their
//! retention, and the dead index entries publishing leaves ([`Vacuum`]).

use std::time::Duration;

use sqlx::PgPool;

use super::pg;

/// Events settled between two vacuums of the outbox (see [`Vacuum`]).
const VACUUM_EVERY: usize = 5_000;

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

/// Keeps the outbox's pending-events index short. Each published event leaves a dead entry
/// there, and every poll reads through them until a vacuum: 50 ms a poll after 200,000
/// events. Autovacuum wakes once a minute at best (and may be off), so the publishing
/// instance vacuums the outbox itself after every [`VACUUM_EVERY`] settled events, in the
/// background (a vacuum blocks no reads or writes), one at a time.
#[derive(Default)]
pub(super) struct Vacuum {
    settled: usize,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Vacuum {
    pub(super) fn after(&mut self, pool: &PgPool, settled: usize) {
        self.settled = self.settled.saturating_add(settled);
        if self.settled < VACUUM_EVERY || self.running.as_ref().is_some_and(|r| !r.is_finished()) {
            return;
        }
        self.settled = 0;
        let pool = pool.clone();
        self.running = Some(tokio::spawn(async move {
            // A vacuum that fails (not the table's owner, say) costs only speed.
            if let Err(e) =
                pg(sqlx::raw_sql("VACUUM (INDEX_CLEANUP ON) outbox").execute(&pool)).await
            {
                tracing::debug!(error = %e, "could not vacuum the outbox");
            }
        }));
    }
}
