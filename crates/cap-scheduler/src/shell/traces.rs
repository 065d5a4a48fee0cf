//! The scheduler's hop spans of a job. Each continues the trace context the job was
//! submitted with, which the job's record keeps ([`TraceParent`]): so a policy check,
//! dispatch or result of a job, in any instance of the scheduler and after any restart,
//! is a child of the submitter's span and keeps its sampling decision. A job submitted
//! without trace context gets spans rooted in its `trace_id` (see
//! [`trace_context::hop_span`]).

use crate::core::TraceParent;
use cap_bus::Headers;
use cap_runtime::trace_context::{self, TRACEPARENT, TRACESTATE, TraceContext};
use std::sync::Arc;

/// What a job's record keeps of its submit packet's trace context: the headers, when
/// they carry a valid `traceparent`.
pub(crate) fn submitted(headers: &Headers) -> Option<Arc<TraceParent>> {
    let traceparent = headers.get(TRACEPARENT)?;
    let tracestate = headers.get(TRACESTATE);
    TraceContext::parse(traceparent, tracestate)?;
    Some(Arc::new(TraceParent {
        traceparent: traceparent.to_owned(),
        tracestate: tracestate.unwrap_or_default().to_owned(),
    }))
}

/// The trace context a job was submitted with, when its record kept one.
pub(crate) fn parent(kept: Option<&TraceParent>) -> Option<TraceContext> {
    let kept = kept?;
    let state = Some(kept.tracestate.as_str()).filter(|s| !s.is_empty());
    TraceContext::parse(&kept.traceparent, state)
}

/// The span of a hop of a job (see [`trace_context::hop_span`]): made by `make`, given
/// the trace id the span carries, as a child of the job's submit `parent` when known,
/// else as the root of the job's trace `trace_id` (or of a trace of its own when that
/// is not known either); none when the trace is not sampled. The span's trace id is
/// the packet's `trace_id` when known, else the W3C one of `parent`; without either
/// (and no exporter) it has none.
pub(crate) fn hop(
    parent: Option<&TraceContext>,
    trace_id: Option<&str>,
    make: impl FnOnce(Option<&str>) -> tracing::Span,
) -> tracing::Span {
    if trace_context::hook().is_none() {
        return make(trace_id);
    }
    match (parent, trace_id) {
        (Some(p), Some(t)) => trace_context::hop_span(Some(p), "", || make(Some(t))),
        (Some(p), None) => trace_context::hop_span(Some(p), "", || make(Some(&p.trace_id_hex()))),
        (None, Some(t)) => trace_context::hop_span(None, t, || make(Some(t))),
        (None, None) => {
            let t = cap_runtime::id::new_trace_id();
            trace_context::hop_span(None, &t, || make(Some(&t)))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keeps_only_a_valid_submit_context() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let headers = Headers::new()
            .with(TRACEPARENT, good)
            .unwrap()
            .with(TRACESTATE, "rojo=1")
            .unwrap();
        let kept = submitted(&headers).unwrap();
        assert_eq!(kept.traceparent, good);
        assert_eq!(kept.tracestate, "rojo=1");
        let ctx = parent(Some(&kept)).unwrap();
        assert!(!ctx.sampled, "the submitter's decision is kept");
        assert_eq!(ctx.state, "rojo=1");
        let bad = Headers::new().with(TRACEPARENT, "00-zz").unwrap();
        assert_eq!(submitted(&bad), None);
        assert_eq!(submitted(&Headers::new()), None);
        assert_eq!(parent(None), None);
    }
}
