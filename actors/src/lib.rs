//! The core of user-service: domain types that validate on construction, the typed
//! [`Request`](request::Request) both transports decode into, the [`Core`](core::Core)
//! dispatcher, and the actors that own state (starting with the [`UserStore`](store::UserStore)).

pub mod cache;
pub mod core;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod events;
#[cfg(any(test, feature = "fault-injection"))]
pub mod fault;
pub mod health;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod publisher;
pub mod request;
pub mod retry;
pub mod store;
pub mod supervisor;
pub mod views;

pub use crate::core::{CallContext, Caller, Core, Data, Reply, ReplyStatus};
pub use crate::error::{CoreError, ErrorCode, FieldError};
pub use crate::request::{Method, ParamForm, Request};
