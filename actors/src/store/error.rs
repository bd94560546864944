//! How database failures reach callers: unreachable → `UNAVAILABLE`, anything unexpected →
//! `INTERNAL` (logged here, never shown).

use user_domain::error::CoreError;

/// The unique index that makes e-mail addresses case-insensitively unique among live users.
pub(super) const EMAIL_INDEX: &str = "users_email_live_key";

/// The one mapping of a database failure to what the caller sees (use as `.map_err(db_error)`).
pub(crate) fn db_error(e: sqlx::Error) -> CoreError {
    use sqlx::Error as E;
    match &e {
        E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => {
            tracing::warn!(error = %e, "database unavailable");
            CoreError::Unavailable("database is unavailable, retry later".to_owned())
        }
        E::Database(db) if is_transient(db.code().as_deref()) => {
            tracing::warn!(error = %e, "database unavailable");
            CoreError::Unavailable("database is unavailable, retry later".to_owned())
        }
        _ => {
            tracing::error!(error = %e, "database error");
            CoreError::Internal(e.to_string())
        }
    }
}

/// SQLSTATE classes that mean "try again": connection exceptions, shutdown, too many clients.
fn is_transient(code: Option<&str>) -> bool {
    code.is_some_and(|c| {
        c.starts_with("08") || c.starts_with("57P") || c == "53300" || c == "40001" || c == "40P01"
    })
}

/// True when `e` is a violation of the unique e-mail index.
pub(super) fn is_email_taken(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|db| db.is_unique_violation() && db.constraint() == Some(EMAIL_INDEX))
}
