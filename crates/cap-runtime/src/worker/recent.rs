//! [`RecentJobs`]: the jobs this worker is running or has recently finished, so that a
//! re-delivered job id is not executed twice.
//!
//! Running jobs are always kept (with their cancellation token). Finished jobs keep the
//! exact bytes of their published result, in a bounded map evicting the oldest finished
//! entry first (default 10 000). A re-delivery of a running job is dropped; of a finished
//! one, the recorded result is published again.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Default number of finished jobs remembered.
pub const DEFAULT_RECENT_CAPACITY: usize = 10_000;

enum Entry {
    Running(CancellationToken),
    Finished(Bytes),
}

/// What to do with a job request.
#[derive(Debug)]
pub(crate) enum Admission {
    /// New: run it with this token.
    Run(CancellationToken),
    /// Already running here: drop the copy.
    Running,
    /// Finished here: publish these result bytes again.
    Finished(Bytes),
}

struct State {
    jobs: HashMap<String, Entry>,
    finished_order: VecDeque<String>,
}

/// Running and recently finished jobs (bounded).
pub struct RecentJobs {
    capacity: usize,
    state: Mutex<State>,
}

impl RecentJobs {
    /// Remembers up to `capacity` finished jobs.
    pub fn new(capacity: usize) -> Self {
        RecentJobs {
            capacity: capacity.max(1),
            state: Mutex::new(State {
                jobs: HashMap::new(),
                finished_order: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits `job_id`, or says why not.
    pub(crate) fn admit(&self, job_id: &str, parent: &CancellationToken) -> Admission {
        let mut s = self.lock();
        match s.jobs.get(job_id) {
            Some(Entry::Running(_)) => Admission::Running,
            Some(Entry::Finished(b)) => Admission::Finished(b.clone()),
            None => {
                let token = parent.child_token();
                s.jobs
                    .insert(job_id.to_owned(), Entry::Running(token.clone()));
                Admission::Run(token)
            }
        }
    }

    /// Records the result bytes of a finished job.
    pub(crate) fn finish(&self, job_id: &str, result: Bytes) {
        let mut s = self.lock();
        // One lookup each: the running entry is updated in place, and an evicted id is
        // looked up once (it may be running again, then it stays).
        match s.jobs.get_mut(job_id) {
            Some(entry) => *entry = Entry::Finished(result),
            None => {
                s.jobs.insert(job_id.to_owned(), Entry::Finished(result));
            }
        }
        s.finished_order.push_back(job_id.to_owned());
        while s.finished_order.len() > self.capacity {
            if let Some(old) = s.finished_order.pop_front()
                && let std::collections::hash_map::Entry::Occupied(e) = s.jobs.entry(old)
                && matches!(e.get(), Entry::Finished(_))
            {
                e.remove();
            }
        }
    }

    /// Forgets a running job that produced no result to record.
    pub(crate) fn forget(&self, job_id: &str) {
        let mut s = self.lock();
        if matches!(s.jobs.get(job_id), Some(Entry::Running(_))) {
            s.jobs.remove(job_id);
        }
    }

    /// Cancels a running job; `false` when it is not running here.
    pub(crate) fn cancel(&self, job_id: &str) -> bool {
        match self.lock().jobs.get(job_id) {
            Some(Entry::Running(t)) => {
                t.cancel();
                true
            }
            _ => false,
        }
    }

    /// Whether `job_id` is running here.
    pub fn is_running(&self, job_id: &str) -> bool {
        matches!(self.lock().jobs.get(job_id), Some(Entry::Running(_)))
    }

    /// Number of running jobs.
    pub fn running(&self) -> usize {
        self.lock()
            .jobs
            .values()
            .filter(|e| matches!(e, Entry::Running(_)))
            .count()
    }

    /// Number of finished jobs remembered.
    pub fn finished(&self) -> usize {
        self.lock().finished_order.len()
    }
}

impl std::fmt::Debug for RecentJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentJobs")
            .field("capacity", &self.capacity)
            .field("finished", &self.finished())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_recognised_and_memory_is_bounded() {
        let parent = CancellationToken::new();
        let r = RecentJobs::new(2);
        let Admission::Run(t1) = r.admit("a", &parent) else {
            panic!("first admission runs")
        };
        assert!(matches!(r.admit("a", &parent), Admission::Running));
        assert!(r.cancel("a"));
        assert!(t1.is_cancelled());
        r.finish("a", Bytes::from_static(b"ra"));
        assert!(matches!(r.admit("a", &parent), Admission::Finished(b) if b == "ra"));
        assert!(!r.cancel("a"), "finished jobs cannot be cancelled");
        for id in ["b", "c"] {
            assert!(matches!(r.admit(id, &parent), Admission::Run(_)));
            r.finish(id, Bytes::new());
        }
        assert_eq!(r.finished(), 2);
        assert!(
            matches!(r.admit("a", &parent), Admission::Run(_)),
            "oldest evicted"
        );
        r.forget("a");
        assert_eq!(r.running(), 0);
        // Parent cancellation reaches running jobs.
        let Admission::Run(t) = r.admit("d", &parent) else {
            panic!()
        };
        parent.cancel();
        assert!(t.is_cancelled());
    }
}
