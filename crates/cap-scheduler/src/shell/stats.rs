//! [`SchedulerStats`]: counters of a running scheduler, readable from outside it.

use crate::core::Fence;
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
    commits: AtomicU64,
    conflicts: AtomicU64,
    given_back: AtomicU64,
    fenced: [AtomicU64; 4],
    withdrawn: AtomicU64,
}

fn slot(f: Fence) -> usize {
    match f {
        Fence::Inactive => 0,
        Fence::Stale => 1,
        Fence::Future => 2,
        Fence::Foreign => 3,
    }
}

impl SchedulerStats {
    /// `JobResult`s received for jobs this scheduler does not know (never submitted
    /// through it, evicted after their retention, or answered under an id the
    /// submitter chose badly); each is also logged at debug level.
    pub fn unknown_results(&self) -> u64 {
        self.0.unknown_results.load(Ordering::Relaxed)
    }

    /// Job changes committed to the store.
    pub fn commits(&self) -> u64 {
        self.0.commits.load(Ordering::Relaxed)
    }

    /// Compare-and-sets lost to another writer (the job was decided again).
    pub fn conflicts(&self) -> u64 {
        self.0.conflicts.load(Ordering::Relaxed)
    }

    /// Events given back for redelivery because the store did not take them.
    pub fn given_back(&self) -> u64 {
        self.0.given_back.load(Ordering::Relaxed)
    }

    /// Reports (results, progress, cancels) dropped for not belonging to the attempt in
    /// flight, of one kind.
    pub fn fenced(&self, kind: Fence) -> u64 {
        self.0.fenced[slot(kind)].load(Ordering::Relaxed)
    }

    /// All fenced reports.
    pub fn fenced_total(&self) -> u64 {
        self.0
            .fenced
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Dispatches withdrawn from the durable bus after their attempt ended.
    pub fn withdrawn(&self) -> u64 {
        self.0.withdrawn.load(Ordering::Relaxed)
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

    pub(crate) fn engine(&self, commits: u64, conflicts: u64, given_back: u64) {
        self.0.commits.store(commits, Ordering::Relaxed);
        self.0.conflicts.store(conflicts, Ordering::Relaxed);
        self.0.given_back.store(given_back, Ordering::Relaxed);
    }

    pub(crate) fn fence(&self, kind: Fence) {
        self.0.fenced[slot(kind)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn withdrew(&self) {
        self.0.withdrawn.fetch_add(1, Ordering::Relaxed);
    }
}
