//! The connection, one call's attempts, and the breaker around them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use backon::{ExponentialBuilder, Retryable};
use dashmap::DashMap;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use user_domain::{ErrorCode, Method};

use crate::breaker::{Breaker, State as BreakerState};
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
/// channel, their replies routed by correlation id.
pub struct Client {
    config: ClientConfig,
    _connection: Connection,
    channel: Channel,
    pending: Pending,
    breaker: Mutex<Breaker>,
}

impl Client {
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let properties =
            ConnectionProperties::default().with_connection_name("user-service client".into());
        let connection = Connection::connect(&config.amqp_url, properties).await?;
        let channel = connection.create_channel().await?;
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
        channel
            .queue_declare(config.queue.clone().into(), durable, arguments)
            .await?;
        let consume = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let mut replies = channel
            .basic_consume(REPLY_TO.into(), "".into(), consume, FieldTable::default())
            .await?;
        let pending: Pending = Arc::new(DashMap::new());
        let routes = pending.clone();
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
        });
        let breaker = Mutex::new(Breaker::new(config.breaker));
        Ok(Self {
            config,
            _connection: connection,
            channel,
            pending,
            breaker,
        })
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
        let (tx, rx) = oneshot::channel();
        self.pending.insert(correlation_id.clone(), tx);
        let published = self
            .channel
            .basic_publish(
                "".into(),
                self.config.queue.clone().into(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await;
        if let Err(e) = published {
            self.pending.remove(&correlation_id);
            return Err(e.into());
        }
        match tokio::time::timeout(self.config.timeout, rx).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(_)) => Err(ClientError::Transport("reply consumer stopped".to_owned())),
            Err(_) => {
                self.pending.remove(&correlation_id);
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
