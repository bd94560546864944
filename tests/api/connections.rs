//! What the service leaves open on the broker: no connection it has given up. A connection
//! is given up when a call on it misses its deadline, typically while a quorum queue elects
//! a leader; the broker may still complete that call later, and a consumer registered then
//! would take requests that nobody serves.

use std::time::Duration;

use lapin::options::BasicConsumeOptions;
use lapin::types::{AMQPValue, FieldTable};
use user_service_client::broker::Broker;

use crate::amqp::consumer_count;
use crate::helpers::{AMQP_URL, TestApp, eventually};

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

/// An instance that receives nothing subscribes again (a subscription the broker counts but
/// serves nothing is otherwise kept for good while other instances take every request), and
/// each time closes the connection it leaves: the queue keeps one consumer, which serves.
#[tokio::test]
async fn an_idle_consumer_subscribes_again_and_leaves_no_consumer_behind() {
    let app = TestApp::spawn().await;
    app.until_broker(true).await;
    let renewed = || async {
        let series = r#"user_service_rpc_resubscribed_total{reason="idle"} "#;
        app.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After 2 s without a request, then after 4 s more.
    eventually(Duration::from_secs(20), || async {
        (renewed().await >= 2.0).then_some(())
    })
    .await;
    let watcher = lapin::Connection::connect(AMQP_URL, Default::default())
        .await
        .expect("connects");
    let check = watcher.create_channel().await.expect("channel");
    eventually(Duration::from_secs(5), || async {
        (consumers(&check, &app.rpc_queue).await == 1).then_some(())
    })
    .await;
    let client = app.rpc().await;
    assert!(!client.exists(uuid::Uuid::new_v4()).await.expect("answered"));
}
