//! The trace context each job was submitted with, so that the scheduler's hops (policy
//! check, dispatch) continue the submitter's span. Kept only while a
//! [`TraceHook`](cap_runtime::trace_context::TraceHook) is installed (spans are exported);
//! otherwise every outgoing packet still names the job's W3C trace, from its `trace_id`.

use cap_bus::Headers;
use cap_runtime::trace_context::{self, TraceContext};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Jobs remembered at most; past this the memory starts again (spans of older jobs then
/// start from the job's trace id instead of the submitter's span).
const MAX_JOBS: usize = 100_000;

/// Job id → the trace context of its submit.
#[derive(Clone, Default)]
pub(crate) struct Traces(Arc<Mutex<HashMap<String, TraceContext>>>);

impl Traces {
    /// Remembers the context `headers` carry for `job_id` (only while spans are exported).
    pub(crate) fn submitted(&self, job_id: &str, headers: &Headers) {
        if trace_context::hook().is_none() {
            return;
        }
        if let Some(ctx) = TraceContext::from_headers(headers) {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() >= MAX_JOBS {
                map.clear();
            }
            map.insert(job_id.to_owned(), ctx);
        }
    }

    /// The trace context `job_id` was submitted with, while spans are exported.
    pub(crate) fn parent(&self, job_id: &str) -> Option<TraceContext> {
        trace_context::hook()?;
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(job_id)
            .cloned()
    }

    /// The span of a hop of a job (see [`trace_context::hop_span`]): made by `make` as a
    /// child of the job's submit `parent` (see [`parent`](Self::parent)) when known,
    /// else as the root of the job's trace `trace_id` (or of a trace of its own when that
    /// is not known either); none when the trace is not sampled.
    pub(crate) fn hop(
        parent: Option<&TraceContext>,
        trace_id: Option<&str>,
        make: impl FnOnce() -> tracing::Span,
    ) -> tracing::Span {
        if trace_context::hook().is_none() {
            return make();
        }
        match (parent, trace_id) {
            (Some(p), _) => {
                let span = trace_context::hop_span(Some(p), "", make);
                if !span.is_none() {
                    span.record("trace_id", p.trace_id_hex());
                }
                span
            }
            (None, Some(t)) => trace_context::hop_span(None, t, make),
            (None, None) => trace_context::hop_span(None, &cap_runtime::id::new_trace_id(), make),
        }
    }

    /// Forgets `job_id` (it ended).
    pub(crate) fn ended(&self, job_id: &str) {
        if trace_context::hook().is_some() {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(job_id);
        }
    }
}
