//! `cap demo --jobs N --compare-fencing`: the scheduler's full path (client → scheduler
//! → safety → worker → client) with dispatch fencing on and off, alternately, in one
//! run; medians and ranges side by side, and the cost from the rounds' paired ratios
//! (see [`super::compare`]).
//!
//! "Off" is [`SchedulerOptions::fencing`] `false`: dispatches and cancels go out
//! without a `DispatchIdentity` (the worker falls back to its job-id dedupe), no
//! dispatch receipt is kept (one Redis write per dispatch on the real services), nothing
//! is withdrawn, and reports are matched to the attempt in flight by job id and sender.
//! Each run gets a fresh scheduler and job store; the worker and the client stay.

use super::compare::{Paired, Summary, on_off_order, print_comparison, summarize};
use super::{POLICY, POOLS, echo};
use anyhow::{Result, bail};
use cap_blob::BlobStore;
use cap_bus::Bus;
use cap_runtime::load::{self, LoadConfig, LoadReport};
use cap_runtime::packets::{PacketConfig, Packets};
use cap_runtime::{Client, ClientConfig, RunningWorker, Worker};
use cap_safety::Kernel;
use cap_safety::policy::Policy;
use cap_scheduler::core::{Config, Pools};
use cap_scheduler::{JobStore, Scheduler, SchedulerOptions};
use futures_util::future::BoxFuture;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Removes what a run left in its job store.
pub type Cleanup = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// Makes a fresh job store for each run, and what cleans it up afterwards.
pub type JobStores<J> = Box<dyn Fn() -> BoxFuture<'static, Result<(J, Cleanup)>> + Send + Sync>;

/// Deletes the keys under `prefix` in the Redis at `url` (what a run's job store left).
pub async fn purge_redis(url: String, prefix: String) {
    let deleted = async {
        let client = redis::Client::open(url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut cursor: u64 = 0;
        let mut n = 0usize;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                n += keys.len();
                let _: () = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await?;
            }
            if next == 0 {
                return Ok::<usize, redis::RedisError>(n);
            }
            cursor = next;
        }
    };
    match deleted.await {
        Ok(n) => tracing::debug!(keys = n, "demo job store removed"),
        Err(e) => {
            tracing::warn!(error = %e, prefix = %prefix, "removing the demo job store failed")
        }
    }
}

/// One measured run.
struct Run {
    fencing: bool,
    report: LoadReport,
}

/// Runs the comparison: `rounds` × (on, off), the order alternating between rounds.
pub async fn compare<B: Bus, S: BlobStore + Clone + 'static, J: JobStore>(
    bus: B,
    store: S,
    stores: JobStores<J>,
    jobs: u64,
    inflight: usize,
    rounds: usize,
    json: bool,
) -> Result<ExitCode> {
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let worker = Worker::builder(bus.clone(), store.clone())
        .id("demo-worker")
        .max_parallel(256)
        .handler("job.demo.echo", echo)
        .build()?
        .start()
        .await?;
    let client = Client::new(bus.clone(), store, ClientConfig::new("demo-client")).await?;
    let mut cfg = LoadConfig::new("job.demo.echo", jobs, inflight);
    cfg.direct = false;
    cfg.input = bytes::Bytes::from_static(br#"{"text":"hello"}"#);
    // A short warm-up (connections, JetStream consumers, caches), not measured.
    let mut warm = cfg.clone();
    warm.jobs = (jobs / 20).clamp(100, 2_000);
    run_once(&bus, &worker, &client, stores().await?, true, &warm).await?;
    let mut runs = Vec::new();
    for round in 0..rounds {
        for fencing in on_off_order(round) {
            let report = run_once(&bus, &worker, &client, stores().await?, fencing, &cfg).await?;
            if !json {
                eprintln!(
                    "round {}: fencing {:<3} {:>8.0} jobs/s, p50 {:.2} ms, p99 {:.2} ms ({} failed)",
                    round + 1,
                    if fencing { "on" } else { "off" },
                    report.jobs_per_sec,
                    report.p50.as_secs_f64() * 1e3,
                    report.p99.as_secs_f64() * 1e3,
                    report.failed
                );
            }
            runs.push(Run { fencing, report });
        }
    }
    worker.shutdown(Duration::from_secs(2)).await;
    let on = summary(&runs, true);
    let off = summary(&runs, false);
    let tput = Paired::of(&pairs(&runs));
    let cost = 1.0 - tput.median;
    let failed: u64 = runs.iter().map(|r| r.report.failed).sum();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "path": "client → scheduler → safety → worker → client",
                "jobs": jobs,
                "inflight": inflight,
                "rounds": rounds,
                "fencing_on": on.to_json(),
                "fencing_off": off.to_json(),
                "throughput_cost": (cost * 1e4).round() / 1e4,
                "on_off_ratio_paired": tput.to_json(),
                "failed": failed,
            })
        );
    } else {
        print_comparison(
            "fencing", "fencing", jobs, rounds, inflight, &on, &off, &tput,
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Each round's (on, off) throughput.
fn pairs(runs: &[Run]) -> Vec<(f64, f64)> {
    runs.chunks_exact(2)
        .map(|r| {
            let (on, off) = if r[0].fencing {
                (&r[0], &r[1])
            } else {
                (&r[1], &r[0])
            };
            (on.report.jobs_per_sec, off.report.jobs_per_sec)
        })
        .collect()
}

/// One batch through a fresh scheduler with `fencing`.
async fn run_once<B: Bus, S: BlobStore + 'static, J: JobStore>(
    bus: &B,
    worker: &RunningWorker<B>,
    client: &Client<B, S>,
    (jobs, cleanup): (J, Cleanup),
    fencing: bool,
    cfg: &LoadConfig,
) -> Result<LoadReport> {
    let kernel = Kernel::new(Policy::from_text(POLICY, "demo/policy.yaml")?);
    let options = SchedulerOptions {
        config: Config {
            retry_base: Duration::from_millis(50),
            ..Config::default()
        },
        pools: Pools::from_yaml(POOLS)?,
        tick: Duration::from_millis(20),
        fencing,
        ..Default::default()
    };
    let scheduler = Scheduler::new(
        Packets::new(bus.clone(), PacketConfig::new("demo-scheduler")),
        Arc::new(kernel),
        jobs,
        options,
    );
    let stop = CancellationToken::new();
    let sched = tokio::spawn(scheduler.run(stop.clone()));
    // A fresh scheduler and store: the worker announces itself again, so every run
    // dispatches the same way (directly to it).
    tokio::time::sleep(Duration::from_millis(100)).await;
    worker.announce().await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = load::run(client, cfg, |_| {}).await;
    stop.cancel();
    let stopped = sched.await;
    cleanup().await;
    let report = report?;
    match stopped {
        Ok(Ok(())) => Ok(report),
        Ok(Err(e)) => bail!("scheduler failed: {e}"),
        Err(e) => bail!("scheduler task failed: {e}"),
    }
}

fn summary(runs: &[Run], fencing: bool) -> Summary {
    let side: Vec<&LoadReport> = runs
        .iter()
        .filter(|r| r.fencing == fencing)
        .map(|r| &r.report)
        .collect();
    summarize(&side)
}
