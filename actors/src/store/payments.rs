//! Payments: each `paymentId` is added to its user's totals once, in one currency.

use super::db_error;
use serde_json::Value;
use sqlx::PgConnection;
use sqlx::types::Uuid;

use super::db::{Db, Written};
use super::edits::{self, Edit};
use super::ledger::Keyed;
use super::rows;
use super::writes::save;

use user_domain::call::Reply;
use user_domain::error::CoreError;
use user_domain::events::Origin;
use user_domain::request::Payment;
use user_domain::views;
use user_domain::{Currency, Timestamp, User, UserId};

/// Adds a payment to the user's totals: the payment row and the new totals commit together.
/// A `paymentId` recorded before answers 200 with the current totals when it is the same
/// payment (user, amount, currency), and 409 `CONFLICT` otherwise. A payment in a currency
/// other than the user's (its billing currency, and the currency of its earlier payments) is
/// refused: totals are never summed across currencies.
pub(super) async fn record(
    db: &Db,
    id: UserId,
    p: Payment,
    keyed: Option<&Keyed>,
    corr: &Origin,
) -> Result<Reply, CoreError> {
    db.write(keyed, async |tx| {
        let current = rows::fetch_for_update(&mut *tx, &db.keys, id).await?;
        let running = running_currency(&mut *tx, id).await?;
        let billing = current.billing_info.as_ref().map(|b| b.currency.clone());
        let currency = p
            .currency
            .clone()
            .or_else(|| billing.clone())
            .or_else(|| running.clone())
            .unwrap_or_default();
        let paid_at = p.paid_at.unwrap_or_else(Timestamp::now);

        if let Some(earlier) = recorded(&mut *tx, &p).await? {
            return same_payment(earlier, id, &p, &currency, &current).map(Written::unchanged);
        }
        for (theirs, what) in [(billing, "billing currency"), (running, "earlier payments")] {
            if let Some(theirs) = theirs.filter(|c| *c != currency) {
                return Err(CoreError::invalid(
                    "currency",
                    format!("must be the user's currency: {theirs} (its {what}), not {currency}"),
                ));
            }
        }
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO payments (payment_id, user_id, amount_minor, currency, paid_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (payment_id) DO NOTHING
             RETURNING user_id",
        )
        .bind(p.payment_id.as_ref())
        .bind(id.as_uuid())
        .bind(p.amount.minor())
        .bind(currency.as_ref())
        .bind(paid_at.as_datetime())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        if inserted.is_none() {
            // Recorded by a concurrent request for another user since we looked.
            let earlier = recorded(&mut *tx, &p).await?.ok_or_else(|| {
                CoreError::Internal(format!("payment {} vanished", p.payment_id.as_ref()))
            })?;
            return same_payment(earlier, id, &p, &currency, &current).map(Written::unchanged);
        }
        let Edit { mut user, events } = edits::payment(
            &current,
            &Payment {
                paid_at: Some(paid_at),
                ..p
            },
            corr,
        )?;
        user.updated_at = Timestamp::now();
        save(tx, &db.keys, &user, &events).await?;
        Ok(Written {
            reply: Reply::created(views::billing(&user)),
            stale: vec![(id, vec![user.email])],
        })
    })
    .await
}

/// A payment as recorded: its user, amount (minor units) and currency.
type Recorded = (Uuid, i64, String);

async fn recorded(conn: &mut PgConnection, p: &Payment) -> Result<Option<Recorded>, CoreError> {
    sqlx::query_as("SELECT user_id, amount_minor, currency FROM payments WHERE payment_id = $1")
        .bind(p.payment_id.as_ref())
        .fetch_optional(conn)
        .await
        .map_err(db_error)
}

/// The currency the user's totals are in: that of its earlier payments, if any.
async fn running_currency(
    conn: &mut PgConnection,
    id: UserId,
) -> Result<Option<Currency>, CoreError> {
    let stored: Option<String> =
        sqlx::query_scalar("SELECT currency FROM payments WHERE user_id = $1 LIMIT 1")
            .bind(id.as_uuid())
            .fetch_optional(conn)
            .await
            .map_err(db_error)?;
    stored
        .map(|c| {
            user_domain::error::from_json(Value::String(c), "currency")
                .map_err(|e| CoreError::Internal(format!("stored payment currency: {e}")))
        })
        .transpose()
}

/// The same payment again answers 200 with the current totals; another payment under the
/// same id is a conflict.
fn same_payment(
    (owner, amount, recorded_currency): Recorded,
    id: UserId,
    p: &Payment,
    currency: &Currency,
    current: &User,
) -> Result<Reply, CoreError> {
    let differs = if owner != id.as_uuid() {
        Some("user")
    } else if amount != p.amount.minor() {
        Some("amount")
    } else if recorded_currency != currency.as_ref() {
        Some("currency")
    } else {
        None
    };
    match differs {
        None => Ok(Reply::ok(views::billing(current))),
        Some(what) => Err(CoreError::Conflict(format!(
            "paymentId {} is already recorded with another {what}",
            p.payment_id.as_ref()
        ))),
    }
}
