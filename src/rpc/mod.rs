//! The RPC edge (contract section 5): consumes `RPC_QUEUE` with a bounded prefetch, decodes
//! each message into a method name and params, authenticates the caller from the message
//! headers, calls the same core as REST, and publishes the reply to `reply_to`. A message is
//! acked only after its reply (or its dead-letter copy) is confirmed by the broker, so a crash
//! means redelivery, not loss. The connection is re-established with backoff whenever it drops.

pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;
use user_core::domain::CorrelationId;
use user_core::health::{Health, Report, Status};
use user_core::metrics::{Transport, record_request};
use user_core::retry::Backoff;
use user_core::{CallContext, Core, CoreError, Method, ParamForm, Reply};

use crate::auth::{Authenticator, Credentials};
use wire::Dialect;

/// How long a request that failed for a passing reason (database down) waits before it is
/// handed back to the queue: long enough not to spin, short enough to recover promptly.
const REQUEUE_DELAY: Duration = Duration::from_secs(1);

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
    pub health: Health,
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
                    in_flight.spawn(handle(edge.clone(), channel.clone(), delivery));
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

/// A header's text value; names are matched case-insensitively.
fn header<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a str> {
    let table = props.headers().as_ref()?;
    let (_, value) = table
        .inner()
        .iter()
        .find(|(k, _)| k.as_str().eq_ignore_ascii_case(name))?;
    match value {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

fn text(s: &Option<ShortString>) -> Option<&str> {
    s.as_ref()
        .map(ShortString::as_str)
        .filter(|s| !s.is_empty())
}

/// When the request stops being worth answering: `expiration` counted from its `timestamp`
/// when it has one, else from now. `None` when already past.
fn deadline(props: &BasicProperties) -> Result<Option<Instant>, ()> {
    let Some(ttl) = text(props.expiration()).and_then(|e| e.parse::<u64>().ok()) else {
        return Ok(None);
    };
    let elapsed_ms = props
        .timestamp()
        .and_then(|sent| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?;
            now.as_millis().checked_sub(u128::from(sent) * 1000)
        })
        .unwrap_or(0);
    let remaining = u128::from(ttl).saturating_sub(elapsed_ms);
    if remaining == 0 {
        return Err(());
    }
    Ok(Some(
        Instant::now() + Duration::from_millis(remaining as u64),
    ))
}

async fn handle(edge: Arc<RpcEdge>, channel: Channel, delivery: Delivery) {
    let props = &delivery.properties;
    let decoded = wire::decode(&delivery.data);
    let dialect = decoded
        .as_ref()
        .map_or(Dialect::Plain, |i| i.dialect.clone());
    let nest_id = match &dialect {
        Dialect::Nestjs { id } => id.as_deref(),
        Dialect::Plain => None,
    };
    let amqp_correlation = text(props.correlation_id()).or(nest_id).map(str::to_owned);
    let correlation_id = CorrelationId::or_generate(
        header(props, "x-correlation-id").or(amqp_correlation.as_deref()),
    );
    let method_name = decoded
        .as_ref()
        .map_or("?", |i| i.method.as_str())
        .to_owned();
    let span = tracing::info_span!(
        "rpc",
        correlation_id = %correlation_id,
        method = %method_name,
        caller = tracing::field::Empty,
        redelivered = delivery.redelivered,
    );
    async {
        let started = std::time::Instant::now();
        let Ok(deadline) = deadline(props) else {
            tracing::info!("expired before it could be handled; dropped");
            let _ = delivery.ack(BasicAckOptions::default()).await;
            return;
        };
        let mut seen = Seen::default();
        let result = call(&edge, props, decoded, correlation_id, deadline, &mut seen).await;
        let status = result.as_ref().map_or_else(|e| e.code().status(), |r| r.status.code());
        if let Some(method) = seen.method {
            let caller = seen.caller.as_deref().unwrap_or("anonymous");
            let error = result.as_ref().err().map(CoreError::code);
            record_request(caller, method.as_str(), Transport::Rpc, status, started.elapsed(), error);
        }
        let reply_to = text(props.reply_to());
        let answered = match (reply_to, dialect.wants_reply()) {
            (Some(reply_to), true) => {
                let body = serde_json::to_vec(&wire::encode(&dialect, &result)).unwrap_or_default();
                let mut reply = BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_app_id(edge.instance.clone().into());
                if let Some(c) = &amqp_correlation {
                    reply = reply.with_correlation_id(c.clone().into());
                }
                publish(&channel, "", reply_to, &body, reply).await
            }
            _ => match &result {
                Ok(_) => Ok(()),
                Err(CoreError::Unavailable(_)) => {
                    // Nobody is waiting for an answer and the failure will pass: try again later.
                    tokio::time::sleep(REQUEUE_DELAY).await;
                    let requeue = BasicNackOptions { requeue: true, ..Default::default() };
                    let _ = delivery.nack(requeue).await;
                    tracing::info!(status, "no reply address; requeued");
                    return;
                }
                Err(e) => dead_letter(&edge, &channel, &delivery, e).await,
            },
        };
        match answered {
            Ok(()) => {
                if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                    tracing::warn!(error = %e, "ack failed; the request will be redelivered");
                }
                tracing::info!(status, ms = %format_args!("{:.2}", started.elapsed().as_secs_f64() * 1e3), "request");
            }
            Err(e) => tracing::warn!(error = %e, status, "could not answer; the request will be redelivered"),
        }
    }
    .instrument(span)
    .await;
}

/// What a request turned out to be, for the metrics.
#[derive(Default)]
struct Seen {
    method: Option<Method>,
    caller: Option<String>,
}

async fn call(
    edge: &RpcEdge,
    props: &BasicProperties,
    decoded: Result<wire::Incoming, CoreError>,
    correlation_id: CorrelationId,
    deadline: Option<Instant>,
    seen: &mut Seen,
) -> Result<Reply, CoreError> {
    let incoming = decoded?;
    let method = Method::parse(&incoming.method)
        .ok_or_else(|| CoreError::NotFound(format!("unknown method '{}'", incoming.method)))?;
    seen.method = Some(method);
    let caller = edge
        .auth
        .authenticate(&Credentials::from_headers(|n| header(props, n)), None)?;
    tracing::Span::current().record("caller", caller.name.as_str());
    seen.caller = Some(caller.name.clone());
    // The same message delivered twice carries the same id: that makes writes idempotent.
    let request_key = text(props.message_id()).or(text(props.correlation_id()));
    let mut ctx = CallContext::new(caller, correlation_id).keyed(request_key);
    ctx.deadline = deadline;
    edge.core
        .call(ctx, method, incoming.params, ParamForm::Json)
        .await
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

/// Moves a message that failed and has no reply address to the dead-letter queue, with the
/// reason in `x-error`. Its `expiration` is dropped so that it stays there.
async fn dead_letter(
    edge: &RpcEdge,
    channel: &Channel,
    delivery: &Delivery,
    e: &CoreError,
) -> Result<(), RpcError> {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    let reason = format!("{}: {e}", e.code().as_str());
    headers.insert(
        "x-error".into(),
        AMQPValue::LongString(LongString::from(reason.as_bytes())),
    );
    headers.insert(
        "x-original-queue".into(),
        AMQPValue::LongString(LongString::from(edge.config.queue.as_bytes())),
    );
    let mut props = BasicProperties::default()
        .with_headers(headers)
        .with_delivery_mode(2);
    if let Some(t) = delivery.properties.content_type() {
        props = props.with_content_type(t.clone());
    }
    if let Some(c) = delivery.properties.correlation_id() {
        props = props.with_correlation_id(c.clone());
    }
    if let Some(m) = delivery.properties.message_id() {
        props = props.with_message_id(m.clone());
    }
    tracing::warn!(error = %reason, "unanswerable request moved to the dead-letter queue");
    publish(
        channel,
        "",
        &edge.config.dead_letter_queue(),
        &delivery.data,
        props,
    )
    .await
}
