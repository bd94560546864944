//! The users table, row by row.

use super::db_error;
use chrono::{DateTime, Utc};
use serde_json::Value;
use serde_json::value::RawValue;
use sqlx::types::{Json, Uuid};
use sqlx::{FromRow, PgConnection, PgExecutor};

use super::error::is_email_taken;
use crate::crypto::{BillingKeys, Place};
use user_domain::error::{CoreError, from_json, from_raw};
use user_domain::{
    Amount, AvatarUrl, BillingStats, Email, PasswordHash, Timestamp, User, UserId, UserName,
};

/// Every column [`UserRow`] reads, comma-separated.
macro_rules! user_columns {
    () => {
        concat!(
            "id, email, name, avatar_url, is_active, last_login_at, ",
            "last_login_ip, created_at, updated_at, preferences, privacy_settings, billing_info, ",
            "last_payment_at, total_spent_minor, payments_count, metadata"
        )
    };
}

/// `SELECT` of every column [`UserRow`] reads (after any `$extra` columns) from `users`,
/// followed by the rest of the statement.
macro_rules! select_users {
    ($rest:literal) => {
        select_users!("", $rest)
    };
    ($extra:literal, $rest:literal) => {
        concat!(
            "SELECT ",
            $extra,
            $crate::store::rows::user_columns!(),
            " FROM users ",
            $rest
        )
    };
}

pub(super) use {select_users, user_columns};

/// Every column [`UserRow`] reads, for statements built elsewhere (the load bench's ceilings).
pub const USER_COLUMNS: &str = user_columns!();
/// The live user with the id `$1`.
pub const BY_ID: &str = select_users!("WHERE id = $1 AND deleted_at IS NULL");
/// The live users with the ids `$1` (an array).
pub const BY_IDS: &str = select_users!("WHERE id = ANY($1) AND deleted_at IS NULL");
/// The live user with the lower-case address `$1`.
pub const BY_EMAIL: &str = select_users!("WHERE lower(email) = $1 AND deleted_at IS NULL");
/// The live users with the lower-case addresses `$1` (an array).
const BY_EMAILS: &str = select_users!("WHERE lower(email) = ANY($1) AND deleted_at IS NULL");

#[derive(FromRow)]
pub(super) struct UserRow {
    pub(super) id: Uuid,
    email: String,
    name: String,
    avatar_url: Option<String>,
    is_active: bool,
    last_login_at: Option<DateTime<Utc>>,
    last_login_ip: Option<String>,
    /// As stored, to the microsecond (a user's `createdAt` is cut to the millisecond).
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
    // Read as text and decoded straight into their types: no tree of values on the way.
    preferences: Json<Box<RawValue>>,
    privacy_settings: Json<Box<RawValue>>,
    billing_info: Option<Json<Value>>,
    last_payment_at: Option<DateTime<Utc>>,
    total_spent_minor: i64,
    payments_count: i64,
    metadata: Json<Box<RawValue>>,
}

impl UserRow {
    /// The e-mail address as stored, before it is checked.
    pub(super) fn address(&self) -> &str {
        &self.email
    }

    /// Rows were valid when written; a row that no longer parses was edited behind the
    /// service's back, and is reported as an internal error rather than served. The sealed
    /// billing fields are opened with `keys`.
    pub(super) fn into_user(self, keys: &BillingKeys) -> Result<User, CoreError> {
        let r = self;
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            CoreError::Internal(format!("stored user {} has an invalid {what}: {e}", r.id))
        };
        Ok(User {
            id: UserId::from(r.id),
            email: Email::parse(&r.email).map_err(|e| corrupt("email", &e))?,
            name: UserName::parse(&r.name).map_err(|e| corrupt("name", &e))?,
            avatar_url: r
                .avatar_url
                .clone()
                .map(AvatarUrl::parse)
                .transpose()
                .map_err(|e| corrupt("avatar URL", &e))?,
            is_active: r.is_active,
            last_login_at: r.last_login_at.map(Timestamp::from),
            last_login_ip: r
                .last_login_ip
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| corrupt("login IP", &e))?,
            created_at: r.created_at.into(),
            updated_at: r.updated_at.into(),
            preferences: from_raw(r.preferences.0.get(), "preferences")
                .map_err(|e| corrupt("preferences", &e))?,
            privacy_settings: from_raw(r.privacy_settings.0.get(), "privacySettings")
                .map_err(|e| corrupt("privacy settings", &e))?,
            billing_info: r
                .billing_info
                .clone()
                .map(|Json(mut b)| {
                    keys.open_billing(&mut b, Place::User(UserId::from(r.id)))
                        .map_err(|e| {
                            CoreError::Internal(format!("billing info of user {}: {e}", r.id))
                        })?;
                    // Its values are personal: the log names the field, not what broke it.
                    from_json(b, "billingInfo").map_err(|_| corrupt("billing info", &"shape"))
                })
                .transpose()?,
            billing_stats: BillingStats {
                last_payment_at: r.last_payment_at.map(Timestamp::from),
                total_spent: Amount::from_minor(r.total_spent_minor),
                payments_count: r.payments_count,
            },
            metadata: from_raw(r.metadata.0.get(), "metadata")
                .map_err(|e| corrupt("metadata", &e))?,
        })
    }
}

/// Locks the live user for the rest of the transaction.
pub(super) async fn fetch_for_update(
    conn: &mut PgConnection,
    keys: &BillingKeys,
    id: UserId,
) -> Result<User, CoreError> {
    let sql = select_users!("WHERE id = $1 AND deleted_at IS NULL FOR NO KEY UPDATE");
    let row: Option<UserRow> = sqlx::query_as(sql)
        .bind(id.as_uuid())
        .fetch_optional(conn)
        .await
        .map_err(db_error)?;
    row.map(|r| r.into_user(keys))
        .transpose()?
        .ok_or_else(|| CoreError::UserNotFound(id.to_string()))
}

/// The live users with these ids, as stored (see [`UserRow::into_user`]).
pub(super) async fn fetch_many(
    db: impl PgExecutor<'_>,
    ids: &[UserId],
) -> Result<Vec<UserRow>, CoreError> {
    // One id (a read alone in its round) by `id = $1`: PostgreSQL serves that half as fast
    // again as `= ANY` of one (30k against 20k a second here).
    let rows: Vec<UserRow> = match ids {
        [id] => sqlx::query_as(BY_ID).bind(id.as_uuid()).fetch_all(db).await,
        _ => {
            let uuids: Vec<Uuid> = ids.iter().map(UserId::as_uuid).collect();
            sqlx::query_as(BY_IDS).bind(&uuids).fetch_all(db).await
        }
    }
    .map_err(db_error)?;
    Ok(rows)
}

/// The live users with these addresses (lower case, as [`Email`] holds them), as stored.
pub(super) async fn fetch_by_emails(
    db: impl PgExecutor<'_>,
    emails: &[Email],
) -> Result<Vec<UserRow>, CoreError> {
    let rows: Vec<UserRow> = match emails {
        [email] => {
            sqlx::query_as(BY_EMAIL)
                .bind(email.as_ref())
                .fetch_all(db)
                .await
        }
        _ => {
            let emails: Vec<&str> = emails.iter().map(AsRef::as_ref).collect();
            sqlx::query_as(BY_EMAILS).bind(&emails).fetch_all(db).await
        }
    }
    .map_err(db_error)?;
    Ok(rows)
}

/// The live user with this address and its password hash, for credential readers.
pub(super) async fn fetch_credentials(
    db: impl PgExecutor<'_>,
    keys: &BillingKeys,
    email: &Email,
) -> Result<Option<(User, PasswordHash)>, CoreError> {
    #[derive(FromRow)]
    struct Row {
        password_hash: String,
        #[sqlx(flatten)]
        user: UserRow,
    }
    let sql = select_users!(
        "password_hash, ",
        "WHERE lower(email) = $1 AND deleted_at IS NULL"
    );
    let row: Option<Row> = sqlx::query_as(sql)
        .bind(email.as_ref())
        .fetch_optional(db)
        .await
        .map_err(db_error)?;
    row.map(|r| {
        let hash = PasswordHash::parse(r.password_hash).map_err(|e| {
            CoreError::Internal(format!("stored user has an invalid password hash: {e}"))
        })?;
        Ok((r.user.into_user(keys)?, hash))
    })
    .transpose()
}

/// Writes every mutable column of `u`: one statement serves every kind of update. The
/// billing info is stored with its sensitive fields sealed under the current key.
pub(super) async fn save(
    conn: &mut PgConnection,
    keys: &BillingKeys,
    u: &User,
) -> Result<(), CoreError> {
    let billing = match &u.billing_info {
        Some(b) => {
            let mut v = serde_json::to_value(b).map_err(|e| {
                CoreError::Internal(format!("billing info does not serialise: {e}"))
            })?;
            keys.seal_billing(&mut v, Place::User(u.id))?;
            Some(Json(v))
        }
        None => None,
    };
    sqlx::query(
        "UPDATE users SET email = $2, name = $3, avatar_url = $4, is_active = $5,
            last_login_at = $6, last_login_ip = $7, updated_at = $8, preferences = $9,
            privacy_settings = $10, billing_info = $11, last_payment_at = $12,
            total_spent_minor = $13, payments_count = $14, metadata = $15
         WHERE id = $1",
    )
    .bind(u.id.as_uuid())
    .bind(u.email.as_ref())
    .bind(u.name.as_ref())
    .bind(u.avatar_url.as_ref().map(AsRef::<str>::as_ref))
    .bind(u.is_active)
    .bind(u.last_login_at.map(|t| t.as_datetime()))
    .bind(u.last_login_ip.map(|ip| ip.to_string()))
    .bind(u.updated_at.as_datetime())
    .bind(Json(&u.preferences))
    .bind(Json(&u.privacy_settings))
    .bind(billing)
    .bind(u.billing_stats.last_payment_at.map(|t| t.as_datetime()))
    .bind(u.billing_stats.total_spent.minor())
    .bind(u.billing_stats.payments_count)
    .bind(Json(&u.metadata))
    .execute(conn)
    .await
    .map_err(|e| {
        if is_email_taken(&e) {
            CoreError::EmailTaken(u.email.to_string())
        } else {
            db_error(e)
        }
    })?;
    Ok(())
}
