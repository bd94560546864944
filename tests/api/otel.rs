//! Issue 25: spans exported over OTLP/HTTP. A receiver of the test's own takes what the
//! service (a process of its own, given OpenTelemetry's standard variables) and an
//! instrumented NestJS `ClientProxy` (examples/nestjs, `@opentelemetry/instrumentation-amqplib`)
//! export, and shows one trace across them: the client's publish span is the parent of the
//! service's request span, the service's child spans hang under it, and the event a consumer
//! receives carries the same trace.
//! REST callers, the sampler and a collector that never answers are in `rest`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::{AMQPValue, FieldTable};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use serde_json::Value;
use warp::Filter;

use crate::helpers::{AMQP_URL, bind_events_queue, clean_up, eventually, service_process};
use crate::nestjs::{build_examples, run_example};

mod rest;

/// One exported span, as the receiver decoded it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

/// An OTLP/HTTP receiver (`POST /v1/traces`, protobuf) on a local port.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Receiver {
    async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        let route = warp::post()
            .and(warp::path!("v1" / "traces"))
            .and(warp::body::bytes())
            .map(move |body: bytes::Bytes| {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                kept.lock().unwrap().extend(decoded(request));
                warp::reply()
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(route).incoming(listener).run());
        Self { addr, spans }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until a span matching `find` has arrived.
    async fn span(&self, what: &str, find: impl Fn(&Span) -> bool) -> Span {
        let spans = self.spans.clone();
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Some(s) = spans.lock().unwrap().iter().find(|s| find(s)) {
                    return s.clone();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            let names: Vec<_> = spans
                .lock()
                .unwrap()
                .iter()
                .map(|s| (s.service.clone(), s.name.clone()))
                .collect();
            panic!("no span {what} in {names:?}")
        })
    }
}

fn decoded(request: ExportTraceServiceRequest) -> Vec<Span> {
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let text = |v: Option<Any>| match v {
        Some(Any::StringValue(s)) => s,
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    };
    let mut out = Vec::new();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.clone().and_then(|v| v.value)))
            .unwrap_or_default();
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            out.push(Span {
                service: service.clone(),
                name: span.name,
                kind: span.kind,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
                attributes: span
                    .attributes
                    .into_iter()
                    .map(|kv| (kv.key, text(kv.value.and_then(|v| v.value))))
                    .collect(),
            });
        }
    }
    out
}

/// The service as a process of its own, exporting to `endpoint`.
struct Service {
    db: String,
    http: String,
    child: Child,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        clean_up(self.db.clone());
    }
}

impl Service {
    async fn start(endpoint: &str) -> Self {
        Self::start_with(endpoint, &[]).await
    }

    async fn start_with(endpoint: &str, env: &[(&str, &str)]) -> Self {
        let db = format!("us_test_{}", uuid::Uuid::new_v4().simple());
        let log = std::env::temp_dir().join(format!("{db}.log"));
        let (mut command, port) = service_process(&db, &log);
        let child = command
            .env("AMQP_URL", AMQP_URL)
            .env("RPC_QUEUE_TYPE", crate::helpers::rpc_queue_type())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("OTEL_SERVICE_NAME", "user-service-under-test")
            // The batch exporter's pause between exports (5 s by default).
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .envs(env.iter().copied())
            .spawn()
            .expect("the service starts");
        let service = Self {
            http: format!("http://127.0.0.1:{port}"),
            db,
            child,
        };
        let http = reqwest::Client::new();
        let ready = format!("{}/health/ready", service.http);
        eventually(Duration::from_secs(60), || async {
            let r = http.get(&ready).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        service
    }
}

#[tokio::test]
async fn a_nestjs_callers_trace_goes_on_through_the_service_and_its_events() {
    tokio::task::spawn_blocking(build_examples).await.unwrap();
    let receiver = Receiver::start().await;
    let service = Service::start(&receiver.endpoint()).await;
    let conn = lapin::Connection::connect(AMQP_URL, Default::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let events = bind_events_queue(&channel, &format!("{}.events", service.db), None).await;
    let mut consumer = channel
        .basic_consume(
            events.as_str().into(),
            "otel".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let endpoint = receiver.endpoint();
    let r = run_example(
        &["dist/traced-call.js", "Traced.Caller@Example.com"],
        &format!("{}.rpc", service.db),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "nestjs-caller"),
        ],
    )
    .await;
    assert_eq!(r["created"]["email"], "traced.caller@example.com", "{r}");
    let trace = r["traceId"]
        .as_str()
        .expect("the client's trace id")
        .to_owned();

    // The service's span of users.create, under the client's publish of it.
    let served = receiver
        .span("the service's request", |s| {
            s.service == "user-service-under-test"
                && s.kind == CONSUMER
                && s.trace_id == trace
                && s.attributes.get("rpc.method").map(String::as_str) == Some("users.create")
        })
        .await;
    let publish = receiver
        .span("the client's publish", |s| s.span_id == served.parent)
        .await;
    assert_eq!(
        (publish.service.as_str(), publish.kind),
        ("nestjs-caller", PRODUCER)
    );
    assert_eq!(served.trace_id, trace);
    let a = &served.attributes;
    assert_eq!(a["messaging.system"], "rabbitmq");
    assert_eq!(a["messaging.operation"], "process");
    assert_eq!(
        a["messaging.destination.name"],
        format!("{}.rpc", service.db)
    );
    assert_eq!(
        a["messaging.rabbitmq.destination.routing_key"],
        format!("{}.rpc", service.db)
    );
    assert_eq!(a["rpc.method"], "users.create");
    assert_eq!(served.name, format!("process {}.rpc", service.db));

    // Its children: the rate limit, the core's work, the statement that inserted the user.
    let insert = receiver
        .span("the create's INSERT", |s| {
            s.trace_id == trace && s.name == "INSERT users"
        })
        .await;
    assert_eq!(
        (insert.kind, insert.attributes["db.system"].as_str()),
        (CLIENT, "postgresql")
    );
    let spans = receiver.spans.lock().unwrap().clone();
    let child = |name: &str, parent: &str| {
        spans
            .iter()
            .find(|s| s.trace_id == trace && s.name == name && s.parent == parent)
            .unwrap_or_else(|| panic!("no span {name} under {parent}"))
            .clone()
    };
    let core = child("users.create", &served.span_id);
    child("rate limit", &served.span_id);
    assert_eq!(insert.parent, core.span_id);

    // users.get of the new user: Redis asked, then PostgreSQL.
    let select = receiver
        .span("the get's SELECT", |s| {
            s.trace_id == trace && s.name == "SELECT users"
        })
        .await;
    assert_eq!(select.attributes["db.system"], "postgresql");
    let mget = receiver
        .span("the get's MGET", |s| {
            s.trace_id == trace && s.name == "MGET"
        })
        .await;
    assert_eq!(mget.attributes["db.system"], "redis");

    // The event: published by a producer span of the same trace, whose ids it carries.
    let delivery = tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .expect("an event")
        .expect("a delivery")
        .expect("a delivery");
    delivery.ack(BasicAckOptions::default()).await.unwrap();
    let event: Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(event["type"], "USER_CREATED");
    let headers = delivery.properties.headers().clone().unwrap_or_default();
    let parent = match headers.inner().get("traceparent") {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("traceparent: {other:?}"),
    };
    assert!(parent.starts_with(&format!("00-{trace}-")), "{parent}");
    let producer = receiver
        .span("the event's publish", |s| {
            s.trace_id == trace && s.kind == PRODUCER && s.service == "user-service-under-test"
        })
        .await;
    assert!(
        parent.contains(&producer.span_id),
        "{parent} names the publish span {}",
        producer.span_id
    );
    assert_eq!(
        producer.attributes["messaging.rabbitmq.destination.routing_key"],
        "user.created"
    );
    assert_eq!(producer.attributes["messaging.system"], "rabbitmq");
}
