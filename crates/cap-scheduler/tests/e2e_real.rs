//! The scheduler on real services: a private NATS server with JetStream (started here,
//! so restarts and crashes stay contained), the shared Redis, and the gRPC safety
//! kernel. Run by `.ci/run` (`cargo test -- --ignored`); fails when a service is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_blob::{RedisBlobStore, RedisConfig};
use cap_bus::nats::JetStreamOptions;
use cap_bus::{NatsBus, NatsOptions};
use cap_proto::JobState;
use cap_runtime::packets::{PacketConfig, Packets};
use cap_runtime::{Client, ClientConfig, Context, JobError, SubmitOptions, Worker};
use cap_safety::{GrpcClientOptions, GrpcSafetyClient, Kernel, policy::Policy, server};
use cap_scheduler::core::Config;
use cap_scheduler::{RedisJobStore, Scheduler, SchedulerOptions};
use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A private `nats-server -js` on a free port, killed on drop.
struct PrivateNats {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl PrivateNats {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("cap-sched-nats-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "nats-server",
        ]
        .into_iter()
        .find(|b| !b.starts_with('/') || std::path::Path::new(b).exists())
        .unwrap();
        let child = Command::new(bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-js",
                "-sd",
                dir.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("nats-server is required for this test (.ci/run installs it): {e}")
            });
        // From here the guard owns the process: it is killed and reaped on any exit.
        let guard = PrivateNats { child, port, dir };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return guard;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("private nats-server did not start");
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn bus(url: &str, ack_wait: Duration) -> NatsBus {
    let js = JetStreamOptions::default().ack_wait(ack_wait);
    NatsBus::connect(NatsOptions::new(url).jetstream(js))
        .await
        .unwrap()
}

async fn blob() -> RedisBlobStore {
    RedisBlobStore::connect(RedisConfig::new(redis_url()))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Redis is required at {} (.ci/run starts it): {e}",
                redis_url()
            )
        })
}

/// Counts executions per job id.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<HashMap<String, u32>>>);

impl Runs {
    fn add(&self, id: &str) {
        *self.0.lock().unwrap().entry(id.to_owned()).or_default() += 1;
    }
    fn get(&self, id: &str) -> u32 {
        self.0.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

/// An echo worker on `topic` that counts its executions per job (after `delay`).
async fn counting_worker(
    url: &str,
    id: &str,
    topic: &str,
    runs: &Runs,
    delay: Duration,
) -> cap_runtime::RunningWorker<NatsBus> {
    let r = runs.clone();
    Worker::builder(bus(url, Duration::from_secs(2)).await, blob().await)
        .id(id)
        .max_parallel(4)
        .heartbeat_interval(Duration::from_millis(200))
        .handler(topic, move |ctx: Context, v: serde_json::Value| {
            let r = r.clone();
            async move {
                r.add(ctx.job_id());
                tokio::time::sleep(delay).await;
                Ok::<_, JobError>(v)
            }
        })
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

async fn kernel_client() -> (server::ServerHandle, GrpcSafetyClient) {
    let policy = Policy::from_text("version: 1\nrules:\n  - id: no-x\n    match: { topics: [\"job.x.*\"] }\n    decision: deny\n", "p.yaml").unwrap();
    let opts = server::ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    let handle = server::spawn(Kernel::new(policy), opts).await.unwrap();
    let client = GrpcSafetyClient::connect(GrpcClientOptions::new(handle.url()))
        .await
        .unwrap();
    (handle, client)
}

fn start_scheduler(
    bus: NatsBus,
    safety: Arc<GrpcSafetyClient>,
    store: RedisJobStore,
) -> CancellationToken {
    let packets = Packets::new(bus, PacketConfig::new("scheduler-real"));
    let config = Config {
        heartbeat_interval: Duration::from_millis(300),
        ..Config::default()
    };
    let options = SchedulerOptions {
        config,
        tick: Duration::from_millis(50),
        ..Default::default()
    };
    let stop = CancellationToken::new();
    let run = Scheduler::new(packets, safety, store, options).run(stop.clone());
    tokio::spawn(async move {
        if let Err(e) = run.await {
            panic!("scheduler stopped: {e}");
        }
    });
    stop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real NATS (nats-server binary) and Redis: run by .ci/run"]
async fn full_path_on_nats_redis_and_the_grpc_kernel() {
    let nats = PrivateNats::start();
    let (_kernel, safety) = kernel_client().await;
    let prefix = format!("cap:test:{}:", cap_runtime::id::new_job_id());
    let store = RedisJobStore::connect(&redis_url(), prefix).await.unwrap();
    let stop = start_scheduler(
        bus(&nats.url(), Duration::from_secs(30)).await,
        Arc::new(safety),
        store,
    );

    let runs = Runs::default();
    let worker = counting_worker(&nats.url(), "w-real", "job.echo", &runs, Duration::ZERO).await;
    let client = Client::new(
        bus(&nats.url(), Duration::from_secs(30)).await,
        blob().await,
        ClientConfig::new("c-real"),
    )
    .await
    .unwrap();
    let mut handles = Vec::new();
    for i in 0..20 {
        handles.push(
            client
                .submit_with(
                    "job.echo",
                    &serde_json::json!({ "i": i }),
                    SubmitOptions::default(),
                )
                .await
                .unwrap(),
        );
    }
    for (i, h) in handles.iter_mut().enumerate() {
        let out: serde_json::Value = h.output().await.unwrap();
        assert_eq!(out["i"], i);
        assert_eq!(runs.get(h.job_id()), 1);
    }
    let mut denied = client
        .submit_with(
            "job.x.bad",
            &serde_json::json!({}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        denied.result().await.unwrap().status,
        JobState::Denied.status() as i32
    );
    worker.shutdown(Duration::from_secs(2)).await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real NATS (nats-server binary) and Redis: run by .ci/run"]
async fn a_scheduler_restart_loses_nothing_and_runs_nothing_twice() {
    let nats = PrivateNats::start();
    let (_kernel, safety) = kernel_client().await;
    let safety = Arc::new(safety);
    let prefix = format!("cap:test:{}:", cap_runtime::id::new_job_id());
    let store = RedisJobStore::connect(&redis_url(), prefix.clone())
        .await
        .unwrap();
    let stop = start_scheduler(
        bus(&nats.url(), Duration::from_secs(5)).await,
        safety.clone(),
        store,
    );

    let runs = Runs::default();
    let worker = counting_worker(
        &nats.url(),
        "w-restart",
        "job.work",
        &runs,
        Duration::from_millis(150),
    )
    .await;
    let client = Client::new(
        bus(&nats.url(), Duration::from_secs(30)).await,
        blob().await,
        ClientConfig::new("c-restart"),
    )
    .await
    .unwrap();
    let mut handles = Vec::new();
    for i in 0..30 {
        handles.push(
            client
                .submit_with(
                    "job.work",
                    &serde_json::json!({ "i": i }),
                    SubmitOptions::default(),
                )
                .await
                .unwrap(),
        );
    }
    // Stop the scheduler while jobs are queued, dispatched and running; start another.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let store = RedisJobStore::connect(&redis_url(), prefix).await.unwrap();
    let stop = start_scheduler(
        bus(&nats.url(), Duration::from_secs(5)).await,
        safety,
        store,
    );

    for h in handles.iter_mut() {
        let r = h
            .result_within(Duration::from_secs(60))
            .await
            .unwrap()
            .clone();
        assert_eq!(
            r.status,
            JobState::Succeeded.status() as i32,
            "{}",
            h.job_id()
        );
        assert_eq!(runs.get(h.job_id()), 1, "job {} ran once", h.job_id());
    }
    worker.shutdown(Duration::from_secs(2)).await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real NATS (nats-server binary) and Redis: run by .ci/run"]
async fn a_worker_killed_mid_job_is_redelivered_and_completes_once() {
    let nats = PrivateNats::start();
    let (_kernel, safety) = kernel_client().await;
    let prefix = format!("cap:test:{}:", cap_runtime::id::new_job_id());
    let store = RedisJobStore::connect(&redis_url(), prefix).await.unwrap();
    let stop = start_scheduler(
        bus(&nats.url(), Duration::from_secs(30)).await,
        Arc::new(safety),
        store,
    );

    // Worker A takes the job and hangs; its connection then dies without an ack.
    let started = Arc::new(tokio::sync::Notify::new());
    let s = started.clone();
    let doomed_bus = bus(&nats.url(), Duration::from_secs(2)).await;
    let doomed = Worker::builder(doomed_bus.clone(), blob().await)
        .id("w-doomed")
        .heartbeat_interval(Duration::from_millis(200))
        .handler("job.crash", move |_ctx: Context, _v: serde_json::Value| {
            let s = s.clone();
            async move {
                s.notify_one();
                std::future::pending::<()>().await;
                Ok::<serde_json::Value, JobError>(serde_json::json!("never"))
            }
        })
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = Client::new(
        bus(&nats.url(), Duration::from_secs(30)).await,
        blob().await,
        ClientConfig::new("c-crash"),
    )
    .await
    .unwrap();
    let mut job = client
        .submit_with(
            "job.crash",
            &serde_json::json!("payload"),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("worker A got the job");
    // The crash: the connection goes away with the job unacknowledged.
    use cap_bus::Bus;
    doomed_bus.close().await.ok();
    drop(doomed);

    let runs = Runs::default();
    let survivor = counting_worker(
        &nats.url(),
        "w-survivor",
        "job.crash",
        &runs,
        Duration::ZERO,
    )
    .await;
    let out: serde_json::Value = job.output().await.unwrap();
    assert_eq!(out, serde_json::json!("payload"));
    assert_eq!(runs.get(job.job_id()), 1, "completed once, by the survivor");
    assert_eq!(job.result().await.unwrap().worker_id, "w-survivor");
    survivor.shutdown(Duration::from_secs(2)).await;
    stop.cancel();
}
