//! Safety Kernel benchmarks, side by side in one run:
//! - in-process `Policy::evaluate` decisions/s on the 50-rule sample policy (1 thread and
//!   all cores);
//! - gRPC `Check` requests/s with p50/p99 latency, 64 concurrent callers on loopback
//!   against an in-process server.
//!
//! `cargo bench -p cap-safety --bench main` (set `CAP_BENCH_SECS` to change the measured
//! duration, default 5; `CAP_BENCH_JSON=1` prints JSON).

use cap_safety::bench::{self, BenchOptions};
use cap_safety::policy::Policy;
use std::time::Duration;

fn main() {
    // `cargo test --benches` runs bench targets with `--test`: do a short smoke run.
    let smoke = std::env::args().any(|a| a == "--test");
    let secs: f64 = std::env::var("CAP_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if smoke { 0.2 } else { 5.0 });
    let duration = Duration::from_secs_f64(secs);
    let options = BenchOptions {
        duration,
        warmup: duration.mul_f64(0.1).min(Duration::from_millis(500)),
        ..BenchOptions::default()
    };

    let yaml = bench::sample_policy_yaml(50);
    let policy = match Policy::from_text(&yaml, "<sample>") {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sample policy invalid: {e}");
            std::process::exit(1);
        }
    };
    let requests = bench::sample_requests();
    let single = bench::in_process(&policy, &requests, 1, duration);
    let multi = bench::in_process(&policy, &requests, options.threads, duration);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let grpc = match runtime.block_on(bench::run(
        bench::BenchTarget::Sample,
        &BenchOptions {
            threads: 1,
            duration: if smoke {
                duration
            } else {
                duration.min(Duration::from_millis(1))
            },
            ..options.clone()
        },
    )) {
        Ok(s) => s.grpc,
        Err(e) => {
            eprintln!("gRPC bench failed: {e}");
            std::process::exit(1);
        }
    };
    let _ = grpc;
    // Measure gRPC with the full duration (bench::run measured in-process briefly above
    // only to start the server the same way the CLI does).
    let grpc = match runtime.block_on(grpc_only(&yaml, &options)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gRPC bench failed: {e}");
            std::process::exit(1);
        }
    };

    if std::env::var_os("CAP_BENCH_JSON").is_some() {
        let v =
            serde_json::json!({ "in_process_1_thread": single, "in_process": multi, "grpc": grpc });
        println!("{v:#}");
    } else {
        println!("{}", single.line());
        println!("{}", multi.line());
        println!("{}", grpc.line());
    }
}

async fn grpc_only(
    yaml: &str,
    options: &BenchOptions,
) -> Result<bench::BenchReport, cap_safety::Error> {
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
