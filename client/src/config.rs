//! Where and how to call: the broker, the queue, the credentials and the resilience settings.

use std::time::Duration;

use crate::breaker::BreakerConfig;
use crate::broker::Broker;
pub use crate::broker::DEFAULT_AMQP_URL;
/// The service's request queue (contract section 1, `RPC_QUEUE`).
pub const DEFAULT_QUEUE: &str = "user-service.rpc";

/// The environment variables [`ClientConfig::from_env`] reads, with what each means.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "AMQP_URL",
        "the broker, or a cluster's nodes separated by commas (also read as AMQP_URLS); default amqp://guest:guest@127.0.0.1:5672/%2f",
    ),
    (
        "RPC_QUEUE",
        "the service's request queue (default user-service.rpc)",
    ),
    (
        "RPC_QUEUE_TYPE",
        "quorum when the service declares its queue so (RPC_QUEUE_TYPE=quorum); default classic",
    ),
    (
        "USER_SERVICE_API_KEY",
        "sent as header x-api-key, the caller's own key",
    ),
    (
        "INTERNAL_SERVICE_SECRET",
        "when there is no API key: sent as header x-internal-service",
    ),
    (
        "SERVICE_NAME",
        "with the secret: the caller name claimed in x-service-name (default cli)",
    ),
];

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The nodes, tried in turn (shuffled), with a 5 s heartbeat and 5 s to connect to one.
    pub broker: Broker,
    pub queue: String,
    /// The request queue is a quorum queue (the service runs with `RPC_QUEUE_TYPE=quorum`):
    /// it is asserted with `x-queue-type: quorum`, as the service declares it.
    pub quorum: bool,
    /// How long one attempt waits for its reply; also sent as the request's `expiration`,
    /// so the service drops work that nobody will wait for.
    pub timeout: Duration,
    /// Retries after the first attempt, for calls that are safe to repeat.
    pub retries: usize,
    pub backoff_factor: f32,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub breaker: BreakerConfig,
    /// Message headers carrying the credentials (`x-api-key`, or the internal secret).
    pub headers: Vec<(String, String)>,
}

impl ClientConfig {
    /// The platform's defaults, against `amqp_url` (one node, or a cluster's nodes separated
    /// by commas) and the default queue `user-service.rpc`, with no credentials (a service in
    /// local open mode accepts that from loopback).
    pub fn new(amqp_url: impl AsRef<str>) -> Self {
        let list = amqp_url.as_ref();
        Self {
            // A list that does not parse is tried as it is: connecting says what is wrong.
            broker: Broker::new(list).unwrap_or_else(|_| Broker {
                nodes: vec![list.to_owned()],
                ..Broker::default()
            }),
            queue: DEFAULT_QUEUE.to_owned(),
            quorum: false,
            timeout: Duration::from_secs(3),
            retries: 3,
            backoff_factor: 2.0,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5),
            breaker: BreakerConfig::default(),
            headers: Vec::new(),
        }
    }

    /// The defaults, with the broker, queue and credentials from the environment
    /// (see [`ENVIRONMENT`]); an empty variable counts as unset.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`ClientConfig::from_env`] with another source of variables.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let nodes = var("AMQP_URLS").or_else(|| var("AMQP_URL"));
        let mut config = Self::new(nodes.unwrap_or_else(|| DEFAULT_AMQP_URL.to_owned()))
            .queue(var("RPC_QUEUE").unwrap_or_else(|| DEFAULT_QUEUE.to_owned()));
        if var("RPC_QUEUE_TYPE").is_some_and(|t| t.eq_ignore_ascii_case("quorum")) {
            config = config.quorum();
        }
        if let Some(key) = var("USER_SERVICE_API_KEY") {
            config = config.api_key(key);
        } else if let Some(secret) = var("INTERNAL_SERVICE_SECRET") {
            config = config.internal_secret(
                secret,
                var("SERVICE_NAME").unwrap_or_else(|| "cli".to_owned()),
            );
        }
        config
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// For a service that declares its queues as quorum queues (`RPC_QUEUE_TYPE=quorum`).
    pub fn quorum(mut self) -> Self {
        self.quorum = true;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The heartbeat asked for: a connection that hears nothing for two is dropped, and the
    /// next call goes to the next node.
    pub fn heartbeat(mut self, seconds: u16) -> Self {
        self.broker.heartbeat = seconds;
        self
    }

    pub fn retries(mut self, retries: usize) -> Self {
        self.retries = retries;
        self
    }

    /// Authenticates with the caller's own API key (header `x-api-key`).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.headers.push(("x-api-key".to_owned(), key.into()));
        self
    }

    /// Authenticates with the shared internal secret, claiming `service_name`.
    pub fn internal_secret(
        mut self,
        secret: impl Into<String>,
        service_name: impl Into<String>,
    ) -> Self {
        self.headers
            .push(("x-internal-service".to_owned(), secret.into()));
        self.headers
            .push(("x-service-name".to_owned(), service_name.into()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        let vars = vars.to_vec();
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_environment_names_broker_queue_and_credentials() {
        let c = ClientConfig::from_lookup(lookup(&[]));
        assert_eq!(
            (c.broker.nodes.as_slice(), c.queue.as_str()),
            ([DEFAULT_AMQP_URL.to_owned()].as_slice(), DEFAULT_QUEUE)
        );
        assert!(c.headers.is_empty(), "no credentials: local open mode");
        assert!(!c.quorum);
        let quorum = ClientConfig::from_lookup(lookup(&[("RPC_QUEUE_TYPE", "quorum")]));
        assert!(quorum.quorum);

        let c = ClientConfig::from_lookup(lookup(&[
            ("AMQP_URL", "amqp://mq:5672/%2f"),
            ("RPC_QUEUE", "q"),
            ("USER_SERVICE_API_KEY", "k"),
            ("INTERNAL_SERVICE_SECRET", "s"),
        ]));
        assert_eq!(
            (c.broker.nodes.as_slice(), c.queue.as_str()),
            (["amqp://mq:5672/%2f".to_owned()].as_slice(), "q")
        );
        let mut cluster = ClientConfig::from_lookup(lookup(&[(
            "AMQP_URLS",
            "amqp://mq2:5672/%2f,amqp://mq1:5672/%2f",
        )]))
        .broker
        .nodes;
        cluster.sort();
        assert_eq!(cluster, ["amqp://mq1:5672/%2f", "amqp://mq2:5672/%2f"]);
        assert_eq!(c.headers, [("x-api-key".to_owned(), "k".to_owned())]);

        let c = ClientConfig::from_lookup(lookup(&[
            ("USER_SERVICE_API_KEY", ""),
            ("INTERNAL_SERVICE_SECRET", "s"),
        ]));
        assert_eq!(
            c.headers,
            [
                ("x-internal-service".to_owned(), "s".to_owned()),
                ("x-service-name".to_owned(), "cli".to_owned())
            ]
        );
    }
}
