//! Worker trust end to end in one process, on the in-memory bus: our workers in
//! `enforce` mode authenticate with the scheduler's trust service, get jobs and have
//! their results accepted; spoofed workers get none and are alerted on; sessions renew;
//! a revoked worker stops; the client modes without a trust service.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_blob::MemoryBlobStore;
use cap_bus::{Bus, MemoryBus};
use cap_proto::v1::{self, bus_packet::Payload};
use cap_proto::{JobState, subject};
use cap_runtime::packets::{PacketConfig, Packets};
use cap_runtime::trust::{WorkerTrustConfig, WorkerTrustMode};
use cap_runtime::{Client, ClientConfig, Context, JobError, RunningWorker, SubmitOptions, Worker};
use cap_safety::Kernel;
use cap_safety::policy::Policy;
use cap_scheduler::core::Config;
use cap_scheduler::trust::{
    MemoryTrustStore, TrustServer, TrustServerConfig, WorkerKey, WorkerKeys, WorkerTrust,
};
use cap_scheduler::{MemoryJobStore, Scheduler, SchedulerOptions};
use cap_sign::{KeyRing, PrivateKey, TrustMode, TrustPolicy};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SCHED: &str = "sched-1";
const SERVER_KEY: &str = "sched-key-1";

async fn echo(_ctx: Context, v: serde_json::Value) -> Result<serde_json::Value, JobError> {
    Ok(v)
}

struct Stack {
    bus: MemoryBus,
    store: MemoryBlobStore,
    scheduler_key: PrivateKey,
    worker_keys: HashMap<String, PrivateKey>,
    trust: Option<WorkerTrust>,
    client: Client<MemoryBus, MemoryBlobStore>,
    stop: CancellationToken,
}

/// A scheduler signing as `sched-1`; with `trust`, serving the handshake with workers
/// `w-a` and `w-b` registered, sessions of `session_ttl`.
async fn stack(trust: Option<WorkerTrustMode>, session_ttl: Duration) -> Stack {
    let bus = MemoryBus::new();
    let store = MemoryBlobStore::emulating_redis(Default::default());
    let scheduler_key = PrivateKey::generate();
    let mut keys = WorkerKeys::new();
    let mut worker_keys = HashMap::new();
    for w in ["w-a", "w-b"] {
        let k = PrivateKey::generate();
        keys.insert(WorkerKey::new(w, k.public_key())).unwrap();
        worker_keys.insert(w.to_owned(), k);
    }
    let trust = trust.map(|mode| {
        let mut config =
            TrustServerConfig::new(SCHED, SERVER_KEY, Arc::new(scheduler_key.clone()), keys);
        config.session_ttl = session_ttl;
        let server = TrustServer::new(config, Arc::new(MemoryTrustStore::new())).unwrap();
        WorkerTrust::new(mode, server)
    });
    let packets = Packets::new(
        bus.clone(),
        PacketConfig::new(SCHED).signer(Arc::new(scheduler_key.clone())),
    );
    let options = SchedulerOptions {
        config: Config {
            heartbeat_interval: Duration::from_millis(150),
            ..Config::default()
        },
        tick: Duration::from_millis(20),
        worker_trust: trust.clone(),
        ..Default::default()
    };
    let kernel = Kernel::new(Policy::from_text("version: 1\nrules: []\n", "p.yaml").unwrap());
    let scheduler = Scheduler::new(packets, Arc::new(kernel), MemoryJobStore::new(), options);
    let stop = CancellationToken::new();
    tokio::spawn(scheduler.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut ring = KeyRing::new();
    ring.add(SCHED, scheduler_key.public_key());
    let client = Client::new(
        bus.clone(),
        store.clone(),
        ClientConfig::new("client-1").trust(TrustPolicy::new(TrustMode::VerifyIfSigned, ring)),
    )
    .await
    .unwrap();
    Stack {
        bus,
        store,
        scheduler_key,
        worker_keys,
        trust,
        client,
        stop,
    }
}

impl Stack {
    fn trust_config(&self, worker: &str, mode: WorkerTrustMode) -> WorkerTrustConfig {
        WorkerTrustConfig::new(
            mode,
            worker,
            Arc::new(self.worker_keys[worker].clone()),
            SCHED,
        )
        .scheduler_key(SERVER_KEY, self.scheduler_key.public_key())
        .renew_min_interval(Duration::from_millis(300))
        .timeout(Duration::from_secs(2))
    }

    async fn worker(
        &self,
        id: &str,
        mode: WorkerTrustMode,
    ) -> Result<RunningWorker<MemoryBus>, cap_runtime::Error> {
        Worker::builder(self.bus.clone(), self.store.clone())
            .id(id)
            .heartbeat_interval(Duration::from_millis(100))
            .worker_trust(self.trust_config(id, mode))
            .handler("job.echo", echo)
            .build()?
            .start()
            .await
    }

    async fn run_jobs(&self, n: usize) -> Vec<String> {
        let mut handles = Vec::new();
        for i in 0..n {
            handles.push(
                self.client
                    .submit_with(
                        "job.echo",
                        &serde_json::json!({ "i": i }),
                        SubmitOptions::default(),
                    )
                    .await
                    .unwrap(),
            );
        }
        let mut ran_by = Vec::new();
        for (i, h) in handles.iter_mut().enumerate() {
            let r = h
                .result_within(Duration::from_secs(10))
                .await
                .unwrap()
                .clone();
            assert_eq!(
                r.status,
                JobState::Succeeded.status() as i32,
                "job {i}: {r:?}"
            );
            let out: serde_json::Value = h.output().await.unwrap();
            assert_eq!(out["i"], i);
            ran_by.push(r.worker_id);
        }
        ran_by
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_workers_authenticate_get_jobs_and_their_results_count() {
    let s = stack(Some(WorkerTrustMode::Enforce), Duration::from_secs(600)).await;
    let a = s.worker("w-a", WorkerTrustMode::Enforce).await.unwrap();
    let b = s.worker("w-b", WorkerTrustMode::Enforce).await.unwrap();
    assert!(a.trust().unwrap().session().is_some());
    assert!(b.trust().unwrap().admits());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ran_by = s.run_jobs(20).await;
    assert!(
        ran_by.iter().all(|w| w == "w-a" || w == "w-b"),
        "{ran_by:?}"
    );
    let trust = s.trust.as_ref().unwrap();
    let stats = trust.server.stats();
    assert_eq!((stats.challenges, stats.sessions), (2, 2));
    assert_eq!(trust.gate.stats().rejected, 0, "{:?}", trust.gate.stats());
    assert!(trust.gate.stats().accepted > 20);
    a.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
    s.stop.cancel();
}

/// A fake worker: handshakes and heartbeats as `id` every 50 ms (with `token`,
/// optionally signed with `key`), counting what arrives on its job subject.
fn spoofer(
    bus: MemoryBus,
    id: &'static str,
    token: &'static str,
    key: Option<PrivateKey>,
    stop: CancellationToken,
) -> Arc<Mutex<u32>> {
    let got = Arc::new(Mutex::new(0));
    let g = got.clone();
    tokio::spawn(async move {
        let mut config = PacketConfig::new(id);
        if let Some(k) = key {
            config = config.signer(Arc::new(k));
        }
        let packets = Packets::new(bus.clone(), config);
        let mut jobs = bus.subscribe(&format!("worker.{id}.jobs")).await.unwrap();
        loop {
            let hs = cap_runtime::worker::handshake(id, ["job.echo"], false);
            let hb = v1::Heartbeat {
                worker_id: id.into(),
                max_parallel_jobs: 1000,
                ..Default::default()
            };
            for payload in [Payload::Handshake(hs), Payload::Heartbeat(hb)] {
                let mut p = packets.envelope(id, payload);
                p.auth_token = token.into();
                let subj = if matches!(p.payload, Some(Payload::Handshake(_))) {
                    subject::HANDSHAKE
                } else {
                    subject::HEARTBEAT
                };
                let _ = packets.publish(subj, p).await;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                m = jobs.next() => if m.is_some() { *g.lock().unwrap() += 1; },
            }
        }
    });
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_handshakes_and_heartbeats_get_no_job_and_an_alert() {
    let s = stack(Some(WorkerTrustMode::Enforce), Duration::from_secs(600)).await;
    let mut alerts = s.bus.subscribe(subject::ALERT).await.unwrap();
    let a = s.worker("w-a", WorkerTrustMode::Enforce).await.unwrap();
    let stop = CancellationToken::new();
    let unsigned = spoofer(s.bus.clone(), "spoof-1", "", None, stop.clone());
    let forged = spoofer(
        s.bus.clone(),
        "spoof-2",
        "cap-ws.forged",
        None,
        stop.clone(),
    );
    let signed = spoofer(
        s.bus.clone(),
        "spoof-3",
        "",
        Some(PrivateKey::generate()),
        stop.clone(),
    );
    // A registered worker id without its key: no session, no jobs either.
    let impostor = spoofer(s.bus.clone(), "w-b", "", None, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ran_by = s.run_jobs(40).await;
    assert!(ran_by.iter().all(|w| w == "w-a"), "{ran_by:?}");
    stop.cancel();
    for (name, got) in [
        ("spoof-1", &unsigned),
        ("spoof-2", &forged),
        ("spoof-3", &signed),
        ("w-b", &impostor),
    ] {
        assert_eq!(*got.lock().unwrap(), 0, "{name} got jobs");
    }
    // Alerts name the spoofing senders.
    let mut named = std::collections::HashSet::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(300), alerts.next()).await
    {
        if let Ok(p) = cap_proto::packet::decode(msg.payload(), 1 << 20)
            && let Some(Payload::Alert(al)) = p.payload
            && let Some(sender) = al.details.get("sender_id")
        {
            named.insert(sender.clone());
        }
    }
    for id in ["spoof-1", "spoof-2", "w-b"] {
        assert!(named.contains(id), "no alert naming {id}: {named:?}");
    }
    let gate = s.trust.as_ref().unwrap().gate.stats();
    assert!(gate.rejected >= 6, "{gate:?}");
    a.shutdown(Duration::from_secs(1)).await;
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_renew_and_jobs_keep_flowing() {
    let s = stack(Some(WorkerTrustMode::Enforce), Duration::from_secs(2)).await;
    let (trigger, signal) = tokio::sync::mpsc::unbounded_channel::<()>();
    let a = Worker::builder(s.bus.clone(), s.store.clone())
        .id("w-a")
        .heartbeat_interval(Duration::from_millis(100))
        .worker_trust(s.trust_config("w-a", WorkerTrustMode::Enforce))
        .handshake_on(tokio_stream_of(signal))
        .handler("job.echo", echo)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let first = a.trust().unwrap().token().unwrap();
    // Three session lifetimes with jobs all along.
    for _ in 0..12 {
        s.run_jobs(2).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let state = a.trust().unwrap();
    assert!(
        state.sessions_obtained() >= 4,
        "{}",
        state.sessions_obtained()
    );
    assert_ne!(state.token().unwrap(), first, "the token rotated");
    // A reconnect signal: authenticate again (a renewal), then re-announce with the
    // new session (periodic renewals do not re-announce).
    let mut handshakes = s.bus.subscribe(subject::HANDSHAKE).await.unwrap();
    let before = state.sessions_obtained();
    trigger.send(()).unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(2), handshakes.next())
        .await
        .expect("a handshake after the reconnect signal")
        .unwrap();
    let p = cap_proto::packet::decode(msg.payload(), 1 << 20).unwrap();
    assert_eq!(p.sender_id, "w-a");
    assert!(state.sessions_obtained() > before);
    let server = &s.trust.as_ref().unwrap().server;
    let live = server
        .session(&p.auth_token, std::time::SystemTime::now())
        .await
        .unwrap();
    assert_eq!(live.map(|r| r.worker_id).as_deref(), Some("w-a"));
    s.run_jobs(2).await;
    let trust = s.trust.as_ref().unwrap();
    assert_eq!(trust.gate.stats().rejected, 0, "{:?}", trust.gate.stats());
    assert!(trust.server.stats().renewals >= 3);
    a.shutdown(Duration::from_secs(1)).await;
    s.stop.cancel();
}

fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<()>,
) -> impl futures_util::Stream<Item = ()> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_worker_stops_and_its_jobs_go_elsewhere() {
    let s = stack(Some(WorkerTrustMode::Enforce), Duration::from_secs(2)).await;
    let a = s.worker("w-a", WorkerTrustMode::Enforce).await.unwrap();
    let b = s.worker("w-b", WorkerTrustMode::Enforce).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.run_jobs(6).await;
    // Revoke w-a for good: its key goes, its sessions end.
    let trust = s.trust.as_ref().unwrap();
    let old_token = a.trust().unwrap().token().unwrap();
    let mut keys = WorkerKeys::new();
    keys.insert(WorkerKey::new("w-b", s.worker_keys["w-b"].public_key()))
        .unwrap();
    trust.server.set_keys(keys);
    assert!(trust.server.revoke_worker("w-a").await.unwrap() >= 1);
    trust.gate.clear_cache();
    // Its next renewal fails (and so does the fresh handshake): it stops admitting.
    let state = a.trust().unwrap().clone();
    for _ in 0..50 {
        if !state.admits() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!state.admits(), "w-a still admits jobs");
    // The scheduler stops hearing from it and forgets it (three heartbeat intervals).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let ran_by = s.run_jobs(10).await;
    assert!(ran_by.iter().all(|w| w == "w-b"), "{ran_by:?}");
    // Anything still sent with its old token is refused.
    let mut hb = cap_proto::v1::BusPacket::new(
        "t",
        "w-a",
        cap_runtime::packets::now(),
        v1::Heartbeat {
            worker_id: "w-a".into(),
            ..Default::default()
        },
    );
    hb.auth_token = old_token.to_string();
    let raw = cap_proto::packet::encode(&hb);
    assert_eq!(
        trust
            .gate
            .check(&raw, &hb, std::time::SystemTime::now())
            .await,
        cap_scheduler::trust::Decision::Reject(cap_scheduler::trust::Violation::UnknownSession)
    );
    a.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_trust_service_warn_runs_and_enforce_does_not_start() {
    // The scheduler signs but serves no handshake.
    let s = stack(None, Duration::from_secs(600)).await;
    let e = s.worker("w-a", WorkerTrustMode::Enforce).await.unwrap_err();
    assert_eq!(e.kind(), cap_runtime::ErrorKind::Trust);
    let warn = s.worker("w-b", WorkerTrustMode::Warn).await.unwrap();
    assert!(warn.trust().unwrap().session().is_none());
    assert!(warn.trust().unwrap().admits());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ran_by = s.run_jobs(5).await;
    assert!(ran_by.iter().all(|w| w == "w-b"));
    // Packets not signed by the scheduler are refused (a direct job from a client).
    let before = warn.packet_stats().rejected_total();
    let mut direct = s
        .client
        .submit_with(
            "job.echo",
            &serde_json::json!(1),
            SubmitOptions::default().direct(),
        )
        .await
        .unwrap();
    assert!(
        direct
            .result_within(Duration::from_millis(500))
            .await
            .is_err()
    );
    assert!(warn.packet_stats().rejected_total() > before);
    warn.shutdown(Duration::from_secs(1)).await;
    s.stop.cancel();
}
