//! The actors of user-service, each owning one concern: the [`UserStore`](store::UserStore)
//! (creates, grouped into transactions, and the ledger's pruning), the [`CacheManager`](cache::CacheManager) (the
//! two-tier cache and its invalidation), the [`EventPublisher`](publisher::EventPublisher)
//! (the outbox to RabbitMQ), the [`RateLimiter`](limits) and the
//! [`HealthMonitor`](health); their [`supervisor`]; and the [`Core`] both edges hand each
//! typed request to. The domain they work on is the `user-domain` crate.

pub mod breaker;
pub mod cache;
pub mod core;
pub mod crypto;
#[cfg(any(test, feature = "fault-injection"))]
pub mod fault;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod publisher;
pub mod redis;
pub mod retry;
pub mod store;
pub mod supervisor;
pub mod telemetry;

pub use crate::core::Core;
