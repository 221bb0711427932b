//! W3C trace context (`traceparent`, <https://www.w3.org/TR/trace-context/>): the trace a
//! call belongs to, carried from the caller through the gateway and the execute hop to the
//! extension's egress requests.
//!
//! The gateway takes the caller's `traceparent` when it is valid and starts a trace when it
//! is absent or malformed (a malformed header is ignored, as the specification asks). Each
//! hop that forwards the trace sends it with its own span id as the parent, so the third
//! party an extension calls sees the call's trace id.
//!
//! A hop's own span id is that of its `tracing` span ([`join`], [`position`]): with the
//! OpenTelemetry layer installed (an OTLP endpoint configured), the id of the span that is
//! exported, so the exported spans and the propagated header agree; without it, a random
//! id in the same trace.

use std::fmt;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use rand::RngCore;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header name, in requests.
pub const TRACEPARENT: &str = "traceparent";

/// One position in a trace: the trace id, the id of the span that is the parent of what
/// comes next, and the trace flags (bit 0: sampled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

impl TraceParent {
    /// A new trace, sampled, with a random trace id and span id.
    pub fn start() -> Self {
        let mut trace_id = [0u8; 16];
        while trace_id == [0; 16] {
            rand::thread_rng().fill_bytes(&mut trace_id);
        }
        TraceParent {
            trace_id,
            parent_id: random_span_id(),
            flags: 0x01,
        }
    }

    /// Reads a `traceparent` value. Version `00` must have exactly its four fields; a later
    /// version may append fields, which are ignored. `None` for anything malformed: an
    /// unknown version `ff`, ids that are not lowercase hex of the right length, or ids that
    /// are all zeros.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim_matches([' ', '\t']);
        let mut parts = value.split('-');
        let version = parts.next()?;
        let trace_id = parts.next()?;
        let parent_id = parts.next()?;
        let flags = parts.next()?;
        let version = lower_hex::<1>(version)?[0];
        if version == 0xff || (version == 0 && parts.next().is_some()) {
            return None;
        }
        let trace_id = lower_hex::<16>(trace_id)?;
        let parent_id = lower_hex::<8>(parent_id)?;
        let flags = lower_hex::<1>(flags)?[0];
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The same trace with a new span id: what a hop sends on, as the parent of the next.
    pub fn child(&self) -> Self {
        TraceParent {
            parent_id: random_span_id(),
            ..*self
        }
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The parent span id, 16 lowercase hex digits.
    pub fn parent_id(&self) -> String {
        hex::encode(self.parent_id)
    }

    /// Whether the trace is sampled (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & 0x01 != 0
    }
}

/// Makes `span` a child of `parent`, a position in another process (the caller's, or the
/// previous hop's), or the root of a new trace when there is none; returns the span's own
/// position, which the next hop gets as its parent.
pub fn join(span: &tracing::Span, parent: Option<TraceParent>) -> TraceParent {
    if let Some(parent) = parent {
        let remote = SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.parent_id),
            TraceFlags::new(parent.flags),
            true,
            TraceState::default(),
        );
        // An error says that no OpenTelemetry layer tracks the span: the ids are made below.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    exported(span).unwrap_or_else(|| parent.map_or_else(TraceParent::start, |p| p.child()))
}

/// The position of `span`, which runs inside the span at `enclosing` in this process.
pub fn position(span: &tracing::Span, enclosing: &TraceParent) -> TraceParent {
    exported(span).unwrap_or_else(|| enclosing.child())
}

/// The ids of `span` as the OpenTelemetry layer exports it; `None` without the layer (or
/// for a span the filter disabled).
fn exported(span: &tracing::Span) -> Option<TraceParent> {
    let context = span.context();
    let own = context.span().span_context().clone();
    own.is_valid().then(|| TraceParent {
        trace_id: own.trace_id().to_bytes(),
        parent_id: own.span_id().to_bytes(),
        flags: own.trace_flags().to_u8(),
    })
}

/// The header value, version `00`.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.parent_id),
            self.flags
        )
    }
}

fn random_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    while id == [0; 8] {
        rand::thread_rng().fill_bytes(&mut id);
    }
    id
}

/// `N` bytes from exactly `2 * N` lowercase hex digits.
fn lower_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut bytes = [0u8; N];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_round_trips() {
        let parsed = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.parent_id(), "00f067aa0ba902b7");
        assert!(parsed.sampled());
        assert_eq!(parsed.to_string(), EXAMPLE);
        let unsampled = TraceParent::parse(&EXAMPLE.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled());
    }

    #[test]
    fn a_later_version_may_append_fields() {
        let future =
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        let parsed = TraceParent::parse(future).unwrap();
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            parsed.to_string(),
            EXAMPLE,
            "sent on as the version this side speaks"
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn without_an_opentelemetry_layer_spans_get_ids_in_the_same_trace() {
        let parent = TraceParent::parse(EXAMPLE).unwrap();
        let span = tracing::info_span!("call");
        let joined = join(&span, Some(parent));
        assert_eq!(joined.trace_id(), parent.trace_id());
        assert_ne!(joined.parent_id(), parent.parent_id());
        let nested = position(&tracing::info_span!("egress"), &joined);
        assert_eq!(nested.trace_id(), parent.trace_id());
        assert_ne!(nested.parent_id(), joined.parent_id());
        assert_ne!(join(&span, None).trace_id(), parent.trace_id());
    }

    #[test]
    fn a_started_trace_is_sampled_and_children_keep_it() {
        let kept = TraceParent::parse(EXAMPLE).unwrap();
        let started = TraceParent::start();
        assert_ne!(started.trace_id(), kept.trace_id());
        assert!(started.sampled());
        assert_eq!(TraceParent::parse(&started.to_string()), Some(started));
        let child = kept.child();
        assert_eq!(child.trace_id(), kept.trace_id());
        assert_ne!(child.parent_id(), kept.parent_id());
        assert_ne!(
            TraceParent::start().trace_id(),
            TraceParent::start().trace_id()
        );
    }
}
