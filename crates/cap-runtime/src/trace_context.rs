//! W3C Trace Context across the bus: `traceparent` and `tracestate` in message headers
//! (never inside the `BusPacket`), and the hook through which a binary that exports spans
//! (OpenTelemetry in `cap`) links this crate's `tracing` spans across processes.
//!
//! Every packet the packet layer publishes carries a `traceparent` whose trace id is the
//! packet's `trace_id` when that is 32 hex digits (the W3C form, which is what
//! [`crate::id::new_trace_id`] makes), and otherwise a stable 128-bit hash of it, so every
//! hop of one job names the same W3C trace. The parent id is the publishing span's id
//! when a [`TraceHook`] is installed, else a fresh random id for the hop.
//!
//! ```
//! use cap_runtime::trace_context::{TraceContext, w3c_trace_id};
//! let id = w3c_trace_id("4bf92f3577b34da6a3ce929d0e0e4736");
//! let ctx = TraceContext::new(id, [0, 0, 0, 0, 0, 0, 0, 7]);
//! assert_eq!(ctx.traceparent(), "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000007-01");
//! let back = TraceContext::parse(&ctx.traceparent(), None).unwrap();
//! assert_eq!(back, ctx);
//! // Not 32 hex digits: a stable hash, the same on every hop.
//! assert_eq!(w3c_trace_id("job-1"), w3c_trace_id("job-1"));
//! ```

use cap_bus::Headers;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Header name of the W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// Header name of the W3C `tracestate`.
pub const TRACESTATE: &str = "tracestate";

/// One W3C trace context: a trace id, the id of the span that sent it, flags, and the
/// vendor `tracestate` (empty when none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The 128-bit trace id.
    pub trace_id: [u8; 16],
    /// The 64-bit id of the sending span (the receiver's parent).
    pub span_id: [u8; 8],
    /// Whether the sender sampled (recorded) the trace.
    pub sampled: bool,
    /// The `tracestate` header ("" when absent).
    pub state: String,
}

fn hex_into(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl TraceContext {
    /// A sampled context without `tracestate`.
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8]) -> Self {
        TraceContext {
            trace_id,
            span_id,
            sampled: true,
            state: String::new(),
        }
    }

    /// A context of `trace_id` from a new random span id (a hop without a span of its own).
    pub fn new_hop(trace_id: [u8; 16]) -> Self {
        let span = fastrand::u64(1..).to_be_bytes();
        TraceContext::new(trace_id, span)
    }

    /// Parses a `traceparent` (version `00`; ids lowercase hex, not all zero; a later
    /// version is read by its first four fields, as the specification asks).
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let mut parts = traceparent.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let trace_id: [u8; 16] = unhex(trace)?;
        let span_id: [u8; 8] = unhex(span)?;
        let [flags] = unhex::<1>(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
            state: tracestate.unwrap_or_default().trim().to_owned(),
        })
    }

    /// The context carried by `headers`, if any (and valid).
    pub fn from_headers(headers: &Headers) -> Option<Self> {
        TraceContext::parse(headers.get(TRACEPARENT)?, headers.get(TRACESTATE))
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        let mut s = String::with_capacity(32);
        hex_into(&mut s, &self.trace_id);
        s
    }

    /// The `traceparent` header value.
    pub fn traceparent(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        hex_into(&mut s, &self.trace_id);
        s.push('-');
        hex_into(&mut s, &self.span_id);
        s.push_str(if self.sampled { "-01" } else { "-00" });
        s
    }

    /// Headers carrying this context (`tracestate` only when not empty).
    pub fn to_headers(&self) -> Headers {
        let mut h = Headers::new();
        // Both values are hex and dashes, or a header value received before: valid.
        let _ = h.insert(TRACEPARENT, self.traceparent());
        if !self.state.is_empty() {
            let _ = h.insert(TRACESTATE, self.state.clone());
        }
        h
    }
}

/// The W3C trace id of a packet `trace_id`: itself when it is 32 hex digits (not all
/// zero; upper case is read too), else a stable 128-bit hash (FNV-1a, two seeds).
pub fn w3c_trace_id(trace_id: &str) -> [u8; 16] {
    if trace_id.len() == 32
        && let Some(id) = unhex::<16>(&trace_id.to_ascii_lowercase())
        && id != [0; 16]
    {
        return id;
    }
    let fnv = |seed: u64| {
        trace_id.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_be_bytes());
    out[8..].copy_from_slice(&fnv(0x6c62_272e_07bb_0142).to_be_bytes());
    if out == [0; 16] {
        out[15] = 1;
    }
    out
}

/// Links `tracing` spans to a tracing system across processes. Installed once per
/// process by the binary (see [`install_hook`]); without one, spans stay local and each
/// hop's `traceparent` names a fresh span id.
pub trait TraceHook: Send + Sync + 'static {
    /// Makes `span` (new, not yet entered) a child of the remote `parent`, or, without a
    /// parent, the root of the trace `trace_id`.
    fn link(&self, span: &tracing::Span, trace_id: [u8; 16], parent: Option<&TraceContext>);
    /// The context to send from within `span` (`None`: the span is not recorded).
    fn context(&self, span: &tracing::Span) -> Option<TraceContext>;
}

static HOOK: OnceLock<Box<dyn TraceHook>> = OnceLock::new();

/// Whether trace context is propagated (default on).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns trace context off (no headers, the hook ignored) or on again, process-wide.
/// For measuring what propagation costs (`cap demo --compare-observability`); a
/// [`PacketConfig::trace_headers`](crate::packets::PacketConfig::trace_headers) of
/// `false` turns headers off for one packet layer.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether trace context is propagated (see [`set_enabled`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Installs the process's [`TraceHook`]; `false` when one was installed already.
pub fn install_hook(hook: Box<dyn TraceHook>) -> bool {
    HOOK.set(hook).is_ok()
}

/// The installed hook, if any.
pub fn hook() -> Option<&'static dyn TraceHook> {
    if !enabled() {
        return None;
    }
    HOOK.get().map(|b| b.as_ref())
}

/// Links `span` to `parent` (or starts the trace of `trace_id`) when a hook is installed;
/// does nothing otherwise.
pub fn link(span: &tracing::Span, trace_id: &str, parent: Option<&TraceContext>) {
    if let Some(h) = hook() {
        h.link(span, w3c_trace_id(trace_id), parent);
    }
}

/// Makes `span` a child of the trace context carried by `headers`, when a hook is
/// installed and the headers carry one.
pub fn link_remote(span: &tracing::Span, headers: &Headers) {
    if let Some(h) = hook()
        && let Some(parent) = TraceContext::from_headers(headers)
    {
        h.link(span, parent.trace_id, Some(&parent));
    }
}

/// The trace context to publish a packet of `trace_id` with from `span`: the span's own
/// when a hook records it in the same trace, else a new hop of the packet's trace.
pub fn outgoing(trace_id: &str, span: &tracing::Span) -> TraceContext {
    let id = w3c_trace_id(trace_id);
    if let Some(h) = hook()
        && let Some(ctx) = h.context(span)
        && ctx.trace_id == id
    {
        return ctx;
    }
    TraceContext::new_hop(id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_only_valid_traceparents() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = TraceContext::parse(good, Some("rojo=00f067aa0ba902b7")).unwrap();
        assert!(c.sampled);
        assert_eq!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.traceparent(), good);
        let h = c.to_headers();
        assert_eq!(h.get(TRACESTATE), Some("rojo=00f067aa0ba902b7"));
        assert_eq!(TraceContext::from_headers(&h), Some(c));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert_eq!(TraceContext::parse(bad, None), None, "{bad}");
        }
        // A later version with more fields is read by its first four.
        assert!(
            TraceContext::parse(
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra",
                None
            )
            .is_some_and(|c| !c.sampled)
        );
    }

    #[test]
    fn packet_trace_ids_map_to_one_w3c_id() {
        let hex = "4BF92F3577B34DA6A3CE929D0E0E4736";
        assert_eq!(
            TraceContext::new(w3c_trace_id(hex), [1; 8]).trace_id_hex(),
            hex.to_ascii_lowercase()
        );
        assert_eq!(w3c_trace_id("job-7"), w3c_trace_id("job-7"));
        assert_ne!(w3c_trace_id("job-7"), w3c_trace_id("job-8"));
        assert_ne!(w3c_trace_id(&"0".repeat(32)), [0; 16]);
        let hop = outgoing("job-7", &tracing::Span::none());
        assert_eq!(hop.trace_id, w3c_trace_id("job-7"));
        assert_ne!(hop.span_id, [0; 8]);
    }
}
