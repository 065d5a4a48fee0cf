//! [`SchedulerStats`]: counters of a running scheduler, readable from outside it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of a [`Scheduler`](super::Scheduler). Cheap to clone; every clone reads the
/// same counters (get one with [`Scheduler::stats`](super::Scheduler::stats) before
/// `run`).
#[derive(Clone, Debug, Default)]
pub struct SchedulerStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    unknown_results: AtomicU64,
}

impl SchedulerStats {
    /// `JobResult`s received for jobs this scheduler does not know (never submitted
    /// through it, evicted after their retention, or answered under an id the
    /// submitter chose badly); each is also logged at debug level.
    pub fn unknown_results(&self) -> u64 {
        self.0.unknown_results.load(Ordering::Relaxed)
    }

    pub(crate) fn unknown_result(&self, job_id: &str, worker_id: &str, status: i32) {
        self.0.unknown_results.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            job_id = %cap_runtime::packets::inbound::sanitize(job_id),
            worker_id = %cap_runtime::packets::inbound::sanitize(worker_id),
            status,
            "result for an unknown job dropped"
        );
    }
}
