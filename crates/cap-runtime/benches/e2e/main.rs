//! End-to-end jobs/s and submit→result latency at 64 jobs in flight, side by side:
//!
//! 1. in-memory bus and blob store (our worker and client in one process);
//! 2. NATS + Redis (core NATS, our worker and client in one process);
//! 3. a cap-sdk-python 2.10.0 `Agent` echo worker (tests/peer/echo_agent.py) on NATS +
//!    Redis, driven by the same client (needs `CAP_INTEROP_PYTHON`);
//! 4. the wire floor ([`floor`]): the NATS and Redis operations of a job done with the
//!    raw async-nats and redis clients and no CAP logic: once with cap-rs's operations
//!    (our overhead is the gap to it), once with the protocol's minimum (no start
//!    report), the most any implementation on these client libraries reaches here.
//!
//! ```text
//! CAP_INTEROP_PYTHON=/path/to/python cargo bench -p cap-runtime --bench e2e
//! ```
//!
//! `CAP_E2E_JOBS` (default 20000) jobs per run (the in-memory row runs five times as
//! many, the Python row a fifth, at least 2000), after a warm-up; `CAP_E2E_ROWS` picks
//! rows by their JSON names (comma-separated). Each row also reports the CPU time per
//! job of this process, `nats-server` and `redis-server` ([`cpu`]). Rows whose services are missing are reported as
//! skipped. Timing stops when the JobResult arrives (outputs are not read).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod cpu;
mod floor;

/// The allocator of the `cap` binary, so the rows measure what `cap bench e2e` runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cap_blob::{BlobStore, MemoryBlobStore, RedisBlobStore, RedisConfig};
use cap_bus::{Bus, MemoryBus, NatsBus, NatsOptions};
use cap_runtime::load::{self, LoadConfig, LoadReport};
use cap_runtime::{Client, ClientConfig, Context, JobError, Worker};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const INFLIGHT: usize = 64;

/// Lifetime of the contexts and results the rows store, so a real Redis does not keep
/// every benchmark job for days (a full keyspace slows Redis down for later runs).
const BLOB_TTL: Duration = Duration::from_secs(10 * 60);

fn jobs() -> u64 {
    std::env::var("CAP_E2E_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// Whether the row named `name` runs: all do unless `CAP_E2E_ROWS` lists some
/// (comma-separated JSON row names: `memory,nats_redis,python_agent,wire_floor_same_ops,
/// wire_floor_minimum`).
fn selected(name: &str) -> bool {
    std::env::var("CAP_E2E_ROWS").map_or(true, |rows| rows.split(',').any(|r| r.trim() == name))
}

async fn echo(_ctx: Context, v: serde_json::Value) -> Result<serde_json::Value, JobError> {
    Ok(v)
}

async fn drive<B: Bus, S: BlobStore + Clone + 'static>(
    bus: B,
    store: S,
    topic: &str,
    jobs: u64,
) -> Measured {
    let client = Client::new(
        bus,
        store,
        ClientConfig::default().context_ttl(Some(BLOB_TTL)),
    )
    .await
    .unwrap();
    let mut cfg = LoadConfig::new(topic, 500, INFLIGHT);
    cfg.read_output = false;
    load::run(&client, &cfg, |_| {}).await.unwrap();
    cfg.jobs = jobs;
    let meter = cpu::Meter::start();
    let report = load::run(&client, &cfg, |_| {}).await.unwrap();
    (report, meter.per_job(jobs))
}

/// A row's report and its CPU per job.
type Measured = (LoadReport, cpu::PerJob);

async fn ours<B: Bus, S: BlobStore + Clone + 'static>(bus: B, store: S, jobs: u64) -> Measured {
    let topic = format!("job.bench-{}", &cap_runtime::id::new_trace_id()[..8]);
    let w = Worker::builder(bus.clone(), store.clone())
        .max_parallel(INFLIGHT)
        .result_ttl(Some(BLOB_TTL))
        .handler(topic.clone(), echo)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let r = drive(bus, store, &topic, jobs).await;
    w.shutdown(Duration::from_secs(5)).await;
    r
}

async fn services() -> Result<(NatsBus, RedisBlobStore), String> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let bus = NatsBus::connect(
        NatsOptions::new(&url)
            .name("cap-e2e-bench")
            .without_jetstream(),
    )
    .await
    .map_err(|e| format!("NATS: {e}"))?;
    let store = RedisBlobStore::connect(RedisConfig::from_env())
        .await
        .map_err(|e| format!("Redis: {e}"))?;
    Ok((bus, store))
}

async fn python(jobs: u64) -> Result<Measured, String> {
    let py = std::env::var("CAP_INTEROP_PYTHON")
        .map_err(|_| "CAP_INTEROP_PYTHON not set".to_string())?;
    let (bus, store) = services().await?;
    let topic = format!("job.pybench-{}", &cap_runtime::id::new_trace_id()[..8]);
    let nats = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peer/echo_agent.py");
    let mut child = tokio::process::Command::new(py)
        .args([script, &nats, &redis, &topic, "py-bench-agent"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("python: {e}"))?;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
        Ok(Ok(Some(l))) if l == "READY" => {}
        other => return Err(format!("the Python agent did not start: {other:?}")),
    }
    let r = drive(bus.clone(), store, &topic, jobs).await;
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    bus.close().await.ok();
    Ok(r)
}

/// Payload sizes of the real packets of one echo job.
fn real_sizes() -> floor::Sizes {
    use cap_proto::v1;
    let id = cap_runtime::id::new_job_id();
    let trace = cap_runtime::id::new_trace_id();
    let encoded = |sender: &str, p: v1::bus_packet::Payload| {
        let packet = v1::BusPacket::new(&trace, sender, cap_runtime::packets::now(), p);
        cap_proto::packet::encode(&packet).len()
    };
    let client = cap_runtime::id::new_component_id("client");
    let worker = cap_runtime::id::new_component_id("worker");
    floor::Sizes {
        request: encoded(
            &client,
            v1::JobRequest {
                job_id: id.clone(),
                topic: "job.bench-00000000".into(),
                context_ptr: format!("redis://ctx:{id}"),
                ..Default::default()
            }
            .into(),
        ),
        progress: Some(encoded(
            &worker,
            v1::JobProgress {
                job_id: id.clone(),
                status: v1::JobStatus::Running as i32,
                message: "started".into(),
                ..Default::default()
            }
            .into(),
        )),
        result: encoded(
            &worker,
            v1::JobResult {
                job_id: id.clone(),
                status: v1::JobStatus::Succeeded as i32,
                result_ptr: format!("redis://res:{id}"),
                worker_id: worker.clone(),
                execution_ms: 1,
                ..Default::default()
            }
            .into(),
        ),
    }
}

/// The wire floor, with (cap-rs's operations) or without (the protocol's minimum) the
/// start report.
async fn wire_floor(jobs: u64, progress: bool) -> Result<Measured, String> {
    let nats = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let mut sizes = real_sizes();
    if !progress {
        sizes.progress = None;
    }
    floor::run(&nats, &redis, 500, INFLIGHT, sizes).await?;
    let meter = cpu::Meter::start();
    let report = floor::run(&nats, &redis, jobs, INFLIGHT, sizes).await?;
    Ok((report, meter.per_job(jobs)))
}

fn row(name: &str, r: &Result<Measured, String>) {
    match r {
        Ok((r, cpu)) => {
            println!(
                "{name:<34} {:>10.0} {:>10.3} {:>10.3} {:>10.3}   {}",
                r.jobs_per_sec,
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3,
                r.max.as_secs_f64() * 1e3,
                cpu.describe()
            );
        }
        Err(e) => println!("{name:<34} skipped: {e}"),
    }
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench` absent: stay quick then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let n = jobs();
        let skipped = || Err("not selected (CAP_E2E_ROWS)".to_string());
        let mem = if selected("memory") {
            Ok(ours(
                MemoryBus::new(),
                MemoryBlobStore::emulating_redis(Default::default()),
                n * 5,
            )
            .await)
        } else {
            skipped()
        };
        let real = if !selected("nats_redis") {
            skipped()
        } else {
            match services().await {
                Ok((bus, store)) => {
                    let r = ours(bus.clone(), store, n).await;
                    bus.close().await.ok();
                    Ok(r)
                }
                Err(e) => Err(e),
            }
        };
        let py = if selected("python_agent") {
            python((n / 5).max(2000)).await
        } else {
            skipped()
        };
        let wire_same = if selected("wire_floor_same_ops") {
            wire_floor(n, true).await
        } else {
            skipped()
        };
        let wire_min = if selected("wire_floor_minimum") {
            wire_floor(n, false).await
        } else {
            skipped()
        };
        println!("end to end, {INFLIGHT} jobs in flight, submit→result");
        println!(
            "{:<34} {:>10} {:>10} {:>10} {:>10}   CPU µs/job: this process/nats/redis",
            "", "jobs/s", "p50 ms", "p99 ms", "max ms"
        );
        row("cap-rs in-memory", &mem);
        row("cap-rs NATS + Redis", &real);
        row("cap-sdk-python Agent, NATS + Redis", &py);
        row("wire floor, cap-rs's operations", &wire_same);
        row("wire floor, protocol minimum", &wire_min);
        if let (Ok((r, _)), Ok((p, _))) = (&real, &py) {
            println!(
                "NATS+Redis vs Python: {:.1}x jobs/s, p99 {:.2}x",
                r.jobs_per_sec / p.jobs_per_sec,
                r.p99.as_secs_f64() / p.p99.as_secs_f64()
            );
        }
        if let (Ok((w, _)), Ok((p, _))) = (&wire_min, &py) {
            println!(
                "wire floor (protocol minimum) vs Python: {:.1}x jobs/s, p99 {:.2}x: the most any client library pair reaches here",
                w.jobs_per_sec / p.jobs_per_sec,
                w.p99.as_secs_f64() / p.p99.as_secs_f64()
            );
        }
        if let (Ok((r, _)), Ok((w, _))) = (&real, &wire_same) {
            println!(
                "NATS+Redis vs the wire floor of the same operations: {:.2}x jobs/s",
                r.jobs_per_sec / w.jobs_per_sec
            );
        }
        for (name, r) in [
            ("memory", &mem),
            ("nats_redis", &real),
            ("python_agent", &py),
            ("wire_floor_same_ops", &wire_same),
            ("wire_floor_minimum", &wire_min),
        ] {
            if let Ok((r, cpu)) = r {
                let mut v = r.to_json();
                v["row"] = name.into();
                v["cpu_us_per_job"] = serde_json::json!({
                    "this_process": cpu.own,
                    "nats_server": cpu.nats,
                    "redis_server": cpu.redis,
                });
                println!("{v}");
            }
        }
    });
}
