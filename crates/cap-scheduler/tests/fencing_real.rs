//! Dispatch fencing over real NATS with JetStream (a private server per test) and the
//! shared Redis (job records, dispatch receipts), scheduler and workers as deployed:
//!
//! - the zombie: a job submitted to a pool with no worker times out; a worker started
//!   afterwards never runs it (its JetStream dispatch was withdrawn); a worker already
//!   subscribed that gets the dispatch only after the cancel refuses it, whether it held
//!   it waiting for a slot or it arrives again later;
//! - the conformance kit's duplicates/retries behaviours that apply to a deployment: a
//!   duplicate result is applied once; a stale attempt's result, progress and cancel are
//!   ignored while the next attempt runs; an exact redelivery replays the recorded
//!   result and a redelivery with a new dispatch id runs.
//!
//! Run by `.ci/run` (`cargo test -- --ignored`); fails when a service is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod trust_support;

use bytes::Bytes;
use cap_bus::{Bus, NatsBus};
use cap_proto::v1::{self, bus_packet::Payload};
use cap_proto::{JobState, subject};
use cap_runtime::packets::{PacketConfig, Packets};
use cap_runtime::worker::FenceReason;
use cap_runtime::{Client, ClientConfig, Context, JobError, RunningWorker, SubmitOptions, Worker};
use cap_safety::Kernel;
use cap_safety::policy::Policy;
use cap_scheduler::core::{Config, Fence, Pools};
use cap_scheduler::{
    JobStore, Observed, RedisJobStore, Scheduler, SchedulerOptions, SchedulerStats,
};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use trust_support::services::*;

const POOLS: &str = "topics:\n  job.zombie: zombie\n  job.held: held\npools:\n  zombie:\n    dispatch_timeout_ms: 800\n  held:\n    dispatch_timeout_ms: 800\n";
const ACK_WAIT: Duration = Duration::from_secs(3);

/// Handler runs per (job id, attempt).
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<HashMap<(String, u64), u32>>>);

impl Runs {
    fn add(&self, job: &str, attempt: u64) -> u32 {
        let mut m = self.0.lock().unwrap();
        let n = m.entry((job.to_owned(), attempt)).or_default();
        *n += 1;
        *n
    }
    fn job(&self, job: &str) -> u32 {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|((j, _), _)| j == job)
            .map(|(_, n)| n)
            .sum()
    }
    fn attempt(&self, job: &str, attempt: u64) -> u32 {
        let key = (job.to_owned(), attempt);
        self.0.lock().unwrap().get(&key).copied().unwrap_or(0)
    }
}

struct Rig {
    nats: PrivateNats,
    prefix: String,
    jobs: RedisJobStore,
    stats: SchedulerStats,
    observed: broadcast::Receiver<Observed>,
    client: Client<NatsBus, cap_blob::RedisBlobStore>,
    stop: CancellationToken,
}

/// A scheduler (legacy profile, fencing on) on a private JetStream server, its records
/// and receipts in Redis under a fresh prefix, and a client.
async fn rig(config: Config) -> Rig {
    let nats = PrivateNats::start_with_jetstream();
    let prefix = format!("cap:test:fence:{}:", &cap_runtime::id::new_trace_id()[..8]);
    let jobs = RedisJobStore::connect(&redis_url(), prefix.clone())
        .await
        .unwrap_or_else(|e| panic!("Redis is required at {}: {e}", redis_url()));
    let packets = Packets::new(
        nats.js_bus("sched-fence", ACK_WAIT).await,
        PacketConfig::new("sched-fence"),
    );
    let options = SchedulerOptions {
        config,
        pools: Pools::from_yaml(POOLS).unwrap(),
        tick: Duration::from_millis(50),
        ..Default::default()
    };
    let kernel = Kernel::new(Policy::from_text("version: 1\nrules: []\n", "p.yaml").unwrap());
    let scheduler = Scheduler::new(packets, Arc::new(kernel), jobs.clone(), options);
    let stats = scheduler.stats();
    let observed = scheduler.observe();
    let stop = CancellationToken::new();
    let run = scheduler.run(stop.clone());
    tokio::spawn(async move {
        if let Err(e) = run.await {
            panic!("scheduler stopped: {e}");
        }
    });
    let client = Client::new(
        nats.js_bus("client-fence", ACK_WAIT).await,
        blob().await,
        ClientConfig::new("client-fence"),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    Rig {
        nats,
        prefix,
        jobs,
        stats,
        observed,
        client,
        stop,
    }
}

fn config() -> Config {
    Config {
        heartbeat_interval: Duration::from_millis(300),
        retry_base: Duration::from_millis(100),
        ..Config::default()
    }
}

#[derive(serde::Deserialize, Default)]
struct Plan {
    /// Attempts below this fail retryably.
    #[serde(default)]
    fail_below: u64,
    /// Milliseconds a run takes.
    #[serde(default)]
    hold_ms: u64,
}

impl Rig {
    /// A counting worker on `topics` (JetStream), `max_parallel`.
    async fn worker(
        &self,
        id: &str,
        topics: &[&str],
        max_parallel: usize,
        runs: &Runs,
    ) -> RunningWorker<NatsBus> {
        let mut b = Worker::builder(self.nats.js_bus(id, ACK_WAIT).await, blob().await)
            .id(id)
            .max_parallel(max_parallel)
            .keepalive(ACK_WAIT / 3)
            .heartbeat_interval(Duration::from_millis(200));
        for topic in topics {
            let r = runs.clone();
            b = b.handler(*topic, move |ctx: Context, v: serde_json::Value| {
                let r = r.clone();
                async move {
                    let attempt = ctx.request().dispatch.as_ref().map_or(0, |d| d.attempt);
                    r.add(ctx.job_id(), attempt);
                    let plan: Plan = serde_json::from_value(v.clone()).unwrap_or_default();
                    if attempt < plan.fail_below {
                        return Err(JobError::retryable(
                            cap_proto::ErrorCode::JOB_RESOURCE_EXHAUSTED,
                            "not yet",
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(plan.hold_ms)).await;
                    Ok::<_, JobError>(v)
                }
            });
        }
        let w = b.build().unwrap().start().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        w
    }

    async fn submit(
        &self,
        topic: &str,
        input: serde_json::Value,
    ) -> cap_runtime::JobHandle<NatsBus, cap_blob::RedisBlobStore> {
        self.client
            .submit_with(topic, &input, SubmitOptions::default())
            .await
            .unwrap()
    }

    /// A core-NATS connection for observing and injecting packets.
    async fn tap(&self) -> NatsBus {
        self.nats.bus("tap").await
    }

    /// The scheduler's record of `job` once it is terminal.
    async fn ended(&self, job: &str) -> cap_scheduler::core::JobRecord {
        for _ in 0..200 {
            if let Some(Some(s)) = self.jobs.load(&[job.to_owned()]).await.unwrap().pop()
                && s.record.state.is_terminal()
            {
                return s.record;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {job} did not end at the scheduler");
    }

    /// What the scheduler reported about `job` so far.
    fn drain_observed(&mut self, job: &str) -> Vec<Observed> {
        let mut out = Vec::new();
        while let Ok(o) = self.observed.try_recv() {
            let mine = match &o {
                Observed::Transition { job_id, .. }
                | Observed::Ignored { job_id, .. }
                | Observed::Fenced { job_id, .. } => job_id == job,
                Observed::Alert(_) => false,
            };
            if mine {
                out.push(o);
            }
        }
        out
    }

    async fn finish(self) {
        self.stop.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        purge_redis(&self.prefix).await;
    }
}

/// The first packet on `sub` matching `f`.
async fn first<S, T>(sub: &mut S, mut f: impl FnMut(&v1::BusPacket) -> Option<T>) -> (T, Bytes)
where
    S: futures_util::Stream<Item = cap_bus::Message> + Unpin,
{
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("a packet in time")
            .unwrap();
        if let Ok(p) = cap_proto::packet::decode(m.payload(), 1 << 20)
            && let Some(t) = f(&p)
        {
            return (t, m.payload().clone());
        }
    }
}

fn request_of(job: &str) -> impl FnMut(&v1::BusPacket) -> Option<v1::JobRequest> + '_ {
    move |p| match &p.payload {
        Some(Payload::JobRequest(r)) if r.job_id == job => Some(r.clone()),
        _ => None,
    }
}

fn result_of<'a>(
    job: &'a str,
    worker: &'a str,
) -> impl FnMut(&v1::BusPacket) -> Option<v1::JobResult> + 'a {
    move |p| match &p.payload {
        Some(Payload::JobResult(r)) if r.job_id == job && p.sender_id == worker => Some(r.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real NATS (nats-server binary, JetStream) and Redis: run by .ci/run"]
async fn zombie_a_worker_started_after_the_timeout_never_runs_the_timed_out_attempt() {
    let mut rig = rig(config()).await;
    // No worker serves the pool: the dispatch waits in JetStream until it times out.
    let mut h = rig
        .submit("job.zombie", serde_json::json!({ "n": 1 }))
        .await;
    let r = h
        .result_within(Duration::from_secs(10))
        .await
        .unwrap()
        .clone();
    assert_eq!(r.status, JobState::Timeout.status() as i32, "{r:?}");
    for _ in 0..100 {
        if rig.stats.withdrawn() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rig.stats.withdrawn(), 1, "the dispatch was withdrawn");
    // A worker comes up late: the timed-out attempt never reaches it.
    let runs = Runs::default();
    let worker = rig.worker("w-late", &["job.zombie"], 4, &runs).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(runs.job(h.job_id()), 0, "the timed-out attempt never ran");
    // The worker is alive: a job submitted now runs.
    let mut fresh = rig
        .submit("job.zombie", serde_json::json!({ "n": 2 }))
        .await;
    let r = fresh.result_within(Duration::from_secs(10)).await.unwrap();
    assert_eq!(r.status, JobState::Succeeded.status() as i32);
    let record = rig.ended(h.job_id()).await;
    assert_eq!(record.state, JobState::Timeout, "no second terminal state");
    let seen = rig.drain_observed(h.job_id());
    assert!(
        !seen.iter().any(|o| matches!(o, Observed::Fenced { .. })),
        "nothing of the zombie came back: {seen:?}"
    );
    worker.shutdown(Duration::from_secs(1)).await;
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real NATS (nats-server binary, JetStream) and Redis: run by .ci/run"]
async fn zombie_a_subscribed_worker_refuses_the_dispatch_it_gets_after_the_cancel() {
    let rig = rig(config()).await;
    let runs = Runs::default();
    // One slot, taken by a long job: the next dispatch waits in the worker's hand.
    let worker = rig
        .worker("w-busy", &["job.long", "job.held"], 1, &runs)
        .await;
    let tap = rig.tap().await;
    let mut dispatches = tap.subscribe("job.held").await.unwrap();
    let mut long = rig
        .submit("job.long", serde_json::json!({ "hold_ms": 2_500 }))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut held = rig.submit("job.held", serde_json::json!({ "n": 1 })).await;
    let (_, dispatch_bytes) = first(&mut dispatches, request_of(held.job_id())).await;
    let r = held
        .result_within(Duration::from_secs(10))
        .await
        .unwrap()
        .clone();
    assert_eq!(r.status, JobState::Timeout.status() as i32, "{r:?}");
    let r = long.result_within(Duration::from_secs(10)).await.unwrap();
    assert_eq!(r.status, JobState::Succeeded.status() as i32);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        runs.job(held.job_id()),
        0,
        "held through the cancel, never ran"
    );
    let s = worker.fence_stats();
    assert_eq!(s.cancels_remembered, 1, "{s:?}");
    let refused_in_hand = s.rejected_for(FenceReason::Ended);
    // The same dispatch arrives once more, later (a redelivery): refused again.
    tap.publish("job.held", dispatch_bytes).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(runs.job(held.job_id()), 0);
    assert_eq!(
        worker.fence_stats().rejected_for(FenceReason::Ended),
        refused_in_hand + 1
    );
    assert_eq!(rig.ended(held.job_id()).await.state, JobState::Timeout);
    worker.shutdown(Duration::from_secs(1)).await;
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real NATS (nats-server binary, JetStream) and Redis: run by .ci/run"]
async fn tck_cp_duplicate_result_applies_once() {
    let mut rig = rig(config()).await;
    let runs = Runs::default();
    let worker = rig.worker("w-dup", &["job.dup"], 4, &runs).await;
    let tap = rig.tap().await;
    let mut results = tap.subscribe(subject::RESULT).await.unwrap();
    let mut h = rig.submit("job.dup", serde_json::json!({ "n": 1 })).await;
    let (_, result_bytes) = first(&mut results, result_of(h.job_id(), "w-dup")).await;
    h.result_within(Duration::from_secs(10)).await.unwrap();
    assert_eq!(rig.ended(h.job_id()).await.state, JobState::Succeeded);
    // The same result twice more, through JetStream (as a redelivery would).
    for _ in 0..2 {
        worker
            .packets()
            .publish_bytes(subject::RESULT, result_bytes.clone())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let seen = rig.drain_observed(h.job_id());
    let succeeded = seen
        .iter()
        .filter(|o| {
            matches!(
                o,
                Observed::Transition {
                    state: JobState::Succeeded,
                    ..
                }
            )
        })
        .count();
    assert_eq!(succeeded, 1, "applied once: {seen:?}");
    assert!(
        !seen.iter().any(|o| matches!(o, Observed::Ignored { .. })),
        "a repeat is not a conflict: {seen:?}"
    );
    assert_eq!(runs.job(h.job_id()), 1);
    worker.shutdown(Duration::from_secs(1)).await;
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real NATS (nats-server binary, JetStream) and Redis: run by .ci/run"]
async fn tck_cp_ignores_stale_attempt_result_progress_and_cancel() {
    let mut rig = rig(config()).await;
    let runs = Runs::default();
    let worker = rig.worker("w-stale", &["job.stale"], 4, &runs).await;
    let tap = rig.tap().await;
    let mut results = tap.subscribe(subject::RESULT).await.unwrap();
    // Attempt 1 fails retryably; attempt 2 runs for 1.5 s.
    let mut h = rig
        .submit(
            "job.stale",
            serde_json::json!({ "fail_below": 2, "hold_ms": 1_500 }),
        )
        .await;
    let job = h.job_id().to_owned();
    let (first_result, _) = first(&mut results, result_of(&job, "w-stale")).await;
    let stale = first_result.dispatch.clone().expect("attempt 1's identity");
    assert_eq!(stale.attempt, 1);
    for _ in 0..100 {
        if runs.attempt(&job, 2) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(runs.attempt(&job, 2), 1, "attempt 2 runs");
    // Attempt 1's zombie reports, from the same worker, while attempt 2 runs.
    let packets = worker.packets();
    let succeeded = v1::JobResult {
        job_id: job.clone(),
        status: JobState::Succeeded.status() as i32,
        worker_id: "w-stale".into(),
        result_ptr: "redis://res:stale".into(),
        dispatch: Some(stale.clone()),
        ..Default::default()
    };
    let progress = v1::JobProgress {
        job_id: job.clone(),
        status: JobState::Running.status() as i32,
        percent: 50,
        dispatch: Some(stale.clone()),
        ..Default::default()
    };
    let cancel = v1::JobCancel {
        job_id: job.clone(),
        reason: "stale".into(),
        requested_by: "someone".into(),
        dispatch: Some(stale.clone()),
        ..Default::default()
    };
    packets
        .publish(subject::RESULT, packets.envelope("t1", succeeded))
        .await
        .unwrap();
    packets
        .publish(subject::PROGRESS, packets.envelope("t2", progress))
        .await
        .unwrap();
    packets
        .publish(subject::CANCEL, packets.envelope("t3", cancel))
        .await
        .unwrap();
    let r = h
        .result_within(Duration::from_secs(10))
        .await
        .unwrap()
        .clone();
    assert_eq!(r.status, JobState::Succeeded.status() as i32);
    let record = rig.ended(&job).await;
    assert_eq!(record.state, JobState::Succeeded);
    let result = record.result.unwrap();
    assert_eq!(
        result.dispatch.as_ref().unwrap().attempt,
        2,
        "attempt 2's result"
    );
    assert_ne!(result.result_ptr, "redis://res:stale");
    let seen = rig.drain_observed(&job);
    for what in ["result", "progress", "cancel"] {
        assert!(
            seen.iter().any(|o| matches!(o,
                Observed::Fenced { what: w, fence: Fence::Stale, .. } if *w == what)),
            "stale {what} not fenced: {seen:?}"
        );
    }
    assert_eq!(
        worker.fence_stats().cancels_honoured,
        0,
        "attempt 2 was not cancelled"
    );
    worker.shutdown(Duration::from_secs(1)).await;
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real NATS (nats-server binary, JetStream) and Redis: run by .ci/run"]
async fn tck_worker_exact_redelivery_replays_and_a_new_dispatch_id_runs() {
    let rig = rig(config()).await;
    let runs = Runs::default();
    let worker = rig
        .worker("w-redeliver", &["job.redeliver"], 4, &runs)
        .await;
    let tap = rig.tap().await;
    // To the pool, or to the worker directly (it announced the topic as ready).
    let mut dispatches = futures_util::stream::select_all([
        tap.subscribe("job.redeliver").await.unwrap(),
        tap.subscribe("worker.w-redeliver.jobs").await.unwrap(),
    ]);
    let mut results = tap.subscribe(subject::RESULT).await.unwrap();
    let mut h = rig
        .submit("job.redeliver", serde_json::json!({ "n": 1 }))
        .await;
    let job = h.job_id().to_owned();
    let (request, dispatch_bytes) = first(&mut dispatches, request_of(&job)).await;
    // Where it went: the redeliveries go there too.
    let to = if request
        .dispatch
        .as_ref()
        .unwrap()
        .assigned_worker_id
        .is_empty()
    {
        "job.redeliver"
    } else {
        "worker.w-redeliver.jobs"
    };
    let (_, result_bytes) = first(&mut results, result_of(&job, "w-redeliver")).await;
    h.result_within(Duration::from_secs(10)).await.unwrap();
    // The exact dispatch again, through JetStream: not run, the recorded result again.
    worker
        .packets()
        .publish_bytes(to, dispatch_bytes)
        .await
        .unwrap();
    let (_, replayed) = first(&mut results, result_of(&job, "w-redeliver")).await;
    assert_eq!(replayed, result_bytes, "the recorded result, byte for byte");
    assert_eq!(runs.job(&job), 1);
    // The job dispatched again with a new dispatch id (a new attempt): it runs.
    let mut again = request.clone();
    again.dispatch = Some(v1::DispatchIdentity {
        dispatch_id: "d-new-dispatch".into(),
        attempt: 2,
        ..request.dispatch.clone().unwrap()
    });
    let packet = v1::BusPacket::new(
        "trace-again",
        "sched-fence",
        cap_runtime::packets::now(),
        again,
    );
    worker
        .packets()
        .publish_bytes(to, cap_proto::packet::encode(&packet).into())
        .await
        .unwrap();
    let (r, _) = first(&mut results, result_of(&job, "w-redeliver")).await;
    assert_eq!(r.dispatch.unwrap().dispatch_id, "d-new-dispatch");
    assert_eq!(runs.attempt(&job, 2), 1, "not suppressed as a duplicate");
    let s = worker.fence_stats();
    assert_eq!((s.admitted, s.replayed), (2, 1), "{s:?}");
    worker.shutdown(Duration::from_secs(1)).await;
    rig.finish().await;
}
