use super::*;
use std::collections::HashMap;

fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|k| map.get(k).cloned())
}

#[test]
fn defaults_need_no_configuration() {
    let c = config(&[]).unwrap();
    assert_eq!(c.http_addr.port(), 3001);
    assert!(c.auth.is_open());
    assert_eq!(c.rate_limits["game-catalog"].requests, 500);
    assert!(c.auth.credential_readers.contains("auth-service"));
    assert_eq!(config(&[("PORT", "8080")]).unwrap().http_addr.port(), 8080);
    assert_eq!(c.cache_ttl, Duration::from_secs(300));
    let off = config(&[("CACHE_TTL_SECONDS", "0")]).unwrap();
    assert!(off.cache_ttl.is_zero());
    assert!(config(&[("CACHE_TTL_SECONDS", "soon")]).is_err());
}

#[test]
fn reads_have_at_least_one_connection_of_their_own() {
    assert_eq!(config(&[]).unwrap().database.read_connections, 4);
    let two = config(&[("DB_READ_CONNECTIONS", "2")]).unwrap();
    assert_eq!(two.database.read_connections, 2);
    for hostile in ["0", "-1", "4294967296", "many"] {
        assert!(
            config(&[("DB_READ_CONNECTIONS", hostile)]).is_err(),
            "{hostile:?}"
        );
    }
}

#[test]
fn migrations_have_a_bounded_time_of_their_own() {
    let c = config(&[]).unwrap();
    assert_eq!(c.database.migration_timeout, Duration::from_secs(600));
    let hour = config(&[("DB_MIGRATION_TIMEOUT_SECONDS", "3600")]).unwrap();
    assert_eq!(hour.database.migration_timeout, Duration::from_secs(3600));
    for hostile in ["0", "-1", "86401", "18446744073709551616", "forever"] {
        assert!(
            config(&[("DB_MIGRATION_TIMEOUT_SECONDS", hostile)]).is_err(),
            "{hostile:?}"
        );
    }
}

#[test]
fn api_keys_name_their_callers() {
    let c = config(&[(
        "INTERNAL_API_KEYS",
        "auth-service-key, game-catalog-key,billing=s3cr3t,opaque",
    )])
    .unwrap();
    let names: Vec<&str> = c.auth.api_keys.iter().map(|k| k.caller.as_str()).collect();
    assert_eq!(
        names,
        ["auth-service", "game-catalog", "billing", "api-key-4"]
    );
    assert_eq!(c.auth.api_keys[2].key, "s3cr3t");
}

#[test]
fn production_refuses_weak_setups() {
    let billing = "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let prod = |vars: &[(&str, &str)]| {
        let mut all = vec![("APP_ENV", "production"), ("BILLING_KEYS", billing)];
        all.extend_from_slice(vars);
        config(&all)
    };
    let strong = "0123456789abcdef0123456789abcdef";
    let bare = format!("auth-service-{strong}");
    let short = format!("auth={}", &strong[..31]);
    assert!(prod(&[]).is_err(), "never open");
    assert!(
        prod(&[("INTERNAL_API_KEYS", &short)]).is_err(),
        "31 characters"
    );
    assert!(prod(&[("INTERNAL_API_KEYS", &bare)]).is_err(), "bare");
    assert!(prod(&[("INTERNAL_SERVICE_SECRET", &strong[..31])]).is_err());
    let named = format!("auth={strong}");
    assert!(prod(&[("INTERNAL_API_KEYS", &named)]).is_ok());
    assert!(prod(&[("INTERNAL_SERVICE_SECRET", strong)]).is_ok());
    let no_billing = config(&[("APP_ENV", "production"), ("INTERNAL_API_KEYS", &named)]);
    assert_eq!(no_billing.err().map(|e| e.var), Some("BILLING_KEYS"));
}

#[test]
fn billing_keys_are_parsed_once_the_last_one_current() {
    let c = config(&[]).unwrap();
    assert!(c.billing_keys.is_none());
    let (dev, configured) = c.billing_keys();
    assert_eq!((dev.current_kid(), configured), ("dev", false));
    let two = "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=,\
               k2:ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
    let (keys, configured) = config(&[("BILLING_KEYS", two)]).unwrap().billing_keys();
    assert_eq!((keys.current_kid(), configured), ("k2", true));
    for bad in ["k1", "k1:c2hvcnQ=", "k1:***"] {
        let e = config(&[("BILLING_KEYS", bad)]).err().map(|e| e.var);
        assert_eq!(e, Some("BILLING_KEYS"), "{bad}");
    }
}

#[test]
fn shared_secret_names_are_declared() {
    let c = config(&[]).unwrap();
    let names: Vec<&str> = c.auth.service_names.iter().map(String::as_str).collect();
    assert_eq!(names, ["auth-service", "game-catalog", "payment-service"]);
    let c = config(&[("INTERNAL_SERVICE_NAMES", "social, review")]).unwrap();
    assert_eq!(c.auth.service_names.len(), 2);
    assert!(config(&[("INTERNAL_SERVICE_NAMES", "bad name")]).is_err());
    assert!(config(&[("RATE_LIMITS", "bad name=1/1")]).is_err());
    assert!(config(&[("AUTH_FAILURES_PER_ADDRESS", "0/60")]).is_err());
    assert!(config(&[("AUTH_FAILURES_PER_ADDRESS", "1001/60")]).is_err());
    let c = config(&[("AUTH_FAILURES_PER_ADDRESS", "1000/30")]).unwrap();
    assert_eq!(c.auth.failures_per_address.requests, 1000);
    assert_eq!(config(&[]).unwrap().auth.failures_per_address.requests, 20);
}

#[test]
fn names_with_their_own_key_are_not_open_to_the_secret() {
    let keys = ("INTERNAL_API_KEYS", "auth-service=k1,game-catalog=k2");
    let c = config(&[keys]).unwrap();
    let names: Vec<&str> = c.auth.service_names.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        ["payment-service"],
        "the default leaves key holders out"
    );
    let listed = config(&[keys, ("INTERNAL_SERVICE_NAMES", "social, game-catalog")]);
    let e = listed.expect_err("a key holder listed explicitly is refused at start");
    assert_eq!(e.var, "INTERNAL_SERVICE_NAMES");
    assert!(e.message.contains("'game-catalog' has its own key"), "{e}");
    assert!(config(&[keys, ("INTERNAL_SERVICE_NAMES", "social")]).is_ok());
}

#[test]
fn bad_values_are_reported() {
    assert!(config(&[("INTERNAL_ALLOWED_IPS", "10.0.0.0/8,nope")]).is_err());
    assert!(config(&[("RATE_LIMITS", "a=10")]).is_err());
    assert!(config(&[("HTTP_ADDR", "nowhere")]).is_err());
    assert!(config(&[("EVENT_ENVELOPE", "xml")]).is_err());
    assert!(config(&[("RPC_QUEUE_TYPE", "stream")]).is_err());
    assert_eq!(config(&[]).unwrap().rpc_queue_type, QueueType::Classic);
    let quorum = config(&[("RPC_QUEUE_TYPE", "Quorum")]).unwrap();
    assert_eq!(quorum.rpc_queue_type, QueueType::Quorum);
    let long = "q".repeat(252);
    assert!(config(&[("RPC_QUEUE", long.as_str())]).is_err());
    assert!(config(&[("RPC_QUEUE", &long[..251])]).is_ok());
    assert!(config(&[("EVENTS_EXCHANGE", "e".repeat(256).as_str())]).is_err());
    assert!(config(&[("RPC_PREFETCH", "0")]).is_err());
    assert!(config(&[("OUTBOX_RETENTION_HOURS", &u64::MAX.to_string())]).is_err());
    assert!(config(&[("IDEMPOTENCY_RETENTION_HOURS", "0")]).is_err());
    assert!(config(&[("IDEMPOTENCY_RETENTION_HOURS", &u64::MAX.to_string())]).is_err());
    let c = config(&[("IDEMPOTENCY_RETENTION_HOURS", "48")]).unwrap();
    assert_eq!(c.retention.idempotency, Duration::from_secs(48 * 3600));
    assert_eq!(
        config(&[]).unwrap().retention.idempotency,
        Duration::from_secs(24 * 3600)
    );
    let d = config(&[]).unwrap().retention;
    assert_eq!(d.dead_letters, Duration::from_secs(7 * 24 * 3600));
    assert_eq!(d.erase_deleted_after, None, "off by default");
    assert_eq!(d.audit, Duration::from_secs(365 * 86_400));
    let c = config(&[
        ("ERASE_DELETED_AFTER_DAYS", "30"),
        ("DEAD_LETTER_TTL_HOURS", "1"),
    ])
    .unwrap();
    assert_eq!(
        c.retention.erase_deleted_after,
        Some(Duration::from_secs(30 * 86_400))
    );
    assert_eq!(c.retention.dead_letters, Duration::from_secs(3600));
    for bad in ["0", "-1", "99999", "soon"] {
        assert!(
            config(&[("ERASE_DELETED_AFTER_DAYS", bad)]).is_err(),
            "{bad}"
        );
        assert!(config(&[("DEAD_LETTER_TTL_HOURS", bad)]).is_err(), "{bad}");
    }
    let c = config(&[("INTERNAL_ALLOWED_IPS", "127.0.0.1, ::1, 192.168.1.0/24")]).unwrap();
    assert_eq!(c.auth.allowed_ips.len(), 3);
}

#[test]
fn unauthenticated_replies_go_only_where_configured() {
    assert_eq!(config(&[]).unwrap().rpc_unauthenticated_reply_prefix, "");
    let c = config(&[("RPC_UNAUTHENTICATED_REPLY_PREFIX", " replies. ")]).unwrap();
    assert_eq!(c.rpc_unauthenticated_reply_prefix, "replies.");
    let long = "r".repeat(256);
    assert!(config(&[("RPC_UNAUTHENTICATED_REPLY_PREFIX", long.as_str())]).is_err());
}

#[test]
fn broker_waits_are_bounded() {
    let c = config(&[]).unwrap();
    assert_eq!(c.amqp.heartbeat, 5);
    assert_eq!(c.amqp.timeout, Duration::from_secs(5));
    let set = config(&[("AMQP_HEARTBEAT_SECONDS", "2"), ("AMQP_TIMEOUT_MS", "1500")]).unwrap();
    assert_eq!(
        (set.amqp.heartbeat, set.amqp.timeout),
        (2, Duration::from_millis(1500))
    );
    for bad in ["0", "601", "-1", "soon", "70000"] {
        assert!(config(&[("AMQP_HEARTBEAT_SECONDS", bad)]).is_err(), "{bad}");
    }
    for bad in ["0", "99", "600001", "soon"] {
        assert!(config(&[("AMQP_TIMEOUT_MS", bad)]).is_err(), "{bad}");
    }
}

#[test]
fn the_broker_is_one_node_or_a_list_named_either_way() {
    let nodes = |vars: &[(&'static str, &'static str)]| {
        let mut nodes = config(vars).map(|c| c.amqp.nodes)?;
        nodes.sort();
        Ok::<_, ConfigError>(nodes)
    };
    assert_eq!(nodes(&[]).unwrap(), [DEFAULT_AMQP_URL]);
    let (a, b) = (
        "amqp://guest:guest@a:5672/%2f",
        "amqp://guest:guest@b:5672/%2f",
    );
    let list = "amqp://guest:guest@b:5672/%2f, amqp://guest:guest@a:5672/%2f";
    assert_eq!(nodes(&[("AMQP_URL", list)]).unwrap(), [a, b]);
    assert_eq!(nodes(&[("AMQP_URLS", list)]).unwrap(), [a, b]);
    assert_eq!(
        nodes(&[("AMQP_URL", list), ("AMQP_URLS", list)]).unwrap(),
        [a, b]
    );
    let both = config(&[("AMQP_URL", a), ("AMQP_URLS", b)]).unwrap_err();
    assert_eq!(both.var, "AMQP_URLS");
    let bad = config(&[(
        "AMQP_URLS",
        "amqp://guest:s3cret@a/%2f,redis://guest:s3cret@b",
    )]);
    let bad = bad.unwrap_err();
    assert_eq!(bad.var, "AMQP_URLS");
    assert!(
        bad.message.contains("entry 2") && !bad.message.contains("s3cret"),
        "{bad}"
    );
}

#[test]
fn http_limits_default_and_refuse_unbounded_values() {
    let c = config(&[]).unwrap();
    assert_eq!(c.http, HttpLimits::default());
    assert_eq!(c.http.header_timeout, Duration::from_secs(10));
    assert_eq!(c.http.max_connections, 10_000);
    let set = config(&[
        ("HTTP_HEADER_TIMEOUT_MS", "1500"),
        ("HTTP_BODY_TIMEOUT_MS", "2000"),
        ("HTTP_IDLE_TIMEOUT_MS", "3000"),
        ("HTTP_MAX_CONNECTIONS", "64"),
    ])
    .unwrap();
    assert_eq!(set.http.header_timeout, Duration::from_millis(1500));
    assert_eq!(set.http.body_timeout, Duration::from_secs(2));
    assert_eq!(set.http.idle_timeout, Duration::from_secs(3));
    assert_eq!(set.http.max_connections, 64);
    for (var, bad) in [
        ("HTTP_HEADER_TIMEOUT_MS", "0"),
        ("HTTP_BODY_TIMEOUT_MS", "3600001"),
        ("HTTP_IDLE_TIMEOUT_MS", "-1"),
        ("HTTP_MAX_CONNECTIONS", "0"),
        ("HTTP_MAX_CONNECTIONS", "many"),
    ] {
        let e = config(&[(var, bad)]).unwrap_err();
        assert_eq!(e.var, var, "{bad}");
    }
}

#[test]
fn retry_schedules_default_to_production_and_tests_may_shorten_them() {
    let production = user_core::publisher::RetrySchedule::default();
    assert_eq!(config(&[]).unwrap().schedules.event_retry, production);
    let short = config(&[("EVENT_RETRY_FIRST_MS", "5"), ("EVENT_RETRY_MAX_MS", "20")]).unwrap();
    assert_eq!(
        short.schedules.event_retry,
        user_core::publisher::RetrySchedule {
            first: Duration::from_millis(5),
            max: Duration::from_millis(20),
        }
    );
    assert!(config(&[("EVENT_RETRY_FIRST_MS", "0")]).is_err());
    assert!(config(&[("EVENT_RETRY_FIRST_MS", "50"), ("EVENT_RETRY_MAX_MS", "20")]).is_err());
}

#[test]
fn spans_are_exported_only_when_an_otlp_endpoint_is_named() {
    assert_eq!(config(&[]).unwrap().span_export, None);
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
    let on = config(&[endpoint]).unwrap().span_export.expect("on");
    assert_eq!(on.service_name, "user-service");
    let named = config(&[endpoint, ("OTEL_SERVICE_NAME", "users-eu")]).unwrap();
    assert_eq!(named.span_export.expect("on").service_name, "users-eu");
    let traces = (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "http://collector:4318/v1/traces",
    );
    assert!(config(&[traces]).unwrap().span_export.is_some());
    for off in [
        ("OTEL_SDK_DISABLED", "true"),
        ("OTEL_TRACES_EXPORTER", "none"),
    ] {
        assert_eq!(
            config(&[endpoint, off]).unwrap().span_export,
            None,
            "{off:?}"
        );
    }
    for (var, value) in [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
    ] {
        let e = config(&[endpoint, (var, value)]).expect_err(value);
        assert_eq!(e.var, var);
    }
}
