//! `cap demo --jobs N --compare-observability`: the full path (client → scheduler →
//! safety → worker → client) with metrics and tracing on and off, alternately, in one
//! run; medians and ranges side by side, and the cost from the rounds' paired ratios
//! (see [`super::compare`]).
//!
//! "On" is everything an operator turns on: Prometheus metrics of the scheduler
//! ([`SchedulerMetrics`]), of the in-process kernel ([`cap_safety::KernelMetrics`]) and of
//! the worker ([`WorkerMetrics`]), the packet layers' counters exported, W3C trace
//! context headers on every packet, and the spans of every hop recorded by the
//! OpenTelemetry layer as `cap` ships it, with their cross-process links, handed to the
//! batch span processor and exported to a sink that counts and drops them (no collector
//! is needed). Every trace is sampled unless `OTEL_TRACES_SAMPLER` says otherwise. "Off"
//! is none of it: no metrics, no headers, spans disabled. Each run gets a fresh
//! scheduler, job store, blob store, worker and client; each run is checked to be what it claims
//! (an observed run exports at least one span per job, an unobserved one none).

use super::compare::{Paired, on_off_order, print_comparison, spread, summarize};
use super::fencing::{Cleanup, JobStores};
use super::{POLICY, POOLS, echo};
use crate::cmd::telemetry::Switch;
use anyhow::{Result, bail};
use cap_blob::BlobStore;
use cap_bus::Bus;
use cap_runtime::load::{self, LoadConfig, LoadReport};
use cap_runtime::metrics::{PacketCollector, Registry, WorkerMetrics};
use cap_runtime::packets::{PacketConfig, Packets};
use cap_runtime::{Client, ClientConfig, Worker};
use cap_safety::Kernel;
use cap_safety::policy::Policy;
use cap_scheduler::core::{Config, Pools};
use cap_scheduler::{JobStore, Scheduler, SchedulerMetrics, SchedulerOptions};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Runs the comparison: `rounds` × (on, off), the order alternating between rounds.
#[allow(clippy::too_many_arguments)]
pub async fn compare<B: Bus, S: BlobStore + Clone + 'static, J: JobStore>(
    bus: B,
    blobs: impl Fn() -> S,
    stores: JobStores<J>,
    jobs: u64,
    inflight: usize,
    rounds: usize,
    json: bool,
    switch: &Switch,
) -> Result<ExitCode> {
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let mut cfg = LoadConfig::new("job.demo.echo", jobs, inflight);
    cfg.direct = false;
    cfg.input = bytes::Bytes::from_static(br#"{"text":"hello"}"#);
    let mut warm = cfg.clone();
    warm.jobs = (jobs / 20).clamp(100, 2_000);
    switch.set(true);
    run_once(&bus, &blobs(), stores().await?, true, &warm).await?;
    let mut runs: Vec<(bool, LoadReport)> = Vec::new();
    let mut spans_on = 0u64;
    // Each round's (on, off) throughput and CPU time per job.
    let mut tput_rounds = Vec::with_capacity(rounds);
    let mut cpu_rounds = Vec::with_capacity(rounds);
    for round in 0..rounds {
        // [off, on] of this round: (jobs/s, CPU µs per job).
        let mut pair = [(0.0, 0.0); 2];
        for on in on_off_order(round) {
            switch.set(on);
            let before = switch.spans_exported();
            let cpu = cpu_time();
            let report = run_once(&bus, &blobs(), stores().await?, on, &cfg).await?;
            let cpu_per_job = (cpu_time() - cpu).as_secs_f64() * 1e6 / jobs as f64;
            // Each side must be what it claims: "on" exports every job's spans, "off" none.
            let spans = switch.spans_exported().saturating_sub(before);
            // Every job's spans when all traces are sampled; some when enough are.
            let ratio = crate::cmd::telemetry::sample_ratio();
            let expected = if ratio >= 1.0 {
                jobs
            } else {
                u64::from(jobs as f64 * ratio >= 20.0)
            };
            if on && spans < expected {
                bail!("an observed run of {jobs} jobs exported only {spans} spans");
            }
            if !on && spans > 0 {
                bail!("an unobserved run exported {spans} spans");
            }
            if !json {
                eprintln!(
                    "round {}: observability {:<3} {:>8.0} jobs/s, p50 {:.2} ms, p99 {:.2} ms, CPU {:.1} µs/job ({} failed, {:.1} spans/job)",
                    round + 1,
                    if on { "on" } else { "off" },
                    report.jobs_per_sec,
                    report.p50.as_secs_f64() * 1e3,
                    report.p99.as_secs_f64() * 1e3,
                    cpu_per_job,
                    report.failed,
                    spans as f64 / jobs as f64,
                );
            }
            if on {
                spans_on += spans;
            }
            pair[usize::from(on)] = (report.jobs_per_sec, cpu_per_job);
            runs.push((on, report));
        }
        tput_rounds.push((pair[1].0, pair[0].0));
        cpu_rounds.push((pair[1].1, pair[0].1));
    }
    switch.set(false);
    let side = |on: bool| {
        let v: Vec<&LoadReport> = runs.iter().filter(|r| r.0 == on).map(|r| &r.1).collect();
        summarize(&v)
    };
    let (on, off) = (side(true), side(false));
    let tput = Paired::of(&tput_rounds);
    let cpu = Paired::of(&cpu_rounds);
    let ratio = tput.median;
    let failed: u64 = runs.iter().map(|r| r.1.failed).sum();
    // Each side's median CPU time per job, from the rounds' pairs.
    let cpu_on = spread(cpu_rounds.iter().map(|p| p.0).collect())[1];
    let cpu_off = spread(cpu_rounds.iter().map(|p| p.1).collect())[1];
    if json {
        println!(
            "{}",
            serde_json::json!({
                "path": "client → scheduler → safety → worker → client",
                "jobs": jobs,
                "inflight": inflight,
                "rounds": rounds,
                "observability_on": on.to_json(),
                "observability_off": off.to_json(),
                "on_off_ratio": (ratio * 1e4).round() / 1e4,
                "throughput_cost": ((1.0 - ratio) * 1e4).round() / 1e4,
                "on_off_ratio_paired": tput.to_json(),
                "cpu_on_off_ratio_paired": cpu.to_json(),
                "trace_sample_ratio": crate::cmd::telemetry::sample_ratio(),
                "spans_per_job_on": spans_on as f64 / (jobs as f64 * rounds as f64),
                "cpu_us_per_job": { "on": (cpu_on * 10.0).round() / 10.0, "off": (cpu_off * 10.0).round() / 10.0 },
                "failed": failed,
            })
        );
    } else {
        print_comparison(
            "observability",
            "metrics and tracing",
            jobs,
            rounds,
            inflight,
            &on,
            &off,
            &tput,
        );
        println!(
            "  traces sampled: {:.4} (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG); {:.2} spans per job exported",
            crate::cmd::telemetry::sample_ratio(),
            spans_on as f64 / (jobs as f64 * rounds as f64),
        );
        let [c, lo, hi] = cpu.change_percent();
        println!(
            "  CPU time of the process per job (median): on {cpu_on:.1} µs, off {cpu_off:.1} µs; paired: {c:+.1} % (95 % CI {lo:+.1} % to {hi:+.1} %)"
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// CPU time this process has used so far, on all its threads.
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// One batch through a fresh scheduler, worker and client, observed or not.
async fn run_once<B: Bus, S: BlobStore + Clone + 'static, J: JobStore>(
    bus: &B,
    store: &S,
    (jobs, cleanup): (J, Cleanup),
    on: bool,
    cfg: &LoadConfig,
) -> Result<LoadReport> {
    let mut registry = Registry::default();
    let kernel = Kernel::new(Policy::from_text(POLICY, "demo/policy.yaml")?);
    if on {
        kernel.attach_metrics(cap_safety::KernelMetrics::register(&mut registry));
    }
    let options = SchedulerOptions {
        config: Config {
            retry_base: Duration::from_millis(50),
            ..Config::default()
        },
        pools: Pools::from_yaml(POOLS)?,
        tick: Duration::from_millis(20),
        ..Default::default()
    };
    let packets = Packets::new(
        bus.clone(),
        PacketConfig::new("demo-scheduler").trace_headers(on),
    );
    let mut scheduler = Scheduler::new(packets.clone(), Arc::new(kernel), jobs, options);
    let mut worker = Worker::builder(bus.clone(), store.clone())
        .id(format!("demo-worker-{}", cap_runtime::id::new_trace_id()))
        .max_parallel(256)
        .handler("job.demo.echo", echo);
    if on {
        let m = SchedulerMetrics::register(&mut registry, scheduler.stats());
        scheduler = scheduler.with_metrics(m);
        registry.register_collector(Box::new(PacketCollector::new(move || packets.stats())));
        worker = worker.metrics(Arc::new(WorkerMetrics::register(&mut registry)));
    }
    let stop = CancellationToken::new();
    let sched = tokio::spawn(scheduler.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let worker = worker.build()?.start().await?;
    let client = Client::new(
        bus.clone(),
        store.clone(),
        ClientConfig::new(format!("demo-client-{}", cap_runtime::id::new_trace_id())),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = load::run(&client, cfg, |_| {}).await;
    if on {
        // What a scrape would read: the counters must have seen the batch.
        let text = cap_runtime::metrics::encode(&registry);
        let done = cap_runtime::metrics::sample(
            &text,
            "cap_scheduler_jobs_completed_total{status=\"SUCCEEDED\"}",
        )
        .unwrap_or(0.0);
        tracing::debug!(succeeded = done, "metrics of the run");
        if done < 1.0 {
            bail!("the scheduler's metrics saw no job of the batch");
        }
    }
    client.close();
    worker.shutdown(Duration::from_secs(2)).await;
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
