//! Configuration, read once from the environment into typed values (contract section 1).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use user_core::crypto::BillingKeys;
use user_core::limits::{DEFAULT_CALLER, RateLimit};
use user_core::publisher::EventFormat;
use user_service_client::broker::{self, Broker, DEFAULT_AMQP_URL};

use crate::rpc::QueueType;

mod auth;
mod database;
mod http;
mod retention;
mod schedules;
mod spans;
pub use auth::{ApiKey, AuthConfig};
use auth::{parse_api_keys, parse_ips, parse_service_names};
pub use database::Database;
pub use http::HttpLimits;
pub use retention::Retention;
pub use schedules::Schedules;
pub use spans::SpanExport;

#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

fn err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    /// What one REST client may hold: timeouts and the connection cap.
    pub http: HttpLimits,
    /// PostgreSQL: its URL, pools and waits.
    pub database: Database,
    pub redis_url: String,
    /// `AMQP_URL` (one node or a cluster's), and how long the service waits for the broker.
    pub amqp: Broker,
    pub rpc_queue: String,
    pub rpc_queue_type: QueueType,
    /// Most unacknowledged RPC requests per instance: the bound on work in flight.
    pub rpc_prefetch: u16,
    /// Queues a request that failed authentication may be answered into, besides direct
    /// reply-to; empty (the default): none.
    pub rpc_unauthenticated_reply_prefix: String,
    pub events_exchange: String,
    pub cache_prefix: String,
    /// Lifetime of a cached user in Redis; zero turns the cache off.
    pub cache_ttl: Duration,
    pub event_envelope: EventFormat,
    /// How long published events, stored replies, dead letters and deleted users are kept.
    pub retention: Retention,
    pub auth: AuthConfig,
    /// Per caller name; `default` applies to everyone else.
    pub rate_limits: BTreeMap<String, RateLimit>,
    pub app_env: AppEnv,
    pub log_format: LogFormat,
    /// Spans exported over OTLP/HTTP; `None`: not exported.
    pub span_export: Option<SpanExport>,
    /// `BILLING_KEYS`: the keys that seal billing data at rest; `None` when unset (the
    /// development key is used then, outside production only).
    pub billing_keys: Option<Arc<BillingKeys>>,
    /// Test knobs: retry schedules the tests shorten.
    pub schedules: Schedules,
}

const DEFAULT_RATE_LIMITS: &str =
    "auth-service=1000/60,game-catalog=500/60,payment-service=200/60,default=100/60";

/// The most different failed credentials `AUTH_FAILURES_PER_ADDRESS` may allow a source per
/// window: each is remembered (as a fingerprint) until the window ends.
pub const MAX_AUTH_FAILURES: u32 = 1000;

/// `AMQP_URL`, or `AMQP_URLS` as NestJS names its list: one node, or a cluster's nodes
/// separated by commas, shuffled (instances spread over the nodes).
fn amqp_nodes(url: Option<String>, urls: Option<String>) -> Result<Vec<String>, ConfigError> {
    let (var, list) = match (url, urls) {
        (Some(url), Some(urls)) if url != urls => {
            return Err(err("AMQP_URLS", "set AMQP_URL or AMQP_URLS, not both"));
        }
        (_, Some(urls)) => ("AMQP_URLS", urls),
        (url, None) => (
            "AMQP_URL",
            url.unwrap_or_else(|| DEFAULT_AMQP_URL.to_owned()),
        ),
    };
    broker::nodes(&list).map_err(|e| err(var, e.to_string()))
}

/// Keys and secrets shorter than this are refused in production.
pub const MIN_KEY_LEN: usize = 32;

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    /// Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let or = |name: &str, default: &str| get(name).unwrap_or_else(|| default.to_owned());

        let http_addr = match (get("HTTP_ADDR"), get("PORT")) {
            (Some(addr), _) => addr
                .parse()
                .map_err(|_| err("HTTP_ADDR", "expected host:port, e.g. 0.0.0.0:3001"))?,
            (None, Some(port)) => {
                let port: u16 = port
                    .parse()
                    .map_err(|_| err("PORT", "expected a port number"))?;
                SocketAddr::from(([0, 0, 0, 0], port))
            }
            (None, None) => SocketAddr::from(([0, 0, 0, 0], 3001)),
        };

        let rate_limits = parse_rate_limits(&or("RATE_LIMITS", DEFAULT_RATE_LIMITS))?;
        let api_keys = parse_api_keys(&or("INTERNAL_API_KEYS", ""))?;
        let service_names =
            parse_service_names(get("INTERNAL_SERVICE_NAMES"), &rate_limits, &api_keys)?;
        let failures = or("AUTH_FAILURES_PER_ADDRESS", "20/60");
        let auth = AuthConfig {
            api_keys,
            internal_secret: get("INTERNAL_SERVICE_SECRET"),
            service_names,
            allowed_ips: parse_ips(&or("INTERNAL_ALLOWED_IPS", ""))?,
            credential_readers: list(&or("CREDENTIAL_READERS", "auth-service"))
                .map(str::to_owned)
                .collect(),
            export_readers: list(&or("EXPORT_READERS", "")).map(str::to_owned).collect(),
            audit_readers: list(&or("AUDIT_READERS", "")).map(str::to_owned).collect(),
            failures_per_address: parse_rate(&failures)
                .filter(|r| r.requests <= MAX_AUTH_FAILURES)
                .ok_or_else(|| {
                    err(
                        "AUTH_FAILURES_PER_ADDRESS",
                        format!("expected requests/seconds, requests 1 to {MAX_AUTH_FAILURES}"),
                    )
                })?,
        };

        let app_env = match or("APP_ENV", "development").to_ascii_lowercase().as_str() {
            "production" | "prod" => AppEnv::Production,
            _ => AppEnv::Development,
        };

        let config = Self {
            http_addr,
            http: HttpLimits::from_lookup(get)?,
            database: Database::from_lookup(get)?,
            redis_url: or("REDIS_URL", "redis://127.0.0.1:6379"),
            amqp: Broker {
                nodes: amqp_nodes(get("AMQP_URL"), get("AMQP_URLS"))?,
                heartbeat: match parse_num(
                    "AMQP_HEARTBEAT_SECONDS",
                    get("AMQP_HEARTBEAT_SECONDS"),
                    5,
                )? {
                    s @ 1..=600 => s,
                    _ => return Err(err("AMQP_HEARTBEAT_SECONDS", "expected 1 to 600")),
                },
                timeout: match parse_num("AMQP_TIMEOUT_MS", get("AMQP_TIMEOUT_MS"), 5000)? {
                    ms @ 100..=600_000 => Duration::from_millis(ms),
                    _ => return Err(err("AMQP_TIMEOUT_MS", "expected 100 to 600000")),
                },
            },
            // AMQP names are at most 255 bytes; the queue's dead-letter twin adds ".dlq".
            rpc_queue: broker_name("RPC_QUEUE", or("RPC_QUEUE", "user-service.rpc"), 251)?,
            rpc_queue_type: match or("RPC_QUEUE_TYPE", "classic")
                .to_ascii_lowercase()
                .as_str()
            {
                "classic" => QueueType::Classic,
                "quorum" => QueueType::Quorum,
                _ => return Err(err("RPC_QUEUE_TYPE", "expected classic or quorum")),
            },
            rpc_prefetch: match parse_num("RPC_PREFETCH", get("RPC_PREFETCH"), 200)? {
                0 => {
                    return Err(err(
                        "RPC_PREFETCH",
                        "expected 1 or more (0 means unbounded)",
                    ));
                }
                n => n,
            },
            rpc_unauthenticated_reply_prefix: broker_name(
                "RPC_UNAUTHENTICATED_REPLY_PREFIX",
                or("RPC_UNAUTHENTICATED_REPLY_PREFIX", "").trim().to_owned(),
                255,
            )?,
            events_exchange: broker_name(
                "EVENTS_EXCHANGE",
                or("EVENTS_EXCHANGE", "user-service.events"),
                255,
            )?,
            cache_prefix: or("CACHE_PREFIX", "user-service"),
            cache_ttl: Duration::from_secs(parse_num(
                "CACHE_TTL_SECONDS",
                get("CACHE_TTL_SECONDS"),
                300,
            )?),
            event_envelope: match or("EVENT_ENVELOPE", "plain").to_ascii_lowercase().as_str() {
                "plain" => EventFormat::Plain,
                "nestjs" => EventFormat::Nestjs,
                _ => return Err(err("EVENT_ENVELOPE", "expected plain or nestjs")),
            },
            retention: Retention::from_lookup(get)?,
            auth,
            rate_limits,
            app_env,
            log_format: match or("LOG_FORMAT", "pretty").to_ascii_lowercase().as_str() {
                "json" => LogFormat::Json,
                _ => LogFormat::Pretty,
            },
            span_export: SpanExport::from_lookup(get)?,
            billing_keys: get("BILLING_KEYS")
                .map(|k| BillingKeys::parse(&k).map(Arc::new))
                .transpose()
                .map_err(|e| err("BILLING_KEYS", e))?,
            schedules: Schedules::from_lookup(get)?,
        };
        config.check_production()?;
        Ok(config)
    }

    /// The billing keys, or the development key when none are configured (never in
    /// production: [`Config::from_lookup`] refuses that); says which with `true`.
    pub fn billing_keys(&self) -> (Arc<BillingKeys>, bool) {
        match &self.billing_keys {
            Some(k) => (k.clone(), true),
            None => (Arc::new(BillingKeys::development()), false),
        }
    }

    /// Production never runs open, and never with guessable keys.
    fn check_production(&self) -> Result<(), ConfigError> {
        if self.app_env != AppEnv::Production {
            return Ok(());
        }
        if self.auth.is_open() {
            return Err(err(
                "INTERNAL_API_KEYS",
                "APP_ENV=production requires INTERNAL_API_KEYS or INTERNAL_SERVICE_SECRET",
            ));
        }
        if let Some(k) = self.auth.api_keys.iter().find(|k| k.bare) {
            return Err(err(
                "INTERNAL_API_KEYS",
                format!(
                    "the key of '{}' is bare; production keys are name=key",
                    k.caller
                ),
            ));
        }
        if let Some(k) = self
            .auth
            .api_keys
            .iter()
            .find(|k| k.key.chars().count() < MIN_KEY_LEN)
        {
            return Err(err(
                "INTERNAL_API_KEYS",
                format!(
                    "the key of '{}' is shorter than {MIN_KEY_LEN} characters",
                    k.caller
                ),
            ));
        }
        if self
            .auth
            .internal_secret
            .as_ref()
            .is_some_and(|s| s.chars().count() < MIN_KEY_LEN)
        {
            return Err(err(
                "INTERNAL_SERVICE_SECRET",
                format!("shorter than {MIN_KEY_LEN} characters"),
            ));
        }
        if self.billing_keys.is_none() {
            return Err(err(
                "BILLING_KEYS",
                "APP_ENV=production requires BILLING_KEYS (kid:base64key,...)",
            ));
        }
        Ok(())
    }
}

fn list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_num<T: std::str::FromStr>(
    var: &'static str,
    v: Option<String>,
    default: T,
) -> Result<T, ConfigError> {
    v.map_or(Ok(default), |v| {
        v.parse()
            .map_err(|_| err(var, "expected a positive number"))
    })
}

/// `caller=requests/seconds,...`
fn parse_rate_limits(s: &str) -> Result<BTreeMap<String, RateLimit>, ConfigError> {
    let bad = |entry: &str| {
        err(
            "RATE_LIMITS",
            format!("'{entry}' is not caller=requests/seconds"),
        )
    };
    let mut out = BTreeMap::new();
    for entry in list(s) {
        let (caller, rate) = entry.split_once('=').ok_or_else(|| bad(entry))?;
        let caller = caller.trim();
        if caller != DEFAULT_CALLER && !is_caller_name(caller) {
            return Err(bad(entry));
        }
        out.insert(
            caller.to_owned(),
            parse_rate(rate).ok_or_else(|| bad(entry))?,
        );
    }
    Ok(out)
}

/// `requests/seconds`, both at least 1.
fn parse_rate(rate: &str) -> Option<RateLimit> {
    let (requests, secs) = rate.split_once('/')?;
    let requests: u32 = requests.trim().parse().ok().filter(|n| *n > 0)?;
    let secs: u64 = secs.trim().parse().ok().filter(|n| *n > 0)?;
    Some(RateLimit {
        requests,
        window: Duration::from_secs(secs),
    })
}

/// Caller names end up in logs and metric labels: short and plain.
pub fn is_caller_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A queue or exchange name that fits an AMQP short string.
fn broker_name(var: &'static str, name: String, max: usize) -> Result<String, ConfigError> {
    if name.len() > max {
        return Err(err(var, format!("at most {max} bytes")));
    }
    Ok(name)
}

#[cfg(test)]
mod tests;
