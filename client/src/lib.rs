//! The Rust client of user-service: typed calls over RabbitMQ RPC (contract section 5) for
//! every operation of contract section 3, with the platform's resilience defaults: a 3 s
//! timeout per call, 3 retries with exponential backoff (factor 2, 1–5 s) for calls that are
//! safe to repeat, and a circuit breaker that opens at 50 % errors and tries again after 30 s.
//! It also holds the `user-service-call` command line ([`cli`]).
//!
//! **Dependencies.** lapin, tokio, serde, serde_json and a few small crates (backon, dashmap,
//! futures, uuid, thiserror, tracing), plus `user-domain` for [`Method`] and [`ErrorCode`]
//! (pure types, no I/O). No web server, database or actor framework: `cargo tree -p
//! user-service-client -e normal` holds no warp, hyper, sqlx or actix.
//!
//! **When a call is retried.** Reads are retried on timeouts, transport errors and 5xx
//! answers. A write is retried only when it carries a request key: every attempt of one call
//! sends the same AMQP `message_id`, and the service applies a keyed write once and answers a
//! repeat with the stored reply (contract section 4, `IDEMPOTENCY_KEY_REUSED`). The typed
//! calls key every write ([`RequestKey::PerCall`]); [`Client::call_with`] takes the caller's own
//! key, or none ([`RequestKey::Unkeyed`]: sent once, never retried). A `CONFLICT` answer to a
//! retry (the first attempt still being processed) is retried too. Service errors (4xx) are
//! answers, not failures: they neither retry nor count against the breaker.
//!
//! **Tracing.** Calls made inside [`traced`] carry its W3C `traceparent` and `tracestate` as
//! AMQP headers, as `@opentelemetry/instrumentation-amqplib` does for NestJS callers: the
//! service's spans, replies and events continue that trace.
//!
//! **A cluster.** [`ClientConfig::new`] (and `AMQP_URL` or `AMQP_URLS`) takes one node or a
//! comma-separated list of a cluster's nodes, shuffled once per client. Every wait on the
//! broker is bounded (a 5 s heartbeat, 5 s to connect to a node); when the connection is
//! lost, the calls waiting on it fail at once (and are retried when safe), and the next
//! call connects to the next node that answers ([`broker`]). Requests are published with
//! confirms: a connection on which the queue refuses a request, or does not confirm it within
//! the call's timeout, is given up the same way. A quorum queue that lost its leader can hold
//! back or refuse a channel's publishes for about 10 s, while a new channel is served at once.
//!
//! ```no_run
//! use user_service_client::{Client, ClientConfig, ClientError, ErrorCode, NewUser};
//!
//! # async fn example() -> Result<(), ClientError> {
//! // AMQP_URL, RPC_QUEUE and the credentials (USER_SERVICE_API_KEY, or
//! // INTERNAL_SERVICE_SECRET with SERVICE_NAME) from the environment:
//! let client = Client::connect(ClientConfig::from_env()).await?;
//! // ... or spelled out:
//! let config = ClientConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f").api_key("my-key");
//! let client = Client::connect(config).await?;
//!
//! let user = client
//!     .create(&NewUser::new("Ada", "ada@example.com", "$2b$10$abcdefghijklmnopqrstuv"))
//!     .await?;
//! let id = user["id"].as_str().unwrap_or_default().parse().expect("a UUID");
//! assert!(client.exists(id).await?);
//! match client.get(id, &["name", "preferences.language"]).await {
//!     Ok(view) => println!("{view}"),
//!     Err(ClientError::Service { code: ErrorCode::UserNotFound, .. }) => println!("gone"),
//!     Err(e) => return Err(e),
//! }
//! # Ok(()) }
//! ```

mod args;
mod breaker;
pub mod broker;
pub mod cli;
mod client;
mod config;
mod error;
mod ops;
mod trace;

pub use args::{
    BatchCreateItem, BatchCreateResult, BatchCreateStats, BatchItemStatus, BatchProfilesOptions,
    Login, NewUser, Payment, ProfileOptions, UserPatch,
};
pub use breaker::{Breaker, BreakerConfig, State as BreakerState};
pub use client::{Client, RequestKey};
pub use config::{ClientConfig, DEFAULT_AMQP_URL, DEFAULT_QUEUE, ENVIRONMENT};
pub use error::{ClientError, decode_reply};
pub use trace::traced;
pub use user_domain::{ErrorCode, Method};
/// User ids are UUIDs.
pub use uuid::Uuid;
