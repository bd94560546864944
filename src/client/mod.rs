//! A caller's kit for Rust services: typed calls to user-service over RabbitMQ RPC, with the
//! seed's resilience defaults — a 3 s timeout per call, 3 retries with exponential backoff
//! (factor 2, 1–5 s) for idempotent calls, and a circuit breaker that opens at 50 % errors
//! and tries again after 30 s.
//!
//! ```no_run
//! # async fn example() -> Result<(), user_service::client::ClientError> {
//! use user_service::client::{Client, ClientConfig};
//! let client = Client::connect(ClientConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f").api_key("my-key")).await?;
//! let exists = client.exists("6f9619ff-8b86-d011-b42d-00c04fc964ff").await?;
//! # Ok(()) }
//! ```

mod breaker;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use dashmap::DashMap;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use user_domain::Method;

pub use breaker::{Breaker, BreakerConfig, State as BreakerState};

/// RabbitMQ's direct reply-to pseudo-queue: replies come back without a queue of our own.
const REPLY_TO: &str = "amq.rabbitmq.reply-to";

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub amqp_url: String,
    pub queue: String,
    pub timeout: Duration,
    /// Retries after the first attempt, for idempotent calls.
    pub retries: usize,
    pub backoff_factor: f32,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub breaker: BreakerConfig,
    /// Message headers carrying the credentials (`x-api-key`, or the internal secret).
    pub headers: Vec<(String, String)>,
}

impl ClientConfig {
    /// The seed's defaults, against `amqp_url` and the default queue `user-service.rpc`.
    pub fn new(amqp_url: impl Into<String>) -> Self {
        Self {
            amqp_url: amqp_url.into(),
            queue: "user-service.rpc".to_owned(),
            timeout: Duration::from_secs(3),
            retries: 3,
            backoff_factor: 2.0,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5),
            breaker: BreakerConfig::default(),
            headers: Vec::new(),
        }
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.headers.push(("x-api-key".to_owned(), key.into()));
        self
    }

    pub fn internal_secret(
        mut self,
        secret: impl Into<String>,
        service_name: impl Into<String>,
    ) -> Self {
        self.headers
            .push(("x-internal-service".to_owned(), secret.into()));
        self.headers
            .push(("x-service-name".to_owned(), service_name.into()));
        self
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// user-service answered with an error (contract section 4).
    #[error("{status} {code}: {message}")]
    Service {
        status: u16,
        code: String,
        message: String,
        details: Value,
    },
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("the circuit breaker is open; not calling user-service")]
    CircuitOpen,
    #[error("RabbitMQ: {0}")]
    Transport(String),
    #[error("unreadable reply: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Worth another attempt: the service or the way to it may recover.
    fn is_transient(&self) -> bool {
        match self {
            Self::Service { status, .. } => *status >= 500,
            Self::Timeout(_) | Self::Transport(_) => true,
            Self::CircuitOpen | Self::Protocol(_) => false,
        }
    }

    /// The status a service error carries, for callers that branch on it (404 → None, say).
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Service { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl From<lapin::Error> for ClientError {
    fn from(e: lapin::Error) -> Self {
        Self::Transport(e.to_string())
    }
}

type Pending = Arc<DashMap<String, oneshot::Sender<Vec<u8>>>>;

/// A connection to user-service. Cheap to share (`Arc`); calls run concurrently.
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
        channel
            .queue_declare(config.queue.clone().into(), durable, FieldTable::default())
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

    /// Calls `method` and returns its `data`. Idempotent calls are retried on timeouts,
    /// transport errors and 5xx answers; every attempt of one call carries the same message
    /// id, which is what makes a retried create safe.
    pub async fn call(&self, method: Method, params: Value) -> Result<Value, ClientError> {
        let message_id = uuid::Uuid::new_v4().to_string();
        let attempt = || self.attempt(method, &params, &message_id);
        if !is_idempotent(method) {
            return attempt().await;
        }
        let backoff = ExponentialBuilder::new()
            .with_factor(self.config.backoff_factor)
            .with_min_delay(self.config.backoff_min)
            .with_max_delay(self.config.backoff_max)
            .with_max_times(self.config.retries);
        attempt
            .retry(backoff)
            .when(ClientError::is_transient)
            .notify(|e, wait| tracing::debug!(error = %e, ?wait, %method, "retrying"))
            .await
    }

    async fn attempt(
        &self,
        method: Method,
        params: &Value,
        message_id: &str,
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

    /// Sends one request as is (any method name) and returns the raw reply envelope
    /// `{status, data | error}`: no retry, no breaker. For tools and diagnostics.
    pub async fn request(&self, method: &str, params: &Value) -> Result<Value, ClientError> {
        let reply = self
            .send_and_wait(method, params, &uuid::Uuid::new_v4().to_string())
            .await?;
        serde_json::from_slice(&reply).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    async fn send_and_wait(
        &self,
        method: &str,
        params: &Value,
        message_id: &str,
    ) -> Result<Vec<u8>, ClientError> {
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.pending.insert(correlation_id.clone(), tx);
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
        let props = BasicProperties::default()
            .with_reply_to(REPLY_TO.into())
            .with_correlation_id(correlation_id.clone().into())
            .with_message_id(message_id.to_owned().into())
            .with_content_type("application/json".into())
            // The service drops work that nobody will wait for.
            .with_expiration(timeout_ms.into())
            .with_headers(headers);
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

    pub async fn create(
        &self,
        name: &str,
        email: &str,
        password_hash: &str,
    ) -> Result<Value, ClientError> {
        self.call(
            Method::Create,
            json!({"name": name, "email": email, "password": password_hash}),
        )
        .await
    }

    pub async fn get(&self, id: &str, fields: &[&str]) -> Result<Value, ClientError> {
        let mut params = json!({"id": id});
        if !fields.is_empty() {
            params["fields"] = json!(fields);
        }
        self.call(Method::Get, params).await
    }

    /// `None` when there is no such user.
    pub async fn get_by_email(
        &self,
        email: &str,
        include_credentials: bool,
    ) -> Result<Option<Value>, ClientError> {
        let params = json!({"email": email, "includeCredentials": include_credentials});
        match self.call(Method::GetByEmail, params).await {
            Err(e) if e.status() == Some(404) => Ok(None),
            other => other.map(Some),
        }
    }

    pub async fn exists(&self, id: &str) -> Result<bool, ClientError> {
        let reply = self.call(Method::Exists, json!({"id": id})).await?;
        reply["exists"]
            .as_bool()
            .ok_or_else(|| ClientError::Protocol(format!("no 'exists' in {reply}")))
    }

    pub async fn update_preferences(&self, id: &str, patch: Value) -> Result<Value, ClientError> {
        self.call(Method::UpdatePreferences, with_id(id, patch))
            .await
    }

    pub async fn batch_lookup(&self, ids: &[&str], fields: &[&str]) -> Result<Value, ClientError> {
        self.call(Method::BatchLookup, json!({"ids": ids, "fields": fields}))
            .await
    }

    pub async fn record_login(
        &self,
        id: &str,
        ip_address: Option<&str>,
    ) -> Result<Value, ClientError> {
        self.call(
            Method::RecordLogin,
            json!({"id": id, "ipAddress": ip_address}),
        )
        .await
    }
}

fn with_id(id: &str, patch: Value) -> Value {
    let mut params = match patch {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    params.insert("id".to_owned(), Value::String(id.to_owned()));
    Value::Object(params)
}

/// Safe to send twice: reads, merge-patch updates, payments (idempotent on `paymentId`) and
/// creates (idempotent on the message id). Not: delete and recordLogin.
fn is_idempotent(method: Method) -> bool {
    !matches!(method, Method::Delete | Method::RecordLogin)
}

/// `{status, data}` → data; `{status, error}` → [`ClientError::Service`].
pub fn decode_reply(bytes: &[u8]) -> Result<Value, ClientError> {
    let reply: Value =
        serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let status = reply["status"]
        .as_u64()
        .ok_or_else(|| ClientError::Protocol(format!("no status in {reply}")))?;
    if status < 400 {
        return Ok(reply.get("data").cloned().unwrap_or(Value::Null));
    }
    let error = &reply["error"];
    Err(ClientError::Service {
        status: status as u16,
        code: error["code"].as_str().unwrap_or("INTERNAL").to_owned(),
        message: error["message"].as_str().unwrap_or_default().to_owned(),
        details: error.get("details").cloned().unwrap_or(Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_decode_into_data_or_errors() {
        assert_eq!(
            decode_reply(br#"{"status": 200, "data": {"exists": true}}"#).unwrap(),
            json!({"exists": true})
        );
        let err = decode_reply(
            br#"{"status": 404, "error": {"code": "USER_NOT_FOUND", "message": "gone"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.status(), Some(404));
        assert!(!err.is_transient());
        let unavailable =
            decode_reply(br#"{"status": 503, "error": {"code": "UNAVAILABLE", "message": ""}}"#);
        assert!(unavailable.unwrap_err().is_transient());
        assert!(matches!(
            decode_reply(b"nope"),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn deletes_and_logins_are_not_retried() {
        assert!(!is_idempotent(Method::Delete) && !is_idempotent(Method::RecordLogin));
        assert!(is_idempotent(Method::Get) && is_idempotent(Method::Create));
    }
}
