//! `users.erase`: a user's personal data destroyed everywhere the service keeps it (the users
//! table, the ledger's replies, the outbox, its history, the cache), and what accounting needs kept: the
//! id, the dates and the payments with their totals. Also the background erasure of users
//! deleted long ago (`ERASE_DELETED_AFTER_DAYS`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::types::Uuid;

use super::db::{Db, Written};
use super::ledger::{self, Keyed};
use super::{HUNG_AFTER, db_error, outbox};
use serde_json::Value;
use sqlx::PgConnection;
use sqlx::types::Json;
use user_domain::call::Reply;
use user_domain::error::CoreError;
use user_domain::events::{Event, EventType, Origin};
use user_domain::{Email, UserId};

/// Erases the user, live or deleted; answers 204, again 204 once it is erased. The user's
/// events, published or not, are deleted; `user.erased` (which carries nothing personal) is
/// its only one left.
pub(super) async fn erase(
    db: &Db,
    id: UserId,
    keyed: Option<&Keyed>,
    corr: &Origin,
) -> Result<Reply, CoreError> {
    db.write(keyed, async |tx| {
        let found: Option<(String, Option<DateTime<Utc>>)> =
            sqlx::query_as("SELECT email, erased_at FROM users WHERE id = $1 FOR NO KEY UPDATE")
                .bind(id.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        let email = match found {
            None => return Err(CoreError::UserNotFound(id.to_string())),
            Some((_, Some(_))) => return Ok(Written::unchanged(Reply::no_content())),
            Some((email, None)) => email,
        };
        // The payment totals stay: the payments behind them are accounting records.
        sqlx::query(
            "UPDATE users SET email = '', name = '', password_hash = '', avatar_url = NULL,
                    last_login_at = NULL, last_login_ip = NULL, preferences = '{}',
                    privacy_settings = '{}', billing_info = NULL, metadata = '{}',
                    deleted_at = coalesce(deleted_at, now()), erased_at = now(),
                    updated_at = now()
              WHERE id = $1",
        )
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        sqlx::query(
            "WITH history AS (DELETE FROM user_history WHERE user_id = $1)
             DELETE FROM outbox WHERE user_id = $1",
        )
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        forget_replies(&mut *tx, id, &email).await?;
        let erased = Event::new(EventType::UserErased, id, corr, json!({}));
        outbox::append(tx, &[erased]).await?;
        Ok(Written {
            reply: Reply::no_content(),
            stale: vec![(id, Email::parse(&email).ok().into_iter().collect())],
        })
    })
    .await
}

/// How often the users deleted long enough ago are looked for, and how many are erased a
/// round.
const ERASE_EVERY: Duration = Duration::from_secs(60);
const ERASE_AT_ONCE: i64 = 100;

/// Erases, now and every [`ERASE_EVERY`], the users deleted more than `after` ago. Every
/// instance runs it: an erasure takes the user's row lock, and a second one of the same user
/// finds it erased.
pub(super) async fn erase_deleted(db: Db, after: Duration) {
    let after = chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
    loop {
        let round = async {
            let cutoff = Utc::now().checked_sub_signed(after).unwrap_or_default();
            let due: Vec<Uuid> = sqlx::query_scalar(
                "SELECT id FROM users WHERE deleted_at < $1 AND erased_at IS NULL
                  ORDER BY deleted_at LIMIT $2",
            )
            .bind(cutoff)
            .bind(ERASE_AT_ONCE)
            .fetch_all(&db.pool)
            .await
            .map_err(db_error)?;
            let mut erased: i64 = 0;
            for id in due {
                erase(&db, UserId::from(id), None, &Origin::service()).await?;
                erased += 1;
            }
            Ok::<_, CoreError>(erased)
        };
        match tokio::time::timeout(HUNG_AFTER, round).await {
            Ok(Ok(0)) => {}
            Ok(Ok(erased)) => {
                tracing::info!(
                    erased,
                    "erased users deleted before ERASE_DELETED_AFTER_DAYS"
                );
                // More may be due: go on at once.
                if erased == ERASE_AT_ONCE {
                    continue;
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "could not erase users deleted long ago"),
            Err(_) => tracing::warn!(
                "could not erase users deleted long ago: the database did not answer for {HUNG_AFTER:?}"
            ),
        }
        tokio::time::sleep(ERASE_EVERY).await;
    }
}

/// Destroys what the ledger holds of the user `id` (its address `email`), in the erasure's
/// transaction. A reply about the user is replaced by its id, and its key answers 404 from
/// now on (a request delivered again must not write the user back); a reply that names it among
/// others (a batch create's conflicts) loses its address.
async fn forget_replies(conn: &mut PgConnection, id: UserId, email: &str) -> Result<(), CoreError> {
    let (id_text, email) = (id.to_string(), email.to_lowercase());
    let naming: Vec<(String, Json<Value>)> = sqlx::query_as(
        "SELECT request_key, body FROM applied_requests
          WHERE user_id IS NULL AND fingerprint <> $3
            AND (strpos(body::text, $1) > 0 OR strpos(lower(body::text), $2) > 0)
          FOR UPDATE",
    )
    .bind(&id_text)
    .bind(&email)
    .bind(ledger::ERASED)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error)?;
    let mut about_the_user = Vec::new();
    for (key, Json(mut body)) in naming {
        if body.get("id").and_then(Value::as_str) == Some(&id_text) {
            about_the_user.push(key);
            continue;
        }
        scrub(&mut body, &email);
        sqlx::query("UPDATE applied_requests SET body = $2::json WHERE request_key = $1")
            .bind(key)
            .bind(body.to_string())
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    sqlx::query(
        "UPDATE applied_requests SET fingerprint = $3, status = 404, body = to_json($1::text)
          WHERE user_id = $1 OR request_key = ANY($2)",
    )
    .bind(id.as_uuid())
    .bind(&about_the_user)
    .bind(ledger::ERASED)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// `v` without `email` (lower case) in any of its strings.
fn scrub(v: &mut Value, email: &str) {
    match v {
        Value::String(s) if s.to_lowercase().contains(email) => {
            *s = s.to_lowercase().replace(email, "(erased)");
        }
        Value::Array(items) => items.iter_mut().for_each(|v| scrub(v, email)),
        Value::Object(m) => m.values_mut().for_each(|v| scrub(v, email)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn scrubbing_takes_the_address_out_of_every_string_and_nothing_else() {
        let mut reply = json!({"results": [
            {"index": 0, "status": "conflict",
             "error": {"code": "EMAIL_TAKEN", "message": "email Ann@Example.com is already taken"}},
            {"index": 1, "status": "created", "id": "0191d9b2-8e1f-7c3a-9a4e-0c1d2e3f4a5b"},
        ], "stats": {"requested": 2}});
        super::scrub(&mut reply, "ann@example.com");
        assert_eq!(
            reply["results"][0]["error"]["message"],
            "email (erased) is already taken"
        );
        assert_eq!(
            reply["results"][1]["id"],
            "0191d9b2-8e1f-7c3a-9a4e-0c1d2e3f4a5b"
        );
        assert_eq!(reply["stats"]["requested"], 2);
        assert!(!reply.to_string().to_lowercase().contains("ann@example.com"));
    }
}
