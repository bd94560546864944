//! The shape every single-user write takes: load under a row lock, apply a pure [`edits`]
//! function, save the user and its events in one transaction, then invalidate the cache.

use super::db_error;
use super::error::is_email_taken;

use serde_json::{Value, json};

use super::db::{Db, Written};
use super::edits::Edit;
use super::ledger::Keyed;
use super::{outbox, rows};
use crate::crypto::BillingKeys;
use user_domain::call::Reply;
use user_domain::error::CoreError;
use user_domain::events::{Event, EventType, Origin};
use user_domain::{Email, Timestamp, User, UserId, views};

/// Loads the user under a row lock, applies `edit`, and saves the result with its events;
/// answers with `view` of the user. An edit without events changed nothing: only its reply
/// is recorded (for a keyed request), and the user is answered as it is.
pub(super) async fn modify(
    db: &Db,
    id: UserId,
    keyed: Option<&Keyed>,
    edit: impl FnOnce(&User) -> Result<Edit, CoreError>,
    view: fn(&User) -> Value,
) -> Result<Reply, CoreError> {
    db.write(keyed, async |tx| {
        let current = rows::fetch_for_update(&mut *tx, &db.keys, id).await?;
        let Edit { mut user, events } = edit(&current)?;
        if events.is_empty() {
            return Ok(Written::unchanged(Reply::ok(view(&current))));
        }
        user.updated_at = Timestamp::now();
        save(tx, &db.keys, &user, &events).await?;
        Ok(Written {
            reply: Reply::ok(view(&user)),
            stale: vec![(id, vec![current.email, user.email])],
        })
    })
    .await
}

pub(super) async fn save(
    tx: &mut sqlx::PgConnection,
    keys: &BillingKeys,
    user: &User,
    events: &[Event],
) -> Result<(), CoreError> {
    rows::save(&mut *tx, keys, user).await?;
    outbox::append(tx, events).await?;
    Ok(())
}

/// Soft-deletes the live user; answers 204.
pub(super) async fn delete(
    db: &Db,
    id: UserId,
    keyed: Option<&Keyed>,
    corr: &Origin,
) -> Result<Reply, CoreError> {
    db.write(keyed, async |tx| {
        let email: String = sqlx::query_scalar(
            "UPDATE users SET deleted_at = now(), updated_at = now()
             WHERE id = $1 AND deleted_at IS NULL
             RETURNING email",
        )
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or_else(|| CoreError::UserNotFound(id.to_string()))?;
        outbox::append(
            tx,
            &[Event::new(EventType::UserDeleted, id, corr, json!({}))],
        )
        .await?;
        Ok(Written {
            reply: Reply::no_content(),
            stale: vec![(id, Email::parse(&email).ok().into_iter().collect())],
        })
    })
    .await
}

/// Brings back the soft-deleted user as it was and answers it; a live user is answered as it
/// is, with no event. 409 `EMAIL_TAKEN` when a live user holds its e-mail now; 404 for an
/// erased user, whose data is gone.
pub(super) async fn restore(
    db: &Db,
    id: UserId,
    keyed: Option<&Keyed>,
    corr: &Origin,
) -> Result<Reply, CoreError> {
    db.write(keyed, async |tx| {
        let deleted: Option<(String, bool)> = sqlx::query_as(
            "SELECT email, erased_at IS NOT NULL FROM users
              WHERE id = $1 AND deleted_at IS NOT NULL FOR NO KEY UPDATE",
        )
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        if deleted.as_ref().is_some_and(|(_, erased)| *erased) {
            return Err(CoreError::UserErased(id.to_string()));
        }
        let deleted = deleted.map(|(email, _)| email);
        if let Some(email) = &deleted {
            sqlx::query("UPDATE users SET deleted_at = NULL, updated_at = now() WHERE id = $1")
                .bind(id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(|e| match is_email_taken(&e) {
                    true => CoreError::EmailTaken(email.clone()),
                    false => db_error(e),
                })?;
        }
        let user = rows::fetch_for_update(&mut *tx, &db.keys, id).await?;
        let reply = Reply::ok(views::user(&user));
        if deleted.is_none() {
            return Ok(Written::unchanged(reply));
        }
        let restored = Event::new(EventType::UserRestored, id, corr, json!({}));
        outbox::append(tx, &[restored]).await?;
        Ok(Written {
            reply,
            stale: vec![(id, vec![user.email])],
        })
    })
    .await
}
