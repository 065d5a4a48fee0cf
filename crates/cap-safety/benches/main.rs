//! Safety Kernel benchmarks, side by side in one run:
//! - in-process `Policy::evaluate` decisions/s on the 50-rule sample policy, on one thread
//!   and on every core;
//! - gRPC `Check` requests/s with p50/p99 latency, 64 concurrent callers on loopback
//!   against an in-process server (client and server share the machine's cores).
//!
//! `cargo bench -p cap-safety --bench main`. Environment: `CAP_BENCH_SECS` (measured
//! duration, default 5), `CAP_BENCH_CONCURRENCY` (callers, default 64),
//! `CAP_BENCH_CONNECTIONS` (HTTP/2 connections, default 2), `CAP_BENCH_ONLY`
//! (`in-process` or `grpc`), `CAP_BENCH_JSON=1` (print JSON).

use cap_safety::bench::{self, BenchOptions, BenchReport};
use cap_safety::policy::Policy;
use std::time::Duration;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("{what}: {e}");
    std::process::exit(1)
}

fn main() {
    // `cargo test --benches` runs bench targets with `--test`: do a short smoke run.
    let smoke = std::env::args().any(|a| a == "--test");
    let secs: f64 = std::env::var("CAP_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if smoke { 0.2 } else { 5.0 });
    let duration = Duration::from_secs_f64(secs);
    let defaults = BenchOptions::default();
    let options = BenchOptions {
        duration,
        warmup: duration.mul_f64(0.1).min(Duration::from_millis(500)),
        concurrency: env_usize("CAP_BENCH_CONCURRENCY", defaults.concurrency),
        connections: env_usize("CAP_BENCH_CONNECTIONS", defaults.connections),
        ..defaults
    };
    let only = std::env::var("CAP_BENCH_ONLY").unwrap_or_default();

    let yaml = bench::sample_policy_yaml(50);
    let policy = Policy::from_text(&yaml, "<sample>").unwrap_or_else(|e| fail("sample policy", e));
    let requests = bench::sample_requests();
    let mut reports: Vec<(&str, BenchReport)> = Vec::new();
    if only != "grpc" {
        reports.push((
            "in_process_1_thread",
            bench::in_process(&policy, &requests, 1, duration),
        ));
        reports.push((
            "in_process",
            bench::in_process(&policy, &requests, options.threads, duration),
        ));
    }
    if only != "in-process" {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| fail("tokio runtime", e));
        let grpc = runtime
            .block_on(grpc(&yaml, &options))
            .unwrap_or_else(|e| fail("gRPC bench", e));
        reports.push(("grpc", grpc));
    }

    if std::env::var_os("CAP_BENCH_JSON").is_some() {
        let map: serde_json::Map<String, serde_json::Value> = reports
            .iter()
            .map(|(k, r)| ((*k).to_owned(), serde_json::to_value(r).unwrap_or_default()))
            .collect();
        println!("{:#}", serde_json::Value::Object(map));
    } else {
        for (_, r) in &reports {
            println!("{}", r.line());
        }
    }
}

async fn grpc(yaml: &str, options: &BenchOptions) -> Result<BenchReport, cap_safety::Error> {
    let kernel = cap_safety::Kernel::from_text(yaml, "<sample>", Default::default())?;
    let server = cap_safety::server::spawn(
        kernel,
        cap_safety::server::ServeOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            ..Default::default()
        },
    )
    .await?;
    let report = bench::grpc(&server.url(), bench::sample_requests(), options).await;
    server.shutdown().await?;
    report
}
