//! The Prometheus exporter behind `GET /metrics`. One recorder per process, installed on
//! first use; the series themselves are recorded in `user_core::metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use warp::http::{HeaderValue, header};
use warp::reply::Response;

/// Buckets for request durations: sub-millisecond reads up to slow batch writes.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// How often the recorder folds the histogram samples it holds into their buckets. It keeps
/// every sample until then (or until `/metrics` is read): without this, its memory grows with
/// each request.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's recorder; `None` if another recorder was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(user_core::metrics::DURATION.to_owned()),
                    &BUCKETS,
                )
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full(user_core::metrics::CREATE_GROUP_DURATION.to_owned()),
                    &BUCKETS,
                )
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            user_core::metrics::describe();
            Some(handle)
        })
        .as_ref()
}

/// Runs the recorder's upkeep every [`UPKEEP_EVERY`] until `stop` turns true.
pub async fn upkeep(mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(handle) = handle() else { return };
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The Prometheus text exposition.
pub fn response() -> Response {
    let text = handle().map(PrometheusHandle::render).unwrap_or_default();
    let mut response = Response::new(text.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
