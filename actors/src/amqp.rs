//! Connections to RabbitMQ, made the same way by the event publisher and the RPC edge, and
//! the deadline every wait on the broker has.
//!
//! A paused or partitioned broker accepts TCP and never answers, so nothing here waits
//! without a bound: connecting (TCP and the AMQP handshake) and every later call end after
//! [`Broker::timeout`], and an idle connection that hears nothing for two heartbeats is
//! dropped by lapin. Either way the caller's reconnect loop takes over
//! ([`Backoff::broker`](crate::retry::Backoff::broker)).

use std::future::IntoFuture;
use std::time::Duration;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

/// lapin keeps 32 frames of read and 32 of write buffer per connection: 8 MiB resident at
/// RabbitMQ's default frame size of 128 KiB, 1 MiB at this size.
pub const SMALL_FRAMES: u32 = 16 * 1024;

/// Where RabbitMQ is and how long the service waits for it (`AMQP_URL`,
/// `AMQP_HEARTBEAT_SECONDS`, `AMQP_TIMEOUT_MS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub url: String,
    /// The heartbeat asked for, in seconds, unless the URL names one (`?heartbeat=`): a
    /// connection that hears nothing for two of them is dropped.
    pub heartbeat: u16,
    /// The bound on each single wait: connecting, opening a channel, declaring, publishing,
    /// a confirm, an ack, closing.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error(transparent)]
    Lapin(#[from] lapin::Error),
    #[error("RabbitMQ did not answer within {0:?}")]
    Timeout(Duration),
}

impl Broker {
    /// Connects, named `name` in the broker's list of connections. With `frame_max`, frames
    /// of at most that size are asked for, unless the URL names a size (`?frame_max=`).
    /// Only a connection that receives nothing but confirms may ask for small frames: a
    /// message's properties travel in one frame, and lapin drops a connection that receives
    /// a frame over its size, so a consumer takes the broker's size.
    pub async fn connect(
        &self,
        name: &str,
        frame_max: Option<u32>,
    ) -> Result<Connection, AmqpError> {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let connecting = async {
            match self.url.parse::<AMQPUri>() {
                Ok(uri) => {
                    let uri = with_defaults(uri, self.heartbeat, frame_max);
                    Connection::connect_uri(uri, properties).await
                }
                // lapin reports a malformed URL itself.
                Err(_) => Connection::connect(&self.url, properties).await,
            }
        };
        self.within(connecting).await
    }

    /// `wait`, or [`AmqpError::Timeout`] after [`Broker::timeout`].
    pub async fn within<T>(
        &self,
        wait: impl IntoFuture<Output = lapin::Result<T>>,
    ) -> Result<T, AmqpError> {
        within(self.timeout, wait).await
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
mod tests {
    use super::*;

    fn query(u: &str, frame_max: Option<u32>) -> (Option<u16>, Option<u32>) {
        let uri = with_defaults(u.parse().expect("a valid URL"), 5, frame_max);
        (uri.query.heartbeat, uri.query.frame_max)
    }

    #[test]
    fn heartbeat_and_frame_size_are_asked_for_unless_the_url_names_them() {
        let url = "amqp://localhost/%2f";
        assert_eq!(
            query(url, Some(SMALL_FRAMES)),
            (Some(5), Some(SMALL_FRAMES))
        );
        assert_eq!(query(url, None), (Some(5), None));
        let named = "amqp://localhost/%2f?frame_max=65536&heartbeat=30";
        assert_eq!(query(named, Some(SMALL_FRAMES)), (Some(30), Some(65536)));
    }

    #[tokio::test]
    async fn a_broker_that_accepts_and_never_answers_is_given_up_on() {
        // Accepts the connection, then says nothing: a paused broker.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move { listener.accept().await });
        let broker = Broker {
            url: format!("amqp://guest:guest@{addr}/%2f"),
            heartbeat: 5,
            timeout: Duration::from_millis(200),
        };
        let result = tokio::time::timeout(Duration::from_secs(5), broker.connect("test", None))
            .await
            .expect("gave up by itself");
        assert!(matches!(result, Err(AmqpError::Timeout(_))), "{result:?}");
        held.abort();
    }
}
