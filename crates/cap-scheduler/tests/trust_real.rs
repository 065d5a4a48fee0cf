//! Worker trust over real NATS (a private server per test) and the shared Redis, with
//! the reference peer cap-sdk-python 2.17.0 (`CAP_INTEROP_PYTHON_217`):
//!
//! - a 2.17 `Agent` with `worker_trust_mode="enforce"` (expecting our scheduler's id and
//!   key, its proof key registered with us) authenticates, receives jobs a 2.17 client
//!   submits through the scheduler, and its results are accepted (the client sees
//!   SUCCEEDED); the same with our worker in enforce mode;
//! - spoofed handshakes and heartbeats (unsigned, signed by an unknown key, with a
//!   forged token) receive no job while the real workers run every job;
//! - two scheduler instances share sessions through Redis: a worker authenticated
//!   through one is accepted by the other.
//!
//! Run by `.ci/run` (`cargo test -- --ignored`); fails when a service or the peer is
//! missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod trust_support;

use cap_bus::{Bus, NatsBus};
use cap_proto::subject;
use cap_proto::v1::{self, bus_packet::Payload};
use cap_runtime::packets::{PacketConfig, Packets};
use cap_runtime::trust::{WorkerTrustConfig, WorkerTrustMode};
use cap_runtime::{Client, ClientConfig, Context, JobError, RunningWorker, SubmitOptions, Worker};
use cap_safety::Kernel;
use cap_safety::policy::Policy;
use cap_scheduler::core::Config;
use cap_scheduler::trust::{
    RedisTrustStore, TrustServer, TrustServerConfig, WorkerKey, WorkerKeys, WorkerTrust,
};
use cap_scheduler::{MemoryJobStore, Scheduler, SchedulerOptions};
use cap_sign::PrivateKey;
use futures_util::StreamExt;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use trust_support::services::*;

const SCHED: &str = "sched-real";
const SERVER_KEY: &str = "sched-real-key";
const TOPIC: &str = "job.trust-echo";

async fn echo(_ctx: Context, v: serde_json::Value) -> Result<serde_json::Value, JobError> {
    Ok(v)
}

/// Keys, a Redis namespace and the files the peer reads.
struct Setup {
    tag: String,
    scheduler_key: PrivateKey,
    workers: Vec<(String, PrivateKey)>,
    dir: TempDir,
    namespace: String,
}

impl Setup {
    fn new(workers: &[&str]) -> Self {
        let tag = cap_runtime::id::new_trace_id()[..8].to_owned();
        let dir = TempDir::new("real");
        let scheduler_key = PrivateKey::generate();
        dir.write(
            "scheduler.pem",
            &scheduler_key.public_key().to_pem().unwrap(),
        );
        let workers = workers
            .iter()
            .map(|w| {
                let k = PrivateKey::generate();
                dir.write(&format!("{w}-{tag}.key.pem"), &k.to_pem().unwrap());
                (format!("{w}-{tag}"), k)
            })
            .collect();
        Setup {
            namespace: format!("cap-trust-test-{tag}"),
            tag,
            scheduler_key,
            workers,
            dir,
        }
    }

    fn id(&self, w: &str) -> String {
        format!("{w}-{}", self.tag)
    }

    fn key(&self, id: &str) -> &PrivateKey {
        &self.workers.iter().find(|(w, _)| w == id).unwrap().1
    }

    async fn store(&self) -> RedisTrustStore {
        RedisTrustStore::connect(&redis_url(), &self.namespace)
            .await
            .unwrap_or_else(|e| panic!("Redis is required at {}: {e}", redis_url()))
    }

    /// A scheduler instance (id `sched-real`, signing with the scheduler key) serving the
    /// handshake from the shared Redis namespace, in `mode`.
    async fn scheduler(
        &self,
        nats: &PrivateNats,
        mode: WorkerTrustMode,
    ) -> (WorkerTrust, CancellationToken) {
        let mut keys = WorkerKeys::new();
        for (id, k) in &self.workers {
            keys.insert(WorkerKey::new(id.clone(), k.public_key()))
                .unwrap();
        }
        let config = TrustServerConfig::new(
            SCHED,
            SERVER_KEY,
            Arc::new(self.scheduler_key.clone()),
            keys,
        );
        let server = TrustServer::new(config, Arc::new(self.store().await)).unwrap();
        let trust = WorkerTrust::new(mode, server);
        let packets = Packets::new(
            nats.bus(SCHED).await,
            PacketConfig::new(SCHED).signer(Arc::new(self.scheduler_key.clone())),
        );
        let options = SchedulerOptions {
            config: Config {
                heartbeat_interval: Duration::from_millis(500),
                ..Config::default()
            },
            tick: Duration::from_millis(50),
            worker_trust: Some(trust.clone()),
            ..Default::default()
        };
        let kernel = Kernel::new(Policy::from_text("version: 1\nrules: []\n", "p.yaml").unwrap());
        let stop = CancellationToken::new();
        let run = Scheduler::new(packets, Arc::new(kernel), MemoryJobStore::new(), options)
            .run(stop.clone());
        tokio::spawn(async move {
            if let Err(e) = run.await {
                panic!("scheduler stopped: {e}");
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        (trust, stop)
    }

    /// Our worker in `mode`.
    async fn worker(
        &self,
        nats: &PrivateNats,
        id: &str,
        mode: WorkerTrustMode,
    ) -> RunningWorker<NatsBus> {
        let bus = nats.bus(id).await;
        let config = WorkerTrustConfig::new(mode, id, Arc::new(self.key(id).clone()), SCHED)
            .scheduler_key(SERVER_KEY, self.scheduler_key.public_key())
            .renew_min_interval(Duration::from_secs(1));
        Worker::builder(bus.clone(), blob().await)
            .id(id)
            .heartbeat_interval(Duration::from_millis(300))
            .worker_trust(config)
            .handshake_on(cap_runtime::reconnect::nats_reconnects(
                bus,
                Duration::from_secs(1),
            ))
            .handler(TOPIC, echo)
            .build()
            .unwrap()
            .start()
            .await
            .unwrap()
    }

    /// The 2.17 Agent in `mode`; waits for its READY line.
    fn agent(&self, nats: &PrivateNats, id: &str, mode: &str) -> (Killed, String) {
        let key = self.dir.0.join(format!("{id}.key.pem"));
        let mut child = Command::new(python())
            .arg(script("trust_agent.py"))
            .args([&nats.url(), &redis_url(), TOPIC, id, mode])
            .arg(&key)
            .arg(SCHED)
            .arg(format!(
                "{SERVER_KEY}={}",
                self.dir.0.join("scheduler.pem").display()
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the 2.17 agent");
        let stdout = child.stdout.take().unwrap();
        let guard = Killed(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        (guard, line.trim().to_owned())
    }

    async fn cleanup(&self) {
        self.store().await.purge().await.unwrap();
    }
}

/// Submits `n` jobs with the 2.17 client (`cap.client.submit_job` on `sys.job.submit`)
/// and returns its report per job.
fn submit_217(nats: &PrivateNats, tag: &str, n: usize) -> Vec<serde_json::Value> {
    let ids: Vec<String> = (0..n).map(|i| format!("py-job-{tag}-{i}")).collect();
    let out = Command::new(python())
        .arg(script("submit_217.py"))
        .args([&nats.url(), &redis_url(), TOPIC, "20"])
        .args(&ids)
        .output()
        .expect("run the 2.17 client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn assert_all_succeeded(reports: &[serde_json::Value], workers: &[&str]) {
    for r in reports {
        assert_eq!(r["status"], "JOB_STATUS_SUCCEEDED", "{r}");
        assert!(workers.contains(&r["worker_id"].as_str().unwrap()), "{r}");
        assert_eq!(r["output"]["job"], r["job_id"], "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real NATS, Redis and cap-sdk-python 2.17.0 (CAP_INTEROP_PYTHON_217): run by .ci/run"]
async fn a_217_agent_in_enforce_mode_runs_jobs_a_217_client_submits_through_the_scheduler() {
    let nats = PrivateNats::start();
    let s = Setup::new(&["py"]);
    let (trust, stop) = s.scheduler(&nats, WorkerTrustMode::Enforce).await;
    let agent_id = s.id("py");
    let (_agent, ready) = s.agent(&nats, &agent_id, "enforce");
    assert_eq!(ready, "READY session", "the agent authenticated");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let reports = submit_217(&nats, &s.tag, 8);
    assert_eq!(reports.len(), 8);
    assert_all_succeeded(&reports, &[&agent_id]);
    assert_eq!(trust.server.stats().sessions, 1);
    let gate = trust.gate.stats();
    assert_eq!(gate.rejected, 0, "{gate:?}");
    assert!(
        gate.accepted >= 8,
        "results, progress and heartbeats with the session: {gate:?}"
    );
    stop.cancel();
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real NATS, Redis and cap-sdk-python 2.17.0 (CAP_INTEROP_PYTHON_217): run by .ci/run"]
async fn our_enforce_worker_runs_jobs_a_217_client_submits_through_the_scheduler() {
    let nats = PrivateNats::start();
    let s = Setup::new(&["rs"]);
    let (trust, stop) = s.scheduler(&nats, WorkerTrustMode::Enforce).await;
    let id = s.id("rs");
    let worker = s.worker(&nats, &id, WorkerTrustMode::Enforce).await;
    assert!(worker.trust().unwrap().session().is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reports = submit_217(&nats, &s.tag, 8);
    assert_all_succeeded(&reports, &[&id]);
    assert_eq!(trust.gate.stats().rejected, 0, "{:?}", trust.gate.stats());
    worker.shutdown(Duration::from_secs(1)).await;
    stop.cancel();
    s.cleanup().await;
}

/// A fake worker `id` on its own connection: handshakes and heartbeats every 100 ms
/// (with `token`, signed with `key` when given); counts what arrives on its job subject.
async fn spoofer(
    nats: &PrivateNats,
    id: String,
    token: &'static str,
    key: Option<PrivateKey>,
    stop: CancellationToken,
) -> Arc<Mutex<u32>> {
    let bus = nats.bus(&id).await;
    let got = Arc::new(Mutex::new(0));
    let g = got.clone();
    let mut jobs = bus.subscribe(&format!("worker.{id}.jobs")).await.unwrap();
    let mut config = PacketConfig::new(id.clone());
    if let Some(k) = key {
        config = config.signer(Arc::new(k));
    }
    let packets = Packets::new(bus, config);
    tokio::spawn(async move {
        loop {
            let hs = cap_runtime::worker::handshake(&id, [TOPIC], false);
            let hb = v1::Heartbeat {
                worker_id: id.clone(),
                max_parallel_jobs: 1000,
                ..Default::default()
            };
            for (subj, payload) in [
                (subject::HANDSHAKE, Payload::Handshake(hs)),
                (subject::HEARTBEAT, Payload::Heartbeat(hb)),
            ] {
                let mut p = packets.envelope(&id, payload);
                p.auth_token = token.into();
                let _ = packets.publish(subj, p).await;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                m = jobs.next() => if m.is_some() { *g.lock().unwrap() += 1; },
            }
        }
    });
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real NATS, Redis and cap-sdk-python 2.17.0 (CAP_INTEROP_PYTHON_217): run by .ci/run"]
async fn spoofed_workers_get_no_job_while_real_workers_run_every_job() {
    let nats = PrivateNats::start();
    let s = Setup::new(&["rs", "py"]);
    let (trust, stop) = s.scheduler(&nats, WorkerTrustMode::Enforce).await;
    let observer = nats.bus("observer").await;
    let mut alerts = observer.subscribe(subject::ALERT).await.unwrap();
    let (rs, py) = (s.id("rs"), s.id("py"));
    let worker = s.worker(&nats, &rs, WorkerTrustMode::Enforce).await;
    let (_agent, ready) = s.agent(&nats, &py, "enforce");
    assert_eq!(ready, "READY session");
    let spoofing = CancellationToken::new();
    let fakes = [
        (format!("spoof-unsigned-{}", s.tag), "", None),
        (
            format!("spoof-signed-{}", s.tag),
            "",
            Some(PrivateKey::generate()),
        ),
        (format!("spoof-token-{}", s.tag), "cap-ws.forged", None),
    ];
    let mut counts = Vec::new();
    for (id, token, key) in fakes {
        counts.push((
            id.clone(),
            spoofer(&nats, id, token, key, spoofing.clone()).await,
        ));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Jobs from our client and from the 2.17 client.
    let client = Client::new(
        nats.bus("client").await,
        blob().await,
        ClientConfig::new(format!("client-{}", s.tag)),
    )
    .await
    .unwrap();
    let mut handles = Vec::new();
    for i in 0..30 {
        handles.push(
            client
                .submit_with(
                    TOPIC,
                    &serde_json::json!({ "i": i }),
                    SubmitOptions::default(),
                )
                .await
                .unwrap(),
        );
    }
    let reports = submit_217(&nats, &s.tag, 10);
    assert_all_succeeded(&reports, &[&rs, &py]);
    for (i, h) in handles.iter_mut().enumerate() {
        let r = h
            .result_within(Duration::from_secs(20))
            .await
            .unwrap()
            .clone();
        assert_eq!(
            r.status,
            cap_proto::JobState::Succeeded.status() as i32,
            "job {i}: {r:?}"
        );
        assert!(r.worker_id == rs || r.worker_id == py, "{r:?}");
    }
    spoofing.cancel();
    for (id, n) in &counts {
        assert_eq!(*n.lock().unwrap(), 0, "{id} received jobs");
    }
    // The unsigned and forged-token spoofers are named in alerts (the signed one is
    // refused earlier, by the packet layer: a signature from an unknown sender).
    let mut named = std::collections::HashSet::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(300), alerts.next()).await
    {
        if let Ok(p) = cap_proto::packet::decode(msg.payload(), 1 << 20)
            && let Some(Payload::Alert(a)) = p.payload
            && let Some(sender) = a.details.get("sender_id")
        {
            named.insert(sender.clone());
        }
    }
    for id in [
        format!("spoof-unsigned-{}", s.tag),
        format!("spoof-token-{}", s.tag),
    ] {
        assert!(named.contains(&id), "no alert naming {id}: {named:?}");
    }
    assert!(trust.gate.stats().rejected > 0);
    worker.shutdown(Duration::from_secs(1)).await;
    stop.cancel();
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real NATS and Redis: run by .ci/run"]
async fn a_session_issued_by_one_scheduler_is_accepted_by_another() {
    let nats = PrivateNats::start();
    let s = Setup::new(&["rs"]);
    let id = s.id("rs");
    // Instance A issues the session...
    let (a, stop_a) = s.scheduler(&nats, WorkerTrustMode::Enforce).await;
    let worker = s.worker(&nats, &id, WorkerTrustMode::Enforce).await;
    assert_eq!(a.server.stats().sessions, 1);
    // ...and goes away; instance B (same id and key, same Redis namespace) takes over.
    stop_a.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (b, stop_b) = s.scheduler(&nats, WorkerTrustMode::Enforce).await;
    // B hears the worker's handshake and heartbeats under A's session.
    worker.announce().await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let client = Client::new(
        nats.bus("client").await,
        blob().await,
        ClientConfig::new(format!("client-{}", s.tag)),
    )
    .await
    .unwrap();
    for i in 0..5 {
        let mut job = client
            .submit_with(
                TOPIC,
                &serde_json::json!({ "i": i }),
                SubmitOptions::default(),
            )
            .await
            .unwrap();
        let r = job
            .result_within(Duration::from_secs(20))
            .await
            .unwrap()
            .clone();
        assert_eq!(
            r.status,
            cap_proto::JobState::Succeeded.status() as i32,
            "{r:?}"
        );
        assert_eq!(r.worker_id, id);
    }
    let gate = b.gate.stats();
    assert_eq!(gate.rejected, 0, "{gate:?}");
    assert!(gate.accepted > 5, "{gate:?}");
    assert_eq!(
        b.server.stats().sessions,
        0,
        "B issued no session of its own"
    );
    assert_eq!(
        worker.trust().unwrap().sessions_obtained(),
        1,
        "the worker did not authenticate again"
    );
    // Revoking through B ends the session everywhere.
    assert_eq!(b.server.revoke_worker(&id).await.unwrap(), 1);
    let token = worker.trust().unwrap().token().unwrap();
    assert!(
        a.server
            .session(&token, std::time::SystemTime::now())
            .await
            .unwrap()
            .is_none()
    );
    worker.shutdown(Duration::from_secs(1)).await;
    stop_b.cancel();
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real NATS and Redis: run by .ci/run"]
async fn our_worker_authenticates_again_when_nats_comes_back() {
    let mut nats = PrivateNats::start();
    let s = Setup::new(&["rs"]);
    let (trust, stop) = s.scheduler(&nats, WorkerTrustMode::Enforce).await;
    let id = s.id("rs");
    let worker = s.worker(&nats, &id, WorkerTrustMode::Enforce).await;
    let state = worker.trust().unwrap().clone();
    assert_eq!(state.sessions_obtained(), 1);
    nats.restart();
    // The worker's connection comes back (`reconnect::nats_reconnects`): it renews its
    // session with the scheduler, which reconnected too, then re-announces itself.
    let mut renewed = false;
    for _ in 0..200 {
        if state.sessions_obtained() >= 2 && state.admits() {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(renewed, "no new session after the reconnect");
    assert!(trust.server.stats().renewals >= 1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let client = Client::new(
        nats.bus("client").await,
        blob().await,
        ClientConfig::new(format!("client-{}", s.tag)),
    )
    .await
    .unwrap();
    let mut job = client
        .submit_with(TOPIC, &serde_json::json!("again"), SubmitOptions::default())
        .await
        .unwrap();
    let r = job
        .result_within(Duration::from_secs(20))
        .await
        .unwrap()
        .clone();
    assert_eq!(
        r.status,
        cap_proto::JobState::Succeeded.status() as i32,
        "{r:?}"
    );
    assert_eq!(r.worker_id, id);
    worker.shutdown(Duration::from_secs(1)).await;
    stop.cancel();
    s.cleanup().await;
}
