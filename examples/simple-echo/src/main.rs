//! `cargo run -p simple-echo`: an echo worker and a client in one process, on the
//! in-memory bus and blob store — no NATS, no Redis. Prints what it submits, what comes
//! back, and how long it took; exits 0 on success.

use cap_blob::MemoryBlobStore;
use cap_bus::MemoryBus;
use cap_runtime::{Client, ClientConfig, Context, JobError, SubmitOptions, Worker};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Serialize, Deserialize, JsonSchema, Debug)]
struct Echo {
    message: String,
}

async fn echo(ctx: Context, input: Echo) -> Result<Echo, JobError> {
    ctx.progress(100, "echoed").await.ok();
    Ok(input)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("simple-echo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), cap_runtime::Error> {
    let bus = MemoryBus::new();
    let store = MemoryBlobStore::emulating_redis(Default::default());

    let worker = Worker::builder(bus.clone(), store.clone())
        .id("echo-worker")
        .handler("job.echo", echo)
        .build()?
        .start()
        .await?;
    println!(
        "worker {} serving job.echo (in-memory bus and blob store)",
        worker.id()
    );

    let client = Client::new(bus, store, ClientConfig::new("echo-client")).await?;
    let input = Echo {
        message: "hello from cap-rs".into(),
    };
    println!("submit  job.echo {}", serde_json::to_string(&input)?);
    let started = Instant::now();
    let mut job = client
        .submit_with("job.echo", &input, SubmitOptions::default().direct())
        .await?;
    let output: Echo = job.output().await?;
    let elapsed = started.elapsed();
    let result = job.result().await?.clone();
    println!(
        "result  job {} {:?} by {} (trace {}) -> {}",
        result.job_id,
        cap_proto::v1::JobStatus::try_from(result.status).unwrap_or_default(),
        result.worker_id,
        job.trace_id(),
        serde_json::to_string(&output)?
    );
    println!(
        "round trip {:.3} ms (handler {} ms)",
        elapsed.as_secs_f64() * 1e3,
        result.execution_ms
    );

    // A small burst to show throughput in one process.
    let n = 10_000;
    let t = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let input = Echo {
            message: format!("message {i}"),
        };
        handles.push(
            client
                .submit_with("job.echo", &input, SubmitOptions::default().direct())
                .await?,
        );
    }
    for h in &mut handles {
        let _: Echo = h.output().await?;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{n} more jobs in {:.1} ms ({:.0} jobs/s)",
        secs * 1e3,
        n as f64 / secs
    );

    if output.message != input.message {
        return Err(cap_runtime::Error::new(
            cap_runtime::ErrorKind::JobFailed,
            "the echo did not match",
        ));
    }
    let report = worker.shutdown(Duration::from_secs(2)).await;
    println!("worker stopped after {} jobs", report.completed_total);
    Ok(())
}
