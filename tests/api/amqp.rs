//! A bare AMQP caller, for tests that need exactly the messages they send.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicGetOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, Consumer};
use serde_json::Value;

use crate::helpers::AMQP_URL;

/// A bare AMQP caller, to send exactly the messages a test needs.
pub struct Raw {
    _conn: Connection,
    pub channel: Channel,
    replies: Consumer,
}

impl Raw {
    pub async fn connect() -> Self {
        Self::connect_to(AMQP_URL).await
    }

    pub async fn connect_to(url: &str) -> Self {
        let conn = Connection::connect(url, Default::default()).await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let replies = channel
            .basic_consume(
                "amq.rabbitmq.reply-to".into(),
                "".into(),
                no_ack,
                FieldTable::default(),
            )
            .await
            .unwrap();
        Self {
            _conn: conn,
            channel,
            replies,
        }
    }

    pub async fn publish(&self, queue: &str, body: &[u8], props: BasicProperties) {
        self.channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Sends with a reply address and waits for the matching reply.
    pub async fn call(
        &mut self,
        queue: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> (BasicProperties, Value) {
        let correlation = uuid::Uuid::new_v4().to_string();
        let props = props
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_correlation_id(correlation.clone().into());
        self.publish(queue, body, props).await;
        let wait = async {
            loop {
                let (props, body) = self.next_reply().await;
                if props.correlation_id().as_ref().map(|c| c.as_str()) == Some(correlation.as_str())
                {
                    return (props, body);
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("a reply within 10 s")
    }

    /// The next reply that arrives: its properties and JSON body.
    async fn next_reply(&mut self) -> (BasicProperties, Value) {
        let d = self.replies.next().await.expect("reply consumer open");
        let d = d.expect("reply consumer open");
        (d.properties, serde_json::from_slice(&d.data).unwrap())
    }

    /// The next `n` replies (correlation id and body), within 20 s.
    pub async fn replies(&mut self, n: usize) -> Vec<(String, Value)> {
        let wait = async {
            let mut got = Vec::with_capacity(n);
            while got.len() < n {
                let (props, body) = self.next_reply().await;
                let id = props.correlation_id().as_ref().map(|c| c.to_string());
                got.push((id.unwrap_or_default(), body));
            }
            got
        };
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .expect("the replies within 20 s")
    }

    pub async fn call_json(&mut self, queue: &str, body: Value, headers: &[(&str, &str)]) -> Value {
        let props = BasicProperties::default().with_headers(table(headers));
        self.call(queue, body.to_string().as_bytes(), props).await.1
    }
}

pub fn table(headers: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in headers {
        t.insert(
            (*k).into(),
            AMQPValue::LongString(LongString::from(v.as_bytes())),
        );
    }
    t
}

pub fn key(k: &str) -> [(&str, &str); 1] {
    [("x-api-key", k)]
}

/// Takes every message off a dead-letter queue: (body, x-error, headers).
pub async fn dead_letters(channel: &Channel, dlq: &str) -> Vec<(Value, String, FieldTable)> {
    let mut out = Vec::new();
    while let Some(m) = channel
        .basic_get(dlq.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let error = m.delivery.properties.headers().as_ref().and_then(|h| {
            h.inner().get("x-error").map(|v| match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                other => format!("{other:?}"),
            })
        });
        let body = serde_json::from_slice(&m.delivery.data).unwrap_or(Value::Null);
        let headers = m.delivery.properties.headers().clone().unwrap_or_default();
        out.push((body, error.unwrap_or_default(), headers));
    }
    out
}

/// Publishes a request whose `correlation_id` property is not UTF-8, which no client
/// library will send (the AMQP framing is written by hand here) but RabbitMQ accepts.
pub async fn publish_unreadable(queue: &str, body: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![kind];
        f.extend(channel.to_be_bytes());
        f.extend((payload.len() as u32).to_be_bytes());
        f.extend(payload);
        f.push(0xCE);
        f
    }
    fn method(class: u16, id: u16, args: &[u8]) -> Vec<u8> {
        let mut p = class.to_be_bytes().to_vec();
        p.extend(id.to_be_bytes());
        p.extend(args);
        p
    }
    fn short(s: &[u8]) -> Vec<u8> {
        let mut v = vec![s.len() as u8];
        v.extend(s);
        v
    }
    async fn read_frame(s: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut head = [0u8; 7];
        s.read_exact(&mut head).await.unwrap();
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        let mut payload = vec![0u8; size + 1];
        s.read_exact(&mut payload).await.unwrap();
        payload.truncate(size);
        payload
    }
    let mut s = tokio::net::TcpStream::connect("127.0.0.1:5672")
        .await
        .unwrap();
    s.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
    read_frame(&mut s).await; // connection.start
    let mut start_ok = 0u32.to_be_bytes().to_vec();
    start_ok.extend(short(b"PLAIN"));
    let response = b"\x00guest\x00guest";
    start_ok.extend((response.len() as u32).to_be_bytes());
    start_ok.extend(response);
    start_ok.extend(short(b"en_US"));
    s.write_all(&frame(1, 0, &method(10, 11, &start_ok)))
        .await
        .unwrap();
    let tune = read_frame(&mut s).await;
    s.write_all(&frame(1, 0, &method(10, 31, &tune[4..12])))
        .await
        .unwrap();
    let mut open = short(b"/");
    open.extend([0, 0]);
    s.write_all(&frame(1, 0, &method(10, 40, &open)))
        .await
        .unwrap();
    read_frame(&mut s).await; // connection.open-ok
    s.write_all(&frame(1, 1, &method(20, 10, &[0])))
        .await
        .unwrap();
    read_frame(&mut s).await; // channel.open-ok
    let mut publish = vec![0, 0];
    publish.extend(short(b""));
    publish.extend(short(queue.as_bytes()));
    publish.push(0);
    s.write_all(&frame(1, 1, &method(60, 40, &publish)))
        .await
        .unwrap();
    let mut header = 60u16.to_be_bytes().to_vec();
    header.extend(0u16.to_be_bytes());
    header.extend((body.len() as u64).to_be_bytes());
    header.extend((1u16 << 10).to_be_bytes()); // only correlation-id
    header.extend(short(&[0xff, 0xfe, 0xc3, 0x28]));
    s.write_all(&frame(2, 1, &header)).await.unwrap();
    s.write_all(&frame(3, 1, body)).await.unwrap();
    // Close, and wait for close-ok: by then the broker has taken the message.
    let mut close = 200u16.to_be_bytes().to_vec();
    close.extend(short(b""));
    close.extend([0, 0, 0, 0]);
    s.write_all(&frame(1, 0, &method(10, 50, &close)))
        .await
        .unwrap();
    let close_ok = read_frame(&mut s).await;
    assert_eq!(&close_ok[..4], &[0, 10, 0, 51], "connection.close-ok");
}

/// The consumers of `queue`, as the broker counts them (a passive declare).
pub async fn consumer_count(channel: &Channel, queue: &str) -> lapin::Result<u32> {
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let declared = channel.queue_declare(queue.into(), passive, FieldTable::default());
    Ok(declared.await?.consumer_count())
}
