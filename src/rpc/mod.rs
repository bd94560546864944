//! The RPC edge (contract section 5): consumes `RPC_QUEUE` with a bounded prefetch, decodes
//! each message into a method name and params, authenticates the caller from the message
//! headers, calls the same core as REST, and publishes the reply to `reply_to`. A message is
//! acked only after its reply (or its dead-letter copy) is confirmed by the broker, so a crash
//! means redelivery, not loss. The connection is re-established with backoff whenever it drops.

mod delivery;
pub mod wire;

use std::sync::Arc;

use actix::Addr;
use futures::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::watch;
use tokio::task::JoinSet;
use user_core::Core;
use user_core::health::{HealthMonitor, Report, Status};
use user_core::retry::Backoff;

use crate::auth::Authenticator;

#[derive(Debug, Clone)]
pub struct RpcConfig {
    pub amqp_url: String,
    pub queue: String,
    pub prefetch: u16,
}

impl RpcConfig {
    /// Where messages that cannot be processed and cannot be answered go.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.queue)
    }
}

pub struct RpcEdge {
    pub config: RpcConfig,
    /// Names this instance in every reply's `app_id`, so callers can see who served them.
    pub instance: String,
    pub core: Core,
    pub auth: Arc<Authenticator>,
    pub health: Addr<HealthMonitor>,
}

#[derive(Debug, thiserror::Error)]
enum RpcError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused the message")]
    Nacked,
    #[error("the broker ended the consumer")]
    ConsumerEnded,
}

impl RpcEdge {
    fn report(&self, status: Status, detail: Option<String>) {
        self.health.do_send(Report::new("rabbitmq", status, detail));
    }
}

/// Serves until `stop` turns true, reconnecting with the shared backoff after any failure.
pub async fn run(edge: Arc<RpcEdge>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::reconnect();
    loop {
        match serve(&edge, &mut stop, &mut backoff).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "RabbitMQ connection lost; reconnecting");
                edge.report(Status::Down, Some(e.to_string()));
            }
        }
        if !backoff.wait(&mut stop).await {
            return;
        }
    }
}

/// One connection's life: declare, consume, and hand each delivery to a task of its own.
/// At most `prefetch` deliveries are unacked, which bounds the work in flight.
async fn serve(
    edge: &Arc<RpcEdge>,
    stop: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> Result<(), RpcError> {
    let properties =
        ConnectionProperties::default().with_connection_name("user-service rpc".into());
    let conn = Connection::connect(&edge.config.amqp_url, properties).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for queue in [edge.config.queue.clone(), edge.config.dead_letter_queue()] {
        channel
            .queue_declare(queue.into(), durable, FieldTable::default())
            .await?;
    }
    channel
        .basic_qos(edge.config.prefetch, BasicQosOptions::default())
        .await?;
    let tag = format!("user-service-{}", uuid::Uuid::new_v4().simple());
    let mut consumer = channel
        .basic_consume(
            edge.config.queue.clone().into(),
            tag.clone().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue = %edge.config.queue, prefetch = edge.config.prefetch, "consuming RPC requests");
    edge.report(Status::Up, None);
    backoff.reset();

    let mut in_flight = JoinSet::new();
    loop {
        tokio::select! {
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    in_flight.spawn(delivery::handle(edge.clone(), channel.clone(), delivery));
                }
                Some(Err(e)) => {
                    // Requests in flight cannot be acked on a dead channel; the broker
                    // redelivers them. Let them finish their work rather than cut it short.
                    in_flight.detach_all();
                    return Err(e.into());
                }
                None => {
                    in_flight.detach_all();
                    return Err(RpcError::ConsumerEnded);
                }
            },
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            _ = stop.wait_for(|s| *s) => {
                let _ = channel.basic_cancel(tag.into(), BasicCancelOptions::default()).await;
                while in_flight.join_next().await.is_some() {}
                let _ = conn.close(200, "shutting down".into()).await;
                edge.report(Status::Down, Some("stopped".to_owned()));
                return Ok(());
            }
        }
    }
}

/// Publishes and waits for the broker's confirm.
async fn publish(
    channel: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), RpcError> {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await?
        .await?;
    match confirm {
        Confirmation::Nack(_) => Err(RpcError::Nacked),
        _ => Ok(()),
    }
}
