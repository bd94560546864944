//! W3C Trace Context for the calls a task makes: `traceparent` (and `tracestate`) go with
//! every request sent inside [`traced`], and the service continues that trace (its reply,
//! the events of the change and their history carry it).

use std::future::Future;

tokio::task_local! {
    static TRACE: Trace;
}

/// A caller's trace, as the W3C headers carry it.
#[derive(Debug, Clone)]
struct Trace {
    parent: String,
    state: Option<String>,
}

/// The longest `traceparent` sent (the service ignores longer ones too).
const PARENT_MAX: usize = 256;
/// The longest `tracestate` sent.
const STATE_MAX: usize = 512;

/// Runs `calls` with `traceparent` and `tracestate` on every request they send, e.g. from the
/// caller's OpenTelemetry span (`00-<trace id>-<span id>-01`). Values over the W3C bounds
/// (256 and 512 bytes) are not sent; a malformed one starts a new trace at the service.
pub async fn traced<F: Future>(traceparent: &str, tracestate: Option<&str>, calls: F) -> F::Output {
    let trace = Trace {
        parent: traceparent.to_owned(),
        state: tracestate.map(str::to_owned),
    };
    TRACE.scope(trace, calls).await
}

/// The headers of the current task's trace, when inside [`traced`].
pub(crate) fn headers() -> Vec<(&'static str, String)> {
    TRACE
        .try_with(|t| {
            let mut out = Vec::with_capacity(2);
            if t.parent.len() <= PARENT_MAX {
                out.push(("traceparent", t.parent.clone()));
            }
            if let Some(state) = t.state.as_ref().filter(|s| s.len() <= STATE_MAX) {
                out.push(("tracestate", state.clone()));
            }
            out
        })
        .unwrap_or_default()
}
