//! [`TraceLayer`]: a `tracing` span per job with job_id, trace_id, topic and sender_id.

use crate::job::{Job, JobError};
use bytes::Bytes;
use futures_core::future::BoxFuture;
use std::task::{Context as TaskContext, Poll};
use tracing::Instrument;

/// Runs each job inside a `debug` span `cap.job` with fields `job_id`, `trace_id`,
/// `topic` and `sender_id`, and logs how it ended (debug on success, warn on failure).
/// The worker's `info` span `handle` (one hop of the job's trace) already carries the
/// job's fields; this one adds the handler's own detail when debug is on.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;
    fn layer(&self, inner: S) -> TraceService<S> {
        TraceService { inner }
    }
}

/// The service of [`TraceLayer`].
#[derive(Clone, Debug)]
pub struct TraceService<S> {
    inner: S,
}

impl<S> tower::Service<Job> for TraceService<S>
where
    S: tower::Service<Job, Response = Bytes, Error = JobError>,
    S::Future: Send + 'static,
{
    type Response = Bytes;
    type Error = JobError;
    type Future = BoxFuture<'static, Result<Bytes, JobError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), JobError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, job: Job) -> Self::Future {
        let span = tracing::debug_span!(
            "cap.job",
            job_id = job.ctx.job_id(),
            trace_id = job.ctx.trace_id(),
            topic = job.ctx.topic(),
            sender_id = job.ctx.sender_id(),
        );
        let fut = {
            let _enter = span.enter();
            self.inner.call(job)
        };
        Box::pin(
            async move {
                let out = fut.await;
                match &out {
                    Ok(bytes) => tracing::debug!(output_bytes = bytes.len(), "job succeeded"),
                    Err(e) => tracing::warn!(error = %e, "job failed"),
                }
                out
            }
            .instrument(span),
        )
    }
}
