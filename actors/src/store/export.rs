//! `users.export`: everything the service holds about one user, live or deleted, as one
//! document (a subject access request: 152-FZ article 14, GDPR article 15). Read straight
//! from PostgreSQL, in one snapshot.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::FromRow;

use super::db::Db;
use super::db_error;
use super::rows::{UserRow, select_users};
use user_domain::call::Reply;
use user_domain::error::CoreError;
use user_domain::{Amount, Timestamp, UserId, views};

/// The user's full view (profile, preferences, privacy settings, billing info opened,
/// billing stats, last login with its address, metadata), the payments behind its stats, and
/// its deletion state. The password hash is held but not exported: it is a credential. An
/// erased user is not found: nothing personal is held about it any more.
pub(super) async fn export(db: &Db, id: UserId) -> Result<Reply, CoreError> {
    db.asked("users", || document(db, id)).await.map(Reply::ok)
}

async fn document(db: &Db, id: UserId) -> Result<Value, CoreError> {
    #[derive(FromRow)]
    struct Row {
        deleted_at: Option<DateTime<Utc>>,
        #[sqlx(flatten)]
        user: UserRow,
    }
    #[derive(FromRow)]
    struct PaymentRow {
        payment_id: String,
        amount_minor: i64,
        currency: String,
        paid_at: DateTime<Utc>,
        recorded_at: DateTime<Utc>,
    }
    let mut tx = db.readers.pool().begin().await.map_err(db_error)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    let row: Option<Row> = sqlx::query_as(select_users!(
        "deleted_at, ",
        "WHERE id = $1 AND erased_at IS NULL"
    ))
    .bind(id.as_uuid())
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_error)?;
    let row = row.ok_or_else(|| CoreError::UserNotFound(id.to_string()))?;
    let payments: Vec<PaymentRow> = sqlx::query_as(
        "SELECT payment_id, amount_minor, currency, paid_at, recorded_at FROM payments
          WHERE user_id = $1 ORDER BY paid_at, payment_id",
    )
    .bind(id.as_uuid())
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    let user = row.user.into_user(&db.keys)?;
    let payments: Vec<Value> = payments
        .into_iter()
        .map(|p| {
            json!({
                "paymentId": p.payment_id,
                "amount": Amount::from_minor(p.amount_minor),
                "currency": p.currency,
                "paidAt": Timestamp::from(p.paid_at),
                "recordedAt": Timestamp::from(p.recorded_at),
            })
        })
        .collect();
    Ok(json!({
        "exportedAt": Timestamp::now(),
        "user": views::user(&user),
        "payments": payments,
        "deletedAt": row.deleted_at.map(Timestamp::from),
    }))
}
