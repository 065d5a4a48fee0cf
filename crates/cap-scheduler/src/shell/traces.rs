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

    /// `span`, a hop of `job_id`, made a child of its submit (when remembered), else the
    /// root of the job's trace `trace_id` (when known).
    pub(crate) fn hop(
        &self,
        span: tracing::Span,
        job_id: &str,
        trace_id: Option<&str>,
    ) -> tracing::Span {
        if trace_context::hook().is_some() {
            let parent = self
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(job_id)
                .cloned();
            match (&parent, trace_id) {
                (Some(p), _) => {
                    span.record("trace_id", p.trace_id_hex());
                    trace_context::link(&span, "", Some(p));
                }
                (None, Some(t)) => trace_context::link(&span, t, None),
                (None, None) => {}
            }
        }
        span
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
