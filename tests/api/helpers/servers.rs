//! The machine's servers as tests reach them raw: RabbitMQ (address, queue type, a queue bound to
//! a test's events, clean-up), Redis (a connection of a test's own), and the IPv6 loopback.

use deadpool_redis::redis::{Client, aio::MultiplexedConnection};

/// Whether this machine has an IPv6 loopback (tests over IPv6 are skipped without one).
pub fn ipv6_loopback() -> bool {
    let up = std::net::TcpListener::bind("[::1]:0").is_ok();
    if !up {
        eprintln!("skipping: no IPv6 loopback on this machine");
    }
    up
}

/// The request queues' type for this run: `TEST_RPC_QUEUE_TYPE=quorum` runs the suite
/// against quorum queues (`scripts/test` does, for the RPC tests).
pub fn rpc_queue_type() -> &'static str {
    match std::env::var("TEST_RPC_QUEUE_TYPE").as_deref() {
        Ok("quorum") => "quorum",
        _ => "classic",
    }
}

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Removes the queues and exchange a test's service declared.
pub(super) async fn delete_broker_objects(db: &str) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let Ok(conn) = lapin::Connection::connect(AMQP_URL, Default::default()).await else {
        return;
    };
    if let Ok(ch) = conn.create_channel().await {
        // `.nest-events`: the queue of the NestJS event consumer example (tests/api/nestjs.rs).
        for q in [
            format!("{db}.rpc"),
            format!("{db}.rpc.dlq"),
            format!("{db}.nest-events"),
        ] {
            let _ = ch
                .queue_delete(q.into(), QueueDeleteOptions::default())
                .await;
        }
        let name = format!("{db}.events");
        let _ = ch
            .exchange_delete(name.into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "test done".into()).await;
}

/// Declares the events exchange (as the service does) and a queue bound to it with `user.*`,
/// as a consuming service would: a durable queue named `durable_name`, which outlives a broker
/// restart, or else an exclusive server-named one. Returns the queue's name.
pub async fn bind_events_queue(
    channel: &lapin::Channel,
    exchange: &str,
    durable_name: Option<&str>,
) -> String {
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            lapin::ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (name, options) = match durable_name {
        Some(name) => (
            name,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
        ),
        None => (
            "",
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
        ),
    };
    let queue = channel
        .queue_declare(name.into(), options, FieldTable::default())
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            "user.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    queue.name().to_string()
}

/// The machine's Redis, the one every test's service uses (its keys under the test's prefix).
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A client of the machine's Redis, for connections of a test's own (a pub/sub one, say).
pub fn redis_client() -> Client {
    Client::open(REDIS_URL).expect("REDIS_URL is a valid Redis URL")
}

/// A connection of its own to the machine's Redis, for reading and writing a test's keys raw.
pub async fn redis() -> MultiplexedConnection {
    redis_client()
        .get_multiplexed_async_connection()
        .await
        .expect("a connection to the machine's Redis at 127.0.0.1:6379")
}
