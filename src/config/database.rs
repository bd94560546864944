//! PostgreSQL: where it is, how many connections each kind of work may hold, and how long a
//! request and the migrations at start may wait for it.

use std::time::Duration;

use super::{ConfigError, err, parse_num};

/// Read from `DATABASE_URL`, `DB_POOL_SIZE`, `DB_READ_CONNECTIONS`, `DB_ACQUIRE_TIMEOUT_MS`
/// and `DB_MIGRATION_TIMEOUT_SECONDS`; see the README's configuration table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    pub url: String,
    /// Connections of writes and of the service's own work.
    pub pool_size: u32,
    /// Connections of the reads the cache could not answer, besides `pool_size`.
    pub read_connections: u32,
    /// How long a request waits for the database before answering 503.
    pub acquire_timeout: Duration,
    /// The bound on the migrations at start, each statement and all together.
    pub migration_timeout: Duration,
}

impl Database {
    pub(super) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let url = get("DATABASE_URL")
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/user_service".to_owned());
        let read_connections =
            match parse_num("DB_READ_CONNECTIONS", get("DB_READ_CONNECTIONS"), 4)? {
                0 => return Err(err("DB_READ_CONNECTIONS", "expected at least 1")),
                n => n,
            };
        let migration_secs = match parse_num(
            "DB_MIGRATION_TIMEOUT_SECONDS",
            get("DB_MIGRATION_TIMEOUT_SECONDS"),
            600,
        )? {
            s @ 1..=86_400 => s,
            _ => return Err(err("DB_MIGRATION_TIMEOUT_SECONDS", "expected 1 to 86400")),
        };
        Ok(Self {
            url,
            pool_size: parse_num("DB_POOL_SIZE", get("DB_POOL_SIZE"), 16)?,
            read_connections,
            acquire_timeout: Duration::from_millis(parse_num(
                "DB_ACQUIRE_TIMEOUT_MS",
                get("DB_ACQUIRE_TIMEOUT_MS"),
                2000,
            )?),
            migration_timeout: Duration::from_secs(migration_secs),
        })
    }
}
