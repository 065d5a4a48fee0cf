//! Load generation, shared by `cap bench safety` and the crate's benchmark binary:
//! in-process decisions per second, and request rate plus latency percentiles of any
//! [`SafetyClient`] under concurrent callers.

use crate::client::{GrpcClientOptions, GrpcSafetyClient, SafetyClient};
use crate::policy::Policy;
use crate::server::{ServeOptions, spawn};
use crate::{Error, Kernel, KernelOptions};
use cap_proto::v1::{JobMetadata, PolicyCheckRequest};
use serde::Serialize;
use std::fmt::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Load settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Concurrent callers. Default 64.
    pub concurrency: usize,
    /// Measured duration. Default 5 s.
    pub duration: Duration,
    /// Unmeasured run before it. Default 500 ms.
    pub warmup: Duration,
    /// HTTP/2 connections the gRPC callers share. Default 2.
    pub connections: usize,
    /// Threads for the in-process measurement. Default: available parallelism.
    pub threads: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            concurrency: 64,
            duration: Duration::from_secs(5),
            warmup: Duration::from_millis(500),
            connections: 2,
            threads: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// What was measured.
    pub name: String,
    /// Calls completed in the measured window.
    pub requests: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Length of the measured window, in seconds.
    pub seconds: f64,
    /// Calls per second.
    pub per_second: f64,
    /// Median latency in microseconds (not measured in-process: too short to time).
    pub p50_us: Option<f64>,
    /// 99th percentile latency in microseconds.
    pub p99_us: Option<f64>,
    /// Concurrent callers (threads in-process).
    pub concurrency: usize,
}

impl BenchReport {
    /// One human-readable line.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{:<28} {:>12.0}/s  ({} calls, {} errors, {:.1} s, concurrency {})",
            self.name, self.per_second, self.requests, self.errors, self.seconds, self.concurrency
        );
        if let (Some(p50), Some(p99)) = (self.p50_us, self.p99_us) {
            let _ = write!(s, "  p50 {p50:.0} µs  p99 {p99:.0} µs");
        }
        s
    }
}

/// A policy of `rules` rules over every kind of condition, the last one a catch-all
/// allow for `job.*`. [`sample_requests`] reach rules at various depths.
pub fn sample_policy_yaml(rules: usize) -> String {
    let mut y = String::from("version: bench-1\ndefault_tenant: default\nrules:\n");
    let body = rules.saturating_sub(1);
    for i in 0..body {
        let _ = writeln!(y, "  - id: rule-{i}");
        let m = match i % 6 {
            0 => format!("{{ tenants: [tenant-{i}, other-{i}], topics: [\"job.t{i}.*\"] }}"),
            1 => format!("{{ capabilities: [cap-{i}], risk_tags: [risk-{i}, shared-{i}] }}"),
            2 => format!("{{ topics: [\"job.*.deploy{i}\"], requires: [req-{i}, gpu] }}"),
            3 => format!("{{ labels: {{ env: prod-{i} }}, actor_types: [human] }}"),
            4 => format!("{{ pack_ids: [pack-{i}], actor_ids: [actor-{i}] }}"),
            _ => format!(
                "{{ topics: [\"job.mcp.*\"], labels: {{ zone: z{i} }}, mcp: {{ deny_tools: [rm-{i}] }} }}"
            ),
        };
        let _ = writeln!(y, "    match: {m}");
        let d = ["deny", "require_approval", "throttle", "allow"][i % 4];
        let _ = writeln!(y, "    decision: {d}\n    reason: bench rule {i}");
    }
    if rules > 0 {
        y.push_str("  - id: allow-jobs\n    match: { topics: [\"job.*\"] }\n    decision: allow\n");
    }
    y
}

/// Requests for [`sample_policy_yaml`]: some match early rules, some mid-way, most fall
/// through to the last rule (the expensive case).
pub fn sample_requests() -> Vec<PolicyCheckRequest> {
    let meta = |cap: &str, tags: &[&str], actor_type: i32| JobMetadata {
        tenant_id: "acme".into(),
        actor_id: "actor-x".into(),
        actor_type,
        capability: cap.into(),
        risk_tags: tags.iter().map(|s| s.to_string()).collect(),
        requires: vec!["gpu".into()],
        pack_id: "pack-x".into(),
        ..Default::default()
    };
    let req = |topic: &str, labels: &[(&str, &str)], m: JobMetadata| PolicyCheckRequest {
        job_id: String::new(),
        topic: topic.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        meta: Some(m),
        ..Default::default()
    };
    vec![
        req("job.echo", &[("env", "dev")], meta("echo", &["low"], 2)),
        req(
            "job.build.linux",
            &[("team", "core")],
            meta("build", &[], 1),
        ),
        req("job.t0.run", &[], meta("x", &[], 2)),
        req(
            "job.mcp.call",
            &[("mcp.tool", "read")],
            meta("mcp", &["net"], 2),
        ),
        req(
            "job.data.export",
            &[("env", "prod")],
            meta("export", &["pii", "io"], 1),
        ),
        req("job.ops.deploy", &[], meta("deploy", &[], 2)),
    ]
}

/// Decisions per second of `policy.evaluate` on `threads` threads.
pub fn in_process(
    policy: &Policy,
    requests: &[PolicyCheckRequest],
    threads: usize,
    duration: Duration,
) -> BenchReport {
    let threads = threads.max(1);
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut n: u64 = 0;
                    let mut sink = 0usize;
                    let deadline = Instant::now() + duration;
                    let mut i = t;
                    loop {
                        for _ in 0..1024 {
                            let v = policy.evaluate(&requests[i % requests.len()]);
                            sink = sink.wrapping_add(v.rule_id().len());
                            i += 1;
                        }
                        n += 1024;
                        if Instant::now() >= deadline {
                            break;
                        }
                    }
                    std::hint::black_box(sink);
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    let seconds = start.elapsed().as_secs_f64();
    BenchReport {
        name: format!("in-process evaluate ({} rules)", policy.rule_count()),
        requests: total,
        errors: 0,
        seconds,
        per_second: total as f64 / seconds,
        p50_us: None,
        p99_us: None,
        concurrency: threads,
    }
}

/// Drives `clients` (used round-robin by the callers) with `concurrency` concurrent
/// callers, each sending [`SafetyClient::check`] with a fresh `job_id` per call.
pub async fn drive<C>(
    name: &str,
    clients: Vec<C>,
    requests: Vec<PolicyCheckRequest>,
    options: &BenchOptions,
) -> Result<BenchReport, Error>
where
    C: SafetyClient + Clone + 'static,
{
    if clients.is_empty() || requests.is_empty() {
        return Err(Error::Config(
            "bench needs at least one client and one request".into(),
        ));
    }
    let requests = Arc::new(requests);
    let concurrency = options.concurrency.max(1);
    let warm_until = Instant::now() + options.warmup;
    let end = warm_until + options.duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for caller in 0..concurrency {
        let client = clients[caller % clients.len()].clone();
        let requests = Arc::clone(&requests);
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(4096);
            let mut errors = 0u64;
            let mut i = caller;
            loop {
                let mut req = requests[i % requests.len()].clone();
                req.job_id = format!("bench-{caller}-{i}");
                i += 1;
                let t0 = Instant::now();
                let ok = client.check(&req).await.is_ok();
                let now = Instant::now();
                if now >= end {
                    break;
                }
                if t0 >= warm_until {
                    if ok {
                        let us = now.duration_since(t0).as_micros();
                        latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t
            .await
            .map_err(|e| Error::Config(format!("bench caller failed: {e}")))?;
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| -> Option<f64> {
        if all.is_empty() {
            return None;
        }
        let idx = ((all.len() as f64 - 1.0) * p).round() as usize;
        all.get(idx).map(|v| f64::from(*v))
    };
    let seconds = options.duration.as_secs_f64();
    Ok(BenchReport {
        name: name.to_owned(),
        requests: all.len() as u64,
        errors,
        seconds,
        per_second: all.len() as f64 / seconds,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        concurrency,
    })
}

/// gRPC `Check` load against the kernel at `url`, over `options.connections` connections.
pub async fn grpc(
    url: &str,
    requests: Vec<PolicyCheckRequest>,
    options: &BenchOptions,
) -> Result<BenchReport, Error> {
    let mut clients = Vec::new();
    for _ in 0..options.connections.max(1) {
        let mut o = GrpcClientOptions::new(url);
        o.retries = 0;
        clients.push(GrpcSafetyClient::connect(o).await?);
    }
    drive("gRPC Check", clients, requests, options).await
}

/// What `cap bench safety` measures against.
#[derive(Debug, Clone)]
pub enum BenchTarget {
    /// A running kernel: gRPC only.
    Addr(String),
    /// A policy file: in-process evaluation, then gRPC against an in-process server on
    /// a loopback port.
    Policy(PathBuf),
    /// The built-in 50-rule policy of [`sample_policy_yaml`], measured like `Policy`.
    Sample,
}

/// Every measurement of one run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchSummary {
    /// In-process `Policy::evaluate` (absent for [`BenchTarget::Addr`]).
    pub in_process: Option<BenchReport>,
    /// gRPC `Check` over loopback (or to the given address).
    pub grpc: BenchReport,
}

/// Runs the measurements for `target`.
pub async fn run(target: BenchTarget, options: &BenchOptions) -> Result<BenchSummary, Error> {
    let requests = sample_requests();
    let (text, source) = match target {
        BenchTarget::Addr(url) => {
            return Ok(BenchSummary {
                in_process: None,
                grpc: grpc(&url, requests, options).await?,
            });
        }
        BenchTarget::Policy(path) => {
            let bytes = crate::policy::read_policy_file(&path)?;
            let text = String::from_utf8(bytes).map_err(|_| {
                Error::policy_at(&path.display().to_string(), ".", "policy is not UTF-8")
            })?;
            (text, path.display().to_string())
        }
        BenchTarget::Sample => (sample_policy_yaml(50), "<sample 50-rule policy>".to_owned()),
    };
    let policy = Policy::from_text(&text, &source)?;
    let threads = options.threads;
    let duration = options.duration;
    let in_proc = {
        let requests = requests.clone();
        tokio::task::spawn_blocking(move || in_process(&policy, &requests, threads, duration))
            .await
            .map_err(|e| Error::Config(format!("in-process bench failed: {e}")))?
    };
    let kernel = Kernel::from_text(&text, &source, KernelOptions::default())?;
    let server = spawn(
        kernel,
        ServeOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            ..ServeOptions::default()
        },
    )
    .await?;
    let grpc_report = grpc(&server.url(), requests, options).await;
    server.shutdown().await?;
    Ok(BenchSummary {
        in_process: Some(in_proc),
        grpc: grpc_report?,
    })
}
