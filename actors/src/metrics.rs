//! The service's Prometheus series (contract section 8). Both edges record each request here,
//! once, with the same labels.

use std::time::Duration;

use user_domain::error::ErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Rest,
    Rpc,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rest => "rest",
            Self::Rpc => "rpc",
        }
    }
}

pub const REQUESTS: &str = "user_service_integration_requests_total";
pub const DURATION: &str = "user_service_integration_duration_seconds";
pub const ERRORS: &str = "user_service_integration_errors_total";
pub const CACHE_HITS: &str = "user_service_integration_cache_hits_total";
pub const CACHE_MISSES: &str = "user_service_integration_cache_misses_total";
pub const RPC_DELIVERIES: &str = "user_service_rpc_deliveries_total";
/// Messages the RPC edge could not send as they were (an oversized reply replaced by an
/// error, a dead letter refused or failed twice and dropped), by `message`.
pub const RPC_UNSENDABLE: &str = "user_service_rpc_unsendable_total";
/// Times the RPC consumer gave up a subscription that received nothing and subscribed again,
/// by `reason` (`idle`: nothing came; `stalled`: nothing came while requests waited).
pub const RPC_RESUBSCRIBED: &str = "user_service_rpc_resubscribed_total";
pub const AUTH_FAILURES: &str = "user_service_auth_failures_total";
pub const OUTBOX_PENDING: &str = "user_service_outbox_pending";
pub const OUTBOX_DEAD: &str = "user_service_outbox_dead";
pub const EVENTS_DEAD: &str = "user_service_events_dead_total";
/// 1 while a dependency's breaker is open (requests do not wait for it), by `dependency`.
pub const BREAKER_OPEN: &str = "user_service_breaker_open";
/// How often each dependency's breaker opened.
pub const BREAKER_TRIPS: &str = "user_service_breaker_trips_total";
/// Rate limit checks this instance counted alone although Redis is configured: Redis did
/// not answer within its deadline, or its breaker was open.
pub const RATE_LIMIT_LOCAL: &str = "user_service_rate_limit_local_total";
/// Creates committed together, per group (see `store::group`).
pub const CREATE_GROUP_SIZE: &str = "user_service_create_group_size";
/// How long a group of creates took, from its start to its commit.
pub const CREATE_GROUP_DURATION: &str = "user_service_create_group_duration_seconds";

/// Why an event was set aside as dead (the `reason` label of [`EVENTS_DEAD`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// A stored value could not become a message; never retried.
    Unencodable,
    /// The broker refused it on every attempt.
    Refused,
}

impl DeadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unencodable => "unencodable",
            Self::Refused => "refused",
        }
    }
}

/// `service` is the caller's name, `endpoint` the operation's name. Labels are borrowed
/// where they can be: this runs for every request.
pub fn record_request(
    service: &str,
    endpoint: &'static str,
    transport: Transport,
    status: u16,
    elapsed: Duration,
    error: Option<ErrorCode>,
) {
    let service = metrics::SharedString::from(service.to_owned());
    metrics::counter!(REQUESTS, "service" => service.clone(), "endpoint" => endpoint,
        "status" => status_label(status), "transport" => transport.as_str())
    .increment(1);
    metrics::histogram!(DURATION, "service" => service.clone(), "endpoint" => endpoint,
        "transport" => transport.as_str())
    .record(elapsed.as_secs_f64());
    if let Some(code) = error {
        metrics::counter!(ERRORS, "service" => service, "error_type" => code.as_str()).increment(1);
    }
}

fn status_label(status: u16) -> metrics::SharedString {
    const KNOWN: [(u16, &str); 14] = [
        (200, "200"),
        (201, "201"),
        (204, "204"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (409, "409"),
        (413, "413"),
        (422, "422"),
        (429, "429"),
        (500, "500"),
        (503, "503"),
        (504, "504"),
    ];
    match KNOWN.iter().find(|(code, _)| *code == status) {
        Some((_, label)) => metrics::SharedString::const_str(label),
        None => metrics::SharedString::from(status.to_string()),
    }
}

/// A request that did not authenticate, by error code (or `blocked`: its address had failed
/// too often).
pub fn record_auth_failure(transport: Transport, reason: &'static str) {
    metrics::counter!(AUTH_FAILURES, "transport" => transport.as_str(), "reason" => reason)
        .increment(1);
}

/// Every RPC delivery, by how it was settled (a closed set of outcomes).
pub fn record_delivery(outcome: &'static str) {
    metrics::counter!(RPC_DELIVERIES, "outcome" => outcome).increment(1);
}

/// The RPC consumer subscribed again (see [`RPC_RESUBSCRIBED`]).
pub fn record_resubscribed(reason: &'static str) {
    metrics::counter!(RPC_RESUBSCRIBED, "reason" => reason).increment(1);
}

/// A reply or dead letter that could not be sent as it was (see [`RPC_UNSENDABLE`]).
pub fn record_unsendable(message: &'static str) {
    metrics::counter!(RPC_UNSENDABLE, "message" => message).increment(1);
}

pub fn record_backlog(pending: i64, dead: i64) {
    metrics::gauge!(OUTBOX_PENDING).set(pending as f64);
    metrics::gauge!(OUTBOX_DEAD).set(dead as f64);
}

pub fn record_dead_events(reason: DeadReason, count: u64) {
    metrics::counter!(EVENTS_DEAD, "reason" => reason.as_str()).increment(count);
}

/// A rate limit check counted by this instance alone (see [`RATE_LIMIT_LOCAL`]).
pub fn record_local_limit_check() {
    metrics::counter!(RATE_LIMIT_LOCAL).increment(1);
}

/// Help texts for the exporter.
pub fn describe() {
    metrics::describe_counter!(
        REQUESTS,
        "Requests by caller, operation, status and transport"
    );
    metrics::describe_histogram!(
        DURATION,
        metrics::Unit::Seconds,
        "Request duration by caller, operation and transport"
    );
    metrics::describe_counter!(ERRORS, "Failed requests by caller and error code");
    metrics::describe_counter!(CACHE_HITS, "Cache hits by caller and cache");
    metrics::describe_counter!(CACHE_MISSES, "Cache misses by caller and cache");
    metrics::describe_counter!(
        AUTH_FAILURES,
        "Failed authentications by transport and reason (UNAUTHENTICATED, FORBIDDEN, blocked)"
    );
    metrics::describe_counter!(
        RATE_LIMIT_LOCAL,
        "Rate limit checks counted by this instance alone: Redis late or its breaker open"
    );
    metrics::describe_counter!(
        RPC_DELIVERIES,
        "RPC deliveries by how they were settled: answered, done, dead_lettered, requeued, expired, dropped, unsettled, unreadable"
    );
    metrics::describe_counter!(
        RPC_UNSENDABLE,
        "RPC replies replaced by an error for their size, and dead letters dropped (refused by the broker, or failed twice), by message: reply, dead_letter"
    );
    metrics::describe_counter!(
        RPC_RESUBSCRIBED,
        "RPC subscriptions given up and made again on a new connection, by reason: idle (nothing came), stalled (nothing came while requests waited)"
    );
    metrics::describe_gauge!(
        OUTBOX_PENDING,
        "Events written but not yet published (dead ones not included)"
    );
    metrics::describe_gauge!(OUTBOX_DEAD, "Events set aside as dead, still in the outbox");
    metrics::describe_counter!(
        EVENTS_DEAD,
        "Events set aside as dead, by reason (unencodable, refused)"
    );
    metrics::describe_histogram!(
        CREATE_GROUP_SIZE,
        "Creates committed together in one transaction"
    );
    metrics::describe_histogram!(
        CREATE_GROUP_DURATION,
        metrics::Unit::Seconds,
        "Time from a group of creates' start to its commit"
    );
}
