//! Spans of REST requests: a caller's `traceparent` parents the exported span (named in the reply
//! and the logs, e-mails left out), the sampler's variables, a collector that never answers.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Receiver, SERVER, Service};
use crate::helpers::{AUTH_KEY, HASH, eventually};

#[tokio::test]
async fn a_rest_callers_traceparent_is_the_parent_of_the_exported_span() {
    let receiver = Receiver::start().await;
    let service = Service::start(&receiver.endpoint()).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let response = reqwest::Client::new()
        .post(format!("{}/api/internal/users", service.http))
        .header("x-api-key", AUTH_KEY)
        .header("traceparent", format!("00-{trace}-{caller_span}-01"))
        .json(&json!({"email": "rest.traced@example.com", "name": "Rest Traced", "password": HASH}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let answered = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();

    let served = receiver
        .span("the request's", |s| s.kind == SERVER && s.trace_id == trace)
        .await;
    assert_eq!(served.parent, caller_span);
    assert_eq!(
        answered,
        format!("00-{trace}-{}-01", served.span_id),
        "the reply names the exported span"
    );
    assert_eq!(served.name, "POST /api/internal/users");
    let a = &served.attributes;
    assert_eq!(a["http.request.method"], "POST");
    assert_eq!(a["http.route"], "/api/internal/users");
    assert_eq!(a["http.response.status_code"], "201");
    assert_eq!(a["url.path"], "/api/internal/users");
    let core = receiver
        .span("the core's", |s| {
            s.trace_id == trace && s.name == "users.create"
        })
        .await;
    assert_eq!(core.parent, served.span_id);

    // A path that holds an e-mail address is exported without it.
    let by_email = "5bf92f3577b34da6a3ce929d0e0e4736";
    let found = reqwest::Client::new()
        .get(format!(
            "{}/api/internal/users/email/Rest.Traced@example.com",
            service.http
        ))
        .header("x-api-key", AUTH_KEY)
        .header("traceparent", format!("00-{by_email}-{caller_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(found.status(), 200);
    let lookup = receiver
        .span("the lookup by e-mail", |s| {
            s.kind == SERVER && s.trace_id == by_email
        })
        .await;
    assert_eq!(
        lookup.attributes["url.path"],
        "/api/internal/users/email/{email}"
    );
    assert!(
        !format!("{:?}", lookup.attributes)
            .to_lowercase()
            .contains("rest.traced"),
        "{:?}",
        lookup.attributes
    );

    // The JSON logs name the same trace and span.
    let log = std::env::temp_dir().join(format!("{}.log", service.db));
    let line = eventually(Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines()
            .find(|l| l.contains(r#""message":"request""#) && l.contains(trace))
            .map(str::to_owned)
    })
    .await;
    let line: Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(line["span"]["trace_id"], trace, "{line}");
    assert_eq!(line["span"]["span_id"], served.span_id, "{line}");
}

/// A collector that takes connections and never answers (a frozen process) costs spans,
/// never a request: the exporter's queue is bounded and drops what does not fit.
#[tokio::test]
async fn a_collector_that_never_answers_costs_spans_not_requests() {
    let frozen = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", frozen.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((socket, _)) = frozen.accept().await {
            connections.push(socket);
        }
    });
    let service = Service::start_with(
        &endpoint,
        &[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "8"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "600000"),
        ],
    )
    .await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for i in 0..60 {
        let created = http
            .post(format!("{}/api/internal/users", service.http))
            .header("x-api-key", AUTH_KEY)
            .json(&json!({"email": format!("frozen{i}@example.com"), "name": "Frozen Collector", "password": HASH}))
            .send()
            .await
            .expect("answered while the collector hangs");
        assert_eq!(created.status(), 201);
    }
    let health = http
        .get(format!("{}/health", service.http))
        .send()
        .await
        .expect("health answers");
    assert_eq!(health.status(), 200);
    held.abort();
}

/// `OTEL_TRACES_SAMPLER` is the SDK's: with `always_off` the service's span is not sampled,
/// and the `traceparent` it answers says so (flags 00), whatever the caller's flags.
#[tokio::test]
async fn the_sampler_is_taken_from_the_standard_variables() {
    let receiver = Receiver::start().await;
    let service = Service::start_with(
        &receiver.endpoint(),
        &[("OTEL_TRACES_SAMPLER", "always_off")],
    )
    .await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = reqwest::Client::new()
        .get(format!("{}/health", service.http))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    let answered = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(answered.starts_with(&format!("00-{trace}-")), "{answered}");
    assert!(answered.ends_with("-00"), "not sampled: {answered}");
}
