//! The CAP-PRODUCTION profile end to end in one process, on the in-memory bus: `cap
//! scheduler`'s shell and our worker both in the production profile (worker trust
//! enforce, memory replay stores). Every packet they send is sealed for the subject it
//! travels on; each refuses legacy, foreign-key, wrong-tenant, wrong-audience and
//! wrong-sender packets before anything acts on them; a replayed dispatch runs once; the
//! zombie case (a dispatch the worker holds while its attempt times out) never runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use bytes::Bytes;
use cap_blob::{BlobStore, MemoryBlobStore};
use cap_bus::{Bus, MemoryBus};
use cap_proto::v1::{self, bus_packet::Payload};
use cap_proto::{ErrorCode, JobState, subject};
use cap_runtime::packets::{PacketConfig, Packets};
use cap_runtime::trust::{WorkerTrustConfig, WorkerTrustMode};
use cap_runtime::worker::FenceReason;
use cap_runtime::{Client, ClientConfig, Context, JobError, RunningWorker, SubmitOptions, Worker};
use cap_safety::Kernel;
use cap_safety::policy::Policy;
use cap_scheduler::core::{Config, Pools};
use cap_scheduler::trust::production::production_packets;
use cap_scheduler::trust::{
    MemoryTrustStore, TrustServer, TrustServerConfig, WorkerKey, WorkerKeys, WorkerTrust,
};
use cap_scheduler::{JobStore, MemoryJobStore, Observed, Scheduler, SchedulerOptions};
use cap_sign::production::{MemoryReplayStore, Seal};
use cap_sign::{PrivateKey, TrustPolicy};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

const SCHED: &str = "sched-prod";
const SERVER_KEY: &str = "sched-prod-key";
const W: &str = "w-prod";

#[derive(serde::Deserialize, serde::Serialize)]
struct Input {
    n: u32,
    #[serde(default)]
    hold_ms: u64,
}

/// Handler runs per job id.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<HashMap<String, u32>>>);

impl Runs {
    fn get(&self, job: &str) -> u32 {
        self.0.lock().unwrap().get(job).copied().unwrap_or(0)
    }
}

struct Prod {
    bus: MemoryBus,
    store: MemoryBlobStore,
    scheduler_key: PrivateKey,
    worker_key: PrivateKey,
    /// A clone of the scheduler's packet layer (shared counters).
    sched_packets: Packets<MemoryBus>,
    observed: tokio::sync::broadcast::Receiver<Observed>,
    /// The scheduler's job store (shared with it).
    jobs: MemoryJobStore,
    client: Client<MemoryBus, MemoryBlobStore>,
    stop: CancellationToken,
}

async fn prod(config: Config, pools: &str) -> Prod {
    let bus = MemoryBus::new();
    let store = MemoryBlobStore::emulating_redis(Default::default());
    let scheduler_key = PrivateKey::generate();
    let worker_key = PrivateKey::generate();
    let mut keys = WorkerKeys::new();
    keys.insert(WorkerKey::new(W, worker_key.public_key()))
        .unwrap();
    let server_config =
        TrustServerConfig::new(SCHED, SERVER_KEY, Arc::new(scheduler_key.clone()), keys);
    let server = TrustServer::new(server_config, Arc::new(MemoryTrustStore::new())).unwrap();
    let trust = WorkerTrust::new(WorkerTrustMode::Enforce, server);
    let packet_config = production_packets(
        PacketConfig::new(SCHED),
        &trust,
        Arc::new(MemoryReplayStore::default()),
        "default",
    )
    .unwrap();
    let sched_packets = Packets::new(bus.clone(), packet_config);
    let options = SchedulerOptions {
        config,
        pools: Pools::from_yaml(pools).unwrap(),
        tick: Duration::from_millis(20),
        worker_trust: Some(trust),
        ..Default::default()
    };
    let kernel = Kernel::new(Policy::from_text("version: 1\nrules: []\n", "p.yaml").unwrap());
    let jobs = MemoryJobStore::new();
    let scheduler = Scheduler::new(
        sched_packets.clone(),
        Arc::new(kernel),
        jobs.clone(),
        options,
    );
    let observed = scheduler.observe();
    let stop = CancellationToken::new();
    tokio::spawn(scheduler.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The client stays legacy; it reads the production-sealed results unverified.
    let client = Client::new(
        bus.clone(),
        store.clone(),
        ClientConfig::new("client-prod").trust(TrustPolicy::off()),
    )
    .await
    .unwrap();
    Prod {
        bus,
        store,
        scheduler_key,
        worker_key,
        sched_packets,
        observed,
        jobs,
        client,
        stop,
    }
}

fn config() -> Config {
    Config {
        heartbeat_interval: Duration::from_millis(150),
        ..Config::default()
    }
}

impl Prod {
    /// Our worker in the production profile (enforce), `max_parallel`, handling `topics`.
    async fn worker(
        &self,
        topics: &[&str],
        max_parallel: usize,
        runs: &Runs,
    ) -> RunningWorker<MemoryBus> {
        let trust = WorkerTrustConfig::new(
            WorkerTrustMode::Enforce,
            W,
            Arc::new(self.worker_key.clone()),
            SCHED,
        )
        .scheduler_key(SERVER_KEY, self.scheduler_key.public_key())
        .timeout(Duration::from_secs(2));
        let mut b = Worker::builder(self.bus.clone(), self.store.clone())
            .id(W)
            .max_parallel(max_parallel)
            .heartbeat_interval(Duration::from_millis(100))
            .worker_trust(trust)
            .production(Arc::new(MemoryReplayStore::default()));
        for topic in topics {
            let r = runs.clone();
            b = b.handler(*topic, move |ctx: Context, input: serde_json::Value| {
                let r = r.clone();
                async move {
                    *r.0.lock()
                        .unwrap()
                        .entry(ctx.job_id().to_owned())
                        .or_default() += 1;
                    let hold = input["hold_ms"].as_u64().unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(hold)).await;
                    Ok::<_, JobError>(input)
                }
            });
        }
        let w = b.build().unwrap().start().await.unwrap();
        // Let the handshake reach the scheduler.
        tokio::time::sleep(Duration::from_millis(150)).await;
        w
    }

    /// The dispatches of `job.echo`, to the pool or to the worker directly.
    async fn dispatches(&self) -> futures_util::stream::SelectAll<cap_bus::MemorySubscription> {
        futures_util::stream::select_all([
            self.bus.subscribe("job.echo").await.unwrap(),
            self.bus.subscribe("worker.w-prod.jobs").await.unwrap(),
        ])
    }

    /// A production dispatch as a scheduler would seal it, with these parts changed.
    fn sealed_request(
        &self,
        job_id: &str,
        audience: &str,
        sender: &str,
        tenant: &str,
        key: &PrivateKey,
        key_id: &str,
    ) -> Bytes {
        let mut p = v1::BusPacket::new(
            "trace-forged",
            sender,
            cap_runtime::packets::now(),
            v1::JobRequest {
                job_id: job_id.into(),
                topic: "job.echo".into(),
                context_ptr: format!("redis://ctx:{job_id}"),
                dispatch: Some(v1::DispatchIdentity {
                    dispatch_id: "d-forged".into(),
                    attempt: 1,
                    assigned_worker_id: String::new(),
                }),
                ..Default::default()
            },
        );
        p.identity = Some(v1::IdentityBinding {
            tenant_id: tenant.into(),
            ..Default::default()
        });
        let seal = Seal::new(key_id, audience, SystemTime::now()).unwrap();
        cap_sign::production::seal(&p, key, &seal).unwrap().into()
    }
}

/// Every packet `sender` publishes while `f` runs, with its subject.
async fn record_from<F: std::future::Future>(
    bus: &MemoryBus,
    subjects: &[&str],
    f: F,
) -> (F::Output, Vec<(String, v1::BusPacket)>) {
    let mut subs = Vec::new();
    for s in subjects {
        subs.push(bus.subscribe(s).await.unwrap());
    }
    let mut all = futures_util::stream::select_all(subs);
    let out = f.await;
    let mut seen = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), all.next()).await {
        if let Ok(p) = cap_proto::packet::decode(m.payload(), 1 << 20) {
            seen.push((m.subject().to_owned(), p));
        }
    }
    (out, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_jobs_run_end_to_end_and_every_packet_is_sealed_for_its_subject() {
    let p = prod(config(), "").await;
    let runs = Runs::default();
    let worker = p.worker(&["job.echo"], 8, &runs).await;
    let subjects = [
        "job.echo",
        "worker.w-prod.jobs",
        subject::RESULT,
        subject::PROGRESS,
        subject::HEARTBEAT,
        subject::HANDSHAKE,
    ];
    let (outputs, seen) = record_from(&p.bus, &subjects, async {
        let mut handles = Vec::new();
        for n in 0..10 {
            handles.push(
                p.client
                    .submit_with(
                        "job.echo",
                        &Input { n, hold_ms: 0 },
                        SubmitOptions::default(),
                    )
                    .await
                    .unwrap(),
            );
        }
        let mut outputs = Vec::new();
        for h in handles.iter_mut() {
            let r = h
                .result_within(Duration::from_secs(10))
                .await
                .unwrap()
                .clone();
            assert_eq!(r.status, JobState::Succeeded.status() as i32, "{r:?}");
            assert_eq!(r.worker_id, W);
            outputs.push((h.job_id().to_owned(), r));
        }
        outputs
    })
    .await;
    for (job, r) in &outputs {
        assert_eq!(runs.get(job), 1);
        let d = r.dispatch.as_ref().expect("the result echoes its dispatch");
        assert_eq!(d.attempt, 1);
        assert!(!d.dispatch_id.is_empty());
        assert_eq!(r.identity.as_ref().unwrap().tenant_id, "default");
    }
    let mut checked = 0;
    for (subj, pkt) in &seen {
        if pkt.sender_id != SCHED && pkt.sender_id != W {
            continue;
        }
        let meta = pkt
            .signature_metadata
            .as_ref()
            .unwrap_or_else(|| panic!("{} sent a legacy packet on {subj}", pkt.sender_id));
        assert_eq!(&meta.audience, subj, "sealed for the subject it travels on");
        let key = if pkt.sender_id == SCHED {
            SERVER_KEY
        } else {
            W
        };
        assert_eq!(meta.key_id, key);
        assert!(pkt.identity.is_some());
        if let Some(Payload::JobRequest(req)) = &pkt.payload {
            assert_eq!(
                req.identity, pkt.identity,
                "the request mirrors its identity"
            );
            assert!(req.dispatch.is_some());
        }
        checked += 1;
    }
    assert!(checked >= 30, "dispatches, progress and results: {checked}");
    let ws = worker.packet_stats();
    assert_eq!(ws.rejected_total(), 0, "{ws:?}");
    assert_eq!(p.sched_packets.stats().rejected_total(), 0);
    worker.shutdown(Duration::from_secs(1)).await;
    p.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_scheduler_refuses_a_legacy_result() {
    let p = prod(config(), "").await;
    let runs = Runs::default();
    let worker = p.worker(&["job.echo"], 8, &runs).await;
    let mut dispatches = p.dispatches().await;
    let mut alerts = p.bus.subscribe(subject::ALERT).await.unwrap();
    let h = p
        .client
        .submit_with(
            "job.echo",
            &Input { n: 7, hold_ms: 400 },
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), dispatches.next())
        .await
        .unwrap()
        .unwrap();
    let dispatch = match cap_proto::packet::decode(msg.payload(), 1 << 20)
        .unwrap()
        .payload
    {
        Some(Payload::JobRequest(r)) => r.dispatch.unwrap(),
        other => panic!("{other:?}"),
    };
    // A forged SUCCEEDED with the right dispatch identity, as a legacy packet.
    let forged = v1::BusPacket::new(
        "t",
        W,
        cap_runtime::packets::now(),
        v1::JobResult {
            job_id: h.job_id().into(),
            status: JobState::Succeeded.status() as i32,
            worker_id: W.into(),
            result_ptr: "redis://res:forged".into(),
            dispatch: Some(dispatch),
            ..Default::default()
        },
    );
    p.bus
        .publish(subject::RESULT, cap_proto::packet::encode(&forged).into())
        .await
        .unwrap();
    let alert = loop {
        let m = tokio::time::timeout(Duration::from_secs(5), alerts.next())
            .await
            .unwrap()
            .unwrap();
        if let Some(Payload::Alert(a)) = cap_proto::packet::decode(m.payload(), 1 << 20)
            .unwrap()
            .payload
            && a.source_component == SCHED
        {
            break a;
        }
    };
    assert!(
        alert.message.contains("legacy packet refused"),
        "{}",
        alert.message
    );
    assert_eq!(
        p.sched_packets
            .stats()
            .rejected_with(ErrorCode::PROTOCOL_SIGNATURE_MISSING),
        1
    );
    // (The legacy client reads results unverified: it saw the forgery too. The
    // scheduler did not apply it.)
    let mut record = None;
    for _ in 0..100 {
        let stored = p.jobs.load(&[h.job_id().to_owned()]).await.unwrap();
        if let Some(Some(s)) = stored.into_iter().next()
            && s.record.state.is_terminal()
        {
            record = Some(s.record);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let record = record.expect("the job ended");
    assert_eq!(record.state, JobState::Succeeded);
    let result = record.result.unwrap();
    assert_ne!(result.result_ptr, "redis://res:forged", "{result:?}");
    assert_eq!(runs.get(h.job_id()), 1);
    worker.shutdown(Duration::from_secs(1)).await;
    p.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_worker_refuses_what_its_scheduler_did_not_seal_for_it() {
    let p = prod(config(), "").await;
    let runs = Runs::default();
    let worker = p.worker(&["job.echo"], 8, &runs).await;
    p.store
        .put_context("x", Bytes::from_static(br#"{"n":1}"#))
        .await
        .unwrap();
    let stranger = PrivateKey::generate();
    let sk = &p.scheduler_key;
    let cases: Vec<(&str, Bytes)> = vec![
        ("a legacy request", {
            let req = v1::BusPacket::new(
                "t",
                SCHED,
                cap_runtime::packets::now(),
                v1::JobRequest {
                    job_id: "x".into(),
                    topic: "job.echo".into(),
                    context_ptr: "redis://ctx:x".into(),
                    ..Default::default()
                },
            );
            cap_proto::packet::encode(&req).into()
        }),
        (
            "another key under the scheduler's key id",
            p.sealed_request("x", "job.echo", SCHED, "default", &stranger, SERVER_KEY),
        ),
        (
            "an unknown key id",
            p.sealed_request("x", "job.echo", SCHED, "default", sk, "other-key"),
        ),
        (
            "sealed for another subject",
            p.sealed_request("x", "job.other", SCHED, "default", sk, SERVER_KEY),
        ),
        (
            "another tenant",
            p.sealed_request("x", "job.echo", SCHED, "acme", sk, SERVER_KEY),
        ),
        (
            "another sender",
            p.sealed_request("x", "job.echo", "impostor", "default", sk, SERVER_KEY),
        ),
    ];
    let n = cases.len() as u64;
    for (_, bytes) in &cases {
        p.bus.publish("job.echo", bytes.clone()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs.get("x"), 0, "nothing ran");
    let s = worker.packet_stats();
    assert_eq!(s.rejected_total(), n, "{s:?}");
    assert_eq!(s.rejected_with(ErrorCode::PROTOCOL_SIGNATURE_MISSING), 1);
    assert_eq!(
        s.rejected_with(ErrorCode::PROTOCOL_SIGNATURE_INVALID),
        n - 1
    );
    // The properly sealed one runs.
    let good = p.sealed_request("x", "job.echo", SCHED, "default", sk, SERVER_KEY);
    p.bus.publish("job.echo", good).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs.get("x"), 1);
    worker.shutdown(Duration::from_secs(1)).await;
    p.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_production_dispatch_runs_once_and_its_result_is_replayed() {
    let p = prod(config(), "").await;
    let runs = Runs::default();
    let worker = p.worker(&["job.echo"], 8, &runs).await;
    let mut dispatches = p.dispatches().await;
    let mut results = p.bus.subscribe(subject::RESULT).await.unwrap();
    let mut h = p
        .client
        .submit_with(
            "job.echo",
            &Input { n: 3, hold_ms: 0 },
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    let dispatch = tokio::time::timeout(Duration::from_secs(5), dispatches.next())
        .await
        .unwrap()
        .unwrap();
    h.result_within(Duration::from_secs(5)).await.unwrap();
    let first = loop {
        let m = results.next().await.unwrap();
        let pkt = cap_proto::packet::decode(m.payload(), 1 << 20).unwrap();
        if pkt.sender_id == W {
            break m.payload().clone();
        }
    };
    // The exact signed bytes again (a redelivery, or an attacker replaying them).
    p.bus
        .publish(dispatch.subject(), dispatch.payload().clone())
        .await
        .unwrap();
    let again = loop {
        let m = tokio::time::timeout(Duration::from_secs(5), results.next())
            .await
            .unwrap()
            .unwrap();
        let pkt = cap_proto::packet::decode(m.payload(), 1 << 20).unwrap();
        if pkt.sender_id == W {
            break m.payload().clone();
        }
    };
    assert_eq!(again, first, "the recorded result, byte for byte");
    assert_eq!(runs.get(h.job_id()), 1);
    assert_eq!(worker.packet_stats().duplicates, 1);
    assert_eq!(worker.fence_stats().replayed, 1);
    worker.shutdown(Duration::from_secs(1)).await;
    p.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_held_while_its_attempt_times_out_never_runs() {
    // One slot, taken by a long job; the next job's dispatch waits in the worker's hand
    // for the slot; the scheduler times that attempt out (dispatch timeout 300 ms) and
    // sends a cancel carrying its identity; when the slot frees up the worker refuses it.
    let pools = "topics:\n  job.late: late\npools:\n  late:\n    dispatch_timeout_ms: 300\n";
    let p = prod(config(), pools).await;
    let runs = Runs::default();
    let worker = p.worker(&["job.block", "job.late"], 1, &runs).await;
    let mut observed = p.observed.resubscribe();
    let mut block = p
        .client
        .submit_with(
            "job.block",
            &Input {
                n: 1,
                hold_ms: 1_200,
            },
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut late = p
        .client
        .submit_with(
            "job.late",
            &Input { n: 2, hold_ms: 0 },
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    let r = late.result_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.status, JobState::Timeout.status() as i32, "{r:?}");
    let b = block.result_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(b.status, JobState::Succeeded.status() as i32);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        runs.get(late.job_id()),
        0,
        "the timed-out attempt never ran"
    );
    let s = worker.fence_stats();
    assert_eq!(s.cancels_remembered, 1, "{s:?}");
    assert_eq!(s.rejected_for(FenceReason::Ended), 1, "{s:?}");
    // Nothing from the zombie reached the scheduler.
    while let Ok(o) = observed.try_recv() {
        if let Observed::Fenced { job_id, what, .. } = o {
            assert_ne!(job_id, late.job_id(), "a late {what} of the zombie");
        }
    }
    worker.shutdown(Duration::from_secs(1)).await;
    p.stop.cancel();
}
