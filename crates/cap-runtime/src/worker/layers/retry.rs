//! [`RetryLayer`] and [`RetryPolicy`]: retrying retryable failures with exponential
//! backoff and jitter.

use crate::job::{Job, JobError};
use bytes::Bytes;
use futures_core::future::BoxFuture;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tower::ServiceExt;

/// When and how often to retry a job whose handler returned a retryable error.
///
/// The delay before retry `n` (1-based) is `initial × multiplier^(n-1)`, capped at
/// `max`, then scaled by a random factor in `[1 - jitter, 1]` ("equal jitter" when
/// `jitter` is 0.5). Only [`JobError::is_retryable`] errors are retried; a cancelled job
/// is not.
///
/// ```
/// use cap_runtime::RetryPolicy;
/// use std::time::Duration;
/// let p = RetryPolicy::exponential(3).initial(Duration::from_millis(100)).jitter(0.0);
/// assert_eq!(p.backoff(1, 0.5), Duration::from_millis(100));
/// assert_eq!(p.backoff(3, 0.5), Duration::from_millis(400));
/// assert_eq!(RetryPolicy::none().max_retries, 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: no retry).
    pub max_retries: u32,
    /// Delay before the first retry.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Growth per retry.
    pub multiplier: f64,
    /// Fraction of each delay that is random (0: none, 1: full jitter).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::none()
    }
}

impl RetryPolicy {
    /// No retries (the default, like the official SDKs).
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..Self::exponential(0)
        }
    }

    /// `max_retries` retries, starting at 100 ms, doubling, capped at 10 s, half jitter.
    pub fn exponential(max_retries: u32) -> Self {
        RetryPolicy {
            max_retries,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }

    /// Sets the first delay.
    pub fn initial(mut self, d: Duration) -> Self {
        self.initial = d;
        self
    }

    /// Sets the longest delay.
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max = d;
        self
    }

    /// Sets the jitter fraction (clamped to 0-1).
    pub fn jitter(mut self, j: f64) -> Self {
        self.jitter = j.clamp(0.0, 1.0);
        self
    }

    /// The delay before retry `retry` (1-based), with `random` in `[0, 1)` choosing the
    /// jitter.
    pub fn backoff(&self, retry: u32, random: f64) -> Duration {
        let exp = retry.saturating_sub(1).min(63) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exp);
        let capped = base.min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter * random.clamp(0.0, 1.0);
        Duration::from_secs_f64((capped * factor).max(0.0))
    }
}

/// Retries retryable failures per the handler's [`RetryPolicy`] (from
/// [`HandlerOptions`](crate::HandlerOptions)), else this layer's default.
#[derive(Clone, Copy, Debug, Default)]
pub struct RetryLayer {
    default: RetryPolicy,
}

impl RetryLayer {
    /// A layer with `default` for handlers without their own policy.
    pub fn new(default: RetryPolicy) -> Self {
        RetryLayer { default }
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = RetryService<S>;
    fn layer(&self, inner: S) -> RetryService<S> {
        RetryService {
            inner,
            default: self.default,
        }
    }
}

/// The service of [`RetryLayer`].
#[derive(Clone, Debug)]
pub struct RetryService<S> {
    inner: S,
    default: RetryPolicy,
}

impl<S> tower::Service<Job> for RetryService<S>
where
    S: tower::Service<Job, Response = Bytes, Error = JobError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Bytes;
    type Error = JobError;
    type Future = BoxFuture<'static, Result<Bytes, JobError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), JobError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, job: Job) -> Self::Future {
        let policy = job.ctx.retry_policy().copied().unwrap_or(self.default);
        // The clone that was driven to readiness serves the first attempt.
        let ready = self.inner.clone();
        let first = std::mem::replace(&mut self.inner, ready);
        let again = self.inner.clone();
        Box::pin(async move {
            let mut result = first.oneshot(job.clone()).await;
            let mut retry = 0;
            while let Err(e) = &result {
                if !e.is_retryable() || retry >= policy.max_retries || job.ctx.is_cancelled() {
                    break;
                }
                retry += 1;
                let delay = policy.backoff(retry, fastrand::f64());
                tracing::info!(retry, delay_ms = delay.as_millis() as u64, error = %e, "retrying job");
                tokio::select! {
                    _ = job.ctx.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                result = again.clone().oneshot(job.clone()).await;
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let p = RetryPolicy::exponential(5)
            .initial(Duration::from_millis(100))
            .max_delay(Duration::from_millis(500))
            .jitter(0.5);
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 0.0), Duration::from_millis(200));
        assert_eq!(p.backoff(4, 0.0), Duration::from_millis(500));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(1000, 0.0), Duration::from_millis(500));
        let none = RetryPolicy::none();
        assert_eq!(none.max_retries, 0);
    }
}
