//! The REST edge's bounds on what one client may hold: time to send a request's head and
//! body, time a kept-alive connection may stay idle, and how many connections are open.

use std::time::Duration;

use super::{ConfigError, err, parse_num};

/// Timeouts are 1 ms to an hour: zero would mean "never" and no wait here is unbounded.
const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// Read from `HTTP_HEADER_TIMEOUT_MS`, `HTTP_BODY_TIMEOUT_MS`, `HTTP_IDLE_TIMEOUT_MS` and
/// `HTTP_MAX_CONNECTIONS`; see the README's configuration table for why these defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// From a connection's opening, or the first byte of a later request, to its complete head.
    pub header_timeout: Duration,
    /// From the end of a request's head to the end of its body.
    pub body_timeout: Duration,
    /// From the end of a response to the first byte of the next request.
    pub idle_timeout: Duration,
    /// Open connections at most; further ones wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

impl HttpLimits {
    pub(super) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let timeout = |var: &'static str, default: Duration| {
            let ms = u64::try_from(default.as_millis()).unwrap_or(MAX_TIMEOUT_MS);
            match parse_num(var, get(var), ms)? {
                ms @ 1..=MAX_TIMEOUT_MS => Ok(Duration::from_millis(ms)),
                _ => Err(err(var, format!("expected 1 to {MAX_TIMEOUT_MS} (ms)"))),
            }
        };
        Ok(Self {
            header_timeout: timeout("HTTP_HEADER_TIMEOUT_MS", d.header_timeout)?,
            body_timeout: timeout("HTTP_BODY_TIMEOUT_MS", d.body_timeout)?,
            idle_timeout: timeout("HTTP_IDLE_TIMEOUT_MS", d.idle_timeout)?,
            max_connections: match parse_num(
                "HTTP_MAX_CONNECTIONS",
                get("HTTP_MAX_CONNECTIONS"),
                d.max_connections,
            )? {
                n @ 1..=1_000_000 => n,
                _ => return Err(err("HTTP_MAX_CONNECTIONS", "expected 1 to 1000000")),
            },
        })
    }
}
