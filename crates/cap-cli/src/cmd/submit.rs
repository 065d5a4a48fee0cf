//! `cap submit`: submit one job and (with `--wait`) print its result as JSON.

use super::worker::{load_key, runtime, trust_policy};
use anyhow::{Context as _, Result, bail};
use cap_blob::{RedisBlobStore, RedisConfig};
use cap_bus::{NatsBus, NatsOptions};
use cap_proto::{ErrorCode, v1};
use cap_runtime::{Client, ClientConfig, SubmitOptions};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `cap submit`.
#[derive(Args)]
pub struct SubmitArgs {
    /// The job's topic.
    #[arg(long)]
    pub topic: String,
    /// The input, as JSON.
    #[arg(long)]
    pub input: String,
    /// Publish straight to the topic's subject (no scheduler).
    #[arg(long)]
    pub direct: bool,
    /// Wait for the result and print it.
    #[arg(long)]
    pub wait: bool,
    /// Seconds to wait for the result (longer than the scheduler's 30 s dispatch
    /// timeout, so a job that finds no worker ends before the wait does).
    #[arg(long, default_value_t = 90.0)]
    pub timeout: f64,
    /// Key prefix of the scheduler's job store in Redis: `--wait` reads it to say when
    /// the job is held for approval or has no live worker.
    #[arg(long, default_value = "cap:sched:")]
    pub store_prefix: String,
    /// Private key: sign the request.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Directory of `<sender_id>.pem` public keys: require signed results.
    #[arg(long)]
    pub trust: Option<PathBuf>,
    /// Client id (default `client-<random>`).
    #[arg(long)]
    pub id: Option<String>,
    /// Core NATS only, no JetStream (same as `CAP_JETSTREAM=off`).
    #[arg(long)]
    pub no_jetstream: bool,
}

/// `cap submit`.
pub fn submit(a: SubmitArgs) -> Result<ExitCode> {
    super::worker::init_logging();
    runtime()?.block_on(run(a))
}

/// `cap submit` inside a runtime.
pub async fn run(a: SubmitArgs) -> Result<ExitCode> {
    let input: serde_json::Value =
        serde_json::from_str(&a.input).context("--input is not valid JSON")?;
    if !a.timeout.is_finite() || a.timeout <= 0.0 {
        bail!("--timeout must be a positive number of seconds");
    }
    let id =
        a.id.clone()
            .unwrap_or_else(|| cap_runtime::id::new_component_id("client"));
    let mut config = ClientConfig::new(id.clone())
        .trust(trust_policy(a.trust.as_deref())?)
        .result_timeout(Duration::from_secs_f64(a.timeout));
    if let Some(path) = &a.key {
        config = config.signer(Arc::new(load_key(path)?));
    }
    let mut opts = NatsOptions::from_env()?.name(id);
    if a.no_jetstream {
        opts = opts.without_jetstream();
    }
    let bus = NatsBus::connect(opts)
        .await
        .context("connecting to NATS (NATS_URL)")?;
    let store = RedisBlobStore::connect(RedisConfig::from_env())
        .await
        .context("connecting to Redis (REDIS_URL)")?;
    let client = Client::new(bus.clone(), store, config).await?;
    let mut options = SubmitOptions::default();
    if a.direct {
        options = options.direct();
    }
    let mut job = client.submit_with(&a.topic, &input, options).await?;
    if !a.wait {
        println!(
            "{}",
            serde_json::json!({"job_id": job.job_id(), "trace_id": job.trace_id(), "topic": a.topic, "direct": a.direct})
        );
        let _ = cap_bus::Bus::close(&bus).await;
        return Ok(ExitCode::SUCCESS);
    }
    let redis_url = RedisConfig::from_env().url;
    let watcher = (!a.direct).then(|| {
        tokio::spawn(explain_wait(
            redis_url.clone(),
            a.store_prefix.clone(),
            job.job_id().to_owned(),
        ))
    });
    let result = job.result().await;
    if let Some(w) = watcher {
        w.abort();
    }
    let result: v1::JobResult = match result {
        Ok(r) => r.clone(),
        Err(e) => {
            if !a.direct
                && let Some(why) = why_waiting(&redis_url, &a.store_prefix, job.job_id()).await
            {
                bail!("{e}: job {} {why}", job.job_id());
            }
            return Err(e.into());
        }
    };
    let succeeded = result.status == v1::JobStatus::Succeeded as i32;
    let output = if succeeded {
        Some(job.output::<serde_json::Value>().await?)
    } else {
        None
    };
    let code = ErrorCode::of_result(&result);
    println!(
        "{}",
        serde_json::json!({
            "job_id": result.job_id,
            "trace_id": job.trace_id(),
            "status": v1::JobStatus::try_from(result.status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN"),
            "worker_id": result.worker_id,
            "execution_ms": result.execution_ms,
            "result_ptr": result.result_ptr,
            "error_code": if code == ErrorCode::UNSPECIFIED { serde_json::Value::Null } else { code.to_string().into() },
            "error_message": result.error_message,
            "output": output,
        })
    );
    let _ = cap_bus::Bus::close(&bus).await;
    Ok(if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What the scheduler's record says about a job that has not ended: `is SCHEDULED,
/// held for approval (…)` and the like; `None` when it cannot tell.
async fn why_waiting(redis: &str, prefix: &str, job_id: &str) -> Option<String> {
    use cap_scheduler::JobStore as _;
    let store = cap_scheduler::RedisJobStore::connect(redis, prefix)
        .await
        .ok()?;
    let record = store
        .load(&[job_id.to_owned()])
        .await
        .ok()?
        .pop()
        .flatten()?
        .record;
    let state = record.state;
    Some(match cap_gateway::views::waiting_for(&record).as_deref() {
        Some("approval") => format!(
            "is {state}, held for approval: `cap approvals approve {job_id}` (or reject) decides"
        ),
        Some("worker") => format!(
            "is {state}: no live worker serves topic {} (start one: `cap worker echo --topic {}`)",
            record.request.topic, record.request.topic
        ),
        Some(w) => format!("is {state}, waiting for {w}"),
        None if state == cap_proto::JobState::Dispatched => format!(
            "is {state} to {}, and no live worker has taken it yet (does one serve topic {}?)",
            record.dispatched_to, record.request.topic
        ),
        None => format!("is {state}"),
    })
}

/// Says (on stderr) when the job is held for approval or waits for a worker.
async fn explain_wait(redis: String, prefix: String, job_id: String) {
    let mut said = String::new();
    let mut polls = 0u32;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        polls += 1;
        if let Some(why) = why_waiting(&redis, &prefix, &job_id).await
            && (why.contains("approval") || (why.contains("no live worker") && polls >= 4))
            && why != said
        {
            eprintln!("job {job_id} {why}");
            said = why;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::cmd::worker::{EchoArgs, echo_until};

    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "needs a real NATS and Redis: run by .ci/run"]
    async fn echo_worker_and_submit_over_nats_and_redis() {
        let suffix = &cap_runtime::id::new_trace_id()[..8];
        let topic = format!("job.cli-{suffix}");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(echo_until(
            EchoArgs {
                topic: topic.clone(),
                key: None,
                trust: None,
                id: Some(format!("cli-w-{suffix}")),
                pool: "echo".into(),
                max_parallel: 4,
                delay_ms: 0,
                grace: 1.0,
                no_jetstream: true,
                worker_trust: Default::default(),
                profile: Default::default(),
                redis: None,
                fail_field: None,
                metrics: Default::default(),
            },
            async {
                let _ = rx.await;
            },
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let code = run(SubmitArgs {
            topic: topic.clone(),
            input: r#"{"hello":"cli"}"#.into(),
            direct: true,
            wait: true,
            timeout: 10.0,
            store_prefix: "cap:sched:".into(),
            key: None,
            trust: None,
            id: None,
            no_jetstream: true,
        })
        .await
        .expect("submit runs");
        assert_eq!(code, ExitCode::SUCCESS);
        let bad = run(SubmitArgs {
            topic,
            input: "{not json".into(),
            direct: true,
            wait: true,
            timeout: 10.0,
            store_prefix: "cap:sched:".into(),
            key: None,
            trust: None,
            id: None,
            no_jetstream: true,
        })
        .await;
        assert!(bad.is_err(), "bad --input is an error");
        tx.send(()).unwrap();
        assert_eq!(worker.await.unwrap().unwrap(), ExitCode::SUCCESS);
    }
}
