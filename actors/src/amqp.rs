//! Connections to RabbitMQ, made the same way by the event publisher and the RPC edge.

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

/// lapin keeps 32 frames of read and 32 of write buffer per connection: 8 MiB resident at
/// RabbitMQ's default frame size of 128 KiB, 1 MiB at this size.
pub const SMALL_FRAMES: u32 = 16 * 1024;

/// Connects to `url`, named `name` in the broker's list of connections. With `frame_max`,
/// frames of at most that size are asked for, unless the URL names a size (`?frame_max=`).
/// Only a connection that receives nothing but confirms may ask for small frames: a
/// message's properties travel in one frame, and lapin drops a connection that receives a
/// frame over its size, so a consumer takes the broker's size.
pub async fn connect(url: &str, name: &str, frame_max: Option<u32>) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match (url.parse::<AMQPUri>(), frame_max) {
        (Ok(uri), Some(size)) => {
            Connection::connect_uri(with_frame_max(uri, size), properties).await
        }
        // lapin reports a malformed URL itself.
        _ => Connection::connect(url, properties).await,
    }
}

fn with_frame_max(mut uri: AMQPUri, size: u32) -> AMQPUri {
    uri.query.frame_max.get_or_insert(size);
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_size_is_asked_for_unless_the_url_names_one() {
        let size = |u: &str| {
            with_frame_max(u.parse().expect("a valid URL"), SMALL_FRAMES)
                .query
                .frame_max
        };
        assert_eq!(size("amqp://localhost/%2f"), Some(SMALL_FRAMES));
        assert_eq!(size("amqp://localhost/%2f?frame_max=65536"), Some(65536));
    }
}
