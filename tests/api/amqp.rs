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
        let conn = Connection::connect(AMQP_URL, Default::default())
            .await
            .unwrap();
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
            while let Some(d) = self.replies.next().await {
                let d = d.expect("reply consumer open");
                if d.properties.correlation_id().as_ref().map(|c| c.as_str())
                    == Some(correlation.as_str())
                {
                    return (
                        d.properties.clone(),
                        serde_json::from_slice(&d.data).unwrap(),
                    );
                }
            }
            panic!("reply consumer ended");
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("a reply within 10 s")
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
