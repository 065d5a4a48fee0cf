//! `cap demo`: the whole CAP flow in one process — client → scheduler → safety kernel →
//! worker → result — on the embedded bus and blob store (or real NATS and Redis with
//! `--nats`/`--redis`). It runs one job down every path, prints each state change as it
//! happens, then a summary; it exits 1 if any job did not end as the protocol says.

#[path = "demo_compare.rs"]
mod compare;
#[path = "demo_fencing.rs"]
mod fencing;
#[path = "demo_observe.rs"]
mod observe;

use super::worker::runtime;
use anyhow::{Context as _, Result, bail};
use cap_blob::{BlobStore, MemoryBlobStore, RedisBlobStore, RedisConfig};
use cap_bus::{Bus, MemoryBus, NatsBus, NatsOptions};
use cap_proto::{ErrorCode, JobState, v1};
use cap_runtime::load::{self, LoadConfig};
use cap_runtime::packets::{PacketConfig, Packets};
use cap_runtime::{Client, ClientConfig, Context, JobError, SubmitOptions, Worker};
use cap_safety::Kernel;
use cap_safety::policy::Policy;
use cap_scheduler::core::{Config, Pools};
use cap_scheduler::{
    JobStore, MemoryJobStore, Observed, RedisJobStore, Scheduler, SchedulerOptions,
};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The bundled policy.
pub const POLICY: &str = include_str!("../../demo/policy.yaml");
/// The bundled pools file.
pub const POOLS: &str = include_str!("../../demo/pools.yaml");

/// Arguments of `cap demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Use this NATS server instead of the embedded bus (needs `--redis` too).
    #[arg(long, requires = "redis")]
    nats: Option<String>,
    /// Use this Redis instead of the embedded blob and job stores (needs `--nats` too).
    #[arg(long, requires = "nats")]
    redis: Option<String>,
    /// Instead of the scenarios, run a throughput batch of N echo jobs through the
    /// scheduler and print jobs/s and latency percentiles.
    #[arg(long)]
    jobs: Option<u64>,
    /// Jobs in flight during a throughput batch.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Print the throughput batch's figures as one JSON object.
    #[arg(long)]
    json: bool,
    /// With `--jobs`: run the batch with dispatch fencing on and off alternately
    /// (`--rounds` times each, a fresh scheduler and job store per run) and print both
    /// side by side: medians and ranges, and what fencing costs (the median of the
    /// rounds' paired on/off ratios, with its 95 % confidence interval).
    #[arg(long, requires = "jobs", conflicts_with = "compare_observability")]
    compare_fencing: bool,
    /// With `--jobs` (in memory): run the batch with metrics and tracing on and off
    /// alternately (`--rounds` times each, fresh components per run) and print both rates
    /// side by side, and what they cost in throughput and CPU per job (the median of the
    /// rounds' paired on/off ratios, with its 95 % confidence interval).
    #[arg(long, requires = "jobs", conflicts_with = "nats")]
    compare_observability: bool,
    /// Rounds of `--compare-fencing` or `--compare-observability` (each runs the batch on
    /// and off). Many short rounds (e.g. `--jobs 10000 --rounds 40`) narrow the interval.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also serve the API gateway and its dashboard here (e.g. `127.0.0.1:8080`): open
    /// `http://ADDR/#key=demo&tenant=demo` to watch the demo's jobs live.
    #[arg(long, value_name = "ADDR")]
    gateway: Option<String>,
    /// The gateway's API key for the demo's jobs (tenant `demo`).
    #[arg(long, default_value = "demo", requires = "gateway")]
    gateway_key: String,
    /// Seconds to keep the gateway up after the demo (to look at the page).
    #[arg(long, default_value_t = 0, requires = "gateway")]
    linger: u64,
}

/// Runs `cap demo`.
pub fn run(a: DemoArgs) -> Result<ExitCode> {
    runtime()?.block_on(async move {
        match (&a.nats, &a.redis) {
            (Some(nats), Some(redis)) => {
                let bus = NatsBus::connect(NatsOptions::new(nats))
                    .await
                    .with_context(|| format!("connecting to {nats}"))?;
                if let (true, Some(n)) = (a.compare_fencing, a.jobs) {
                    // The batches' contexts and results expire after ten minutes (the
                    // same writes, a shorter stay in a shared Redis).
                    let ten = Some(Duration::from_secs(600));
                    let limits = cap_blob::Limits::default()
                        .with_context_ttl(ten)
                        .with_result_ttl(ten);
                    let store = RedisBlobStore::connect(
                        RedisConfig::new(redis.clone()).with_limits(limits),
                    )
                    .await?;
                    let url = redis.clone();
                    let stores: fencing::JobStores<RedisJobStore> = Box::new(move || {
                        let url = url.clone();
                        Box::pin(async move {
                            let prefix = format!("cap:demo:{}:", cap_runtime::id::new_trace_id());
                            let jobs = RedisJobStore::connect(&url, prefix.clone()).await?;
                            let purge: fencing::Cleanup =
                                Box::new(move || Box::pin(fencing::purge_redis(url, prefix)));
                            Ok((jobs, purge))
                        })
                    });
                    return fencing::compare(bus, store, stores, n, a.inflight, a.rounds, a.json)
                        .await;
                }
                let store = RedisBlobStore::connect(RedisConfig::new(redis.clone())).await?;
                let prefix = format!("cap:demo:{}:", cap_runtime::id::new_trace_id());
                let jobs = RedisJobStore::connect(redis, prefix).await?;
                demo(bus, store, jobs, &a).await
            }
            _ => {
                let store = MemoryBlobStore::emulating_redis(Default::default());
                if let (true, Some(n)) = (a.compare_observability, a.jobs) {
                    let switch = super::telemetry::switchable()?;
                    let stores: fencing::JobStores<MemoryJobStore> = Box::new(|| {
                        let nothing: fencing::Cleanup = Box::new(|| Box::pin(async {}));
                        Box::pin(async { Ok((MemoryJobStore::new(), nothing)) })
                    });
                    return observe::compare(
                        MemoryBus::new(),
                        || MemoryBlobStore::emulating_redis(Default::default()),
                        stores,
                        n,
                        a.inflight,
                        a.rounds,
                        a.json,
                        &switch,
                    )
                    .await;
                }
                if let (true, Some(n)) = (a.compare_fencing, a.jobs) {
                    let stores: fencing::JobStores<MemoryJobStore> = Box::new(|| {
                        let nothing: fencing::Cleanup = Box::new(|| Box::pin(async {}));
                        Box::pin(async { Ok((MemoryJobStore::new(), nothing)) })
                    });
                    return fencing::compare(
                        MemoryBus::new(),
                        store,
                        stores,
                        n,
                        a.inflight,
                        a.rounds,
                        a.json,
                    )
                    .await;
                }
                demo(MemoryBus::new(), store, MemoryJobStore::new(), &a).await
            }
        }
    })
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct EchoIn {
    text: String,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
pub(crate) struct EchoOut {
    text: String,
    length: usize,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct StepIn {
    step: i32,
    #[serde(default)]
    fail: bool,
}

pub(crate) async fn echo(_ctx: Context, input: EchoIn) -> Result<EchoOut, JobError> {
    Ok(EchoOut {
        length: input.text.chars().count(),
        text: input.text,
    })
}

async fn until_cancelled(
    ctx: Context,
    _input: serde_json::Value,
) -> Result<serde_json::Value, JobError> {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(30)) => Ok(serde_json::json!("done")),
        _ = ctx.cancellation().cancelled() => Err(JobError::cancelled("stopped")),
    }
}

async fn step(_ctx: Context, input: StepIn) -> Result<serde_json::Value, JobError> {
    if input.fail {
        return Err(JobError::fatal(
            ErrorCode::from_i32(1001),
            format!("step {} cannot be done", input.step),
        ));
    }
    Ok(serde_json::json!({ "step": input.step, "done": true }))
}

async fn undo(ctx: Context, _input: serde_json::Value) -> Result<serde_json::Value, JobError> {
    Ok(serde_json::json!({ "undone": ctx.job_id() }))
}

/// First sight and (once terminal) submit→end time of each job, as the scheduler saw it.
type Timings = HashMap<String, (Instant, Option<Duration>)>;

/// What the demo runs.
enum Mode {
    /// A batch of N echo jobs through the scheduler.
    Throughput(u64),
    /// Every path, watched live.
    Scenarios(tokio::sync::broadcast::Receiver<Observed>),
}

/// One scenario: a job and the state it must end in.
struct Scenario {
    name: &'static str,
    job_id: String,
    expect: JobState,
}

async fn demo<B: Bus, S: BlobStore + Clone + 'static, J: JobStore + Clone>(
    bus: B,
    store: S,
    jobs: J,
    a: &DemoArgs,
) -> Result<ExitCode> {
    let stop = CancellationToken::new();
    if let Some(addr) = &a.gateway {
        // The demo's jobs name no tenant: the gateway shows them to tenant `demo`.
        let mut config = cap_gateway::GatewayConfig::default().api_key(&a.gateway_key, "demo");
        config.unnamed_tenant = Some("demo".into());
        let gw = cap_gateway::Gateway::new(
            Packets::new(bus.clone(), PacketConfig::new("demo-gateway")),
            jobs.clone(),
            store.clone(),
            config,
        );
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--gateway {addr}"))?;
        let local = listener.local_addr()?;
        eprintln!("gateway: http://{local}/#key={}&tenant=demo", a.gateway_key);
        let serving = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = gw.serve(listener, serving).await {
                tracing::error!(error = %e, "the gateway stopped");
            }
        });
    }
    let kernel = Kernel::new(Policy::from_text(POLICY, "demo/policy.yaml")?);
    let config = Config {
        retry_base: Duration::from_millis(50),
        ..Config::default()
    };
    let options = SchedulerOptions {
        config,
        pools: Pools::from_yaml(POOLS)?,
        tick: Duration::from_millis(20),
        ..Default::default()
    };
    let scheduler = Scheduler::new(
        Packets::new(bus.clone(), PacketConfig::new("demo-scheduler")),
        Arc::new(kernel),
        jobs,
        options,
    );
    // Only the scenarios watch the scheduler; the throughput batch does not pay for it.
    let mode = match a.jobs {
        Some(n) => Mode::Throughput(n),
        None => Mode::Scenarios(scheduler.observe()),
    };
    let sched = tokio::spawn(scheduler.run(stop.clone()));

    let flaky_attempts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let zombie = Zombie {
        packets: Packets::new(bus.clone(), PacketConfig::new("demo-worker")),
        dispatch: Arc::default(),
    };
    let seen_dispatch = zombie.dispatch.clone();
    let worker = Worker::builder(bus.clone(), store.clone())
        .id("demo-worker")
        .max_parallel(256)
        .handler("job.demo.echo", echo)
        .handler("job.demo.forbidden", echo)
        .handler("job.demo.flaky", move |ctx: Context, input: EchoIn| {
            let attempts = flaky_attempts.clone();
            async move {
                let n = {
                    let mut m = attempts.lock().unwrap_or_else(|p| p.into_inner());
                    let n = m.entry(ctx.job_id().to_owned()).or_default();
                    *n += 1;
                    *n
                };
                if n == 1 {
                    return Err(JobError::retryable(
                        ErrorCode::JOB_RESOURCE_EXHAUSTED,
                        "transient: try again",
                    ));
                }
                echo(ctx, input).await
            }
        })
        .handler("job.demo.slow", until_cancelled)
        .handler(
            "job.demo.zombie",
            move |ctx: Context, input: serde_json::Value| {
                let seen = seen_dispatch.clone();
                async move {
                    // Remember the attempt's dispatch identity: the demo replays it later as
                    // a worker that missed the cancel would.
                    *seen.lock().unwrap_or_else(|p| p.into_inner()) =
                        ctx.request().dispatch.clone();
                    until_cancelled(ctx, input).await
                }
            },
        )
        .handler("job.demo.wait", until_cancelled)
        .handler("job.demo.step", step)
        .handler("job.demo.undo", undo)
        .build()?
        .start()
        .await?;
    let client = Client::new(bus.clone(), store, ClientConfig::new("demo-client")).await?;
    // Let the worker's handshake reach the scheduler.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let code = match mode {
        Mode::Throughput(n) => throughput(&client, n, a.inflight, a.json).await?,
        Mode::Scenarios(mut observed) => scenarios(&client, &mut observed, &zombie).await?,
    };
    if a.gateway.is_some() && a.linger > 0 {
        eprintln!("gateway: up for {} s more", a.linger);
        tokio::time::sleep(Duration::from_secs(a.linger)).await;
    }
    worker.shutdown(Duration::from_secs(2)).await;
    stop.cancel();
    match sched.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("scheduler failed: {e}"),
        Err(e) => bail!("scheduler task failed: {e}"),
    }
    Ok(code)
}

async fn throughput<B: Bus, S: BlobStore + 'static>(
    client: &Client<B, S>,
    jobs: u64,
    inflight: usize,
    json: bool,
) -> Result<ExitCode> {
    let mut cfg = LoadConfig::new("job.demo.echo", jobs, inflight);
    cfg.direct = false;
    cfg.input = bytes::Bytes::from_static(br#"{"text":"hello"}"#);
    let bar = if std::io::stderr().is_terminal() && !json {
        let bar = indicatif::ProgressBar::new(jobs);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} jobs {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let report = load::run(client, &cfg, |done| {
        if let Some(b) = &bar {
            b.set_position(done);
        }
    })
    .await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if json {
        let mut v = report.to_json();
        v["path"] = "client → scheduler → safety → worker → client".into();
        println!("{v}");
    } else {
        println!(
            "{} jobs through the scheduler, {} in flight: {:.0} jobs/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} failed)",
            report.succeeded + report.failed,
            inflight,
            report.jobs_per_sec,
            report.p50.as_secs_f64() * 1e3,
            report.p99.as_secs_f64() * 1e3,
            report.max.as_secs_f64() * 1e3,
            report.failed
        );
    }
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A worker that missed the cancel of its timed-out attempt and reports on it anyway:
/// the demo sends its late progress and result (as `demo-worker`, with the attempt's
/// dispatch identity), and the scheduler must refuse both.
struct Zombie<B: Bus> {
    packets: Packets<B>,
    /// The dispatch identity of the zombie scenario's attempt, once it ran.
    dispatch: Arc<Mutex<Option<v1::DispatchIdentity>>>,
}

impl<B: Bus> Zombie<B> {
    /// Publishes the late progress and SUCCEEDED result of `job_id`'s attempt.
    async fn report_late(&self, job_id: &str) -> Result<bool> {
        let dispatch = self
            .dispatch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(dispatch) = dispatch else {
            return Ok(false);
        };
        let progress = v1::JobProgress {
            job_id: job_id.to_owned(),
            percent: 90,
            status: v1::JobStatus::Running as i32,
            message: "still at it".into(),
            dispatch: Some(dispatch.clone()),
            ..Default::default()
        };
        let result = v1::JobResult {
            job_id: job_id.to_owned(),
            status: v1::JobStatus::Succeeded as i32,
            worker_id: self.packets.sender_id().to_owned(),
            error_message: "finished after all".into(),
            dispatch: Some(dispatch),
            ..Default::default()
        };
        let p = &self.packets;
        p.publish(cap_proto::subject::PROGRESS, p.envelope(job_id, progress))
            .await?;
        p.publish(cap_proto::subject::RESULT, p.envelope(job_id, result))
            .await?;
        Ok(true)
    }
}

/// What the scheduler refused and how jobs moved, per job (for the checks).
#[derive(Default)]
struct Seen {
    fenced: Vec<(String, &'static str)>,
    states: HashMap<String, Vec<JobState>>,
}

async fn scenarios<B: Bus, S: BlobStore + 'static>(
    client: &Client<B, S>,
    observed: &mut tokio::sync::broadcast::Receiver<Observed>,
    zombie: &Zombie<B>,
) -> Result<ExitCode> {
    let run = cap_runtime::id::new_trace_id()
        .chars()
        .take(4)
        .collect::<String>();
    let id = |name: &str| format!("{name}-{run}");
    let t0 = Instant::now();
    // Print every state change as it happens.
    let mut printer = observed.resubscribe();
    // Submit → terminal time of each job, as the scheduler saw it.
    let timings: Arc<Mutex<Timings>> = Arc::default();
    let times = timings.clone();
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let record = seen.clone();
    let print_task = tokio::spawn(async move {
        let mut last: HashMap<String, JobState> = HashMap::new();
        while let Ok(o) = printer.recv().await {
            match o {
                Observed::Transition {
                    job_id,
                    topic,
                    state,
                    ..
                } => {
                    {
                        let mut t = times.lock().unwrap_or_else(|p| p.into_inner());
                        let entry = t.entry(job_id.clone()).or_insert((Instant::now(), None));
                        if state.is_terminal() {
                            entry.1 = Some(entry.0.elapsed());
                        }
                    }
                    record
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .states
                        .entry(job_id.clone())
                        .or_default()
                        .push(state);
                    let from = last
                        .insert(job_id.clone(), state)
                        .map(|s| format!("{s} → "))
                        .unwrap_or_default();
                    println!(
                        "{:>8.1} ms  {:<24} {:<20} {from}{state}",
                        t0.elapsed().as_secs_f64() * 1e3,
                        job_id,
                        topic
                    );
                }
                Observed::Alert(alert) => {
                    println!(
                        "{:>8.1} ms  alert: {}",
                        t0.elapsed().as_secs_f64() * 1e3,
                        alert.message
                    );
                }
                Observed::Ignored { job_id, reason } => {
                    println!(
                        "{:>8.1} ms  {job_id:<24} ignored: {reason}",
                        t0.elapsed().as_secs_f64() * 1e3
                    );
                }
                Observed::Fenced {
                    job_id,
                    what,
                    fence,
                } => {
                    println!(
                        "{:>8.1} ms  {job_id:<24} {what} of a {fence} attempt refused",
                        t0.elapsed().as_secs_f64() * 1e3
                    );
                    record
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .fenced
                        .push((job_id, what));
                }
            }
        }
    });

    let mut plan: Vec<Scenario> = Vec::new();
    let mut handles = Vec::new();
    let hello = serde_json::json!({ "text": "hello, CAP" });
    for (name, topic, expect) in [
        ("success", "job.demo.echo", JobState::Succeeded),
        ("denied", "job.demo.forbidden", JobState::Denied),
        ("retried", "job.demo.flaky", JobState::Succeeded),
        ("timeout", "job.demo.slow", JobState::Timeout),
        ("cancel", "job.demo.wait", JobState::Cancelled),
        ("zombie", "job.demo.zombie", JobState::Timeout),
    ] {
        plan.push(Scenario {
            name,
            job_id: id(name),
            expect,
        });
        let at = Instant::now();
        handles.push((
            client
                .submit_with(topic, &hello, SubmitOptions::default().job_id(id(name)))
                .await?,
            at,
        ));
    }
    // A workflow: a parent and three steps; the last fails fatally, so the two done
    // steps are compensated, most recent first.
    plan.push(Scenario {
        name: "workflow",
        job_id: id("workflow"),
        expect: JobState::Succeeded,
    });
    let at = Instant::now();
    handles.push((
        client
            .submit_with(
                "job.demo.echo",
                &hello,
                SubmitOptions::default().job_id(id("workflow")),
            )
            .await?,
        at,
    ));
    let parent = id("workflow");
    let mut steps = Vec::new();
    for (i, name) in ["step-0", "step-1", "step-2"].into_iter().enumerate() {
        let expect = if i == 2 {
            JobState::FailedFatal
        } else {
            JobState::Succeeded
        };
        plan.push(Scenario {
            name,
            job_id: id(name),
            expect,
        });
        // The compensation's own input, stored like any job context: under the id of
        // the compensation job the scheduler will run (`<step>.compensate`), the only
        // context a worker lets that job read.
        let undo_ctx = client
            .store()
            .put_context(
                &format!("{}.compensate", id(name)),
                bytes::Bytes::from(format!(r#"{{"undo":{i}}}"#)),
            )
            .await?;
        let undo = v1::Compensation {
            topic: "job.demo.undo".into(),
            context_ptr: undo_ctx.to_string(),
            ..Default::default()
        };
        let opts = SubmitOptions::default()
            .job_id(id(name))
            .child_of(parent.clone(), format!("wf-{run}"), i as i32)
            .compensation(undo);
        let at = Instant::now();
        let mut h = client
            .submit_with(
                "job.demo.step",
                &serde_json::json!({ "step": i, "fail": i == 2 }),
                opts,
            )
            .await?;
        // Steps run one after the other.
        h.result_within(Duration::from_secs(10)).await?;
        steps.push((h, at));
    }
    // The cancel scenario: cancel once it runs.
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Some((h, _)) = handles.iter().find(|(h, _)| h.job_id() == id("cancel")) {
        h.cancel("the demo cancels it").await?;
    }
    handles.extend(steps);

    let mut rows = Vec::new();
    for (mut h, at) in handles {
        let r = h.result_within(Duration::from_secs(10)).await?.clone();
        let seen = timings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(h.job_id())
            .and_then(|(_, d)| *d);
        rows.push((
            h.job_id().to_owned(),
            r,
            seen.unwrap_or_else(|| at.elapsed()),
        ));
    }
    // The zombie: its attempt timed out (and was fenced); it reports anyway, late.
    let zombie_id = id("zombie");
    let zombie_reported = zombie.report_late(&zombie_id).await?;
    // Wait for the compensations the scheduler started.
    let comps = [
        format!("{}.compensate", id("step-1")),
        format!("{}.compensate", id("step-0")),
    ];
    let mut finished: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while finished.len() < comps.len() && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), observed.recv()).await {
            Ok(Ok(Observed::Transition {
                job_id,
                state: JobState::Succeeded,
                ..
            })) if comps.contains(&job_id) => {
                finished.push(job_id);
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break,
            _ => {}
        }
    }
    // The zombie's late progress and result must come back refused.
    let refused = |what: &str| {
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .fenced
            .iter()
            .any(|(j, w)| *j == zombie_id && *w == what)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(refused("progress") && refused("result")) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    print_task.abort();

    println!(
        "\n{:<10} {:<24} {:<18} {:<36} {:>9}",
        "scenario", "job", "final state", "error", "latency"
    );
    let mut ok = true;
    let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
    let mut latencies = Vec::new();
    for s in &plan {
        let Some((_, r, lat)) = rows.iter().find(|(j, _, _)| *j == s.job_id) else {
            continue;
        };
        let state = JobState::from_i32(r.status);
        let label = state
            .map(|s| s.to_string())
            .unwrap_or_else(|| format!("status {}", r.status));
        let code = ErrorCode::of_result(r);
        let err = if code == ErrorCode::UNSPECIFIED {
            r.error_message.clone()
        } else {
            format!("{code}")
        };
        let good = state == Some(s.expect);
        ok &= good;
        *by_state.entry(label.clone()).or_default() += 1;
        latencies.push(*lat);
        println!(
            "{:<10} {:<24} {:<18} {:<36} {:>7.1}ms{}",
            s.name,
            s.job_id,
            label,
            truncate(&err, 36),
            lat.as_secs_f64() * 1e3,
            if good { "" } else { "  <-- expected different" }
        );
    }
    // The zombie's job stayed TIMEOUT: its late reports were refused, not applied.
    let zombie_states = seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .states
        .get(&zombie_id)
        .cloned()
        .unwrap_or_default();
    let stayed = zombie_states.last() == Some(&JobState::Timeout)
        && zombie_states.iter().filter(|s| s.is_terminal()).count() == 1;
    for (what, good) in [
        ("late progress", zombie_reported && refused("progress")),
        (
            "late result",
            zombie_reported && refused("result") && stayed,
        ),
    ] {
        ok &= good;
        println!(
            "{:<10} {:<24} {:<18}",
            "zombie",
            what,
            if good { "REFUSED" } else { "NOT REFUSED" }
        );
    }
    for c in &comps {
        let good = finished.contains(c);
        ok &= good;
        println!(
            "{:<10} {:<24} {:<18}",
            "compensate",
            c,
            if good { "SUCCEEDED" } else { "MISSING" }
        );
    }
    latencies.sort_unstable();
    let counts: Vec<String> = by_state.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "\n{} jobs: {}; latency p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        latencies.len(),
        counts.join(", "),
        load::quantile(&latencies, 0.5).as_secs_f64() * 1e3,
        load::quantile(&latencies, 0.9).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    if ok {
        println!("every job ended as the protocol says");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("cap: some jobs did not end as expected");
        Ok(ExitCode::from(1))
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}
