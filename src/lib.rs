//! The `user-service` binary's parts: typed configuration, authentication, the REST edge,
//! start-up and supervision. The operations run in `user-core` (`actors/`) on the types of `user-domain` (`domain/`).

pub mod app;
pub mod auth;
pub mod config;
pub mod db;
pub mod http;
pub mod metrics;
pub mod preflight;
pub mod rpc;
pub mod telemetry;
