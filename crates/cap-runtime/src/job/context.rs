//! [`Context`]: what a handler knows about the job it runs, and how it talks back.

use crate::Error;
use crate::worker::RetryPolicy;
use cap_proto::v1;
use futures_core::future::BoxFuture;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Where progress reports go (the worker's packet layer). Object-safe, so `Context`
/// does not depend on the bus type.
pub trait ProgressSink: Send + Sync + 'static {
    /// Publishes one `JobProgress` for the job of `ctx`.
    fn progress(
        &self,
        report: v1::JobProgress,
        trace_id: &str,
    ) -> BoxFuture<'static, Result<(), Error>>;
}

/// The context of one job: its request, ids, deadline, cancellation token and progress
/// reporting. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    request: Box<v1::JobRequest>,
    trace_id: String,
    sender_id: String,
    worker_id: Arc<str>,
    topic: Arc<str>,
    cancel: CancellationToken,
    deadline: Option<Instant>,
    retry: Option<RetryPolicy>,
    timeout: Option<Duration>,
    sink: Arc<dyn ProgressSink>,
}

/// What [`Context::new`] needs.
pub(crate) struct ContextParts {
    pub request: Box<v1::JobRequest>,
    pub trace_id: String,
    pub sender_id: String,
    pub worker_id: Arc<str>,
    pub topic: Arc<str>,
    pub cancel: CancellationToken,
    pub deadline: Option<Instant>,
    pub retry: Option<RetryPolicy>,
    pub timeout: Option<Duration>,
    pub sink: Arc<dyn ProgressSink>,
}

impl Context {
    pub(crate) fn new(p: ContextParts) -> Self {
        Context {
            inner: Arc::new(Inner {
                request: p.request,
                trace_id: p.trace_id,
                sender_id: p.sender_id,
                worker_id: p.worker_id,
                topic: p.topic,
                cancel: p.cancel,
                deadline: p.deadline,
                retry: p.retry,
                timeout: p.timeout,
                sink: p.sink,
            }),
        }
    }

    /// The job id.
    pub fn job_id(&self) -> &str {
        &self.inner.request.job_id
    }

    /// The trace id of the request (copied into every packet about the job).
    pub fn trace_id(&self) -> &str {
        &self.inner.trace_id
    }

    /// The sender of the request (a scheduler, or a client submitting directly).
    pub fn sender_id(&self) -> &str {
        &self.inner.sender_id
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    /// The topic of the handler running the job.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// The whole request (labels, budget, tenant, metadata, ...).
    pub fn request(&self) -> &v1::JobRequest {
        &self.inner.request
    }

    /// When the job must be finished, from the request's `Budget.deadline_ms`.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// The handler's own timeout override, if it set one.
    pub fn handler_timeout(&self) -> Option<Duration> {
        self.inner.timeout
    }

    /// The handler's own retry policy, if it set one.
    pub fn retry_policy(&self) -> Option<&RetryPolicy> {
        self.inner.retry.as_ref()
    }

    /// The job's cancellation token: cancelled when a `JobCancel` arrives for the job or
    /// the worker shuts down past its grace period.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    /// Whether the job was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Completes when the job is cancelled.
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await
    }

    /// Publishes a `JobProgress` (percent clamped to 0-100) on `sys.job.progress`, with
    /// the request's trace id.
    pub async fn progress(&self, percent: i32, message: impl Into<String>) -> Result<(), Error> {
        let report = v1::JobProgress {
            job_id: self.job_id().to_owned(),
            percent: percent.clamp(0, 100),
            message: message.into(),
            status: v1::JobStatus::Running as i32,
            ..Default::default()
        };
        self.inner.sink.progress(report, &self.inner.trace_id).await
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("job_id", &self.job_id())
            .field("trace_id", &self.trace_id())
            .field("topic", &self.topic())
            .field("sender_id", &self.sender_id())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}
