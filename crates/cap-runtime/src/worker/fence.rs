//! [`DispatchFence`]: the worker's side of CAP-PRODUCTION dispatch fencing. Every
//! dispatch of a 2.17 control plane (and of `cap scheduler`) carries a
//! `DispatchIdentity {dispatch_id, attempt, assigned_worker_id}`; this decides, without
//! IO, what a worker does with a dispatch or a cancel that carries one.
//!
//! Dispatches (job `J`, identity `D`, this worker `me`), in order:
//! 1. `D.assigned_worker_id` is set and is not `me`: rejected ([`FenceReason::ForeignWorker`]).
//! 2. `D` is a dispatch of `J` remembered here: exact redelivery. Running: dropped, the
//!    handler is not invoked again ([`DispatchDecision::Running`]); finished: its recorded
//!    result is published again ([`DispatchDecision::Replay`]); ended without a result:
//!    rejected ([`FenceReason::Ended`]).
//! 3. `D` was ended by a `JobCancel` carrying it (a timeout or a cancel, seen on
//!    `sys.job.cancel` even before the dispatch arrived): rejected, it never runs
//!    ([`FenceReason::Ended`]).
//! 4. `J` is known here and `D.attempt` is below the highest attempt seen
//!    ([`FenceReason::Stale`]), or above it by more than one — a future attempt that
//!    skips the issued sequence ([`FenceReason::Future`]): rejected.
//! 5. Otherwise it runs ([`DispatchDecision::Run`]): a new attempt, or another dispatch
//!    id of the same attempt — a distinct delivery is never suppressed as a duplicate.
//!
//! Cancels carrying `D` are honoured only for the attempt running here, and only when
//! `D` names this worker (or no worker); anything else leaves the running attempt alone
//! ([`CancelDecision::Ignored`]). A cancel for an attempt not running here is remembered
//! (rule 3), so a late delivery of it never runs.
//!
//! Memory is bounded: at most `capacity` jobs and `capacity` ended dispatches are
//! remembered (oldest forgotten first); jobs with an attempt running are never
//! forgotten.

use bytes::Bytes;
use cap_proto::v1::DispatchIdentity;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_util::sync::CancellationToken;

/// Default number of jobs (and of ended dispatches) remembered.
pub const DEFAULT_FENCE_CAPACITY: usize = 10_000;

/// Dispatches of one job remembered at most (the most recent ones).
const DISPATCHES_PER_JOB: usize = 4;

/// Why a dispatch or a cancel was not acted upon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FenceReason {
    /// Addressed to another worker (`assigned_worker_id`).
    ForeignWorker,
    /// An attempt lower than the highest seen for the job.
    Stale,
    /// An attempt that skips the issued sequence (above the highest seen + 1).
    Future,
    /// A dispatch that was cancelled or ended (timeout, cancel) before it ran here.
    Ended,
    /// A cancel naming a dispatch of the job other than the one running here.
    OtherDispatch,
}

impl FenceReason {
    /// A short name for logs, alerts and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            FenceReason::ForeignWorker => "foreign_worker",
            FenceReason::Stale => "stale",
            FenceReason::Future => "future",
            FenceReason::Ended => "ended",
            FenceReason::OtherDispatch => "other_dispatch",
        }
    }

    /// Every reason, in counter order.
    pub const ALL: [FenceReason; 5] = [
        FenceReason::ForeignWorker,
        FenceReason::Stale,
        FenceReason::Future,
        FenceReason::Ended,
        FenceReason::OtherDispatch,
    ];
}

impl fmt::Display for FenceReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with a fenced dispatch.
#[derive(Debug)]
pub enum DispatchDecision {
    /// Run it, under this token (cancelled by a matching `JobCancel`).
    Run(CancellationToken),
    /// An exact redelivery of the attempt running here: acknowledge, do not run again.
    Running,
    /// An exact redelivery of an attempt finished here: publish these result bytes again.
    Replay(Bytes),
    /// Do not run it (dropped, counted, alerted).
    Reject(FenceReason),
}

/// What a cancel carrying a dispatch identity did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelDecision {
    /// The attempt running here was cancelled.
    Cancelled,
    /// Not running here: remembered, so a late delivery of it never runs.
    Remembered,
    /// Left alone: the cancel is for another worker, another dispatch or an older attempt.
    Ignored(FenceReason),
}

/// Counters of a [`DispatchFence`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FenceStats {
    /// Dispatches admitted to run.
    pub admitted: u64,
    /// Exact redeliveries of a running attempt dropped.
    pub duplicates: u64,
    /// Exact redeliveries of a finished attempt answered with the recorded result.
    pub replayed: u64,
    /// Dispatches rejected, by reason.
    pub rejected: Vec<(FenceReason, u64)>,
    /// Cancels that stopped the attempt running here.
    pub cancels_honoured: u64,
    /// Cancels for dispatches not running here, remembered.
    pub cancels_remembered: u64,
    /// Cancels left alone, by reason.
    pub cancels_ignored: Vec<(FenceReason, u64)>,
}

impl FenceStats {
    /// Dispatches rejected for `reason`.
    pub fn rejected_for(&self, reason: FenceReason) -> u64 {
        find(&self.rejected, reason)
    }

    /// All rejected dispatches.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    /// Cancels ignored for `reason`.
    pub fn cancels_ignored_for(&self, reason: FenceReason) -> u64 {
        find(&self.cancels_ignored, reason)
    }
}

fn find(list: &[(FenceReason, u64)], reason: FenceReason) -> u64 {
    list.iter()
        .find(|(r, _)| *r == reason)
        .map(|(_, n)| *n)
        .unwrap_or(0)
}

#[derive(Default)]
struct Counters {
    admitted: AtomicU64,
    duplicates: AtomicU64,
    replayed: AtomicU64,
    rejected: [AtomicU64; 5],
    cancels_honoured: AtomicU64,
    cancels_remembered: AtomicU64,
    cancels_ignored: [AtomicU64; 5],
}

fn slot(reason: FenceReason) -> usize {
    FenceReason::ALL
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(0)
}

enum Status {
    Running(CancellationToken),
    Finished(Bytes),
    /// Ended here without a result to replay (a cancel, or a result never published).
    Ended,
}

struct Dispatch {
    dispatch_id: String,
    attempt: u64,
    assigned: String,
    status: Status,
}

impl Dispatch {
    fn is(&self, d: &DispatchIdentity) -> bool {
        self.attempt == d.attempt && self.dispatch_id == d.dispatch_id
    }
}

#[derive(Default)]
struct Job {
    highest: u64,
    dispatches: VecDeque<Dispatch>,
}

impl Job {
    fn running(&self) -> bool {
        self.dispatches
            .iter()
            .any(|d| matches!(d.status, Status::Running(_)))
    }

    fn find_mut(&mut self, d: &DispatchIdentity) -> Option<&mut Dispatch> {
        self.dispatches.iter_mut().find(|x| x.is(d))
    }

    /// Remembers a new dispatch, forgetting the oldest finished ones beyond the bound.
    fn push(&mut self, dispatch: Dispatch) {
        self.highest = self.highest.max(dispatch.attempt);
        self.dispatches.push_back(dispatch);
        while self.dispatches.len() > DISPATCHES_PER_JOB {
            match self
                .dispatches
                .iter()
                .position(|d| !matches!(d.status, Status::Running(_)))
            {
                Some(i) => {
                    self.dispatches.remove(i);
                }
                None => break,
            }
        }
    }
}

type EndedKey = (String, String, u64);

#[derive(Default)]
struct Inner {
    jobs: HashMap<String, Job>,
    /// Jobs in the order they were first seen (for eviction).
    order: VecDeque<String>,
    ended: HashSet<EndedKey>,
    ended_order: VecDeque<EndedKey>,
}

/// The dispatches and cancels a worker has seen, per job (bounded). Cheap to share
/// (`Arc`); all methods take `&self`.
///
/// ```
/// use cap_proto::v1::DispatchIdentity;
/// use cap_runtime::worker::fence::{DispatchDecision, DispatchFence, FenceReason};
/// use tokio_util::sync::CancellationToken;
///
/// let fence = DispatchFence::new("wrk-1", 100);
/// let root = CancellationToken::new();
/// let d1 = DispatchIdentity { dispatch_id: "dsp-1".into(), attempt: 1, assigned_worker_id: "wrk-1".into() };
/// assert!(matches!(fence.admit("job-1", &d1, &root), DispatchDecision::Run(_)));
/// // The exact redelivery does not run again; once finished, it replays the result.
/// assert!(matches!(fence.admit("job-1", &d1, &root), DispatchDecision::Running));
/// fence.finish("job-1", &d1, "result bytes".into());
/// assert!(matches!(fence.admit("job-1", &d1, &root), DispatchDecision::Replay(b) if b == "result bytes"));
/// // Attempt 3 skips attempt 2: a future attempt.
/// let d3 = DispatchIdentity { attempt: 3, ..d1.clone() };
/// assert!(matches!(fence.admit("job-1", &d3, &root), DispatchDecision::Reject(FenceReason::Future)));
/// ```
pub struct DispatchFence {
    worker_id: String,
    capacity: usize,
    inner: Mutex<Inner>,
    counters: Counters,
}

impl DispatchFence {
    /// A fence for worker `worker_id` remembering up to `capacity` jobs (at least 1).
    pub fn new(worker_id: impl Into<String>, capacity: usize) -> Self {
        DispatchFence {
            worker_id: worker_id.into(),
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
            counters: Counters::default(),
        }
    }

    /// The worker this fence is for.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn foreign(&self, d: &DispatchIdentity) -> bool {
        !d.assigned_worker_id.is_empty() && d.assigned_worker_id != self.worker_id
    }

    /// Decides about a dispatch of `job_id` carrying `d`; a dispatch admitted to run gets
    /// a child token of `parent`.
    pub fn admit(
        &self,
        job_id: &str,
        d: &DispatchIdentity,
        parent: &CancellationToken,
    ) -> DispatchDecision {
        let decision = self.decide(job_id, d, parent);
        let c = &self.counters;
        match &decision {
            DispatchDecision::Run(_) => c.admitted.fetch_add(1, Ordering::Relaxed),
            DispatchDecision::Running => c.duplicates.fetch_add(1, Ordering::Relaxed),
            DispatchDecision::Replay(_) => c.replayed.fetch_add(1, Ordering::Relaxed),
            DispatchDecision::Reject(r) => c.rejected[slot(*r)].fetch_add(1, Ordering::Relaxed),
        };
        decision
    }

    fn decide(
        &self,
        job_id: &str,
        d: &DispatchIdentity,
        parent: &CancellationToken,
    ) -> DispatchDecision {
        if self.foreign(d) {
            return DispatchDecision::Reject(FenceReason::ForeignWorker);
        }
        let mut s = self.lock();
        if let Some(known) = s.jobs.get_mut(job_id).and_then(|j| j.find_mut(d)) {
            return match &known.status {
                Status::Running(_) => DispatchDecision::Running,
                Status::Finished(bytes) => DispatchDecision::Replay(bytes.clone()),
                Status::Ended => DispatchDecision::Reject(FenceReason::Ended),
            };
        }
        if s.ended
            .contains(&(job_id.to_owned(), d.dispatch_id.clone(), d.attempt))
        {
            return DispatchDecision::Reject(FenceReason::Ended);
        }
        let known = s.jobs.contains_key(job_id);
        if let Some(job) = s.jobs.get(job_id) {
            if d.attempt < job.highest {
                return DispatchDecision::Reject(FenceReason::Stale);
            }
            if d.attempt > job.highest.saturating_add(1) {
                return DispatchDecision::Reject(FenceReason::Future);
            }
        }
        let token = parent.child_token();
        let dispatch = Dispatch {
            dispatch_id: d.dispatch_id.clone(),
            attempt: d.attempt,
            assigned: d.assigned_worker_id.clone(),
            status: Status::Running(token.clone()),
        };
        if !known {
            s.order.push_back(job_id.to_owned());
        }
        s.jobs.entry(job_id.to_owned()).or_default().push(dispatch);
        self.evict(&mut s);
        DispatchDecision::Run(token)
    }

    /// For a message the replay store reports as admitted before (a redelivery of the
    /// same signed bytes): what the fence knows of dispatch `d` — [`DispatchDecision::Running`],
    /// [`DispatchDecision::Replay`] or [`DispatchDecision::Reject`] — or `None` when it
    /// does not know it (forgotten, or seen before a restart). Nothing is registered: a
    /// redelivery never starts a run.
    pub fn redelivered(&self, job_id: &str, d: &DispatchIdentity) -> Option<DispatchDecision> {
        let decision = {
            let mut s = self.lock();
            let known = s.jobs.get_mut(job_id).and_then(|j| j.find_mut(d));
            match known.map(|k| &k.status) {
                Some(Status::Running(_)) => Some(DispatchDecision::Running),
                Some(Status::Finished(bytes)) => Some(DispatchDecision::Replay(bytes.clone())),
                Some(Status::Ended) => Some(DispatchDecision::Reject(FenceReason::Ended)),
                None => None,
            }
        };
        let c = &self.counters;
        match &decision {
            Some(DispatchDecision::Running) => {
                c.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            Some(DispatchDecision::Replay(_)) => {
                c.replayed.fetch_add(1, Ordering::Relaxed);
            }
            Some(DispatchDecision::Reject(r)) => {
                c.rejected[slot(*r)].fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        decision
    }

    /// Forgets the oldest jobs beyond the capacity (never one with an attempt running).
    fn evict(&self, s: &mut Inner) {
        let mut kept = 0;
        while s.jobs.len() > self.capacity && kept < s.order.len() {
            let Some(oldest) = s.order.pop_front() else {
                break;
            };
            if s.jobs.get(&oldest).is_some_and(Job::running) {
                s.order.push_back(oldest);
                kept += 1;
            } else {
                s.jobs.remove(&oldest);
            }
        }
    }

    /// Records the result bytes published for the dispatch `d` of `job_id`, replayed to
    /// an exact redelivery.
    pub fn finish(&self, job_id: &str, d: &DispatchIdentity, result: Bytes) {
        self.set(job_id, d, Status::Finished(result));
    }

    /// Forgets the dispatch `d` of `job_id`, whose result could not be sealed (so none
    /// went out): its next delivery runs again. The highest attempt seen stays.
    pub fn forget(&self, job_id: &str, d: &DispatchIdentity) {
        let mut s = self.lock();
        if let Some(job) = s.jobs.get_mut(job_id) {
            job.dispatches.retain(|x| !x.is(d));
        }
    }

    fn set(&self, job_id: &str, d: &DispatchIdentity, status: Status) {
        let mut s = self.lock();
        if let Some(known) = s.jobs.get_mut(job_id).and_then(|j| j.find_mut(d)) {
            known.status = status;
        }
    }

    /// Applies a `JobCancel` of `job_id` carrying `d`.
    pub fn cancel(&self, job_id: &str, d: &DispatchIdentity) -> CancelDecision {
        let decision = self.decide_cancel(job_id, d);
        let c = &self.counters;
        match decision {
            CancelDecision::Cancelled => c.cancels_honoured.fetch_add(1, Ordering::Relaxed),
            CancelDecision::Remembered => c.cancels_remembered.fetch_add(1, Ordering::Relaxed),
            CancelDecision::Ignored(r) => {
                c.cancels_ignored[slot(r)].fetch_add(1, Ordering::Relaxed)
            }
        };
        decision
    }

    fn decide_cancel(&self, job_id: &str, d: &DispatchIdentity) -> CancelDecision {
        if self.foreign(d) {
            return CancelDecision::Ignored(FenceReason::ForeignWorker);
        }
        let mut s = self.lock();
        let mut other_running = false;
        let mut stale = false;
        if let Some(job) = s.jobs.get_mut(job_id) {
            stale = d.attempt < job.highest;
            for x in job.dispatches.iter_mut() {
                let Status::Running(token) = &x.status else {
                    continue;
                };
                if x.is(d) {
                    if x.assigned != d.assigned_worker_id {
                        return CancelDecision::Ignored(FenceReason::ForeignWorker);
                    }
                    token.cancel();
                    x.status = Status::Ended;
                    return CancelDecision::Cancelled;
                }
                other_running = true;
            }
        }
        // Not running here: a late delivery of it must never run.
        let key = (job_id.to_owned(), d.dispatch_id.clone(), d.attempt);
        if s.ended.insert(key.clone()) {
            s.ended_order.push_back(key);
            while s.ended_order.len() > self.capacity {
                if let Some(old) = s.ended_order.pop_front() {
                    s.ended.remove(&old);
                }
            }
        }
        if stale {
            CancelDecision::Ignored(FenceReason::Stale)
        } else if other_running {
            CancelDecision::Ignored(FenceReason::OtherDispatch)
        } else {
            CancelDecision::Remembered
        }
    }

    /// Cancels every attempt of `job_id` running here (a `JobCancel` without a dispatch
    /// identity, from a peer older than 2.17); `true` if one was running.
    pub fn cancel_job(&self, job_id: &str) -> bool {
        let mut s = self.lock();
        let Some(job) = s.jobs.get_mut(job_id) else {
            return false;
        };
        let mut any = false;
        for x in job.dispatches.iter_mut() {
            if let Status::Running(token) = &x.status {
                token.cancel();
                x.status = Status::Ended;
                any = true;
            }
        }
        any
    }

    /// Whether an attempt of `job_id` runs here.
    pub fn is_running(&self, job_id: &str) -> bool {
        self.lock().jobs.get(job_id).is_some_and(Job::running)
    }

    /// Whether the dispatch `d` of `job_id` was ended by a cancel (and will not run).
    pub fn is_ended(&self, job_id: &str, d: &DispatchIdentity) -> bool {
        let s = self.lock();
        s.ended
            .contains(&(job_id.to_owned(), d.dispatch_id.clone(), d.attempt))
            || s.jobs
                .get(job_id)
                .and_then(|j| j.dispatches.iter().find(|x| x.is(d)))
                .is_some_and(|x| matches!(x.status, Status::Ended))
    }

    /// The highest attempt seen for `job_id`, if it is remembered.
    pub fn highest_attempt(&self, job_id: &str) -> Option<u64> {
        self.lock().jobs.get(job_id).map(|j| j.highest)
    }

    /// Jobs remembered (running or finished).
    pub fn jobs(&self) -> usize {
        self.lock().jobs.len()
    }

    /// Ended dispatches remembered.
    pub fn ended(&self) -> usize {
        self.lock().ended.len()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> FenceStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let by = |arr: &[AtomicU64; 5]| {
            FenceReason::ALL
                .iter()
                .zip(arr)
                .map(|(r, n)| (*r, get(n)))
                .collect()
        };
        FenceStats {
            admitted: get(&c.admitted),
            duplicates: get(&c.duplicates),
            replayed: get(&c.replayed),
            rejected: by(&c.rejected),
            cancels_honoured: get(&c.cancels_honoured),
            cancels_remembered: get(&c.cancels_remembered),
            cancels_ignored: by(&c.cancels_ignored),
        }
    }
}

impl fmt::Debug for DispatchFence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatchFence")
            .field("worker_id", &self.worker_id)
            .field("capacity", &self.capacity)
            .field("jobs", &self.jobs())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(dispatch: &str, attempt: u64, worker: &str) -> DispatchIdentity {
        DispatchIdentity {
            dispatch_id: dispatch.into(),
            attempt,
            assigned_worker_id: worker.into(),
        }
    }

    fn run(f: &DispatchFence, job: &str, d: &DispatchIdentity) -> CancellationToken {
        match f.admit(job, d, &CancellationToken::new()) {
            DispatchDecision::Run(t) => t,
            other => panic!("expected to run, got {other:?}"),
        }
    }

    fn rejected(f: &DispatchFence, job: &str, d: &DispatchIdentity) -> Option<FenceReason> {
        match f.admit(job, d, &CancellationToken::new()) {
            DispatchDecision::Reject(r) => Some(r),
            _ => None,
        }
    }

    #[test]
    fn exact_redelivery_runs_once_and_replays_the_result() {
        let f = DispatchFence::new("wrk-1", 10);
        let d = id("dsp-1", 1, "wrk-1");
        run(&f, "j", &d);
        assert!(matches!(
            f.admit("j", &d, &CancellationToken::new()),
            DispatchDecision::Running
        ));
        f.finish("j", &d, Bytes::from_static(b"r1"));
        assert!(
            matches!(f.admit("j", &d, &CancellationToken::new()), DispatchDecision::Replay(b) if b == "r1")
        );
        let s = f.stats();
        assert_eq!((s.admitted, s.duplicates, s.replayed), (1, 1, 1));
    }

    #[test]
    fn a_distinct_dispatch_id_is_not_a_duplicate() {
        let f = DispatchFence::new("wrk-1", 10);
        run(&f, "j", &id("dsp-1", 1, "wrk-1"));
        f.finish("j", &id("dsp-1", 1, "wrk-1"), Bytes::new());
        run(&f, "j", &id("dsp-2", 1, "wrk-1"));
        // And a pool dispatch (no assigned worker) runs anywhere.
        run(&f, "k", &id("dsp-3", 1, ""));
    }

    #[test]
    fn stale_future_and_foreign_attempts_are_rejected() {
        let f = DispatchFence::new("wrk-1", 10);
        run(&f, "j", &id("dsp-1", 1, "wrk-1"));
        run(&f, "j", &id("dsp-1", 2, "wrk-1"));
        assert_eq!(
            rejected(&f, "j", &id("dsp-1", 1, "wrk-1")),
            None,
            "attempt 1 is remembered: an exact redelivery, not run"
        );
        assert_eq!(
            rejected(&f, "j", &id("dsp-0", 1, "wrk-1")),
            Some(FenceReason::Stale)
        );
        assert_eq!(
            rejected(&f, "j", &id("dsp-1", 9, "wrk-1")),
            Some(FenceReason::Future)
        );
        assert_eq!(
            rejected(&f, "j", &id("dsp-1", 3, "wrk-other")),
            Some(FenceReason::ForeignWorker)
        );
        run(&f, "j", &id("dsp-1", 3, "wrk-1"));
        // An unknown job may start at any attempt (earlier ones ran elsewhere).
        run(&f, "fresh", &id("dsp-7", 7, "wrk-1"));
        let s = f.stats();
        assert_eq!(s.rejected_for(FenceReason::Stale), 1);
        assert_eq!(s.rejected_for(FenceReason::Future), 1);
        assert_eq!(s.rejected_for(FenceReason::ForeignWorker), 1);
        assert_eq!(s.rejected_total(), 3);
    }

    #[test]
    fn cancels_stop_only_the_active_attempt_of_this_worker() {
        let f = DispatchFence::new("wrk-1", 10);
        let active = id("dsp-1", 2, "wrk-1");
        let t = run(&f, "j", &active);
        assert_eq!(
            f.cancel("j", &id("dsp-1", 1, "wrk-1")),
            CancelDecision::Ignored(FenceReason::Stale)
        );
        assert_eq!(
            f.cancel("j", &id("dsp-1", 2, "wrk-other")),
            CancelDecision::Ignored(FenceReason::ForeignWorker)
        );
        assert_eq!(
            f.cancel("j", &id("dsp-9", 2, "wrk-1")),
            CancelDecision::Ignored(FenceReason::OtherDispatch)
        );
        assert!(!t.is_cancelled());
        assert!(f.is_running("j"));
        assert_eq!(f.cancel("j", &active), CancelDecision::Cancelled);
        assert!(t.is_cancelled());
        assert!(!f.is_running("j"));
        // The cancelled attempt is not run by a redelivery.
        assert_eq!(rejected(&f, "j", &active), Some(FenceReason::Ended));
    }

    #[test]
    fn a_cancel_before_the_dispatch_means_it_never_runs() {
        let f = DispatchFence::new("wrk-1", 10);
        let pool = id("dsp-z", 1, "");
        assert_eq!(f.cancel("z", &pool), CancelDecision::Remembered);
        assert!(f.is_ended("z", &pool));
        assert_eq!(rejected(&f, "z", &pool), Some(FenceReason::Ended));
        // The next attempt is another dispatch: it runs.
        run(&f, "z", &id("dsp-z2", 2, ""));
    }

    #[test]
    fn legacy_cancels_stop_every_attempt_of_the_job() {
        let f = DispatchFence::new("wrk-1", 10);
        let t = run(&f, "j", &id("a", 1, ""));
        assert!(f.cancel_job("j"));
        assert!(t.is_cancelled());
        assert!(!f.cancel_job("j"));
        assert!(!f.cancel_job("unknown"));
    }

    #[test]
    fn memory_is_bounded_and_running_jobs_are_kept() {
        let f = DispatchFence::new("wrk-1", 3);
        let running = run(&f, "keep", &id("k", 1, ""));
        for i in 0..20 {
            let d = id(&format!("d{i}"), 1, "");
            run(&f, &format!("j{i}"), &d);
            f.finish(&format!("j{i}"), &d, Bytes::new());
            f.cancel(&format!("gone{i}"), &d);
        }
        assert!(f.jobs() <= 3, "{}", f.jobs());
        assert!(f.ended() <= 3);
        assert!(f.is_running("keep"));
        assert!(!running.is_cancelled());
        // Many dispatches of one job: only the latest few are kept.
        for a in 1..=10 {
            let d = id("x", a, "");
            run(&f, "many", &d);
            f.finish("many", &d, Bytes::new());
        }
        assert_eq!(f.highest_attempt("many"), Some(10));
    }

    #[test]
    fn a_result_that_could_not_be_sealed_lets_the_redelivery_run() {
        let f = DispatchFence::new("wrk-1", 10);
        let d = id("d", 1, "");
        run(&f, "j", &d);
        f.forget("j", &d);
        run(&f, "j", &d);
    }
}
