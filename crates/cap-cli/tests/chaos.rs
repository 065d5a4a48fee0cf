//! Chaos: three `cap scheduler` processes, two workers and a steady load, while one
//! scheduler is killed with SIGKILL and one NATS node is killed, then both come back.
//! Past every timeout, each submitted job must have exactly one terminal state (never
//! rewritten), its client must have its answer, and no handler may have run twice.
//!
//! Two topologies: a 3-node NATS cluster (JetStream, 3 replicas) with a 3+3 Redis
//! Cluster, and the single NATS server and Redis of `.ci/run` (private ones, so the
//! kills touch nothing else). `cargo xtask chaos --minutes N` runs the first one for
//! longer (`CAP_CHAOS_SECS`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_blob::{RedisBlobStore, RedisConfig};
use cap_bus::nats::JetStreamOptions;
use cap_bus::{NatsBus, NatsOptions};
use cap_runtime::{Client, ClientConfig, Context, JobError, SubmitOptions, Worker};
use cap_scheduler::{JobStore, RedisJobStore};
use common::Cap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Per job id: the workers whose handler ran it, in order.
type SideEffects = Arc<Mutex<HashMap<String, Vec<String>>>>;

// Longer than any outage the run makes (a killed node, a JetStream leader election), so
// that every TIMEOUT would be a real one; short enough to be passed during the run.
const DISPATCH_TIMEOUT: &str = "15s";
const RUN_TIMEOUT: &str = "30s";
/// Waited after the load, past every timeout, before the records are judged.
const PAST_TIMEOUTS: Duration = Duration::from_secs(35);

enum Servers {
    Clusters(cap_testkit::NatsCluster, cap_testkit::RedisCluster),
    Single(cap_testkit::NatsServer, cap_testkit::RedisServer),
}

impl Servers {
    fn nats_urls(&self) -> String {
        match self {
            Servers::Clusters(n, _) => n.urls(),
            Servers::Single(n, _) => n.url(),
        }
    }
    fn redis_urls(&self) -> String {
        match self {
            Servers::Clusters(_, r) => r.urls(),
            Servers::Single(_, r) => r.url(),
        }
    }
    fn replicas(&self) -> usize {
        match self {
            Servers::Clusters(..) => 3,
            Servers::Single(..) => 1,
        }
    }
    fn kill_nats(&mut self) {
        match self {
            Servers::Clusters(n, _) => n.node(1).kill(),
            Servers::Single(n, _) => n.server().kill(),
        }
    }
    fn restart_nats(&mut self) {
        match self {
            Servers::Clusters(n, _) => n.node(1).restart(),
            Servers::Single(n, _) => n.server().restart(),
        }
    }
}

async fn bus(urls: &str, replicas: usize) -> NatsBus {
    // The first connection makes the stream (3 replicas on the cluster); the cluster
    // may still be electing its JetStream leader, so try for a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut js = JetStreamOptions::default()
            .replicas(replicas)
            .ack_wait(Duration::from_secs(3));
        js.publish_retry = Duration::from_secs(60);
        match NatsBus::connect(NatsOptions::new(urls).name("chaos").jetstream(js)).await {
            Ok(b) => return b,
            Err(e) if Instant::now() < deadline => {
                eprintln!("chaos: waiting for JetStream: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("JetStream never became available: {e}"),
        }
    }
}

async fn worker(
    urls: &str,
    replicas: usize,
    redis: &str,
    id: &str,
    effects: SideEffects,
) -> cap_runtime::RunningWorker<NatsBus> {
    let blobs = RedisBlobStore::connect(RedisConfig::new(redis))
        .await
        .unwrap();
    let me = id.to_owned();
    let handler = move |ctx: Context, v: serde_json::Value| {
        let (effects, me) = (effects.clone(), me.clone());
        async move {
            effects
                .lock()
                .unwrap()
                .entry(ctx.job_id().to_owned())
                .or_default()
                .push(me);
            let ms = 20 + (fastrand::u64(..) % 80);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, JobError>(v)
        }
    };
    Worker::builder(bus(urls, replicas).await, blobs)
        .id(id)
        .max_parallel(32)
        .handler("job.chaos", handler)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

fn scheduler(servers: &Servers, policy: &str, replicas: &str) -> Cap {
    Cap::spawn_with(
        &servers.nats_urls(),
        &servers.redis_urls(),
        &[
            ("CAP_JETSTREAM_REPLICAS", replicas),
            ("CAP_JETSTREAM_ACK_WAIT_MS", "3000"),
        ],
        &[
            "scheduler",
            "--policy",
            policy,
            "--id",
            "cap-scheduler",
            "--dispatch-timeout",
            DISPATCH_TIMEOUT,
            "--run-timeout",
            RUN_TIMEOUT,
            "--retention",
            "30m",
        ],
    )
}

/// What a run found.
#[derive(Debug, Default)]
struct Report {
    submitted: usize,
    /// Submits the client was told failed (not accepted, so not lost).
    refused: usize,
    terminal: usize,
    lost: usize,
    /// Jobs whose client was told another outcome than the one recorded.
    differs: usize,
    rewritten: usize,
    duplicated: usize,
    by_state: HashMap<String, usize>,
}

async fn run(servers: Servers, secs: u64, rate: u64) -> Report {
    common::log_to_stderr();
    let dir = std::env::temp_dir().join(format!("cap-chaos-{}", common::tag()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, "version: 1\nrules: []\n").unwrap();
    let policy = policy.to_str().unwrap().to_owned();
    let replicas = servers.replicas();
    let rep = replicas.to_string();
    let (nats, redis) = (servers.nats_urls(), servers.redis_urls());

    let client_bus = bus(&nats, replicas).await;
    let schedulers: Vec<Cap> = (0..3).map(|_| scheduler(&servers, &policy, &rep)).collect();
    let effects: SideEffects = Arc::default();
    let _w1 = worker(&nats, replicas, &redis, "chaos-w1", effects.clone()).await;
    let _w2 = worker(&nats, replicas, &redis, "chaos-w2", effects.clone()).await;
    let blobs = RedisBlobStore::connect(RedisConfig::new(redis.clone()))
        .await
        .unwrap();
    let client = Client::new(
        client_bus,
        blobs,
        ClientConfig::new("chaos-client")
            .result_timeout(Duration::from_secs(180))
            .reask(Some(Duration::from_secs(3))),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Per job id: None while waiting, Some(status) once answered. Jobs whose submit
    // the client was told failed (the bus was down) are counted apart: not accepted,
    // so not lost.
    let answers: Arc<Mutex<HashMap<String, Option<i32>>>> = Arc::default();
    let refused = Arc::new(Mutex::new(0usize));
    let total = Duration::from_secs(secs);
    let servers = Arc::new(tokio::sync::Mutex::new(servers));
    // The chaos schedule runs on its own clock, whatever the load is doing.
    let chaos = {
        let servers = servers.clone();
        let policy = policy.clone();
        let rep = rep.clone();
        tokio::spawn(async move {
            let mut schedulers = schedulers;
            let at = |f: f64| total.mul_f64(f);
            let start = Instant::now();
            let wait_until = |t: Duration| async move {
                let now = start.elapsed();
                if t > now {
                    tokio::time::sleep(t - now).await;
                }
            };
            wait_until(at(0.25)).await;
            eprintln!("chaos: kill -9 scheduler 0");
            schedulers[0].kill9();
            wait_until(at(0.40)).await;
            eprintln!("chaos: kill NATS node");
            servers.lock().await.kill_nats();
            wait_until(at(0.60)).await;
            eprintln!("chaos: restart NATS node");
            servers.lock().await.restart_nats();
            wait_until(at(0.70)).await;
            eprintln!("chaos: restart scheduler 0");
            schedulers[0] = scheduler(&*servers.lock().await, &policy, &rep);
            schedulers
        })
    };
    let mut waiting = Vec::new();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < total {
        let id = format!("chaos-{}-{n}", common::tag());
        n += 1;
        let (client, answers, refused) = (client.clone(), answers.clone(), refused.clone());
        waiting.push(tokio::spawn(async move {
            let submitted = client
                .submit_with(
                    "job.chaos",
                    &serde_json::json!({ "n": n }),
                    SubmitOptions::default().job_id(id.clone()),
                )
                .await;
            match submitted {
                Ok(mut job) => {
                    answers.lock().unwrap().insert(id.clone(), None);
                    if let Ok(r) = job.result().await {
                        answers.lock().unwrap().insert(id, Some(r.status));
                    }
                }
                Err(e) => {
                    eprintln!("chaos: submit {id} refused: {e}");
                    *refused.lock().unwrap() += 1;
                }
            }
        }));
        tokio::time::sleep(Duration::from_millis(1000 / rate.max(1))).await;
    }
    let schedulers = chaos.await.unwrap();
    for w in waiting {
        let _ = w.await;
    }
    // Past every timeout: nothing may change any more.
    tokio::time::sleep(PAST_TIMEOUTS).await;

    let store = RedisJobStore::connect(&redis, "cap:sched:").await.unwrap();
    let answers = answers.lock().unwrap().clone();
    let ids: Vec<String> = answers.keys().cloned().collect();
    let mut records = HashMap::new();
    for chunk in ids.chunks(200) {
        for s in store.load(chunk).await.unwrap().into_iter().flatten() {
            records.insert(s.record.id().to_owned(), s.record);
        }
    }
    let effects = effects.lock().unwrap().clone();
    let mut report = Report {
        submitted: ids.len(),
        refused: *refused.lock().unwrap(),
        ..Default::default()
    };
    for id in &ids {
        let record = records.get(id);
        let answer = answers.get(id).copied().flatten();
        let terminal_entries = record.map_or(0, |r| {
            r.history
                .iter()
                .filter(|(_, s)| {
                    matches!(
                        s.as_str(),
                        "SUCCEEDED"
                            | "FAILED"
                            | "FAILED_FATAL"
                            | "CANCELLED"
                            | "DENIED"
                            | "TIMEOUT"
                    )
                })
                .count()
        });
        match (record, answer) {
            (Some(r), Some(status))
                if r.state.is_terminal() && r.state.status() as i32 == status =>
            {
                report.terminal += 1;
                *report.by_state.entry(r.state.to_string()).or_default() += 1;
            }
            (Some(r), Some(status)) if r.state.is_terminal() => {
                report.differs += 1;
                eprintln!(
                    "chaos: {id} recorded {} but its client was told {status}: {:?}",
                    r.state, r.history
                );
            }
            (r, a) => {
                report.lost += 1;
                eprintln!(
                    "chaos: {id} not settled: record {:?}, answer {a:?}",
                    r.map(|r| (r.state, r.history.clone()))
                );
            }
        }
        if terminal_entries > 1 {
            report.rewritten += 1;
            eprintln!(
                "chaos: {id} rewritten: {:?}",
                record.map(|r| r.history.clone())
            );
        }
        if effects.get(id).map_or(0, Vec::len) > 1 {
            report.duplicated += 1;
            eprintln!(
                "chaos: {id} ran on {:?}; record {:?}",
                effects[id],
                record.map(|r| (&r.history, &r.dispatch, r.attempts))
            );
        }
    }
    drop(schedulers);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "chaos: submitted {} / terminal {} / lost {} / answer differs {} / rewritten {} / duplicated {} (refused at submit: {}); {:?}",
        report.submitted,
        report.terminal,
        report.lost,
        report.differs,
        report.rewritten,
        report.duplicated,
        report.refused,
        report.by_state
    );
    report
}

fn secs() -> u64 {
    std::env::var("CAP_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
}

fn check(r: &Report) {
    assert!(r.submitted > 0);
    assert_eq!(r.lost, 0, "{r:?}");
    assert_eq!(r.differs, 0, "{r:?}");
    assert_eq!(r.rewritten, 0, "{r:?}");
    assert_eq!(r.duplicated, 0, "{r:?}");
    assert_eq!(r.terminal, r.submitted, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server, redis-server and redis-cli (clusters started on loopback): run by .ci/run"]
async fn chaos_on_a_nats_cluster_and_a_redis_cluster() {
    let servers = Servers::Clusters(
        cap_testkit::NatsCluster::start(3),
        cap_testkit::RedisCluster::start(3, 1),
    );
    let report = run(servers, secs(), 20).await;
    check(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server and redis-server (private ones are started): run by .ci/run"]
async fn chaos_on_a_single_nats_and_redis() {
    let servers = Servers::Single(
        cap_testkit::NatsServer::start(),
        cap_testkit::RedisServer::start(),
    );
    let report = run(servers, secs().min(40), 20).await;
    check(&report);
}
