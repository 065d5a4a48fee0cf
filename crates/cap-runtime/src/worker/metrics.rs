//! [`MetricsHook`]: callbacks for job and heartbeat events, to feed any metrics system.

use cap_proto::v1::JobStatus;
use std::time::Duration;

/// Called by the worker on job and heartbeat events. Every method has a no-op default;
/// implementations must be cheap (they run on the job path).
pub trait MetricsHook: Send + Sync + 'static {
    /// A job request was accepted for execution.
    fn job_received(&self, job_id: &str, topic: &str) {
        let _ = (job_id, topic);
    }
    /// A job succeeded.
    fn job_completed(&self, job_id: &str, topic: &str, elapsed: Duration) {
        let _ = (job_id, topic, elapsed);
    }
    /// A job ended without success (`status` FAILED, FAILED_RETRYABLE, FAILED_FATAL,
    /// TIMEOUT or CANCELLED).
    fn job_failed(&self, job_id: &str, topic: &str, status: JobStatus, elapsed: Duration) {
        let _ = (job_id, topic, status, elapsed);
    }
    /// A heartbeat was published.
    fn heartbeat_sent(&self, active_jobs: usize) {
        let _ = active_jobs;
    }
}

/// The default hook: does nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopMetrics;

impl MetricsHook for NoopMetrics {}
