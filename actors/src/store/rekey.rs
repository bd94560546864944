//! Re-sealing the stored billing fields under the current key, after a key rotation (or to
//! seal values written before sealing existed).
//!
//! Safe while the service runs: users are visited in id order, in batches, each batch its
//! own short transaction holding the same row locks a write takes (`FOR NO KEY UPDATE`), so
//! a concurrent write waits for the batch (or the batch for it) and nothing is lost.
//! Resumable: a value already sealed under the current key is left alone, so running it
//! again (or after an interruption) only changes what is still left.
//!
//! The cache needs no invalidation: it only holds sealed values, and they keep opening as
//! long as the old key stays in `BILLING_KEYS` (drop an old key only after a rekey, and
//! once cached entries have expired).

use super::db_error;
use sqlx::PgPool;
use sqlx::types::{Json, Uuid};

use crate::crypto::{BillingKeys, Place};
use user_domain::error::CoreError;

/// What a rekey did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RekeyStats {
    /// Rows with billing info looked at.
    pub scanned: u64,
    /// Rows whose billing info was re-sealed.
    pub changed: u64,
}

/// Re-seals every stored billing value not under the current key, `batch` rows at a time
/// (deleted users included: their rows keep billing data too).
pub async fn rekey(pool: &PgPool, keys: &BillingKeys, batch: i64) -> Result<RekeyStats, CoreError> {
    let mut stats = RekeyStats::default();
    let mut after = Uuid::nil();
    loop {
        let mut tx = pool.begin().await.map_err(db_error)?;
        let rows: Vec<(Uuid, Json<serde_json::Value>)> = sqlx::query_as(
            "SELECT id, billing_info FROM users
             WHERE id > $1 AND billing_info IS NOT NULL
             ORDER BY id LIMIT $2
             FOR NO KEY UPDATE",
        )
        .bind(after)
        .bind(batch.max(1))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some((last, _)) = rows.last() else {
            break;
        };
        after = *last;
        for (id, Json(mut info)) in rows {
            stats.scanned += 1;
            let changed = keys
                .rekey_billing(&mut info, Place::User(id.into()))
                .map_err(|e| CoreError::Internal(format!("billing info of user {id}: {e}")))?;
            if changed {
                sqlx::query("UPDATE users SET billing_info = $2 WHERE id = $1")
                    .bind(id)
                    .bind(Json(&info))
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                stats.changed += 1;
            }
        }
        tx.commit().await.map_err(db_error)?;
    }
    Ok(stats)
}
