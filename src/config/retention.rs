//! How long the service keeps what it keeps: published events, the ledger's replies, dead
//! letters in the broker, users' history, and deleted users before they are erased.

use std::time::Duration;

use super::{ConfigError, err, parse_num};

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Published events stay in the outbox this long (`OUTBOX_RETENTION_HOURS`, 24).
    pub outbox: Duration,
    /// The ledger of applied requests remembers a request key and its reply this long
    /// (`IDEMPOTENCY_RETENTION_HOURS`, 24).
    pub idempotency: Duration,
    /// A dead letter expires in the broker after this (`DEAD_LETTER_TTL_HOURS`, 168): it
    /// may hold personal data, out of the service's reach.
    pub dead_letters: Duration,
    /// A user's history is kept this long (`AUDIT_RETENTION_DAYS`, 365).
    pub audit: Duration,
    /// Soft-deleted users are erased this long after their deletion
    /// (`ERASE_DELETED_AFTER_DAYS`); never when unset (the default).
    pub erase_deleted_after: Option<Duration>,
}

impl Retention {
    pub(super) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // `var` in `unit`s, 1 to `max` of them.
        let span = |var: &'static str, default: u64, unit: u64, max: u64| match parse_num::<u64>(
            var,
            get(var),
            default,
        )? {
            n @ 1.. if n <= max => Ok(Duration::from_secs(n * unit)),
            _ => Err(err(var, format!("expected 1 to {max}"))),
        };
        let erase_after = "ERASE_DELETED_AFTER_DAYS";
        Ok(Self {
            outbox: span("OUTBOX_RETENTION_HOURS", 24, HOUR, 87_600)?,
            idempotency: span("IDEMPOTENCY_RETENTION_HOURS", 24, HOUR, 87_600)?,
            dead_letters: span("DEAD_LETTER_TTL_HOURS", 168, HOUR, 87_600)?,
            audit: span("AUDIT_RETENTION_DAYS", 365, DAY, 36_500)?,
            erase_deleted_after: match get(erase_after).filter(|v| !v.is_empty()) {
                None => None,
                Some(_) => Some(span(erase_after, 0, DAY, 36_500)?),
            },
        })
    }
}
