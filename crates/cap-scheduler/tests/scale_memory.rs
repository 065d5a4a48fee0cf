//! Several scheduler instances sharing one job store (the in-memory store, standing in
//! for Redis) and one bus: every job ends once, no terminal state is rewritten after the
//! timeouts pass, no handler runs twice, and a due deadline is acted on by exactly one
//! instance.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_blob::MemoryBlobStore;
use cap_bus::{Bus, MemoryBus};
use cap_proto::{JobState, subject, v1};
use cap_runtime::packets::{PacketConfig, Packets};
use cap_runtime::{Client, ClientConfig, Context, JobError, SubmitOptions, Worker};
use cap_safety::Kernel;
use cap_safety::policy::Policy;
use cap_scheduler::core::Config;
use cap_scheduler::{JobStore, MemoryJobStore, Observed, Scheduler, SchedulerOptions};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

type Runs = Arc<Mutex<HashMap<String, u32>>>;

fn config() -> Config {
    Config {
        dispatch_timeout: Duration::from_millis(400),
        run_timeout: Duration::from_millis(800),
        retention: Duration::from_secs(60),
        ..Config::default()
    }
}

fn start_instances(
    bus: &MemoryBus,
    store: &MemoryJobStore,
    n: usize,
    stop: &CancellationToken,
) -> Vec<broadcast::Receiver<Observed>> {
    let kernel = Arc::new(Kernel::new(
        Policy::from_text("version: 1\nrules: []\n", "p.yaml").unwrap(),
    ));
    (0..n)
        .map(|_| {
            // Instances of one scheduler share its sender id (workers pin it).
            let packets = Packets::new(bus.clone(), PacketConfig::new("scheduler-1"));
            let options = SchedulerOptions {
                config: config(),
                tick: Duration::from_millis(20),
                ..Default::default()
            };
            let s = Scheduler::new(packets, kernel.clone(), store.clone(), options);
            let observed = s.observe();
            tokio::spawn(s.run(stop.child_token()));
            observed
        })
        .collect()
}

async fn counting_worker(bus: &MemoryBus, blobs: &MemoryBlobStore, id: &str, runs: Runs) {
    let handler = move |ctx: Context, v: serde_json::Value| {
        let runs = runs.clone();
        async move {
            *runs
                .lock()
                .unwrap()
                .entry(ctx.job_id().to_owned())
                .or_default() += 1;
            Ok::<_, JobError>(v)
        }
    };
    let w = Worker::builder(bus.clone(), blobs.clone())
        .id(id)
        .max_parallel(64)
        .handler("job.scale", handler)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    std::mem::forget(w);
}

fn terminal_transitions(
    observers: &mut [broadcast::Receiver<Observed>],
) -> HashMap<String, Vec<JobState>> {
    let mut out: HashMap<String, Vec<JobState>> = HashMap::new();
    for o in observers {
        while let Ok(ev) = o.try_recv() {
            if let Observed::Transition { job_id, state, .. } = ev
                && state.is_terminal()
            {
                out.entry(job_id).or_default().push(state);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_the_work_and_every_job_ends_once() {
    let bus = MemoryBus::new();
    let blobs = MemoryBlobStore::emulating_redis(Default::default());
    let store = MemoryJobStore::new();
    let stop = CancellationToken::new();
    let mut observers = start_instances(&bus, &store, 3, &stop);
    let runs: Runs = Arc::default();
    counting_worker(&bus, &blobs, "w-a", runs.clone()).await;
    counting_worker(&bus, &blobs, "w-b", runs.clone()).await;
    // Results the schedulers publish themselves (TIMEOUT and the like) are counted.
    let mut results = bus.subscribe(subject::RESULT).await.unwrap();
    let from_scheduler = Arc::new(Mutex::new(0u32));
    let counter = from_scheduler.clone();
    tokio::spawn(async move {
        while let Some(m) = results.next().await {
            if let Ok(p) = cap_proto::packet::decode(m.payload(), 1 << 20)
                && p.sender_id == "scheduler-1"
            {
                *counter.lock().unwrap() += 1;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let client = Client::new(bus.clone(), blobs.clone(), ClientConfig::new("client-1"))
        .await
        .unwrap();

    let n = 300;
    let mut jobs = Vec::new();
    for i in 0..n {
        jobs.push(
            client
                .submit_with(
                    "job.scale",
                    &serde_json::json!({"i": i}),
                    SubmitOptions::default(),
                )
                .await
                .unwrap(),
        );
    }
    for job in &mut jobs {
        let id = job.job_id().to_owned();
        let r = job.result_within(Duration::from_secs(10)).await.unwrap();
        assert_eq!(r.status, JobState::Succeeded.status() as i32, "{id}");
    }
    // Past every timeout: nothing may have been rewritten or timed out meanwhile.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ends = terminal_transitions(&mut observers);
    let records = store.load_all().await.unwrap();
    for job in &jobs {
        let id = job.job_id();
        assert_eq!(
            ends.get(id).map(Vec::as_slice),
            Some(&[JobState::Succeeded][..]),
            "{id}: one terminal state, by one instance"
        );
        let rec = records.iter().find(|r| r.id() == id).unwrap();
        assert_eq!(rec.state, JobState::Succeeded, "{id}");
        assert_eq!(runs.lock().unwrap().get(id), Some(&1), "{id} ran once");
    }
    assert_eq!(
        *from_scheduler.lock().unwrap(),
        0,
        "no scheduler announced an outcome of its own"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_deadline_is_acted_on_by_exactly_one_instance() {
    let bus = MemoryBus::new();
    let blobs = MemoryBlobStore::emulating_redis(Default::default());
    let store = MemoryJobStore::new();
    let stop = CancellationToken::new();
    let mut observers = start_instances(&bus, &store, 3, &stop);
    let mut results = bus.subscribe(subject::RESULT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let client = Client::new(bus.clone(), blobs, ClientConfig::new("client-1"))
        .await
        .unwrap();
    // No worker serves this pool: each job times out after the dispatch timeout.
    let mut jobs = Vec::new();
    for _ in 0..20 {
        jobs.push(
            client
                .submit_with(
                    "job.nobody",
                    &serde_json::json!({}),
                    SubmitOptions::default(),
                )
                .await
                .unwrap(),
        );
    }
    for job in &mut jobs {
        let r = job.result_within(Duration::from_secs(5)).await.unwrap();
        assert_eq!(r.status, JobState::Timeout.status() as i32);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ends = terminal_transitions(&mut observers);
    let mut timeouts: HashMap<String, u32> = HashMap::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), results.next()).await {
        let p = cap_proto::packet::decode(m.payload(), 1 << 20).unwrap();
        if let Some(v1::bus_packet::Payload::JobResult(r)) = p.payload {
            *timeouts.entry(r.job_id).or_default() += 1;
        }
    }
    for job in &jobs {
        let id = job.job_id();
        assert_eq!(ends[id], [JobState::Timeout], "{id}");
        assert_eq!(timeouts.get(id), Some(&1), "{id}: one TIMEOUT announced");
    }
    stop.cancel();
}
