//! Reaching RabbitMQ, the same way for the service (its RPC consumer and its event
//! publisher) and for its callers: a list of nodes, tried in turn, and a deadline on every
//! wait.
//!
//! * **Several nodes.** `AMQP_URL` (or `AMQP_URLS`, as NestJS names its `urls`) is a
//!   comma-separated list of a cluster's nodes. Each process shuffles it once, so that
//!   instances spread over the nodes, and each connection walks it with a [`Connector`]:
//!   after a connection is lost, the next attempt starts at the *next* node, and a node that
//!   has not answered within [`ATTEMPT_DELAY`] gets the node after it tried beside it, so a
//!   dead or paused node costs a quarter of a second, not a timeout.
//! * **No wait without a bound.** A paused or partitioned node accepts TCP and never
//!   answers. Connecting (TCP and the AMQP handshake) and every later call end after
//!   [`Broker::timeout`], and an idle connection that hears nothing for two heartbeats is
//!   dropped by lapin. Either way the caller's reconnect loop takes over.

use std::future::{Future, IntoFuture};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties};

/// lapin keeps 32 frames of read and 32 of write buffer per connection: 8 MiB resident at
/// RabbitMQ's default frame size of 128 KiB, 1 MiB at this size.
pub const SMALL_FRAMES: u32 = 16 * 1024;

/// The broker of a local development setup.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// How long a node has to answer before the next one is tried beside it (RFC 8305's
/// connection attempt delay): the first to answer is kept.
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// The most nodes a list may name.
pub const MAX_NODES: usize = 16;

/// Where RabbitMQ is and how long to wait for it (`AMQP_URL`, `AMQP_HEARTBEAT_SECONDS`,
/// `AMQP_TIMEOUT_MS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// The cluster's nodes, in the order this process tries them.
    pub nodes: Vec<String>,
    /// The heartbeat asked for, in seconds, unless the URL names one (`?heartbeat=`): a
    /// connection that hears nothing for two of them is dropped.
    pub heartbeat: u16,
    /// The bound on each single wait: connecting to one node, opening a channel,
    /// declaring, publishing, a confirm, an ack, closing.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error(transparent)]
    Lapin(#[from] lapin::Error),
    #[error("RabbitMQ did not answer within {0:?}")]
    Timeout(Duration),
}

/// Why a list of nodes was refused. Never quotes a URL: it may hold a password.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodesError {
    #[error("expected one or more AMQP URLs, separated by commas")]
    Empty,
    #[error("at most {MAX_NODES} nodes")]
    TooMany,
    #[error("entry {0} is not an AMQP URL (amqp://user:password@host:port/vhost)")]
    Malformed(usize),
}

impl Default for Broker {
    /// The local development broker.
    fn default() -> Self {
        Self {
            nodes: vec![DEFAULT_AMQP_URL.to_owned()],
            heartbeat: 5,
            timeout: Duration::from_secs(5),
        }
    }
}

impl Broker {
    /// The nodes of `list` (comma-separated AMQP URLs), shuffled, with the service's
    /// defaults: a 5 s heartbeat and 5 s per wait.
    pub fn new(list: &str) -> Result<Self, NodesError> {
        Ok(Self {
            nodes: nodes(list)?,
            ..Self::default()
        })
    }

    /// A walk over the nodes for one connection at a time (see [`Connector`]).
    pub fn connector(&self) -> Connector {
        Connector {
            broker: self.clone(),
            next: 0,
        }
    }

    /// `wait`, or [`AmqpError::Timeout`] after [`Broker::timeout`].
    pub async fn within<T>(
        &self,
        wait: impl IntoFuture<Output = lapin::Result<T>>,
    ) -> Result<T, AmqpError> {
        within(self.timeout, wait).await
    }

    /// Are all nodes on this machine?
    pub fn is_loopback(&self) -> bool {
        self.nodes.iter().all(|url| {
            url.parse::<AMQPUri>().is_ok_and(|uri| {
                let host = uri
                    .authority
                    .host
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                host.eq_ignore_ascii_case("localhost")
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.to_canonical().is_loopback())
            })
        })
    }
}

/// Splits a comma-separated list of AMQP URLs, checks each, and shuffles them.
pub fn nodes(list: &str) -> Result<Vec<String>, NodesError> {
    let mut nodes: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    if nodes.is_empty() {
        return Err(NodesError::Empty);
    }
    if nodes.len() > MAX_NODES {
        return Err(NodesError::TooMany);
    }
    if let Some(bad) = nodes.iter().position(|u| u.parse::<AMQPUri>().is_err()) {
        return Err(NodesError::Malformed(bad + 1));
    }
    fastrand::shuffle(&mut nodes);
    Ok(nodes)
}

/// Where a URL points, for logs and `/health`: `host:port`, never the credentials.
pub fn address(url: &str) -> String {
    match url.parse::<AMQPUri>() {
        Ok(uri) => format!("{}:{}", uri.authority.host, uri.authority.port),
        Err(_) => "an unreadable URL".to_owned(),
    }
}

/// One connection's walk over the nodes. Each [`Connector::connect`] tries every node once,
/// starting after the node of the last connection it made, and keeps the first that
/// answers.
#[derive(Debug, Clone)]
pub struct Connector {
    broker: Broker,
    next: usize,
}

/// A connection and the node it is to, closed when dropped. lapin closes a dropped
/// connection only once each of its channels is closed too (every channel holds it), so a
/// connection given up after a missed deadline stayed open: a consumer that its broker
/// registered late, once a quorum queue had a leader again, took half of the requests and
/// served none of them.
///
/// It keeps the channels made through it ([`Connected::create_channel`]) until the
/// connection has closed, which closes them too. A channel whose last handle is dropped
/// while its connection is open closes itself, and one that did so beside the connection's
/// close lost the race half the time: lapin then logged "Connection error" at every stop.
pub struct Connected {
    /// Taken only by `drop`.
    connection: Option<Connection>,
    /// `host:port` of the node.
    pub node: String,
    timeout: Duration,
    channels: std::sync::Mutex<Vec<Channel>>,
}

impl std::ops::Deref for Connected {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection.as_ref().expect("taken only by drop")
    }
}

impl Connected {
    /// A channel on this connection, closed with it (see [`Connected`]).
    pub async fn create_channel(&self) -> lapin::Result<Channel> {
        let channel = (**self).create_channel().await?;
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.push(channel.clone());
        Ok(channel)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if connection.status().connected() {
            let timeout = self.timeout;
            let channels =
                std::mem::take(self.channels.get_mut().unwrap_or_else(|e| e.into_inner()));
            runtime.spawn(async move {
                let closing = connection.close(200, "given up".into());
                let _ = within(timeout, closing).await;
                drop(channels);
            });
        }
    }
}

impl Connector {
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Connects, named `name` in the broker's list of connections, to the first node that
    /// answers, trying the next node beside the ones still silent after [`ATTEMPT_DELAY`] and
    /// at once after a failure; the error is the last node's when none answers. With
    /// `frame_max`, frames of at most that size are asked for, unless the URL names a size
    /// (`?frame_max=`). Only a connection that receives nothing but confirms may ask for
    /// small frames: a message's properties travel in one frame, and lapin drops a
    /// connection that receives a frame over its size, so a consumer takes the broker's size.
    pub async fn connect(
        &mut self,
        name: &str,
        frame_max: Option<u32>,
    ) -> Result<Connected, AmqpError> {
        let count = self.broker.nodes.len();
        let mut racing = FuturesUnordered::new();
        let mut tried = 0;
        let mut last = AmqpError::Timeout(self.broker.timeout);
        loop {
            if tried < count {
                racing.push(self.attempt((self.next + tried) % count, name, frame_max));
                tried += 1;
            }
            if racing.is_empty() {
                return Err(last);
            }
            tokio::select! {
                Some((index, node, result)) = racing.next() => match result {
                    Ok(connection) => {
                        self.next = index + 1;
                        return Ok(Connected {
                            connection: Some(connection),
                            node,
                            timeout: self.broker.timeout,
                            channels: Default::default(),
                        });
                    }
                    Err(e) => {
                        tracing::debug!(%node, error = %e, "RabbitMQ node not reachable");
                        last = e;
                    }
                },
                () = tokio::time::sleep(ATTEMPT_DELAY), if tried < count => {}
            }
        }
    }

    /// Connects to node `index` on a task of its own, within the broker's deadline: a
    /// connection that loses the race is closed there, not left open. Gives back the index
    /// and the node's address with the outcome.
    fn attempt(
        &self,
        index: usize,
        name: &str,
        frame_max: Option<u32>,
    ) -> impl Future<Output = (usize, String, Result<Connection, AmqpError>)> + use<> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let broker = self.broker.clone();
        let url = broker.nodes.get(index).cloned().unwrap_or_default();
        let node = address(&url);
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        tokio::spawn(async move {
            let connecting = async {
                match url.parse::<AMQPUri>() {
                    Ok(uri) => {
                        let uri = with_defaults(uri, broker.heartbeat, frame_max);
                        Connection::connect_uri(uri, properties).await
                    }
                    // lapin reports a malformed URL itself.
                    Err(_) => Connection::connect(&url, properties).await,
                }
            };
            let result = broker.within(connecting).await;
            if let Err(Ok(connection)) = tx.send(result) {
                let _ = broker
                    .within(connection.close(200, "another node answered first".into()))
                    .await;
            }
        });
        let timeout = self.broker.timeout;
        async move {
            let result = rx.await.unwrap_or(Err(AmqpError::Timeout(timeout)));
            (index, node, result)
        }
    }
}

/// `wait`, or [`AmqpError::Timeout`] after `timeout`.
pub async fn within<T>(
    timeout: Duration,
    wait: impl IntoFuture<Output = lapin::Result<T>>,
) -> Result<T, AmqpError> {
    match tokio::time::timeout(timeout, wait).await {
        Ok(done) => Ok(done?),
        Err(_) => Err(AmqpError::Timeout(timeout)),
    }
}

/// The heartbeat and frame size asked for, where the URL names none.
fn with_defaults(mut uri: AMQPUri, heartbeat: u16, frame_max: Option<u32>) -> AMQPUri {
    uri.query.heartbeat.get_or_insert(heartbeat);
    if let Some(size) = frame_max {
        uri.query.frame_max.get_or_insert(size);
    }
    uri
}

#[cfg(test)]
mod tests;
