//! The engine against a store that misbehaves as a real one can: a commit whose reply
//! was lost (written, or not), and a store that refuses everything. What goes on the bus
//! always matches what the store holds, and events the store did not take are given back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_proto::{JobState, v1};
use cap_scheduler::core::{Action, Config, JobEvent, JobRecord, Millis, Pools, TraceParent};
use cap_scheduler::shell::{Commit, Committed, Engine, StoreError, Stored, WorkerEntry};
use cap_scheduler::{JobStore, MemoryJobStore};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the next commits go wrong.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    /// Written, but the reply is lost.
    WrittenUnanswered,
    /// Not written, and no reply.
    LostUnanswered,
    /// The store is down.
    Down,
}

#[derive(Clone)]
struct Faulty {
    inner: MemoryJobStore,
    fault: Arc<Mutex<Fault>>,
    commits: Arc<AtomicUsize>,
}

impl Faulty {
    fn set(&self, f: Fault) {
        *self.fault.lock().unwrap() = f;
    }
    fn fault(&self) -> Fault {
        *self.fault.lock().unwrap()
    }
    fn down(&self) -> Result<(), StoreError> {
        match self.fault() {
            Fault::Down => Err(StoreError("down".into())),
            _ => Ok(()),
        }
    }
}

impl JobStore for Faulty {
    async fn load(&self, ids: &[String]) -> Result<Vec<Option<Stored>>, StoreError> {
        self.down()?;
        self.inner.load(ids).await
    }
    async fn commit(&self, commits: &[Commit<'_>]) -> Result<Vec<Committed>, StoreError> {
        self.down()?;
        self.commits.fetch_add(commits.len(), Ordering::SeqCst);
        match self.fault() {
            Fault::WrittenUnanswered => {
                self.inner.commit(commits).await?;
                Ok(vec![Committed::Unknown; commits.len()])
            }
            Fault::LostUnanswered => Ok(vec![Committed::Unknown; commits.len()]),
            _ => self.inner.commit(commits).await,
        }
    }
    async fn claim_due(
        &self,
        now: Millis,
        until: Millis,
        max: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.claim_due(now, until, max).await
    }
    async fn rearm(&self, id: &str, v: u64, d: Option<Millis>) -> Result<(), StoreError> {
        self.inner.rearm(id, v, d).await
    }
    async fn claim_key(&self, k: &str, id: &str, ttl: Duration) -> Result<String, StoreError> {
        self.inner.claim_key(k, id, ttl).await
    }
    async fn link_child(&self, p: &str, c: &str, ttl: Duration) -> Result<(), StoreError> {
        self.inner.link_child(p, c, ttl).await
    }
    async fn children(&self, p: &str) -> Result<Vec<String>, StoreError> {
        self.inner.children(p).await
    }
    async fn put_worker(&self, w: &WorkerEntry, ttl: Duration) -> Result<(), StoreError> {
        self.inner.put_worker(w, ttl).await
    }
    async fn workers(&self) -> Result<Vec<WorkerEntry>, StoreError> {
        self.inner.workers().await
    }
    async fn put_receipt(
        &self,
        j: &str,
        d: &str,
        r: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.inner.put_receipt(j, d, r, ttl).await
    }
    async fn take_receipt(&self, j: &str, d: &str) -> Result<Option<String>, StoreError> {
        self.inner.take_receipt(j, d).await
    }
    async fn load_all(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.inner.load_all().await
    }
}

fn faulty(fault: Fault) -> Faulty {
    Faulty {
        inner: MemoryJobStore::new(),
        fault: Arc::new(Mutex::new(fault)),
        commits: Arc::default(),
    }
}

fn engine(store: &Faulty) -> Engine<Faulty> {
    let mut n = 0;
    Engine::new(
        Arc::new(store.clone()),
        "sched".into(),
        Config::default(),
        Pools::default(),
        1000,
        Box::new(move || {
            n += 1;
            format!("d{n}")
        }),
    )
}

fn submitted(id: &str) -> (String, JobEvent) {
    (
        id.to_owned(),
        JobEvent::Submitted {
            request: v1::JobRequest {
                job_id: id.into(),
                topic: "job.x".into(),
                ..Default::default()
            },
            trace_id: "t".into(),
            sender: "c".into(),
            identity: None,
            claim: None,
            internal: false,
            chain: Vec::new(),
            trace_parent: None,
        },
    )
}

fn allowed(id: &str) -> (String, JobEvent) {
    (
        id.to_owned(),
        JobEvent::SafetyDecided(v1::PolicyCheckResponse {
            decision: 1,
            ..Default::default()
        }),
    )
}

fn dispatches(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Dispatch { .. }))
        .count()
}

#[tokio::test]
async fn a_written_commit_whose_reply_was_lost_is_recognised_and_carried_out() {
    let store = faulty(Fault::None);
    let mut e = engine(&store);
    e.apply(vec![submitted("j")], 1).await;
    store.set(Fault::WrittenUnanswered);
    let out = e.apply(vec![allowed("j")], 2).await;
    assert!(out.failed.is_empty());
    assert_eq!(
        dispatches(&out.actions),
        1,
        "the dispatch that was recorded goes out"
    );
    let stored = store
        .inner
        .load(&["j".into()])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(stored.record.state, JobState::Dispatched);
    assert_eq!(stored.version, 2);
}

#[tokio::test]
async fn an_unwritten_commit_whose_reply_was_lost_is_decided_again() {
    let store = faulty(Fault::None);
    let mut e = engine(&store);
    e.apply(vec![submitted("j")], 1).await;
    store.set(Fault::LostUnanswered);
    let out = e.apply(vec![allowed("j")], 2).await;
    // Never written: nothing goes out, and after the retries the event is given back.
    assert_eq!(dispatches(&out.actions), 0);
    assert_eq!(out.failed, [0]);
    let stored = store
        .inner
        .load(&["j".into()])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(stored.record.state, JobState::Scheduled);
    // Once the store answers again, the same event applies once.
    store.set(Fault::None);
    let out = e.apply(vec![allowed("j")], 3).await;
    assert_eq!(dispatches(&out.actions), 1);
}

#[tokio::test]
async fn events_are_given_back_while_the_store_is_down() {
    let store = faulty(Fault::Down);
    let mut e = engine(&store);
    let out = e.apply(vec![submitted("a"), submitted("b")], 1).await;
    assert!(
        out.actions.is_empty(),
        "nothing is announced that is not stored"
    );
    assert_eq!(out.failed, [0, 1]);
    store.set(Fault::None);
    let out = e.apply(vec![submitted("a")], 2).await;
    assert!(out.failed.is_empty());
    assert!(
        out.actions
            .iter()
            .any(|a| matches!(a, Action::CheckSafety { job_id, .. } if job_id == "a"))
    );
}

#[tokio::test]
async fn no_job_times_out_for_silence_while_the_bus_was_down() {
    let store = faulty(Fault::None);
    let mut e = engine(&store);
    e.apply(vec![submitted("j")], 0).await;
    e.apply(vec![allowed("j")], 0).await;
    let dispatch_timeout = cap_scheduler::core::timers::ms(Config::default().dispatch_timeout);
    // The deadline comes while the bus is down (the shell holds timeouts): nothing ends.
    e.hold_timeouts_until(dispatch_timeout + 5_000);
    let due = (String::from("j"), JobEvent::Due);
    let out = e.apply(vec![due.clone()], dispatch_timeout + 1).await;
    assert!(out.actions.is_empty(), "{:?}", out.actions);
    let stored = store
        .inner
        .load(&["j".into()])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(stored.record.state, JobState::Dispatched);
    // Its deadline comes again when the hold ends, and then it is judged.
    let again = store
        .inner
        .claim_due(dispatch_timeout + 4_999, dispatch_timeout + 60_000, 10)
        .await
        .unwrap();
    assert!(again.is_empty(), "re-armed to the end of the hold");
    let again = store
        .inner
        .claim_due(dispatch_timeout + 5_000, dispatch_timeout + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(again, ["j"]);
    let out = e.apply(vec![due], dispatch_timeout + 5_000).await;
    assert!(out.actions.iter().any(|a| matches!(
        a,
        Action::Transition {
            state: JobState::Timeout,
            ..
        }
    )));
}

#[tokio::test]
async fn a_job_whose_safety_answer_was_lost_with_its_instance_asks_again() {
    let store = faulty(Fault::None);
    // The instance that recorded the job and asked the kernel dies before the answer.
    let mut first = engine(&store);
    let out = first.apply(vec![submitted("j")], 0).await;
    assert!(
        out.actions
            .iter()
            .any(|a| matches!(a, Action::CheckSafety { .. }))
    );
    drop(first);
    // Another instance: nothing is due while the answer may still come...
    let stall = cap_scheduler::core::timers::SAFETY_STALL_MS;
    let none = store
        .inner
        .claim_due(stall - 1, stall + 60_000, 10)
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    // ...then the job is claimed and asks again, and the answer dispatches it.
    let due = store
        .inner
        .claim_due(stall, stall + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(due, ["j"]);
    let mut second = engine(&store);
    let out = second
        .apply(vec![(due[0].clone(), JobEvent::Due)], stall)
        .await;
    assert!(
        out.actions
            .iter()
            .any(|a| matches!(a, Action::CheckSafety { job_id, .. } if job_id == "j")),
        "{:?}",
        out.actions
    );
    let out = second.apply(vec![allowed("j")], stall + 1).await;
    assert_eq!(dispatches(&out.actions), 1);
}

/// An instance whose cached record is behind the store (another instance asked the
/// kernel again and dispatched the job) must not drop the worker's result as a report
/// outside the attempt in flight: a drop commits nothing, so it is decided again from
/// the stored record. A report that really is outside the attempt is still dropped.
#[tokio::test]
async fn a_result_is_not_dropped_on_a_stale_cached_record() {
    let store = faulty(Fault::None);
    // The first instance records two jobs and asks its kernel; the answers never come.
    let mut first = engine(&store);
    first.apply(vec![submitted("j"), submitted("k")], 0).await;
    assert_eq!(
        first.cached_record("j").map(|r| r.state),
        Some(JobState::Scheduled)
    );
    // A second instance claims the stalled jobs, asks again and dispatches them.
    let stall = cap_scheduler::core::timers::SAFETY_STALL_MS;
    let due = store
        .inner
        .claim_due(stall, stall + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 2);
    let mut second = engine(&store);
    second
        .apply(
            due.iter().map(|id| (id.clone(), JobEvent::Due)).collect(),
            stall,
        )
        .await;
    let out = second
        .apply(vec![allowed("j"), allowed("k")], stall + 1)
        .await;
    let identity = |job: &str| {
        out.actions
            .iter()
            .find_map(|a| match a {
                Action::Dispatch { request, .. } if request.job_id == job => {
                    request.dispatch.clone()
                }
                _ => None,
            })
            .unwrap()
    };
    let result = |job: &str, status: JobState, dispatch: v1::DispatchIdentity| {
        (
            job.to_owned(),
            JobEvent::Result(v1::JobResult {
                job_id: job.into(),
                status: status.status() as i32,
                worker_id: "w1".into(),
                dispatch: Some(dispatch),
                ..Default::default()
            }),
        )
    };
    // The workers' reports reach the first instance, which still caches SCHEDULED:
    // j's real result, and for k a result with a dispatch id nobody issued.
    let forged = v1::DispatchIdentity {
        dispatch_id: "forged".into(),
        ..identity("k")
    };
    let out = first
        .apply(
            vec![
                result("j", JobState::Succeeded, identity("j")),
                result("k", JobState::Failed, forged),
            ],
            stall + 50,
        )
        .await;
    assert_eq!(first.stats().rechecked, 2);
    let fenced: Vec<&str> = out
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Fenced { job_id, .. } => Some(job_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(fenced, ["k"], "{:?}", out.actions);
    assert!(out.failed.is_empty());
    let stored = store.inner.load(&["j".into(), "k".into()]).await.unwrap();
    let state = |i: usize| stored[i].as_ref().unwrap().record.state;
    assert_eq!(state(0), JobState::Succeeded);
    assert_eq!(state(1), JobState::Dispatched);

    // The second instance still caches j as DISPATCHED. The client submits j again
    // (it missed the answer): the outcome is re-announced from the stored record.
    let out = second.apply(vec![submitted("j")], stall + 60).await;
    assert_eq!(second.stats().rechecked, 1);
    assert!(
        out.actions.iter().any(|a| matches!(
            a,
            Action::PublishResult { result, .. }
                if result.status == JobState::Succeeded.status() as i32
        )),
        "{:?}",
        out.actions
    );
}

/// The submit trace context lives in the job's record, so another instance (or this one
/// after a restart) continues the submitter's trace; and each transition says how long
/// the step it ends took, from the record's history.
#[tokio::test]
async fn the_submit_trace_context_and_step_latencies_come_from_the_record() {
    let store = faulty(Fault::None);
    let parent = Arc::new(TraceParent {
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".into(),
        tracestate: "rojo=1".into(),
    });
    let (id, mut event) = submitted("j");
    if let JobEvent::Submitted { trace_parent, .. } = &mut event {
        *trace_parent = Some(parent.clone());
    }
    let out = engine(&store).apply(vec![(id, event)], 1_000).await;
    let checks: Vec<_> = out
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::CheckSafety { parent, .. } => Some(parent.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(checks, [Some(parent.clone())]);
    // A second instance, with nothing in memory, dispatches 25 ms after the submit.
    let out = engine(&store).apply(vec![allowed("j")], 1_025).await;
    let dispatch = out.actions.iter().find_map(|a| match a {
        Action::Dispatch { parent, .. } => Some(parent.clone()),
        _ => None,
    });
    assert_eq!(dispatch, Some(Some(parent.clone())));
    let latency = |actions: &[Action], want: JobState| {
        actions.iter().find_map(|a| match a {
            Action::Transition { state, latency, .. } if *state == want => Some(*latency),
            _ => None,
        })
    };
    assert_eq!(latency(&out.actions, JobState::Dispatched), Some(Some(25)));
    // The worker's result, 40 ms after the dispatch: a run of 40 ms.
    let result = v1::JobResult {
        job_id: "j".into(),
        status: JobState::Succeeded.status() as i32,
        worker_id: "w1".into(),
        dispatch: Some(v1::DispatchIdentity {
            dispatch_id: "d1".into(),
            attempt: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    let out = engine(&store)
        .apply(vec![("j".into(), JobEvent::Result(result))], 1_065)
        .await;
    assert_eq!(latency(&out.actions, JobState::Succeeded), Some(Some(40)));
    let stored = store.inner.load(&["j".into()]).await.unwrap().remove(0);
    assert_eq!(stored.unwrap().record.trace_parent, Some(parent));
}
