//! Test knobs: schedules the tests shorten so that they do not wait out production's. Not
//! for operators (the README's configuration table leaves them out); unset, each is the
//! production schedule.

use std::time::Duration;

use user_core::publisher::RetrySchedule;

use super::{ConfigError, err, parse_num};

/// Waits are 1 ms to an hour.
const MAX_MS: u64 = 3_600_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Schedules {
    /// `EVENT_RETRY_FIRST_MS`, `EVENT_RETRY_MAX_MS`: when an event the broker refused is
    /// tried again (100 ms, doubling, to 10 s).
    pub event_retry: RetrySchedule,
}

impl Schedules {
    pub(super) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = RetrySchedule::default();
        let ms = |var: &'static str, default: Duration| {
            let default = u64::try_from(default.as_millis()).unwrap_or(MAX_MS);
            match parse_num(var, get(var), default)? {
                ms @ 1..=MAX_MS => Ok(Duration::from_millis(ms)),
                _ => Err(err(var, format!("expected 1 to {MAX_MS} (ms)"))),
            }
        };
        let event_retry = RetrySchedule {
            first: ms("EVENT_RETRY_FIRST_MS", d.first)?,
            max: ms("EVENT_RETRY_MAX_MS", d.max)?,
        };
        if event_retry.max < event_retry.first {
            return Err(err("EVENT_RETRY_MAX_MS", "below EVENT_RETRY_FIRST_MS"));
        }
        Ok(Self { event_retry })
    }
}
