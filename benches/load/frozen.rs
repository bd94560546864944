//! The frozen-dependency workloads: the service started by the bench reaches PostgreSQL, Redis
//! and RabbitMQ through TCP relays the bench owns (the tests' relay, `tests/api/relay.rs`),
//! and a `frozen-*` workload freezes one of them — every connection stays open and nothing is
//! forwarded, as with a stopped process — from the start of its warm-up to the end of its
//! measured window, then thaws it and reports how long the service took to say `ok` again.
//! The relays are in place for the whole run as soon as one `frozen-*` workload is selected,
//! so the other workloads of that run measure the same path; they need the three servers on
//! this machine (127.0.0.1).

#[allow(dead_code)] // the tests' relay; the bench freezes and thaws, never cuts
#[path = "../../tests/api/relay.rs"]
mod relay;

use std::time::Duration;

use hyper::{Method, StatusCode};
use tokio::time::Instant;

use crate::http::Conn;
use crate::workloads::{Answer, Ctx, Rng, Workload};
use relay::Relay;

/// One in this many `frozen-postgres` requests reads a user no cache holds.
const UNCACHED_SHARE: usize = 10;
/// How long the service may take to say `ok` again after a thaw before the bench gives up.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    Postgres,
    Redis,
    RabbitMq,
}

impl Dependency {
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::Redis => "Redis",
            Self::RabbitMq => "RabbitMQ",
        }
    }
}

impl Workload {
    /// The dependency this workload freezes.
    pub fn frozen(self) -> Option<Dependency> {
        match self {
            Self::FrozenPostgres => Some(Dependency::Postgres),
            Self::FrozenRedis => Some(Dependency::Redis),
            Self::FrozenRabbitmq => Some(Dependency::RabbitMq),
            _ => None,
        }
    }
}

/// A relay in front of each server the service uses.
pub struct Relays {
    postgres: Relay,
    redis: Relay,
    rabbitmq: Relay,
}

/// The service's URLs, as given and as routed through the relays.
pub struct Routed {
    pub database_url: String,
    pub redis_url: String,
    pub amqp_url: String,
}

impl Relays {
    /// Starts a relay to each server the URLs name, and returns the URLs through them.
    pub async fn start(urls: Routed) -> Result<(Self, Routed), String> {
        let postgres = Relay::start(local_port(&urls.database_url, 5432)?).await;
        let redis = Relay::start(local_port(&urls.redis_url, 6379)?).await;
        let rabbitmq = Relay::start(local_port(&urls.amqp_url, 5672)?).await;
        let routed = Routed {
            database_url: through(&urls.database_url, &postgres.addr)?,
            redis_url: through(&urls.redis_url, &redis.addr)?,
            amqp_url: through(&urls.amqp_url, &rabbitmq.addr)?,
        };
        Ok((
            Self {
                postgres,
                redis,
                rabbitmq,
            },
            routed,
        ))
    }

    fn relay(&self, d: Dependency) -> &Relay {
        match d {
            Dependency::Postgres => &self.postgres,
            Dependency::Redis => &self.redis,
            Dependency::RabbitMq => &self.rabbitmq,
        }
    }

    pub fn freeze(&self, d: Dependency) {
        self.relay(d).freeze();
    }

    pub fn thaw(&self, d: Dependency) {
        self.relay(d).thaw();
    }
}

/// `scheme://[user@]host[:port][/rest]` → its port, when the host is this machine.
fn local_port(url: &str, default: u16) -> Result<u16, String> {
    let (host, port) = authority(url)?;
    if !matches!(host, "127.0.0.1" | "localhost") {
        return Err(format!(
            "the frozen-* workloads relay to servers on 127.0.0.1 only, not {host} ({url})"
        ));
    }
    port.map_or(Ok(default), |p| {
        p.parse().map_err(|_| format!("no port in {url}"))
    })
}

/// `url` with its host and port replaced by `addr`.
fn through(url: &str, addr: &str) -> Result<String, String> {
    let (host, port) = authority(url)?;
    let old = match port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let (scheme, rest) = url.split_once("://").ok_or("no scheme")?;
    let at = rest.find('@').map_or(0, |i| i + 1);
    let (user, tail) = rest.split_at(at);
    let tail = tail.strip_prefix(old.as_str()).ok_or("no host")?;
    Ok(format!("{scheme}://{user}{addr}{tail}"))
}

/// The host and port of `scheme://[user@]host[:port][/…]`.
fn authority(url: &str) -> Result<(&str, Option<&str>), String> {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| format!("no scheme in {url}"))?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let hostport = &rest[..end];
    Ok(match hostport.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (hostport, None),
    })
}

impl Ctx {
    /// One in ten `frozen-postgres` requests reads a user no cache can hold (one that does
    /// not exist, so only PostgreSQL knows): measured aside, whatever its status (404 when
    /// PostgreSQL answers, 503 when it does not; 0 for no answer within the bench's 10 s).
    pub async fn uncached_read(&self, conn: &mut Conn, rng: &mut Rng) -> Option<Answer> {
        if rng.below(UNCACHED_SHARE) != 0 {
            return None;
        }
        let path = format!("/api/internal/users/{}", uuid::Uuid::new_v4());
        let answer = self.send(conn, &self.base, Method::GET, path, None, None);
        Some(Answer::Aside(answer.await.map_or(0, |(s, _)| s.as_u16())))
    }

    /// After a thaw: how long until `/health` says `ok` again (`None`: not within a minute).
    pub async fn recovery(&self) -> Option<Duration> {
        let started = Instant::now();
        let mut conn = Conn::default();
        while started.elapsed() < RECOVERY_LIMIT {
            let health = self
                .send(
                    &mut conn,
                    &self.base,
                    Method::GET,
                    "/health".into(),
                    None,
                    None,
                )
                .await;
            if let Ok((StatusCode::OK, body)) = health
                && serde_json::from_slice::<serde_json::Value>(&body)
                    .is_ok_and(|h| h["status"] == "ok")
            {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}
