//! Connections to RabbitMQ, made the same way by the event publisher and the RPC edge.

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

/// The frame size asked of the broker unless the URL names one (`?frame_max=`). lapin keeps
/// 32 frames of read and 32 of write buffer per connection: at RabbitMQ's default of 128 KiB
/// that is 8 MiB resident per connection, at 16 KiB it is 1 MiB. A larger message is carried
/// in several frames.
pub const FRAME_MAX: u32 = 16 * 1024;

/// Connects to `url`, named `name` in the broker's list of connections.
pub async fn connect(url: &str, name: &str) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match url.parse::<AMQPUri>() {
        Ok(uri) => Connection::connect_uri(with_frame_max(uri), properties).await,
        // lapin reports the malformed URL itself.
        Err(_) => Connection::connect(url, properties).await,
    }
}

fn with_frame_max(mut uri: AMQPUri) -> AMQPUri {
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_size_is_asked_for_unless_the_url_names_one() {
        let parse = |u: &str| {
            with_frame_max(u.parse().expect("a valid URL"))
                .query
                .frame_max
        };
        assert_eq!(parse("amqp://localhost/%2f"), Some(FRAME_MAX));
        assert_eq!(parse("amqp://localhost/%2f?frame_max=65536"), Some(65536));
    }
}
