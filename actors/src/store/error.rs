//! How database failures reach callers: unreachable or contended → `UNAVAILABLE`, anything
//! unexpected → `INTERNAL` (logged here, never shown).

use super::guard::{LOST, UNREACHABLE};
use user_domain::error::CoreError;

/// The unique index that makes e-mail addresses case-insensitively unique among live users.
pub(super) const EMAIL_INDEX: &str = "users_email_live_key";

/// The one mapping of a database failure to what the caller sees (use as `.map_err(db_error)`).
pub(crate) fn db_error(e: sqlx::Error) -> CoreError {
    use sqlx::Error as E;
    let code = e.as_database_error().and_then(|d| d.code());
    match (&e, code.as_deref()) {
        // A connection handed out, then closed by the server or the network under a
        // statement (a refused connect is retried by the pool until it times out).
        (E::Io(_), _) | (E::Database(_), Some("57P01" | "57P02" | "08003" | "08006")) => {
            tracing::warn!(error = %e, "database connection lost");
            CoreError::Unavailable(LOST.to_owned())
        }
        (E::PoolTimedOut | E::PoolClosed | E::Tls(_) | E::WorkerCrashed, _) => unreachable(&e),
        (E::Database(_), Some(c)) if is_unreachable(c) => unreachable(&e),
        // The database answers: this write met another one.
        (E::Database(_), Some("40001" | "40P01")) => {
            tracing::warn!(error = %e, "write conflict");
            CoreError::Unavailable("the write met a concurrent one; retry later".to_owned())
        }
        _ => {
            tracing::error!(error = %e, "database error");
            CoreError::Internal(e.to_string())
        }
    }
}

fn unreachable(e: &sqlx::Error) -> CoreError {
    tracing::warn!(error = %e, "database unavailable");
    CoreError::Unavailable(UNREACHABLE.to_owned())
}

/// SQLSTATE classes that mean the server cannot serve now: connection exceptions, shutdown,
/// too many clients.
fn is_unreachable(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P") || code == "53300"
}

/// True when `e` is a violation of the unique e-mail index.
pub(super) fn is_email_taken(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|db| db.is_unique_violation() && db.constraint() == Some(EMAIL_INDEX))
}
