//! The outbox's state as health and metrics see it, checked every second.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch;

use super::{Figures, Health, Report, Status};
use crate::store::HUNG_AFTER;

/// How often the backlog is checked.
const EVERY: Duration = Duration::from_secs(1);

/// Reports the backlog every [`EVERY`]. Dead events are counted apart: they stay until an
/// operator acts, and must not hide a live backlog. A database silent for [`HUNG_AFTER`] is
/// not waited on past it.
pub(super) async fn check(pool: PgPool, health: Health, mut stop: watch::Receiver<bool>) {
    loop {
        if let Ok(Ok(b)) = tokio::time::timeout(HUNG_AFTER, backlog(&pool)).await {
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
            health.report(Report {
                component: "outbox",
                status,
                detail,
                figures,
            });
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The outbox's unpublished events: `pending` (and the age of the oldest) counts those still
/// to be published, `retrying` those of them refused at least once, `dead` those set aside.
struct Backlog {
    pending: i64,
    oldest_seconds: f64,
    retrying: i64,
    dead: i64,
}

async fn backlog(db: &PgPool) -> Result<Backlog, sqlx::Error> {
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
