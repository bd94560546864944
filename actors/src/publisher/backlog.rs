//! The outbox's state as health and metrics see it, and its pruning. Every instance reports
//! it (the outbox is shared), leader or not.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch;

use super::TICK;
use crate::health::{Figures, Health, Report, Status};

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

/// Reports the backlog every tick. Dead events are counted apart: they stay until an operator
/// acts, and must not hide a live backlog.
pub(super) async fn report_backlog(pool: PgPool, health: Health, mut stop: watch::Receiver<bool>) {
    loop {
        if let Ok(b) = super::pg(backlog(&pool)).await {
            crate::metrics::record_backlog(b.pending, b.dead);
            let status = if b.dead > 0 {
                Status::Degraded
            } else {
                Status::Up
            };
            let detail = (b.dead > 0).then(|| {
                format!(
                    "{} dead event(s) set aside (reason in outbox.last_error); other events flow",
                    b.dead
                )
            });
            let mut figures = Figures::new();
            figures.insert("outboxPending", json!(b.pending));
            figures.insert("oldestPendingSeconds", json!(b.oldest_seconds));
            figures.insert("retryingEvents", json!(b.retrying));
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

/// The outbox's unpublished events: `pending` (and the age of the oldest) counts those still
/// to be published, `retrying` those of them refused at least once, `dead` those set aside.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    pub pending: i64,
    pub oldest_seconds: f64,
    pub retrying: i64,
    pub dead: i64,
}

pub async fn backlog(db: &PgPool) -> Result<Backlog, sqlx::Error> {
    let (pending, oldest_seconds, retrying, dead): (i64, f64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE dead_at IS NULL),
                COALESCE(EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE dead_at IS NULL))::float8, 0),
                count(*) FILTER (WHERE dead_at IS NULL AND attempts > 0),
                count(*) FILTER (WHERE dead_at IS NOT NULL)
           FROM outbox WHERE published_at IS NULL",
    )
    .fetch_one(db)
    .await?;
    Ok(Backlog {
        pending,
        oldest_seconds,
        retrying,
        dead,
    })
}
