//! `cap bench e2e`: an echo worker and a client, end to end, with jobs/s and
//! p50/p99/max submit→result latency (JSON with `--json`, a progress bar on a terminal).
//! Also the `cap bench` command group, which adds `e2e` to the benchmarks of `bench.rs`.

use super::worker::{init_logging, runtime};
use anyhow::{Context as _, Result, bail};
use cap_blob::{BlobStore, MemoryBlobStore, RedisBlobStore, RedisConfig};
use cap_bus::{Bus, MemoryBus, NatsBus, NatsOptions};
use cap_runtime::load::{self, LoadConfig, LoadReport};
use cap_runtime::{Client, ClientConfig, Context, JobError, Worker};
use cap_sign::{KeyRing, PrivateKey, TrustMode, TrustPolicy};
use clap::{Args, Subcommand};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The benchmarks (`cap bench …`).
#[derive(Subcommand)]
pub enum BenchCommands {
    #[command(flatten)]
    /// The codec and signature benchmarks.
    Other(super::bench::BenchCommand),
    /// End to end: an echo worker and a client over a bus and a blob store.
    E2e(E2eArgs),
}

/// Arguments of `cap bench e2e`.
#[derive(Args)]
pub struct E2eArgs {
    /// NATS server URL (default: `NATS_URL`, else nats://127.0.0.1:4222).
    #[arg(long, conflicts_with = "embedded")]
    pub nats: Option<String>,
    /// Redis URL (default: `REDIS_URL`, else redis://127.0.0.1:6379/0).
    #[arg(long, conflicts_with = "embedded")]
    pub redis: Option<String>,
    /// In-process bus and blob store (no servers).
    #[arg(long)]
    pub embedded: bool,
    /// Jobs to run (after 200 warm-up jobs).
    #[arg(long, default_value_t = 10_000)]
    pub jobs: u64,
    /// Jobs in flight at once.
    #[arg(long, default_value_t = 64)]
    pub inflight: usize,
    /// Sign every packet and require signatures on both sides.
    #[arg(long)]
    pub signed: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Topic (default `job.bench-<random>`).
    #[arg(long)]
    pub topic: Option<String>,
    /// Drive an echo worker already serving `--topic` (for example a cap-sdk-python
    /// Agent) instead of starting one.
    #[arg(long, requires = "topic")]
    pub external: bool,
    /// Milliseconds each job sleeps in the worker (memory tests with many jobs in flight).
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Submit through a scheduler (`sys.job.submit`) instead of straight to the topic:
    /// with `--external`, drives a running `cap scheduler` and worker (the full path).
    #[arg(long)]
    pub through_scheduler: bool,
    /// Keep JetStream on for the pool subject (default: core NATS, like the official SDKs).
    #[arg(long)]
    pub jetstream: bool,
    /// Also read every job's output through its result pointer (by default the clock
    /// stops when the JobResult arrives).
    #[arg(long)]
    pub read_output: bool,
}

/// Lifetime of the contexts and results a run stores: long enough for any run, short
/// enough that a real Redis is not left holding every benchmark job for days (the
/// store's defaults are 6 hours and 7 days).
const BENCH_BLOB_TTL: Duration = Duration::from_secs(10 * 60);

/// Runs a benchmark.
pub fn run(cmd: BenchCommands) -> Result<ExitCode> {
    match cmd {
        BenchCommands::Other(c) => super::bench::run(c),
        BenchCommands::E2e(a) => {
            if std::env::var_os("CAP_LOG").is_some() {
                init_logging();
            }
            runtime()?.block_on(e2e(a))
        }
    }
}

async fn e2e(a: E2eArgs) -> Result<ExitCode> {
    if a.jobs == 0 || a.inflight == 0 {
        bail!("--jobs and --inflight must be at least 1");
    }
    if a.embedded {
        let bus = MemoryBus::new();
        let store = MemoryBlobStore::emulating_redis(Default::default());
        return bench(
            bus.clone(),
            store,
            &a,
            "embedded (in-memory bus and blob store)",
        )
        .await;
    }
    let nats = a
        .nats
        .clone()
        .or_else(|| std::env::var("NATS_URL").ok())
        .unwrap_or_else(|| cap_bus::nats::DEFAULT_URL.to_owned());
    let redis = a
        .redis
        .clone()
        .or_else(|| std::env::var("REDIS_URL").ok())
        .unwrap_or_else(|| cap_blob::DEFAULT_REDIS_URL.to_owned());
    let mut opts = NatsOptions::new(&nats).name("cap-bench");
    if let (true, Some(topic)) = (a.jetstream, &a.topic) {
        let js = cap_bus::nats::JetStreamOptions::new("CAP_BENCH", [topic.clone()]);
        opts = opts.jetstream(js);
    } else {
        opts = opts.without_jetstream();
    }
    let bus = NatsBus::connect(opts)
        .await
        .with_context(|| format!("connecting to NATS at {nats}"))?;
    let store = RedisBlobStore::connect(RedisConfig::new(redis.clone()))
        .await
        .with_context(|| format!("connecting to Redis at {redis}"))?;
    let label = format!("NATS {nats} + Redis {}", store.location());
    let code = bench(bus.clone(), store, &a, &label).await;
    if a.jetstream {
        let _ = bus.delete_stream().await;
    }
    let _ = bus.close().await;
    code
}

async fn bench<B: Bus, S: BlobStore + Clone + 'static>(
    bus: B,
    store: S,
    a: &E2eArgs,
    label: &str,
) -> Result<ExitCode> {
    let topic = a
        .topic
        .clone()
        .unwrap_or_else(|| format!("job.bench-{}", &cap_runtime::id::new_trace_id()[..8]));
    let worker_key = PrivateKey::generate();
    let client_key = PrivateKey::generate();
    let worker_id = cap_runtime::id::new_component_id("bench-worker");
    let client_id = cap_runtime::id::new_component_id("bench-client");
    let mut client_config = ClientConfig::new(client_id.clone())
        .result_timeout(Duration::from_secs(60))
        .context_ttl(Some(BENCH_BLOB_TTL));
    if a.signed {
        let mut ring = KeyRing::new();
        ring.add(worker_id.clone(), worker_key.public_key());
        client_config = client_config
            .signer(Arc::new(client_key.clone()))
            .trust(TrustPolicy::new(TrustMode::Require, ring));
    }
    let worker = if a.external {
        None
    } else {
        let delay = Duration::from_millis(a.delay_ms);
        let mut b = Worker::builder(bus.clone(), store.clone())
            .id(worker_id.clone())
            .max_parallel(a.inflight.max(64))
            .result_ttl(Some(BENCH_BLOB_TTL))
            .handler(
                topic.clone(),
                move |_ctx: Context, v: serde_json::Value| async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    Ok::<_, JobError>(v)
                },
            );
        if a.signed {
            let mut ring = KeyRing::new();
            ring.add(client_id.clone(), client_key.public_key());
            b = b
                .signer(Arc::new(worker_key.clone()))
                .trust(TrustPolicy::new(TrustMode::Require, ring));
        }
        Some(b.build()?.start().await?)
    };
    let client = Client::new(bus, store, client_config).await?;

    let mut cfg = LoadConfig::new(topic.clone(), 200.min(a.jobs), a.inflight);
    cfg.timeout = Duration::from_secs(60);
    cfg.direct = !a.through_scheduler;
    cfg.read_output = a.read_output;
    load::run(&client, &cfg, |_| {}).await.context("warm-up")?;

    cfg.jobs = a.jobs;
    let bar = (!a.json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(a.jobs);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {bar:40} {pos}/{len} jobs {per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let report = load::run(&client, &cfg, |n| {
        if let Some(b) = &bar
            && n % 64 == 0
        {
            b.set_position(n);
        }
    })
    .await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let rss = load::rss_bytes();
    if let Some(w) = worker {
        w.shutdown(Duration::from_secs(5)).await;
    }
    print_report(a, label, &topic, &report, rss);
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_report(a: &E2eArgs, label: &str, topic: &str, r: &LoadReport, rss: Option<(u64, u64)>) {
    let mib = |b: u64| (b as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0;
    if a.json {
        let mut v = r.to_json();
        v["backend"] = label.into();
        v["topic"] = topic.into();
        v["inflight"] = a.inflight.into();
        v["signed"] = a.signed.into();
        v["worker"] = if a.external { "external" } else { "cap-rs" }.into();
        v["read_output"] = a.read_output.into();
        if let Some((peak, _)) = rss {
            v["process_peak_rss_mib"] = mib(peak).into();
        }
        println!("{v}");
        return;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("backend   {label}");
    println!(
        "jobs      {} ok, {} failed, {} in flight{}",
        r.succeeded,
        r.failed,
        a.inflight,
        if a.signed { ", signed" } else { "" }
    );
    println!(
        "rate      {:.0} jobs/s over {:.2} s",
        r.jobs_per_sec,
        r.elapsed.as_secs_f64()
    );
    println!(
        "latency   p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        ms(r.p50),
        ms(r.p99),
        ms(r.max)
    );
    if let Some((peak, _)) = rss {
        println!("memory    process peak RSS {} MiB", mib(peak));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn args(signed: bool) -> E2eArgs {
        E2eArgs {
            nats: None,
            redis: None,
            embedded: true,
            jobs: 300,
            inflight: 16,
            signed,
            json: true,
            topic: None,
            external: false,
            delay_ms: 0,
            through_scheduler: false,
            jetstream: false,
            read_output: true,
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn embedded_e2e_runs_plain_and_signed() {
        assert_eq!(e2e(args(false)).await.unwrap(), ExitCode::SUCCESS);
        assert_eq!(e2e(args(true)).await.unwrap(), ExitCode::SUCCESS);
        let mut zero = args(false);
        zero.jobs = 0;
        assert!(e2e(zero).await.is_err());
    }
}
