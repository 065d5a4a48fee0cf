//! The CAP-PRODUCTION profile over real NATS (a private server per test) and the shared
//! Redis (trust sessions and replay stores), with the reference peer cap-sdk-python
//! 2.17.0 (`CAP_INTEROP_PYTHON_217`):
//!
//! - a 2.17 `Agent` in production mode (worker trust enforce, `production_trust`, its
//!   own `InMemoryReplayStore`) takes fenced, production-sealed jobs a 2.17 client
//!   submits through our scheduler in the production profile (replay store in Redis),
//!   and its production-sealed results are accepted: the client sees SUCCEEDED, the
//!   scheduler refused nothing;
//! - the same with our worker in the production profile (replay store in Redis).
//!
//! Run by `.ci/run` (`cargo test -- --ignored`); fails when a service or the peer is
//! missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod trust_support;

use cap_bus::NatsBus;
use cap_runtime::packets::{PacketConfig, Packets};
use cap_runtime::replay::RedisReplayStore;
use cap_runtime::trust::{WorkerTrustConfig, WorkerTrustMode};
use cap_runtime::{Context, JobError, RunningWorker, Worker};
use cap_safety::Kernel;
use cap_safety::policy::Policy;
use cap_scheduler::core::Config;
use cap_scheduler::trust::production::production_packets;
use cap_scheduler::trust::{
    RedisTrustStore, TrustServer, TrustServerConfig, WorkerKey, WorkerKeys, WorkerTrust,
};
use cap_scheduler::{JobStore, MemoryJobStore, Scheduler, SchedulerOptions};
use cap_sign::PrivateKey;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use trust_support::services::*;

const SCHED: &str = "sched-prod-real";
const SERVER_KEY: &str = "sched-prod-real-key";
const TOPIC: &str = "job.prod-echo";

async fn echo(_ctx: Context, v: serde_json::Value) -> Result<serde_json::Value, JobError> {
    Ok(v)
}

struct Setup {
    tag: String,
    scheduler_key: PrivateKey,
    workers: Vec<(String, PrivateKey)>,
    dir: TempDir,
    namespace: String,
    /// Key prefix of every replay store of this test.
    replay_prefix: String,
}

impl Setup {
    fn new(workers: &[&str]) -> Self {
        let tag = cap_runtime::id::new_trace_id()[..8].to_owned();
        let dir = TempDir::new("prod");
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
            namespace: format!("cap-prod-test-{tag}"),
            replay_prefix: format!("cap:test:replay:{tag}:"),
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

    async fn replay(&self, who: &str) -> RedisReplayStore {
        RedisReplayStore::connect(&redis_url(), &format!("{}{who}:", self.replay_prefix))
            .await
            .unwrap_or_else(|e| panic!("Redis is required at {}: {e}", redis_url()))
    }

    /// Our scheduler in the production profile (trust enforce, sessions and replay
    /// store in Redis); the scheduler's packet layer (shared counters) and its trust.
    async fn scheduler(
        &self,
        nats: &PrivateNats,
    ) -> (
        Packets<NatsBus>,
        WorkerTrust,
        MemoryJobStore,
        CancellationToken,
    ) {
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
        let store = RedisTrustStore::connect(&redis_url(), &self.namespace)
            .await
            .unwrap();
        let server = TrustServer::new(config, Arc::new(store)).unwrap();
        let trust = WorkerTrust::new(WorkerTrustMode::Enforce, server);
        let packet_config = production_packets(
            PacketConfig::new(SCHED),
            &trust,
            Arc::new(self.replay("sched").await),
            "default",
        )
        .unwrap();
        let packets = Packets::new(nats.bus(SCHED).await, packet_config);
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
        let jobs = MemoryJobStore::new();
        let stop = CancellationToken::new();
        let run = Scheduler::new(packets.clone(), Arc::new(kernel), jobs.clone(), options)
            .run(stop.clone());
        tokio::spawn(async move {
            if let Err(e) = run.await {
                panic!("scheduler stopped: {e}");
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        (packets, trust, jobs, stop)
    }

    /// Our worker in the production profile, its replay store in Redis.
    async fn worker(&self, nats: &PrivateNats, id: &str) -> RunningWorker<NatsBus> {
        let config = WorkerTrustConfig::new(
            WorkerTrustMode::Enforce,
            id,
            Arc::new(self.key(id).clone()),
            SCHED,
        )
        .scheduler_key(SERVER_KEY, self.scheduler_key.public_key());
        Worker::builder(nats.bus(id).await, blob().await)
            .id(id)
            .heartbeat_interval(Duration::from_millis(300))
            .worker_trust(config)
            .production(Arc::new(self.replay(id).await))
            .handler(TOPIC, echo)
            .build()
            .unwrap()
            .start()
            .await
            .unwrap()
    }

    /// The 2.17 Agent in production mode; waits for its READY line. The lines its
    /// handler prints (`RAN <job> <dispatch id> <attempt>`) are collected.
    fn agent(&self, nats: &PrivateNats, id: &str) -> (Killed, String, Arc<Mutex<Vec<String>>>) {
        let key = self.dir.0.join(format!("{id}.key.pem"));
        let mut child = Command::new(python())
            .arg(script("production_agent.py"))
            .args([&nats.url(), &redis_url(), TOPIC, id])
            .arg(&key)
            .arg(SCHED)
            .arg(format!(
                "{SERVER_KEY}={}",
                self.dir.0.join("scheduler.pem").display()
            ))
            .arg("default")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the 2.17 agent");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let ran = Arc::new(Mutex::new(Vec::new()));
        let r = ran.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                r.lock().unwrap().push(line);
            }
        });
        let guard = Killed(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        (guard, line.trim().to_owned(), ran)
    }

    async fn cleanup(&self) {
        RedisTrustStore::connect(&redis_url(), &self.namespace)
            .await
            .unwrap()
            .purge()
            .await
            .unwrap();
        purge_redis(&self.replay_prefix).await;
    }
}

/// Submits `n` jobs with the 2.17 client and returns its report per job.
fn submit_217(nats: &PrivateNats, tag: &str, n: usize) -> Vec<serde_json::Value> {
    let ids: Vec<String> = (0..n).map(|i| format!("prod-job-{tag}-{i}")).collect();
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

/// Every report SUCCEEDED by `worker` with the echoed input; the scheduler agrees.
async fn assert_accepted(
    reports: &[serde_json::Value],
    worker: &str,
    jobs: &MemoryJobStore,
    sched: &Packets<NatsBus>,
) {
    for r in reports {
        assert_eq!(r["status"], "JOB_STATUS_SUCCEEDED", "{r}");
        assert_eq!(r["worker_id"], worker, "{r}");
        assert_eq!(r["output"]["job"], r["job_id"], "{r}");
    }
    // The scheduler applied every production result (the jobs ended SUCCEEDED there,
    // with the attempt's dispatch identity echoed) and refused nothing.
    for r in reports {
        let id = r["job_id"].as_str().unwrap().to_owned();
        let mut ended = None;
        for _ in 0..100 {
            if let Some(Some(s)) = jobs.load(std::slice::from_ref(&id)).await.unwrap().pop()
                && s.record.state.is_terminal()
            {
                ended = Some(s.record);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let record = ended.unwrap_or_else(|| panic!("job {id} did not end at the scheduler"));
        assert_eq!(record.state, cap_proto::JobState::Succeeded, "{id}");
        let result = record.result.unwrap();
        assert_eq!(result.worker_id, worker);
        assert_eq!(result.dispatch.unwrap().attempt, 1);
        assert_eq!(result.identity.unwrap().tenant_id, "default");
    }
    let stats = sched.stats();
    assert_eq!(stats.rejected_total(), 0, "{stats:?}");
    assert!(stats.accepted >= reports.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real NATS, Redis and cap-sdk-python 2.17.0 (CAP_INTEROP_PYTHON_217): run by .ci/run"]
async fn a_217_agent_in_production_mode_takes_fenced_production_jobs_and_its_results_are_accepted()
{
    let nats = PrivateNats::start();
    let s = Setup::new(&["py"]);
    let (packets, trust, jobs, stop) = s.scheduler(&nats).await;
    let agent_id = s.id("py");
    let (_agent, ready, ran) = s.agent(&nats, &agent_id);
    assert_eq!(
        ready, "READY session",
        "the agent started in production mode"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let reports = submit_217(&nats, &s.tag, 8);
    assert_eq!(reports.len(), 8);
    assert_accepted(&reports, &agent_id, &jobs, &packets).await;
    // The peer's handler saw each job once, fenced: a 32-hex dispatch id, attempt 1.
    let ran = ran.lock().unwrap().clone();
    for r in &reports {
        let job = r["job_id"].as_str().unwrap();
        let lines: Vec<&String> = ran
            .iter()
            .filter(|l| l.starts_with(&format!("RAN {job} ")))
            .collect();
        assert_eq!(lines.len(), 1, "{job}: {ran:?}");
        let parts: Vec<&str> = lines[0].split(' ').collect();
        assert_eq!(parts[2].len(), 32, "{}", lines[0]);
        assert!(parts[2].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(parts[3], "1");
    }
    assert_eq!(trust.gate.stats().rejected, 0, "{:?}", trust.gate.stats());
    stop.cancel();
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real NATS, Redis and cap-sdk-python 2.17.0 (CAP_INTEROP_PYTHON_217): run by .ci/run"]
async fn our_production_worker_takes_fenced_production_jobs_a_217_client_submits() {
    let nats = PrivateNats::start();
    let s = Setup::new(&["rs"]);
    let (packets, trust, jobs, stop) = s.scheduler(&nats).await;
    let id = s.id("rs");
    let worker = s.worker(&nats, &id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reports = submit_217(&nats, &s.tag, 8);
    assert_accepted(&reports, &id, &jobs, &packets).await;
    assert_eq!(trust.gate.stats().rejected, 0);
    let ws = worker.packet_stats();
    assert_eq!(ws.rejected_total(), 0, "{ws:?}");
    assert!(ws.accepted >= 8, "{ws:?}");
    worker.shutdown(Duration::from_secs(1)).await;
    stop.cancel();
    // The replay stores held what was admitted.
    assert!(purge_redis(&s.replay_prefix).await >= 16);
    s.cleanup().await;
}
