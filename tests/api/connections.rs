//! What the service leaves open on the broker: no connection it has given up. A connection
//! is given up when a call on it misses its deadline, typically while a quorum queue elects
//! a leader; the broker may still complete that call later, and a consumer registered then
//! would take requests that nobody serves.

use std::time::Duration;

use lapin::options::BasicConsumeOptions;
use lapin::types::{AMQPValue, FieldTable};
use user_service_client::broker::Broker;

use crate::amqp::consumer_count;
use crate::helpers::{AMQP_URL, eventually};

/// The queue's consumers, as the broker counts them.
async fn consumers(channel: &lapin::Channel, queue: &str) -> u32 {
    consumer_count(channel, queue).await.expect("the queue")
}

#[tokio::test]
async fn a_connection_given_up_is_closed_with_its_consumer() {
    let queue = format!("given-up-{}", uuid::Uuid::new_v4().simple());
    let broker = Broker::new(AMQP_URL).expect("a node");
    let given_up = broker
        .connector()
        .connect("given up", None)
        .await
        .expect("connects");
    let channel = given_up.create_channel().await.expect("channel");
    // Gone a minute after the test, whatever happens to it.
    let mut expiring = FieldTable::default();
    expiring.insert("x-expires".into(), AMQPValue::LongInt(60_000));
    channel
        .queue_declare(queue.as_str().into(), Default::default(), expiring)
        .await
        .expect("declared");
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consumes");
    let watcher = lapin::Connection::connect(AMQP_URL, Default::default())
        .await
        .expect("connects");
    let check = watcher.create_channel().await.expect("channel");
    assert_eq!(consumers(&check, &queue).await, 1);

    // Given up as after a missed deadline, while its channel and consumer are still held
    // (lapin keeps a connection open as long as a channel of it is).
    drop(given_up);
    eventually(Duration::from_secs(5), || async {
        (consumers(&check, &queue).await == 0).then_some(())
    })
    .await;
    drop((consumer, channel));
}
