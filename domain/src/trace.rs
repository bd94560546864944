//! W3C Trace Context: the `traceparent` and `tracestate` a request came with (REST headers,
//! AMQP headers), checked, or a new trace when it came with none; and the `traceparent` the
//! service's own work carries on (replies, events), with a span id of its own.

/// The longest `tracestate` kept (the W3C's limit for a vendor to propagate).
pub const TRACESTATE_MAX: usize = 512;

/// The trace a request's work belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    /// The service's span in that trace: the parent of whatever it sends on.
    span_id: [u8; 8],
    flags: u8,
    /// As it came, when it followed the rules; only with a `traceparent` that did.
    state: Option<String>,
    /// The caller's span that the request came from, when it named one.
    parent: Option<[u8; 8]>,
}

impl TraceContext {
    /// A new trace, sampled: for a request that came with none, or with one that broke the
    /// rules (never echoed).
    pub fn start() -> Self {
        let random = uuid::Uuid::new_v4().into_bytes();
        let mut trace_id = [0u8; 16];
        trace_id.copy_from_slice(&random);
        Self {
            trace_id,
            span_id: span_id(),
            flags: 1,
            state: None,
            parent: None,
        }
    }

    /// The trace of a request that came with `traceparent` (and `tracestate`), continued by
    /// a span of the service's own; a new one when `traceparent` breaks the W3C rules.
    pub fn continue_from(traceparent: Option<&str>, tracestate: Option<&str>) -> Self {
        let Some((trace_id, parent, flags)) = traceparent.and_then(parse) else {
            return Self::start();
        };
        let state = tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= TRACESTATE_MAX)
            .filter(|s| s.bytes().all(|b| (0x20..0x7f).contains(&b)))
            .map(str::to_owned);
        Self {
            trace_id,
            span_id: span_id(),
            flags,
            state,
            parent: Some(parent),
        }
    }

    /// The trace id, 32 lower-case hex digits.
    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// `00-<trace id>-<the service's span id>-<flags>`: what the service sends on.
    pub fn traceparent(&self) -> String {
        let (trace, span, flags) = (
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            hex::encode([self.flags]),
        );
        ["00", &trace, &span, &flags].join("-")
    }

    pub fn tracestate(&self) -> Option<&str> {
        self.state.as_deref()
    }

    /// The service's span id, 16 lower-case hex digits.
    pub fn span_id(&self) -> String {
        hex::encode(self.span_id)
    }

    /// Trace id, the caller's span (when it named one) and flags, as bytes: the remote parent
    /// of the service's span for an exporter.
    pub fn remote_parent(&self) -> Option<([u8; 16], [u8; 8], u8)> {
        Some((self.trace_id, self.parent?, self.flags))
    }

    /// Takes the ids of the span that an exporter made for this request, so that what the
    /// service sends on names a span that exists.
    pub fn adopt(&mut self, trace_id: [u8; 16], span_id: [u8; 8], flags: u8) {
        if trace_id != self.trace_id {
            // A new trace of the exporter's (the request came with none): nothing of the
            // caller's belongs to it.
            self.state = None;
            self.parent = None;
        }
        self.trace_id = trace_id;
        self.span_id = span_id;
        self.flags = flags;
    }
}

impl Default for TraceContext {
    fn default() -> Self {
        Self::start()
    }
}

fn span_id() -> [u8; 8] {
    let random = uuid::Uuid::new_v4().into_bytes();
    let mut id = [0u8; 8];
    id.copy_from_slice(&random[..8]);
    id
}

/// The trace id, parent id and flags of a valid `traceparent` (version 00, or a later version read as
/// 00 as the W3C asks): lower-case hex, ids not all zero.
fn parse(value: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    let value = value.trim();
    if value.len() > 256 {
        return None;
    }
    let mut parts = value.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let version = digits::<1>(version)?[0];
    if version == 0xff || (version == 0 && parts.next().is_some()) {
        return None;
    }
    let trace_id = digits::<16>(trace)?;
    let parent_id = digits::<8>(parent)?;
    let flags = digits::<1>(flags)?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some((trace_id, parent_id, flags))
}

/// Exactly `2 * N` lower-case hex digits.
fn digits<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIVEN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued_with_a_span_of_our_own() {
        let t = TraceContext::continue_from(Some(GIVEN), Some("rojo=00f067aa0ba902b7"));
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let ours = t.traceparent();
        assert!(
            ours.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{ours}"
        );
        assert!(
            ours.ends_with("-01") && !ours.contains("00f067aa0ba902b7"),
            "{ours}"
        );
        assert_eq!(t.tracestate(), Some("rojo=00f067aa0ba902b7"));
        assert!(parse(&ours).is_some(), "what we send is valid");
        let parent = t.remote_parent().expect("the caller's span");
        assert_eq!(hex::encode(parent.1), "00f067aa0ba902b7");
        assert!(TraceContext::start().remote_parent().is_none());
    }

    #[test]
    fn an_exporters_span_is_adopted_and_a_new_trace_drops_the_callers_state() {
        let mut t = TraceContext::continue_from(Some(GIVEN), Some("rojo=1"));
        let (trace, _, flags) = t.remote_parent().expect("a parent");
        t.adopt(trace, [7; 8], flags);
        assert_eq!(
            t.traceparent(),
            format!("00-{}-0707070707070707-01", t.trace_id())
        );
        assert_eq!(t.span_id(), "0707070707070707");
        assert_eq!(t.tracestate(), Some("rojo=1"));
        t.adopt([9; 16], [7; 8], 0);
        assert_eq!(t.tracestate(), None);
        assert!(t.remote_parent().is_none());
        assert!(t.traceparent().ends_with("-00"));
    }

    #[test]
    fn anything_else_starts_a_new_trace_and_is_never_echoed() {
        let long = format!("{GIVEN}{}", "-x".repeat(5000));
        let bad = [
            "",
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47é6-00f067aa0ba902b7-01",
            long.as_str(),
        ];
        for value in bad {
            let t = TraceContext::continue_from(Some(value), Some("kept=no"));
            assert_ne!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736", "{value}");
            assert_eq!(t.tracestate(), None, "{value}");
            assert!(parse(&t.traceparent()).is_some());
        }
        let two = (TraceContext::start(), TraceContext::start());
        assert_ne!(two.0.trace_id(), two.1.trace_id());
    }

    #[test]
    fn a_later_version_is_read_as_00_and_tracestate_is_bounded() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        let t = TraceContext::continue_from(Some(later), None);
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let long = "a=".to_owned() + &"b".repeat(TRACESTATE_MAX);
        for state in [long.as_str(), "bad\u{7}state", "  "] {
            let t = TraceContext::continue_from(Some(GIVEN), Some(state));
            assert_eq!(t.tracestate(), None, "{state:?}");
        }
    }
}
