//! The connection, one call's attempts, and the breaker around them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use backon::{ExponentialBuilder, Retryable};
use dashmap::DashMap;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use user_domain::{ErrorCode, Method};

use crate::breaker::{Breaker, State as BreakerState};
use crate::broker::{Connected, Connector, within};
use crate::config::ClientConfig;
use crate::error::{ClientError, decode_reply};

/// RabbitMQ's direct reply-to pseudo-queue: replies come back without a queue of our own.
const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// What a call sends as its AMQP `message_id`: the request key with which the service
/// applies a write once (a repeat gets the stored reply).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RequestKey {
    /// A fresh UUID for the call, the same on each of its attempts (the default): a write
    /// is retried safely.
    #[default]
    PerCall,
    /// The caller's own key (at most 128 printable ASCII characters), e.g. derived from its
    /// own operation id, so that a repeat after the caller's own restart is also applied once.
    Given(String),
    /// No `message_id`: each delivery is a new request, so a write is sent once, never retried.
    Unkeyed,
}

type Pending = Arc<DashMap<String, oneshot::Sender<Vec<u8>>>>;

/// A connection to user-service. Share it (`Arc<Client>`); calls run concurrently over one
/// channel, their replies routed by correlation id. A lost connection is replaced by the
/// next call, on the next node of the list; the calls that were waiting on it fail at once
/// as transport errors, and are retried when safe.
pub struct Client {
    config: ClientConfig,
    link: RwLock<Arc<Link>>,
    /// Held while a new link is made, so that one call makes it and the others use it.
    connector: tokio::sync::Mutex<Connector>,
    breaker: Mutex<Breaker>,
}

/// One connection to one node: its channel, and the calls waiting for replies on it.
struct Link {
    connection: Connected,
    channel: Channel,
    pending: Pending,
    /// Cleared when the reply consumer ends: no reply comes on this link any more.
    replies: Arc<AtomicBool>,
}

impl Link {
    async fn open(connector: &mut Connector, config: &ClientConfig) -> Result<Self, ClientError> {
        let connection = connector.connect("user-service client", None).await?;
        let node = &connection.node;
        let broker = connector.broker();
        let channel = broker.within(connection.create_channel()).await?;
        // Confirms tell a request the queue holds from one stuck on the way (see `stuck`).
        broker
            .within(channel.confirm_select(ConfirmSelectOptions::default()))
            .await?;
        // Declared as the service declares it, so requests sent before the service is up wait.
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let mut arguments = FieldTable::default();
        if config.quorum {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        let queue = config.queue.clone().into();
        broker
            .within(channel.queue_declare(queue, durable, arguments))
            .await?;
        let consume = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let mut replies = broker
            .within(channel.basic_consume(
                REPLY_TO.into(),
                "".into(),
                consume,
                FieldTable::default(),
            ))
            .await?;
        tracing::debug!(%node, "connected to RabbitMQ");
        let pending: Pending = Arc::new(DashMap::new());
        let open = Arc::new(AtomicBool::new(true));
        let (routes, still_open) = (pending.clone(), open.clone());
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = replies.next().await {
                let id = delivery
                    .properties
                    .correlation_id()
                    .as_ref()
                    .map(|c| c.as_str().to_owned());
                if let Some((_, waiter)) = id.and_then(|id| routes.remove(&id)) {
                    let _ = waiter.send(delivery.data);
                }
            }
            // The link is lost: its waiting calls fail now, rather than at their timeout.
            still_open.store(false, Ordering::Release);
            routes.clear();
        });
        Ok(Self {
            connection,
            channel,
            pending,
            replies: open,
        })
    }

    fn is_open(&self) -> bool {
        self.replies.load(Ordering::Acquire) && self.connection.status().connected()
    }

    /// A request the queue refused, or did not confirm within a whole timeout: the link is
    /// given up, and the next call opens a new one. After its leader is lost, a quorum queue
    /// holds back a channel's publishes (those sent to the lost leader, until the broker
    /// resends them about 10 s later) or refuses them (a channel opened during the election,
    /// for about 10 s), while a new channel is served at once. A request that was confirmed
    /// but not answered keeps the link: nobody serves the queue, and a new link would not
    /// change that.
    fn stuck(self: &Arc<Self>, broker: &crate::broker::Broker) {
        if !self.is_open() {
            return;
        }
        tracing::debug!("a request was not taken by the queue in time; opening another link");
        self.replies.store(false, Ordering::Release);
        let (link, broker) = (self.clone(), broker.clone());
        tokio::spawn(async move {
            let closing = link.connection.close(200, "requests not taken".into());
            let _ = broker.within(closing).await;
        });
    }
}

impl Client {
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let mut connector = config.broker.connector();
        let link = Link::open(&mut connector, &config).await?;
        let breaker = Mutex::new(Breaker::new(config.breaker));
        Ok(Self {
            config,
            link: RwLock::new(Arc::new(link)),
            connector: tokio::sync::Mutex::new(connector),
            breaker,
        })
    }

    /// The current link, or a new one (on the next node) when it is lost.
    async fn link(&self) -> Result<Arc<Link>, ClientError> {
        let current = || {
            let link = self.link.read().unwrap_or_else(PoisonError::into_inner);
            Some(link.clone()).filter(|l| l.is_open())
        };
        if let Some(link) = current() {
            return Ok(link);
        }
        let mut connector = self.connector.lock().await;
        if let Some(link) = current() {
            return Ok(link);
        }
        let link = Arc::new(Link::open(&mut connector, &self.config).await?);
        *self.link.write().unwrap_or_else(PoisonError::into_inner) = link.clone();
        Ok(link)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Calls `method` with `params` (the contract's names) and returns the reply's `data`,
    /// with a fresh request key ([`RequestKey::PerCall`]).
    pub async fn call(&self, method: Method, params: Value) -> Result<Value, ClientError> {
        self.call_with(method, params, RequestKey::PerCall).await
    }

    /// [`Client::call`] with the request key given. Reads are retried on timeouts, transport
    /// errors and 5xx answers; writes too when keyed, and also on a `CONFLICT` answer to a
    /// retry (the earlier attempt is still being processed).
    pub async fn call_with(
        &self,
        method: Method,
        params: Value,
        key: RequestKey,
    ) -> Result<Value, ClientError> {
        let message_id = match key {
            RequestKey::PerCall => Some(uuid::Uuid::new_v4().to_string()),
            RequestKey::Given(k) => Some(k),
            RequestKey::Unkeyed => None,
        };
        let attempts = AtomicUsize::new(0);
        let attempt = || {
            attempts.fetch_add(1, Ordering::Relaxed);
            self.attempt(method, &params, message_id.as_deref())
        };
        if !retry_safe(method, message_id.is_some()) || self.config.retries == 0 {
            return attempt().await;
        }
        let backoff = ExponentialBuilder::new()
            .with_factor(self.config.backoff_factor)
            .with_min_delay(self.config.backoff_min)
            .with_max_delay(self.config.backoff_max)
            .with_max_times(self.config.retries);
        let write = !method.is_read();
        attempt
            .retry(backoff)
            .when(|e| {
                e.is_transient()
                    || (write
                        && e.code() == Some(ErrorCode::Conflict)
                        && attempts.load(Ordering::Relaxed) > 1)
            })
            .notify(|e, wait| tracing::debug!(error = %e, ?wait, %method, "retrying"))
            .await
    }

    async fn attempt(
        &self,
        method: Method,
        params: &Value,
        message_id: Option<&str>,
    ) -> Result<Value, ClientError> {
        if !self.lock_breaker().allow(Instant::now()) {
            return Err(ClientError::CircuitOpen);
        }
        let result = self
            .send_and_wait(method.as_str(), params, message_id)
            .await
            .and_then(|reply| decode_reply(&reply));
        let failed = result.as_ref().err().is_some_and(ClientError::is_transient);
        self.lock_breaker().record(failed, Instant::now());
        result
    }

    fn lock_breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.lock_breaker().state()
    }

    /// Sends one request as is (any method name, a fresh `message_id`) and returns the raw
    /// reply envelope `{status, data | error}`: no retry, no breaker. For tools and diagnostics.
    pub async fn request(&self, method: &str, params: &Value) -> Result<Value, ClientError> {
        let key = uuid::Uuid::new_v4().to_string();
        let reply = self.send_and_wait(method, params, Some(&key)).await?;
        serde_json::from_slice(&reply).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    async fn send_and_wait(
        &self,
        method: &str,
        params: &Value,
        message_id: Option<&str>,
    ) -> Result<Vec<u8>, ClientError> {
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let body = serde_json::to_vec(&json!({"method": method, "params": params}))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut headers = FieldTable::default();
        for (k, v) in &self.config.headers {
            headers.insert(
                k.clone().into(),
                AMQPValue::LongString(LongString::from(v.as_bytes())),
            );
        }
        for (k, v) in crate::trace::headers() {
            headers.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
        }
        let timeout_ms = self.config.timeout.as_millis().to_string();
        let mut props = BasicProperties::default()
            .with_reply_to(REPLY_TO.into())
            .with_correlation_id(correlation_id.clone().into())
            .with_content_type("application/json".into())
            // The service drops work that nobody will wait for.
            .with_expiration(timeout_ms.into())
            .with_headers(headers);
        if let Some(id) = message_id {
            props = props.with_message_id(id.to_owned().into());
        }
        // Reconnecting walks the nodes, each within the broker's deadline; a call waits for
        // that (or for another call's reconnect) no longer than for its reply.
        let link = tokio::time::timeout(self.config.timeout, self.link())
            .await
            .map_err(|_| ClientError::Timeout(self.config.timeout))??;
        let (tx, mut rx) = oneshot::channel();
        link.pending.insert(correlation_id.clone(), tx);
        let publish = link.channel.basic_publish(
            "".into(),
            self.config.queue.clone().into(),
            BasicPublishOptions::default(),
            &body,
            props,
        );
        let confirm = match within(self.config.timeout, publish).await {
            Ok(confirm) => confirm,
            Err(e) => {
                link.pending.remove(&correlation_id);
                return Err(e.into());
            }
        };
        let mut taken = false;
        let waiting = async {
            let mut confirm = std::pin::pin!(confirm);
            loop {
                tokio::select! {
                    reply = &mut rx => return Some(reply),
                    confirmed = &mut confirm, if !taken => match confirmed {
                        Ok(c) if c.is_nack() => return None,
                        // Taken, or the channel is lost (and the reply's wait says so).
                        _ => taken = true,
                    },
                }
            }
        };
        let waited = tokio::time::timeout(self.config.timeout, waiting).await;
        match waited {
            Ok(Some(Ok(bytes))) => Ok(bytes),
            Ok(Some(Err(_))) => Err(ClientError::Transport(
                "the connection was lost before the reply came".to_owned(),
            )),
            Ok(None) => {
                link.pending.remove(&correlation_id);
                link.stuck(&self.config.broker);
                Err(ClientError::Transport(
                    "the broker refused the request".to_owned(),
                ))
            }
            Err(_) => {
                link.pending.remove(&correlation_id);
                if !taken {
                    link.stuck(&self.config.broker);
                }
                Err(ClientError::Timeout(self.config.timeout))
            }
        }
    }
}

/// Safe to send again: a read, or a write the service applies once by its request key.
fn retry_safe(method: Method, keyed: bool) -> bool {
    method.is_read() || keyed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_retried_only_when_keyed() {
        assert!(retry_safe(Method::Get, false) && retry_safe(Method::Exists, true));
        for write in [
            Method::Create,
            Method::Delete,
            Method::RecordLogin,
            Method::RecordPayment,
        ] {
            assert!(retry_safe(write, true), "{write}");
            assert!(!retry_safe(write, false), "{write}");
        }
    }
}
