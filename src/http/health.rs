//! The health endpoints of contract section 3, answered without credentials.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use user_core::breaker::Breaker;
use user_core::health::{Component, Status};
use user_core::supervisor::ActorStatus;
use user_domain::{CoreError, Reply};

use super::Edge;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Liveness: answers without touching the database. `status` is `degraded` while an
/// integration (RabbitMQ, the outbox) is not well, a dependency's breaker is open or an actor
/// is restarting; the service still serves what it can. Each supervised actor is a component
/// of its own, read from the supervisors. Nothing here waits for an actor.
///
/// Unless `detailed`, no component shows its `detail` (error texts, the broker's nodes):
/// those are for operators.
pub async fn live(edge: &Edge, detailed: bool) -> Reply {
    let components = edge.health.snapshot();
    let actors = edge.actors.states();
    let mut degraded = components.values().any(|c| c.status != Status::Up)
        || actors.values().any(|a| a.status != ActorStatus::Up);
    let mut parts = json!(components);
    parts["database"] = json!({"status": "up"});
    for (name, state) in actors {
        parts[name] = json!(state);
    }
    degraded |= show_breaker(&mut parts, &edge.db_breaker);
    if let Some(redis) = &edge.redis {
        degraded |= show_breaker(&mut parts, redis.breaker());
    }
    if !detailed && let Some(parts) = parts.as_object_mut() {
        for part in parts.values_mut().filter_map(Value::as_object_mut) {
            part.remove("detail");
        }
    }
    Reply::ok(json!({
        "status": if degraded { "degraded" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeSeconds": edge.started.elapsed().as_secs(),
        "components": parts,
    }))
}

/// Readiness: 503 until the database answers, and at once while its breaker is open.
pub async fn ready(edge: &Edge) -> Result<Reply, CoreError> {
    if edge.db_breaker.allows() && crate::db::ping(&edge.pool, PROBE_TIMEOUT).await {
        Ok(Reply::ok(json!({"status": "ok", "database": "up"})))
    } else {
        Err(CoreError::Unavailable(
            "database is not answering".to_owned(),
        ))
    }
}

/// How each integration is doing, probed now (database, Redis) or as last reported (events).
/// Always 200: the body is the report (`/health/ready` is the probe that says 503). Unless
/// `detailed` (see `Authenticator::may_see_details`), each part shows its `status` only:
/// the callers, allow-list, secret settings, error texts and figures are for operators.
pub async fn integrations(edge: &Edge, detailed: bool) -> Reply {
    let components = edge.health.snapshot();
    let (database, redis) = tokio::join!(probe_database(edge), probe_redis(edge));
    let database_down = database["status"] == "down";
    let parts = [
        ("database", database),
        ("redis", redis),
        ("internalApis", edge.auth.describe()),
        (
            "eventPublishing",
            event_publishing(components.get("eventPublishing"), components.get("outbox")),
        ),
        ("cachePerformance", cache_performance(edge)),
    ];
    let worst = if database_down {
        "down"
    } else if parts.iter().any(|(_, p)| p["status"] != "ok") {
        "degraded"
    } else {
        "ok"
    };
    let mut body = json!({"status": worst});
    for (name, part) in parts {
        body[name] = if detailed {
            part
        } else {
            json!({"status": part["status"]})
        };
    }
    Reply::ok(body)
}

/// Shows a dependency's breaker (`breaker`: `open` or `closed`) in the component named after
/// it; while open, that component is down. True when open.
fn show_breaker(parts: &mut Value, breaker: &Breaker) -> bool {
    let open = breaker.is_open();
    let part = &mut parts[breaker.name()];
    part["breaker"] = json!(if open { "open" } else { "closed" });
    if open {
        part["status"] = json!("down");
        part["detail"] = json!(OPEN_DETAIL);
    }
    open
}

const OPEN_DETAIL: &str =
    "not answering: requests take their fallback at once until a background probe answers";

fn word(status: Status) -> &'static str {
    match status {
        Status::Up => "ok",
        Status::Degraded => "degraded",
        Status::Down => "down",
    }
}

fn millis(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e5).round() / 100.0
}

async fn probe_database(edge: &Edge) -> Value {
    if edge.db_breaker.is_open() {
        return json!({"status": "down", "breaker": "open",
                      "connections": edge.pool.size(), "idleConnections": edge.pool.num_idle()});
    }
    let started = Instant::now();
    let up = crate::db::ping(&edge.pool, PROBE_TIMEOUT).await;
    json!({
        "status": if up { "ok" } else { "down" },
        "breaker": "closed",
        "latencyMs": millis(started),
        "connections": edge.pool.size(),
        "idleConnections": edge.pool.num_idle(),
    })
}

/// A `PING`, unless Redis' breaker is open: then it is down without asking.
async fn probe_redis(edge: &Edge) -> Value {
    let Some(redis) = &edge.redis else {
        return json!({"status": "down", "error": "REDIS_URL is not usable"});
    };
    if redis.breaker().is_open() {
        return json!({"status": "down", "breaker": "open", "error": OPEN_DETAIL});
    }
    let started = Instant::now();
    match redis.ping(PROBE_TIMEOUT).await {
        Ok(()) => json!({"status": "ok", "breaker": "closed", "latencyMs": millis(started)}),
        Err(e) => json!({"status": "down", "breaker": "closed", "error": e.to_string()}),
    }
}

/// Where reads were answered from since start; `hitRate` counts both cache tiers.
fn cache_performance(edge: &Edge) -> Value {
    let f = edge.cache.figures();
    let reads = f.local_hits + f.redis_hits + f.misses;
    let hit_rate = (reads > 0).then(|| (f.local_hits + f.redis_hits) as f64 / reads as f64);
    let mut v = json!(f);
    v["status"] = json!(if !f.enabled || f.unclean == 0 {
        "ok"
    } else {
        "degraded"
    });
    v["hitRate"] = json!(hit_rate.map(|r| (r * 1e4).round() / 1e4));
    v
}

fn event_publishing(publisher: Option<&Component>, outbox: Option<&Component>) -> Value {
    let status = [publisher, outbox]
        .into_iter()
        .flatten()
        .map(|c| c.status)
        .max_by_key(|s| match s {
            Status::Up => 0,
            Status::Degraded => 1,
            Status::Down => 2,
        })
        .map_or("down", word);
    let mut v = json!({"status": status});
    if let Some(p) = publisher {
        v["publisher"] = json!(p);
    }
    if let Some(o) = outbox {
        for (k, figure) in &o.figures {
            v[*k] = figure.clone();
        }
    }
    v
}
