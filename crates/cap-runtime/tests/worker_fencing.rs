//! Worker-side dispatch fencing on the memory bus: one test per worker case of the
//! conformance kit's `core-duplicates.json` and `core-retries.json` (role worker,
//! profile cap-production; fencing is on in both signature profiles, so these run in
//! the legacy one — the production profile's are in cap-scheduler's
//! `tests/production_memory.rs`), plus the zombie case (a dispatch delivered after its
//! cancel never runs), today's meaning of requests and cancels without a dispatch
//! identity, and the echo of the dispatch identity in results and progress.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use bytes::Bytes;
use cap_blob::MemoryBlobStore;
use cap_bus::{Bus, MemoryBus};
use cap_proto::subject;
use cap_proto::v1::{self, bus_packet::Payload};
use cap_runtime::worker::FenceReason;
use cap_runtime::{Context, JobError, RunningWorker, Worker};
use common::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ME: &str = "wrk-1";
const TOPIC: &str = "job.fence";

/// (job id, dispatch id, attempt).
type Key = (String, String, u64);

/// Handler invocations per [`Key`].
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<HashMap<Key, u32>>>);

impl Calls {
    fn get(&self, job: &str, dispatch: &str, attempt: u64) -> u32 {
        let key = (job.to_owned(), dispatch.to_owned(), attempt);
        self.0.lock().unwrap().get(&key).copied().unwrap_or(0)
    }
    fn total(&self, job: &str) -> u32 {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|((j, _, _), _)| j == job)
            .map(|(_, n)| n)
            .sum()
    }
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Input {
    /// How long the handler runs (it ends early, CANCELLED, when cancelled).
    hold_ms: u64,
}

struct Rig {
    bus: MemoryBus,
    store: MemoryBlobStore,
    calls: Calls,
    worker: RunningWorker<MemoryBus>,
}

async fn rig() -> Rig {
    let bus = MemoryBus::new();
    let store = MemoryBlobStore::new();
    let calls = Calls::default();
    let c = calls.clone();
    let worker = Worker::builder(bus.clone(), store.clone())
        .id(ME)
        .handler(TOPIC, move |ctx: Context, input: Input| {
            let c = c.clone();
            async move {
                let d = ctx.request().dispatch.clone().unwrap_or_default();
                *c.0.lock()
                    .unwrap()
                    .entry((ctx.job_id().to_owned(), d.dispatch_id.clone(), d.attempt))
                    .or_default() += 1;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(input.hold_ms)) => {}
                    _ = ctx.cancelled() => return Err(JobError::cancelled("stopped")),
                }
                Ok::<_, JobError>(d.attempt)
            }
        })
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    Rig {
        bus,
        store,
        calls,
        worker,
    }
}

fn identity(dispatch: &str, attempt: u64, worker: &str) -> v1::DispatchIdentity {
    v1::DispatchIdentity {
        dispatch_id: dispatch.into(),
        attempt,
        assigned_worker_id: worker.into(),
    }
}

impl Rig {
    /// The wire bytes of a dispatch of `job` carrying `d`, holding the handler `hold_ms`.
    async fn dispatch_bytes(&self, job: &str, d: &v1::DispatchIdentity, hold_ms: u64) -> Bytes {
        let mut p = request_packet(
            &self.store,
            job,
            TOPIC,
            &serde_json::json!({ "hold_ms": hold_ms }),
        )
        .await;
        p.sender_id = "sched-1".into();
        if let Some(Payload::JobRequest(r)) = &mut p.payload {
            r.dispatch = Some(d.clone());
        }
        cap_proto::packet::encode(&p).into()
    }

    async fn deliver(&self, bytes: &Bytes) {
        self.bus.publish(TOPIC, bytes.clone()).await.unwrap();
    }

    async fn dispatch(&self, job: &str, d: &v1::DispatchIdentity, hold_ms: u64) -> Bytes {
        let b = self.dispatch_bytes(job, d, hold_ms).await;
        self.deliver(&b).await;
        b
    }

    async fn cancel(&self, job: &str, d: Option<v1::DispatchIdentity>) {
        let p = v1::BusPacket::new(
            "trace-cancel",
            "sched-1",
            cap_runtime::packets::now(),
            v1::JobCancel {
                job_id: job.into(),
                reason: "test".into(),
                requested_by: "sched-1".into(),
                dispatch: d,
                ..Default::default()
            },
        );
        self.bus
            .publish(subject::CANCEL, cap_proto::packet::encode(&p).into())
            .await
            .unwrap();
    }

    /// Waits until the handler ran for (job, dispatch, attempt).
    async fn started(&self, job: &str, dispatch: &str, attempt: u64) {
        for _ in 0..500 {
            if self.calls.get(job, dispatch, attempt) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("the handler never ran for {job}/{dispatch}/{attempt}");
    }

    /// Lets the worker handle what was sent (the memory bus delivers at once).
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
}

async fn alert_reason<S>(alerts: &mut S) -> String
where
    S: futures_core::Stream<Item = cap_bus::Message> + Unpin,
{
    let p = next_packet(alerts).await;
    let Some(Payload::Alert(a)) = p.payload else {
        panic!("not an alert: {p:?}")
    };
    assert_eq!(a.source_component, ME);
    a.details.get("reason").cloned().unwrap_or_default()
}

#[tokio::test]
async fn duplicates_worker_exact_redelivery_invokes_handler_once() {
    let r = rig().await;
    let mut results = sub(&r.bus, subject::RESULT).await;
    let d = identity("dsp-1", 1, ME);
    let bytes = r.dispatch("j-once", &d, 80).await;
    r.started("j-once", "dsp-1", 1).await;
    r.deliver(&bytes).await; // while running
    let (_, first) = next_result_for(&mut results, "j-once").await;
    assert_eq!(status(&first), v1::JobStatus::Succeeded);
    r.deliver(&bytes).await; // after it finished
    let (_, again) = next_result_for(&mut results, "j-once").await;
    assert_eq!(again, first);
    assert_eq!(r.calls.get("j-once", "dsp-1", 1), 1, "one side effect");
    let s = r.worker.fence_stats();
    assert_eq!((s.admitted, s.duplicates, s.replayed), (1, 1, 1));
}

#[tokio::test]
async fn duplicates_worker_exact_redelivery_replays_idempotent_result() {
    let r = rig().await;
    let mut results = r.bus.subscribe(subject::RESULT).await.unwrap();
    let d = identity("dsp-1", 1, ME);
    let bytes = r.dispatch("j-replay", &d, 0).await;
    let first = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut results))
        .await
        .unwrap()
        .unwrap();
    r.deliver(&bytes).await;
    let second = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut results))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.payload(),
        second.payload(),
        "the recorded terminal result, byte for byte"
    );
    assert_eq!(r.calls.total("j-replay"), 1);
}

#[tokio::test]
async fn duplicates_worker_distinct_dispatch_is_not_suppressed() {
    let r = rig().await;
    let mut results = sub(&r.bus, subject::RESULT).await;
    r.dispatch("j-distinct", &identity("dsp-1", 1, ME), 0).await;
    next_result_for(&mut results, "j-distinct").await;
    r.dispatch("j-distinct", &identity("dsp-2", 1, ME), 0).await;
    let (_, res) = next_result_for(&mut results, "j-distinct").await;
    assert_eq!(res.dispatch, Some(identity("dsp-2", 1, ME)));
    assert_eq!(r.calls.get("j-distinct", "dsp-2", 1), 1, "invoked");
    assert_eq!(r.calls.total("j-distinct"), 2);
}

#[tokio::test]
async fn retries_worker_new_attempt_invokes_once() {
    let r = rig().await;
    let mut results = sub(&r.bus, subject::RESULT).await;
    r.dispatch("j-new", &identity("dsp-1", 1, ME), 2_000).await;
    r.started("j-new", "dsp-1", 1).await;
    let next = r.dispatch("j-new", &identity("dsp-1", 2, ME), 0).await;
    let (_, res) = next_result_for(&mut results, "j-new").await;
    assert_eq!(res.dispatch, Some(identity("dsp-1", 2, ME)));
    r.deliver(&next).await;
    r.settle().await;
    assert_eq!(r.calls.get("j-new", "dsp-1", 2), 1, "invoked exactly once");
}

/// A job whose attempt `active` (dispatch dsp-1) runs here; then `d` arrives: it must be
/// rejected for `reason`, alerted, counted, and the active attempt must finish untouched.
async fn rejected_while_active(
    job: &str,
    active: u64,
    d: v1::DispatchIdentity,
    reason: FenceReason,
) {
    let r = rig().await;
    let mut results = sub(&r.bus, subject::RESULT).await;
    let mut alerts = sub(&r.bus, subject::ALERT).await;
    r.dispatch(job, &identity("dsp-1", active, ME), 150).await;
    r.started(job, "dsp-1", active).await;
    r.dispatch(job, &d, 0).await;
    assert_eq!(alert_reason(&mut alerts).await, reason.as_str());
    let (_, res) = next_result_for(&mut results, job).await;
    assert_eq!(status(&res), v1::JobStatus::Succeeded);
    assert_eq!(
        res.dispatch,
        Some(identity("dsp-1", active, ME)),
        "the active attempt's"
    );
    assert_eq!(
        r.calls.get(job, &d.dispatch_id, d.attempt),
        0,
        "never invoked"
    );
    assert_eq!(r.calls.total(job), 1);
    assert_eq!(r.worker.fence_stats().rejected_for(reason), 1);
    assert_quiet(&mut results, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn retries_worker_rejects_stale_attempt() {
    rejected_while_active("j-stale", 2, identity("dsp-1", 1, ME), FenceReason::Stale).await;
}

#[tokio::test]
async fn retries_worker_rejects_future_attempt() {
    rejected_while_active("j-future", 2, identity("dsp-1", 9, ME), FenceReason::Future).await;
}

#[tokio::test]
async fn retries_worker_rejects_wrong_worker_attempt() {
    rejected_while_active(
        "j-foreign",
        2,
        identity("dsp-1", 3, "wrk-other"),
        FenceReason::ForeignWorker,
    )
    .await;
}

#[tokio::test]
async fn retries_worker_honors_active_cancel() {
    let r = rig().await;
    let mut results = sub(&r.bus, subject::RESULT).await;
    let active = identity("dsp-1", 2, ME);
    r.dispatch("j-cancel", &active, 5_000).await;
    r.started("j-cancel", "dsp-1", 2).await;
    r.cancel("j-cancel", Some(active.clone())).await;
    let (_, res) = next_result_for(&mut results, "j-cancel").await;
    assert_eq!(status(&res), v1::JobStatus::Cancelled);
    assert_eq!(res.dispatch, Some(active));
    assert_eq!(r.worker.fence_stats().cancels_honoured, 1);
}

/// The attempt 2 of dsp-1 runs; a cancel carrying `d` must leave it alone.
async fn cancel_ignored(job: &str, d: v1::DispatchIdentity, reason: FenceReason) {
    let r = rig().await;
    let mut results = sub(&r.bus, subject::RESULT).await;
    r.dispatch(job, &identity("dsp-1", 2, ME), 150).await;
    r.started(job, "dsp-1", 2).await;
    r.cancel(job, Some(d)).await;
    let (_, res) = next_result_for(&mut results, job).await;
    assert_eq!(status(&res), v1::JobStatus::Succeeded, "not torn down");
    let s = r.worker.fence_stats();
    assert_eq!(s.cancels_honoured, 0);
    assert_eq!(s.cancels_ignored_for(reason), 1, "{s:?}");
}

#[tokio::test]
async fn retries_worker_rejects_stale_cancel() {
    cancel_ignored(
        "j-stale-cancel",
        identity("dsp-1", 1, ME),
        FenceReason::Stale,
    )
    .await;
}

#[tokio::test]
async fn retries_worker_rejects_wrong_worker_cancel() {
    cancel_ignored(
        "j-foreign-cancel",
        identity("dsp-1", 2, "wrk-other"),
        FenceReason::ForeignWorker,
    )
    .await;
}

#[tokio::test]
async fn a_cancel_naming_another_dispatch_of_the_job_leaves_the_running_one_alone() {
    cancel_ignored(
        "j-other-cancel",
        identity("dsp-9", 2, ME),
        FenceReason::OtherDispatch,
    )
    .await;
}

#[tokio::test]
async fn a_dispatch_delivered_after_its_cancel_never_runs() {
    // The zombie: a pool dispatch timed out (the scheduler sent a JobCancel carrying its
    // identity) but reaches this worker afterwards.
    let r = rig().await;
    let mut results = sub(&r.bus, subject::RESULT).await;
    let mut alerts = sub(&r.bus, subject::ALERT).await;
    let zombie = identity("dsp-z", 1, "");
    r.cancel("j-zombie", Some(zombie.clone())).await;
    r.settle().await;
    assert!(r.worker.fence().is_ended("j-zombie", &zombie));
    r.dispatch("j-zombie", &zombie, 0).await;
    assert_eq!(alert_reason(&mut alerts).await, "ended");
    assert_quiet(&mut results, Duration::from_millis(150)).await;
    assert_eq!(r.calls.total("j-zombie"), 0);
    let s = r.worker.fence_stats();
    assert_eq!(
        (s.cancels_remembered, s.rejected_for(FenceReason::Ended)),
        (1, 1)
    );
    // The retry the scheduler issues next is another dispatch: it runs.
    r.dispatch("j-zombie", &identity("dsp-z2", 2, ""), 0).await;
    let (_, res) = next_result_for(&mut results, "j-zombie").await;
    assert_eq!(status(&res), v1::JobStatus::Succeeded);
}

#[tokio::test]
async fn a_dispatch_held_for_a_slot_is_refused_when_its_cancel_came_meanwhile() {
    // One slot, taken by a long job; the next dispatch waits in hand for the slot while
    // its cancel arrives; once the slot frees up it must not run.
    let bus = MemoryBus::new();
    let store = MemoryBlobStore::new();
    let calls = Calls::default();
    let c = calls.clone();
    let _worker = Worker::builder(bus.clone(), store.clone())
        .id(ME)
        .max_parallel(1)
        .handler(TOPIC, move |ctx: Context, input: Input| {
            let c = c.clone();
            async move {
                let d = ctx.request().dispatch.clone().unwrap_or_default();
                *c.0.lock()
                    .unwrap()
                    .entry((ctx.job_id().to_owned(), d.dispatch_id, d.attempt))
                    .or_default() += 1;
                tokio::time::sleep(Duration::from_millis(input.hold_ms)).await;
                Ok::<_, JobError>(0)
            }
        })
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let r = Rig {
        bus,
        store,
        calls,
        worker: _worker,
    };
    let mut results = sub(&r.bus, subject::RESULT).await;
    r.dispatch("j-long", &identity("dsp-a", 1, ""), 200).await;
    r.started("j-long", "dsp-a", 1).await;
    let held = identity("dsp-b", 1, "");
    r.dispatch("j-held", &held, 0).await;
    r.cancel("j-held", Some(held.clone())).await;
    next_result_for(&mut results, "j-long").await;
    r.settle().await;
    assert_eq!(r.calls.total("j-held"), 0, "never ran");
    assert_eq!(r.worker.fence_stats().rejected_for(FenceReason::Ended), 1);
}

#[tokio::test]
async fn requests_without_a_dispatch_identity_keep_the_job_id_dedupe() {
    let r = rig().await;
    let mut results = sub(&r.bus, subject::RESULT).await;
    let p = request_packet(
        &r.store,
        "j-legacy",
        TOPIC,
        &serde_json::json!({ "hold_ms": 0 }),
    )
    .await;
    let bytes: Bytes = cap_proto::packet::encode(&p).into();
    r.deliver(&bytes).await;
    let (_, first) = next_result_for(&mut results, "j-legacy").await;
    assert_eq!(first.dispatch, None);
    r.deliver(&bytes).await;
    let (_, again) = next_result_for(&mut results, "j-legacy").await;
    assert_eq!(again, first);
    assert_eq!(r.calls.total("j-legacy"), 1);
    assert_eq!(
        r.worker.fence_stats().admitted,
        0,
        "the fence is not involved"
    );
}

#[tokio::test]
async fn a_cancel_without_a_dispatch_identity_stops_the_job_running_here() {
    let r = rig().await;
    let mut results = sub(&r.bus, subject::RESULT).await;
    r.dispatch("j-old-cancel", &identity("dsp-1", 1, ME), 5_000)
        .await;
    r.started("j-old-cancel", "dsp-1", 1).await;
    r.cancel("j-old-cancel", None).await;
    let (_, res) = next_result_for(&mut results, "j-old-cancel").await;
    assert_eq!(status(&res), v1::JobStatus::Cancelled);
}

#[tokio::test]
async fn results_and_progress_echo_the_dispatch_identity() {
    let r = rig().await;
    let mut progress = sub(&r.bus, subject::PROGRESS).await;
    let mut results = sub(&r.bus, subject::RESULT).await;
    let d = identity("dsp-echo", 4, ME);
    // Attempt 4 of a job never seen here: earlier attempts ran elsewhere.
    r.dispatch("j-echo", &d, 0).await;
    let started = next_packet(&mut progress).await;
    let Some(Payload::JobProgress(p)) = started.payload else {
        panic!()
    };
    assert_eq!(p.dispatch, Some(d.clone()));
    assert_eq!(p.identity, None, "no identity echo in the legacy profile");
    let (_, res) = next_result_for(&mut results, "j-echo").await;
    assert_eq!(res.dispatch, Some(d));
}

#[tokio::test]
async fn memory_stays_bounded_under_many_fenced_jobs() {
    let bus = MemoryBus::new();
    let store = MemoryBlobStore::new();
    let worker = Worker::builder(bus.clone(), store.clone())
        .id(ME)
        .recent_capacity(16)
        .handler(TOPIC, |_ctx: Context, _input: Input| async move {
            Ok::<_, JobError>(0)
        })
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let mut results = sub(&bus, subject::RESULT).await;
    for i in 0..100 {
        let job = format!("j-{i}");
        let mut p = request_packet(&store, &job, TOPIC, &serde_json::json!({ "hold_ms": 0 })).await;
        if let Some(Payload::JobRequest(r)) = &mut p.payload {
            r.dispatch = Some(identity(&format!("d-{i}"), 1, ""));
        }
        bus.publish(TOPIC, cap_proto::packet::encode(&p).into())
            .await
            .unwrap();
        next_result_for(&mut results, &job).await;
    }
    assert!(worker.fence().jobs() <= 16, "{}", worker.fence().jobs());
    assert_eq!(worker.fence_stats().admitted, 100);
}
