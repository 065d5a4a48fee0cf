//! `cap bench …`: load tools that print rates and latencies (JSON with `--json`).

use anyhow::Result;
use cap_sign::{PrivateKey, packet};
use clap::{Args, Subcommand};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Sign/s and verify/s for a typical signed JobRequest.
    Sign(SignBenchArgs),
    /// Safety Kernel decisions: requests/s and p50/p99, in process or over gRPC.
    Safety(super::safety::BenchSafetyArgs),
}

/// Arguments of `cap bench sign`.
#[derive(Args)]
pub struct SignBenchArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Sign(a) => sign(a),
        BenchCommand::Safety(a) => super::worker::runtime()?.block_on(super::safety::bench(a)),
    }
}

/// Runs `op` repeatedly for `secs` seconds; returns operations per second.
fn rate(secs: f64, mut op: impl FnMut() -> Result<()>) -> Result<f64> {
    let budget = Duration::from_secs_f64(secs.max(0.05));
    // Warm up.
    for _ in 0..50 {
        op()?;
    }
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < budget {
        for _ in 0..32 {
            op()?;
        }
        n += 32;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn sign(a: SignBenchArgs) -> Result<ExitCode> {
    let key = PrivateKey::generate();
    let public = key.public_key();
    let template = cap_sign::bench_support::typical_job_request();
    let unsigned = cap_proto::packet::encode(&template);
    let mut p = template.clone();
    let signed = packet::sign_to_bytes(&mut p, &key)?;
    let sign_rate = rate(a.seconds, || {
        let mut q = template.clone();
        packet::sign_to_bytes(&mut q, &key)?;
        Ok(())
    })?;
    let verify_rate = rate(a.seconds, || {
        packet::verify_bytes(&signed, &public)?;
        Ok(())
    })?;
    if a.json {
        let hex: String = unsigned.iter().map(|b| format!("{b:02x}")).collect();
        println!(
            "{}",
            serde_json::json!({
                "backend": cap_sign::BACKEND,
                "packet_bytes": signed.len(),
                "sign_per_sec": sign_rate.round(),
                "verify_per_sec": verify_rate.round(),
                "packet_hex": hex,
            })
        );
    } else {
        println!(
            "typical signed JobRequest: {} bytes, backend {}",
            signed.len(),
            cap_sign::BACKEND
        );
        println!(
            "sign   {:>10.0} /s  ({:.1} µs each)",
            sign_rate,
            1e6 / sign_rate
        );
        println!(
            "verify {:>10.0} /s  ({:.1} µs each)",
            verify_rate,
            1e6 / verify_rate
        );
    }
    Ok(ExitCode::SUCCESS)
}
