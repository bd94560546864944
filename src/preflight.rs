//! Before start-up waits for its servers: is anything listening where the configuration
//! points? A developer who has not started PostgreSQL learns it at once, with the command
//! that starts it, instead of after a minute of retries.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpStream;

use crate::config::Config;

/// How long one probe may take: a local server answers in microseconds.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// What brings every server up on a development machine.
pub const REMEDY: &str = "`scripts/ensure-services.sh` installs (on Debian) and starts PostgreSQL, Redis and RabbitMQ; `scripts/serve` does that, then serves";

/// One server the service talks to.
struct Server {
    name: &'static str,
    variable: &'static str,
    host: String,
    port: u16,
}

/// Probes the configured servers. Fails when PostgreSQL, which the service cannot run
/// without, is on this machine and nothing listens there; warns about everything else that
/// does not answer (Redis and RabbitMQ are optional, a remote database may still be starting).
pub async fn check(config: &Config) -> anyhow::Result<()> {
    let database = postgres(&config.database.url);
    let redis = from_url("Redis", "REDIS_URL", &config.redis_url, 6379);
    let nodes = config.amqp.nodes.iter();
    let others =
        std::iter::once(redis).chain(nodes.map(|url| from_url("RabbitMQ", "AMQP_URL", url, 5672)));
    if let Some(server) = &database {
        match probe(server).await {
            Probe::Answers => {}
            Probe::Refused { local: true } => anyhow::bail!(
                "{} is not running at {}:{} ({}): nothing listens there. {REMEDY}.",
                server.name,
                server.host,
                server.port,
                server.variable
            ),
            Probe::Refused { .. } | Probe::Silent => tracing::warn!(
                "{} does not answer at {}:{} ({}); waiting for it. On this machine, {REMEDY}",
                server.name,
                server.host,
                server.port,
                server.variable
            ),
        }
    }
    for server in others.flatten() {
        if !matches!(probe(&server).await, Probe::Answers) {
            tracing::warn!(
                "{} does not answer at {}:{} ({}); the service runs without it and connects when it comes. {REMEDY}",
                server.name,
                server.host,
                server.port,
                server.variable
            );
        }
    }
    Ok(())
}

enum Probe {
    Answers,
    /// Every address refused; `local` when they are all on this machine.
    Refused {
        local: bool,
    },
    /// No answer in time, or the name does not resolve.
    Silent,
}

async fn probe(server: &Server) -> Probe {
    let lookup = tokio::net::lookup_host((server.host.as_str(), server.port));
    let addrs: Vec<SocketAddr> = match tokio::time::timeout(PROBE_TIMEOUT, lookup).await {
        Ok(Ok(addrs)) => addrs.collect(),
        _ => return Probe::Silent,
    };
    if addrs.is_empty() {
        return Probe::Silent;
    }
    let mut refused = 0;
    for addr in &addrs {
        match tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(_)) => return Probe::Answers,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
            _ => {}
        }
    }
    match refused == addrs.len() {
        true => Probe::Refused {
            local: addrs.iter().all(|a| a.ip().is_loopback()),
        },
        false => Probe::Silent,
    }
}

/// PostgreSQL's host and port, unless it is reached over a Unix socket.
fn postgres(url: &str) -> Option<Server> {
    let options = PgConnectOptions::from_str(url).ok()?;
    let host = options.get_host();
    (!host.starts_with('/')).then(|| Server {
        name: "PostgreSQL",
        variable: "DATABASE_URL",
        host: host.to_owned(),
        port: options.get_port(),
    })
}

/// Host and port of a `scheme://[user@]host[:port]/…` URL.
fn from_url(
    name: &'static str,
    variable: &'static str,
    url: &str,
    default_port: u16,
) -> Option<Server> {
    let url = url::Url::parse(url).ok()?;
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let default_port = match url.scheme() {
        "amqps" => 5671,
        _ => default_port,
    };
    Some(Server {
        name,
        variable,
        host: host.to_owned(),
        port: url.port().unwrap_or(default_port),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_read_from_their_urls() {
        let pg = postgres("postgres://postgres@db.internal:6543/users").unwrap();
        assert_eq!((pg.host.as_str(), pg.port), ("db.internal", 6543));
        assert!(postgres("postgres:///users?host=/var/run/postgresql").is_none());
        let redis = from_url("Redis", "REDIS_URL", "redis://:pw@[::1]/0", 6379).unwrap();
        assert_eq!((redis.host.as_str(), redis.port), ("::1", 6379));
        let amqp = from_url("RabbitMQ", "AMQP_URL", "amqps://u:p@mq:1234/%2f", 5672).unwrap();
        assert_eq!((amqp.host.as_str(), amqp.port), ("mq", 1234));
        let amqps = from_url("RabbitMQ", "AMQP_URL", "amqps://mq/%2f", 5672).unwrap();
        assert_eq!(amqps.port, 5671);
        assert!(from_url("Redis", "REDIS_URL", "not a url", 6379).is_none());
    }

    #[tokio::test]
    async fn a_closed_local_port_is_refused_and_local() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let server = Server {
            name: "PostgreSQL",
            variable: "DATABASE_URL",
            host: "127.0.0.1".to_owned(),
            port,
        };
        assert!(matches!(
            probe(&server).await,
            Probe::Refused { local: true }
        ));
    }
}
