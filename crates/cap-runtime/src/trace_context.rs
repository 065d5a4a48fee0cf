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
//! Sampling is decided once per job, where its trace starts ([`set_sample_ratio`],
//! [`samples`]), and travels in the `traceparent` flags: with a hook installed, a hop of
//! a job that is not sampled makes no span at all ([`hop_span`]), so an unsampled job
//! costs its headers and nothing more.
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
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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

/// Each byte's two lowercase hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0x0f]];
        i += 1;
    }
    t
};

/// Appends `bytes` as lowercase hex.
fn hex_into(out: &mut String, bytes: &[u8]) {
    let mut buf = [0u8; 32];
    for chunk in bytes.chunks(16) {
        let digits = &mut buf[..2 * chunk.len()];
        hex_to(digits, chunk);
        out.push_str(std::str::from_utf8(digits).unwrap_or_default());
    }
}

/// Writes `bytes` as lowercase hex into `out` (twice as long). This runs for every
/// packet published: one table load per byte, no `fmt`.
fn hex_to(out: &mut [u8], bytes: &[u8]) {
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
}

/// Not a hex digit (in [`LOWER`] and [`ANY_CASE`]).
const NOT_HEX: u8 = 0x10;

/// The value of each byte as a hex digit, [`NOT_HEX`] when it is none; upper case too
/// when `upper`.
const fn hex_values(upper: bool) -> [u8; 256] {
    let mut t = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        if upper {
            t[b'A' as usize + i] = 10 + i as u8;
        }
        i += 1;
    }
    t
}

/// Lowercase hex digits (as `traceparent` requires).
const LOWER: [u8; 256] = hex_values(false);
/// Hex digits of either case (a packet `trace_id`).
const ANY_CASE: [u8; 256] = hex_values(true);

/// `N` bytes from exactly `2 * N` hex digits, by `table` ([`LOWER`] or [`ANY_CASE`]).
/// Runs for every packet received and published: one table load per digit, one check
/// at the end.
fn unhex_by<const N: usize>(table: &[u8; 256], s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let (hi, lo) = (table[usize::from(pair[0])], table[usize::from(pair[1])]);
        bad |= hi | lo;
        *o = (hi << 4) | lo;
    }
    (bad & NOT_HEX == 0).then_some(out)
}

/// The ids and flags of a `traceparent` of version `00` written exactly (no surrounding
/// whitespace, ids not all zero); `None` for anything else, which
/// [`TraceContext::parse`] then reads in full.
fn parse_v00(b: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    let b: &[u8; 55] = b.try_into().ok()?;
    if b[..3] != *b"00-" || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let trace_id: [u8; 16] = unhex(&b[3..35])?;
    let span_id: [u8; 8] = unhex(&b[36..52])?;
    let [flags] = unhex::<1>(&b[53..55])?;
    (trace_id != [0; 16] && span_id != [0; 8]).then_some((trace_id, span_id, flags))
}

/// `N` bytes from exactly `2 * N` lowercase hex digits.
fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    unhex_by(&LOWER, s)
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

    /// A context of `trace_id` from a new random span id (a hop without a span of its
    /// own), sampled as this process samples the trace (see [`samples`]).
    pub fn new_hop(trace_id: [u8; 16]) -> Self {
        let span = fastrand::u64(1..).to_be_bytes();
        TraceContext {
            sampled: samples(&trace_id),
            ..TraceContext::new(trace_id, span)
        }
    }

    /// Parses a `traceparent` (version `00`; ids lowercase hex, not all zero; a later
    /// version is read by its first four fields, as the specification asks).
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let state = || tracestate.map(str::trim).unwrap_or_default().to_owned();
        // What every hop of cap sends, read on every packet received: version 00 as is.
        if let Some((trace_id, span_id, flags)) = parse_v00(traceparent.as_bytes()) {
            return Some(TraceContext {
                trace_id,
                span_id,
                sampled: flags & 1 == 1,
                state: state(),
            });
        }
        let b = traceparent.trim().as_bytes();
        // version "-" trace id "-" span id "-" flags, then (after version 00: nothing).
        let (version, rest) = (b.get(..2)?, b.get(2..)?);
        if version == b"ff" || (version == b"00" && b.len() != 55) {
            return None;
        }
        let field = |at: usize, len: usize| {
            (rest.get(at) == Some(&b'-'))
                .then(|| rest.get(at + 1..at + 1 + len))
                .flatten()
        };
        let trace_id: [u8; 16] = unhex(field(0, 32)?)?;
        let span_id: [u8; 8] = unhex(field(33, 16)?)?;
        let [flags] = unhex::<1>(field(50, 2)?)?;
        // A later version may go on, after a dash.
        if !matches!(rest.get(53), None | Some(b'-')) || unhex::<1>(version).is_none() {
            return None;
        }
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
            state: state(),
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
        // Hex digits and dashes only: always UTF-8 (checked on the ASCII fast path).
        std::str::from_utf8(&self.traceparent_bytes())
            .map(str::to_owned)
            .unwrap_or_default()
    }

    /// The `traceparent` header value, on the stack.
    fn traceparent_bytes(&self) -> [u8; 55] {
        let mut b = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_to(&mut b[3..35], &self.trace_id);
        hex_to(&mut b[36..52], &self.span_id);
        if self.sampled {
            b[54] = b'1';
        }
        b
    }

    /// Headers carrying this context (`tracestate` only when not empty).
    pub fn to_headers(&self) -> Headers {
        let mut h = Headers::new();
        // Both values are hex and dashes, or a header value received before: valid.
        let traceparent = self.traceparent_bytes();
        let _ = h.insert(
            TRACEPARENT,
            std::str::from_utf8(&traceparent).unwrap_or_default(),
        );
        if !self.state.is_empty() {
            let _ = h.insert(TRACESTATE, &self.state);
        }
        h
    }
}

/// The W3C trace id of a packet `trace_id`: itself when it is 32 hex digits (not all
/// zero; upper case is read too), else a stable 128-bit hash (FNV-1a with two seeds,
/// each finished by SplitMix64).
pub fn w3c_trace_id(trace_id: &str) -> [u8; 16] {
    if trace_id.len() == 32
        && let Some(id) = unhex_any_case(trace_id)
        && id != [0; 16]
    {
        return id;
    }
    // FNV-1a, then the SplitMix64 finalizer: FNV alone leaves the low bits of similar
    // ids alike, and those bits decide sampling (see [`samples`]).
    let fnv = |seed: u64| {
        let h = trace_id.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        let h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    };
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_be_bytes());
    out[8..].copy_from_slice(&fnv(0x6c62_272e_07bb_0142).to_be_bytes());
    if out == [0; 16] {
        out[15] = 1;
    }
    out
}

/// 16 bytes from 32 hex digits of either case (a packet `trace_id`, not a header).
fn unhex_any_case(s: &str) -> Option<[u8; 16]> {
    unhex_by(&ANY_CASE, s.as_bytes())
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

/// The trace context to publish a packet of `trace_id` with from `span`: the span's own
/// when a hook records it in the same trace, else a new hop of the packet's trace
/// (sampled as [`samples`] decides).
pub fn outgoing(trace_id: &str, span: &tracing::Span) -> TraceContext {
    outgoing_after(trace_id, span, None)
}

/// [`outgoing`] for a hop that received `parent` (else the context of the task's hop,
/// see [`in_hop`]): a new hop of the packet's trace keeps the parent's sampling decision
/// (when it is of the same trace).
pub fn outgoing_after(
    trace_id: &str,
    span: &tracing::Span,
    parent: Option<&TraceContext>,
) -> TraceContext {
    let id = w3c_trace_id(trace_id);
    if let Some(h) = hook()
        && !span.is_none()
        && let Some(ctx) = h.context(span)
        && ctx.trace_id == id
    {
        return ctx;
    }
    let mut hop = TraceContext::new_hop(id);
    let decided = match parent {
        Some(p) => (p.trace_id == id).then_some(p.sampled),
        None => HOP
            .try_with(|p| p.as_ref().filter(|p| p.trace_id == id).map(|p| p.sampled))
            .ok()
            .flatten(),
    };
    if let Some(sampled) = decided {
        hop.sampled = sampled;
    }
    hop
}

tokio::task_local! {
    /// The trace context the current task's hop arrived with (see [`in_hop`]).
    static HOP: Option<TraceContext>;
}

/// Runs `work` (everything one hop does for a job: its handler, progress reports,
/// result, child jobs) knowing the trace context the hop arrived with, so that packets
/// published from it without a span of their own (the trace is not sampled) keep the
/// job's sampling decision.
pub async fn in_hop<F: std::future::Future>(parent: Option<TraceContext>, work: F) -> F::Output {
    HOP.scope(parent, work).await
}

/// The share of traces this process samples, as a bound on the 56 random bits of a
/// trace id (see [`samples`]); all of them by default.
static SAMPLE_BOUND: AtomicU64 = AtomicU64::new(u64::MAX);

/// The random part of a trace id: its 56 least significant bits (W3C Trace Context
/// level 2 asks that they be random; a UUID v4 has them random too).
const RANDOM_BITS: u32 = 56;

/// Samples `ratio` (0.0 to 1.0) of the traces that start here, or whose packets this
/// process publishes without a span of its own; 1.0 (every trace) by default.
///
/// The decision is the trace id's, by the rule of the OpenTelemetry specification's
/// `TraceIdRatioBased` sampler (its 56 random bits against the ratio of 2^56), so
/// every process configured with one ratio makes the same decision for a job without
/// talking to the others, and a trace is either whole or absent. `cap` sets it from
/// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
pub fn set_sample_ratio(ratio: f64) {
    let bound = if ratio.is_nan() || ratio <= 0.0 {
        0
    } else if ratio >= 1.0 {
        u64::MAX
    } else {
        (ratio * (1u64 << RANDOM_BITS) as f64) as u64
    };
    SAMPLE_BOUND.store(bound, Ordering::Relaxed);
}

/// Whether this process samples the trace `trace_id` (see [`set_sample_ratio`]).
pub fn samples(trace_id: &[u8; 16]) -> bool {
    let bound = SAMPLE_BOUND.load(Ordering::Relaxed);
    if bound == u64::MAX {
        return true;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    (u64::from_be_bytes(low) & ((1u64 << RANDOM_BITS) - 1)) < bound
}

/// The span of one hop of a job: made by `make` and linked to `parent` (the context the
/// hop's packet arrived with) or, without one, made the root of the trace `trace_id`;
/// or no span at all when a hook is installed and the trace is not sampled (the
/// parent's flag decides, else [`samples`]), so an unsampled job costs no span.
///
/// Without a hook every hop gets its span (log lines carry its fields).
pub fn hop_span(
    parent: Option<&TraceContext>,
    trace_id: &str,
    make: impl FnOnce() -> tracing::Span,
) -> tracing::Span {
    let Some(h) = hook() else {
        return make();
    };
    match parent {
        Some(p) if p.sampled => {
            let span = make();
            h.link(&span, p.trace_id, Some(p));
            span
        }
        Some(_) => tracing::Span::none(),
        None => {
            let id = w3c_trace_id(trace_id);
            if !samples(&id) {
                return tracing::Span::none();
            }
            let span = make();
            h.link(&span, id, None);
            span
        }
    }
}

/// Records the hop of a JobResult received with `headers`: a `result` span of the job,
/// a child of the span that published it (or the root of the trace `trace_id`), made
/// and closed at once. Nothing without a hook, or for a job that is not sampled.
pub fn result_hop(headers: &Headers, trace_id: &str, result: &cap_proto::v1::JobResult) {
    if hook().is_none() {
        return;
    }
    let parent = TraceContext::from_headers(headers);
    let span = hop_span(parent.as_ref(), trace_id, || {
        tracing::info_span!(
            "result",
            job_id = result.job_id.as_str(),
            trace_id,
            topic = "",
            worker_id = result.worker_id.as_str(),
        )
    });
    drop(span.enter());
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
    fn a_hex_trace_id_is_the_w3c_id_in_either_case() {
        // A packet trace id of 32 hex digits is the W3C id, in either case.
        let id = [
            0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
            0x47, 0x36,
        ];
        assert_eq!(w3c_trace_id("4bf92f3577b34da6a3ce929d0e0e4736"), id);
        assert_eq!(w3c_trace_id("4BF92F3577B34DA6A3CE929D0E0E4736"), id);
        assert_ne!(w3c_trace_id("4bf92f3577b34da6a3ce929d0e0e473g"), id);
    }

    #[test]
    fn exact_version_00_reads_as_the_general_parser_does() {
        // A leading space sends a value past the exact-form fast path: both must agree on
        // every one-byte change of a valid traceparent.
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut checked = 0;
        for at in 0..good.len() {
            for c in ['0', '1', 'f', 'a', 'A', 'g', '-', ' '] {
                let mut s = good.to_owned();
                s.replace_range(at..=at, c.encode_utf8(&mut [0; 4]));
                let general = TraceContext::parse(&format!(" {s}"), Some("k=v"));
                assert_eq!(TraceContext::parse(&s, Some("k=v")), general, "{s:?}");
                checked += usize::from(general.is_some());
            }
        }
        assert!(checked > 200, "hex-for-hex changes stay valid: {checked}");
    }

    #[test]
    fn samples_a_ratio_of_traces_by_their_random_bits() {
        set_sample_ratio(0.25);
        // UUID v4 trace ids (what this crate makes) and hashed ones (any other).
        let ids: Vec<[u8; 16]> = (0..4000)
            .map(|i| match i % 2 {
                0 => w3c_trace_id(&crate::id::new_trace_id()),
                _ => w3c_trace_id(&format!("job-{i}")),
            })
            .collect();
        let sampled = ids.iter().filter(|id| samples(id)).count();
        assert!((800..1200).contains(&sampled), "{sampled} of 4000");
        // The decision is the trace id's: every process with the ratio makes it.
        let again = ids.iter().filter(|id| samples(id)).count();
        assert_eq!(sampled, again);
        // The 56 low bits against a quarter of 2^56; the bits above do not count.
        let mut id = [0xffu8; 16];
        id[9..].copy_from_slice(&((1u64 << 54) - 1).to_be_bytes()[1..]);
        assert!(samples(&id), "just under a quarter of 2^56");
        id[9..].copy_from_slice(&(1u64 << 54).to_be_bytes()[1..]);
        assert!(!samples(&id), "a quarter of 2^56 is not under the bound");
        set_sample_ratio(0.0);
        assert!(!ids.iter().any(samples));
        set_sample_ratio(1.0);
        assert!(ids.iter().all(samples));
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
        // 32 characters that are not all hex digits: hashed, not read.
        let not_hex = "4bf92f3577b34da6a3ce929d0e0e473g";
        assert_eq!(w3c_trace_id(not_hex), w3c_trace_id(not_hex));
        assert_ne!(
            TraceContext::new(w3c_trace_id(not_hex), [1; 8]).trace_id_hex()[..31],
            not_hex[..31]
        );
        let hop = outgoing("job-7", &tracing::Span::none());
        assert_eq!(hop.trace_id, w3c_trace_id("job-7"));
        assert_ne!(hop.span_id, [0; 8]);
    }
}
