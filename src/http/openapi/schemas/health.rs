//! The bodies of the health endpoints.

use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// `GET /health`.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Liveness {
    #[schema(schema_with = ok_or_degraded)]
    status: String,
    version: String,
    uptime_seconds: u64,
    /// Each integration and supervised actor with its own status.
    #[schema(value_type = Object)]
    components: serde_json::Value,
}

/// `GET /health/ready`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    status: String,
    database: String,
}

/// `GET /health/integrations`: each part with its own `status` and figures (the figures
/// only for authenticated callers and `INTERNAL_ALLOWED_IPS`; anyone else gets each part's
/// `status` alone).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Integrations {
    #[schema(schema_with = part_status)]
    status: String,
    #[schema(schema_with = part)]
    database: serde_json::Value,
    #[schema(schema_with = part)]
    redis: serde_json::Value,
    #[schema(schema_with = part)]
    internal_apis: serde_json::Value,
    #[schema(schema_with = part)]
    event_publishing: serde_json::Value,
    #[schema(schema_with = part)]
    cache_performance: serde_json::Value,
}

fn ok_or_degraded() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["ok", "degraded"]))
        .into()
}

fn part_status() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["ok", "degraded", "down"]))
        .into()
}

fn part() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("status", part_status())
        .required("status")
        .into()
}
