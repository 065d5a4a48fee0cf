//! [`TimeoutLayer`]: ends a job at its deadline.

use crate::job::{Job, JobError};
use bytes::Bytes;
use futures_core::future::BoxFuture;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

/// Ends a job with a TIMEOUT result (error 200) when it runs past the earliest of: the
/// request's deadline (`Budget.deadline_ms`), the handler's own timeout, and this layer's
/// default (when there is neither a deadline nor a handler timeout).
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer {
    default: Option<Duration>,
}

impl TimeoutLayer {
    /// A layer with `default` for jobs without a deadline (`None`: no limit).
    pub fn new(default: Option<Duration>) -> Self {
        TimeoutLayer { default }
    }
}

impl<S> tower::Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;
    fn layer(&self, inner: S) -> TimeoutService<S> {
        TimeoutService {
            inner,
            default: self.default,
        }
    }
}

/// The service of [`TimeoutLayer`].
#[derive(Clone, Debug)]
pub struct TimeoutService<S> {
    inner: S,
    default: Option<Duration>,
}

impl<S> tower::Service<Job> for TimeoutService<S>
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
        let now = Instant::now();
        let own = job.ctx.handler_timeout().map(|d| now + d);
        let deadline = match (job.ctx.deadline(), own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (Some(a), None) => Some(a),
            (None, Some(b)) => Some(b),
            (None, None) => self.default.map(|d| now + d),
        };
        let fut = self.inner.call(job);
        Box::pin(async move {
            match deadline {
                None => fut.await,
                Some(at) => match tokio::time::timeout_at(at.into(), fut).await {
                    Ok(out) => out,
                    Err(_) => Err(JobError::timeout(format!(
                        "deadline of {} ms passed",
                        at.saturating_duration_since(now).as_millis()
                    ))),
                },
            }
        })
    }
}
