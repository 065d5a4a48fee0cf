//! `cap scheduler` (the control plane as a service), `cap approve` / `cap reject` (the
//! approval command) and `cap tail` (live bus traffic as one-line JSON).

use super::worker::{init_logging, load_key, replay_store, runtime, shutdown_signal, trust_policy};
use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use cap_bus::{Bus, NatsBus, NatsOptions};
use cap_runtime::packets::{PacketConfig, Packets, Profile};
use cap_safety::{DynSafetyClient, GrpcClientOptions, GrpcSafetyClient, Kernel, KernelOptions};
use cap_scheduler::core::{Admission, Config, DEFAULT_POINTER_SCHEMES, Pools};
use cap_scheduler::shell::APPROVAL_SUBJECT;
use cap_scheduler::trust::production::production_packets;
use cap_scheduler::trust::{
    DEFAULT_NAMESPACE, RedisTrustStore, TrustServer, TrustServerConfig, WorkerKeys, WorkerTrust,
    WorkerTrustMode,
};
use cap_scheduler::{RedisJobStore, Scheduler, SchedulerOptions};
use cap_sign::PrivateKey;
use clap::Args;
use futures_util::StreamExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Arguments of `cap scheduler`.
#[derive(Args)]
pub struct SchedulerArgs {
    /// Pools file (topics → pool, pools → requires and timeouts).
    #[arg(long)]
    pools: Option<PathBuf>,
    /// Address of a Safety Kernel (`http://127.0.0.1:50051`).
    #[arg(long, conflicts_with = "policy", env = "CAP_SAFETY_ADDR")]
    safety: Option<String>,
    /// Evaluate this policy file in process instead of asking a kernel.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Redis for the job records (default `REDIS_URL`, else redis://127.0.0.1:6379/0).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/0")]
    redis: String,
    /// Scheduler id (its sender id).
    #[arg(long, default_value = "cap-scheduler")]
    id: String,
    /// Sign what the scheduler publishes with this key.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Require signatures from the senders in this directory of `<sender_id>.pem`.
    #[arg(long)]
    trust: Option<PathBuf>,
    /// Pointer schemes accepted in `context_ptr` at submit (others: FAILED 203).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_POINTER_SCHEMES.map(String::from))]
    pointer_schemes: Vec<String>,
    /// Worker trust: `off` (default: no checks), `warn` (log and count workers without
    /// a session) or `enforce` (only workers with a live session get jobs and are
    /// heard). With `--worker-keys` and `--key` the handshake is served in every mode.
    #[arg(long, default_value = "off", value_parser = parse_mode)]
    worker_trust: WorkerTrustMode,
    /// Directory of worker proof keys: `<proof_key_id>.pem` (public), optionally with
    /// `<proof_key_id>.json` `{"worker_id", "agent_id", "tenant_id"}`.
    #[arg(long)]
    worker_keys: Option<PathBuf>,
    /// The id of `--key` in the trust handshake (`server_key_id`; default: the key
    /// file's name without `.pem` / `.key.pem`).
    #[arg(long)]
    key_id: Option<String>,
    /// Redis namespace of the trust handshake's challenges and sessions (keys
    /// `cap:trust:{NS}:…`, in `--redis`); scheduler instances that share it share
    /// sessions.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    worker_trust_namespace: String,
    /// How long finished jobs are kept (in Redis as in memory), e.g. `1h`, `90s`, `500ms`.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    retention: Duration,
    /// A dispatched job that has not started after this long times out.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    dispatch_timeout: Duration,
    /// A running job without a result after this long times out (unless its budget or
    /// the policy sets a deadline).
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    run_timeout: Duration,
    /// Key prefix of the job store in Redis (instances of one scheduler share it).
    #[arg(long, default_value = "cap:sched:")]
    store_prefix: String,
    /// Queue group prefix shared by the instances of one scheduler.
    #[arg(long, default_value = cap_scheduler::shell::QUEUE_GROUP)]
    queue_group: String,
    /// The signature profile: `legacy` (default) or `production` (CAP-PRODUCTION:
    /// exact-wire signatures with `--key` under `--key-id`, results and progress admitted
    /// only when sealed by a registered worker proof key, once; needs `--worker-keys`
    /// and `--key`). Dispatch fencing is on in both.
    #[arg(long, default_value = "legacy", value_parser = super::worker::parse_profile)]
    profile: Profile,
    /// Where the production profile remembers admitted messages: `redis` (default:
    /// `--redis`, keys `cap:replay:sched:<id>:…`, shared by the instances) or `memory`.
    #[arg(long, default_value = "redis", value_parser = ["redis", "memory"])]
    replay: String,
    /// The tenant of the scheduler's own production packets that carry no identity (and
    /// of jobs submitted without one).
    #[arg(long, default_value = cap_runtime::trust::DEFAULT_TENANT)]
    tenant: String,
    /// Prometheus metrics.
    #[command(flatten)]
    metrics: super::observe::MetricsArgs,
}

/// Parses `90s`, `500ms`, `5m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 90s, 500ms, 5m, 1h)"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => return Err(format!("`{s}`: unit must be ms, s, m or h")),
    };
    Ok(Duration::from_millis(ms))
}

/// Parses `off | warn | enforce`.
pub fn parse_mode(s: &str) -> std::result::Result<WorkerTrustMode, String> {
    s.parse()
        .map_err(|e: cap_runtime::trust::TrustError| e.to_string())
}

/// The default `server_key_id` of a key file: its name without `.pem` or `.key.pem`.
pub fn key_id_of(path: &std::path::Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".key.pem")
        .or_else(|| name.strip_suffix(".pem"))
        .unwrap_or(name);
    (!stem.is_empty()).then(|| stem.to_owned())
}

/// The worker trust service of `cap scheduler`, from its flags (`None`: not served).
async fn worker_trust(a: &SchedulerArgs, key: Option<&PrivateKey>) -> Result<Option<WorkerTrust>> {
    let (dir, key) = match (&a.worker_keys, key) {
        (Some(dir), Some(key)) => (dir, key),
        (None, _) if a.worker_trust == WorkerTrustMode::Off => return Ok(None),
        (Some(_), None) => bail!("--worker-keys needs --key (the scheduler signs the handshake)"),
        _ => bail!(
            "--worker-trust {} needs --worker-keys DIR and --key PEM",
            a.worker_trust
        ),
    };
    let key_path = a.key.as_deref().context("--key")?;
    let key_id = match &a.key_id {
        Some(id) => id.clone(),
        None => key_id_of(key_path).context("--key-id (the key file has no usable name)")?,
    };
    let keys = WorkerKeys::load_dir(dir)?;
    let config = TrustServerConfig::new(a.id.clone(), key_id, Arc::new(key.clone()), keys);
    let store = RedisTrustStore::connect(&a.redis, &a.worker_trust_namespace).await?;
    let server = TrustServer::new(config, Arc::new(store))?;
    tracing::info!(
        mode = %a.worker_trust,
        keys = server.keys().len(),
        "worker trust handshake served"
    );
    Ok(Some(WorkerTrust::new(a.worker_trust, server)))
}

/// `cap scheduler`: runs against `NATS_URL` until Ctrl-C or SIGTERM.
pub fn scheduler(a: SchedulerArgs) -> Result<ExitCode> {
    init_logging();
    runtime()?.block_on(async move {
        let mut registry = cap_runtime::metrics::Registry::default();
        let safety: Arc<dyn DynSafetyClient> = match (&a.safety, &a.policy) {
            // Connects on first use: the scheduler starts while the kernel is down, and
            // its jobs wait for it (re-checked with back-off, then DENIED: fail closed),
            // as they do when the kernel goes down later.
            (Some(addr), _) => {
                Arc::new(GrpcSafetyClient::new(GrpcClientOptions::new(addr.clone()))?)
            }
            (None, Some(path)) => {
                let kernel = Kernel::from_file(path, KernelOptions::default())?;
                if a.metrics.metrics.is_some() {
                    kernel.attach_metrics(cap_safety::KernelMetrics::register(&mut registry));
                }
                Arc::new(kernel)
            }
            (None, None) => bail!(
                "give --safety ADDR or --policy FILE (the scheduler never dispatches unchecked)"
            ),
        };
        let pools = match &a.pools {
            Some(p) => Pools::from_yaml(
                &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            )?,
            None => Pools::default(),
        };
        // Flags first: a bad combination fails before any connection.
        let key = a.key.as_deref().map(load_key).transpose()?;
        if a.profile == Profile::Production && (a.worker_keys.is_none() || key.is_none()) {
            bail!(
                "--profile production needs --worker-keys DIR and --key PEM (workers' proof keys, the scheduler's key)"
            );
        }
        let worker_trust = worker_trust(&a, key.as_ref()).await?;
        let bus = NatsBus::connect(NatsOptions::from_env()?.name(a.id.clone()))
            .await
            .context("connecting to NATS (NATS_URL)")?;
        let store = RedisJobStore::connect(&a.redis, a.store_prefix.clone()).await?;
        let mut config = PacketConfig::new(a.id.clone()).trust(trust_policy(a.trust.as_deref())?);
        if let Some(k) = &key {
            config = config.signer(Arc::new(k.clone()));
        }
        if let (Profile::Production, Some(trust)) = (a.profile, &worker_trust) {
            let url = (a.replay == "redis").then_some(a.redis.as_str());
            let replay = replay_store(url, &format!("cap:replay:sched:{}:", a.id)).await?;
            config = production_packets(config, trust, replay, &a.tenant)?;
            tracing::info!(replay = %a.replay, tenant = %a.tenant, "CAP-PRODUCTION profile");
        }
        let options = SchedulerOptions {
            config: Config {
                admission: Admission::with_schemes(a.pointer_schemes.clone()),
                retention: a.retention,
                dispatch_timeout: a.dispatch_timeout,
                run_timeout: a.run_timeout,
                ..Config::default()
            },
            queue_group: a.queue_group.clone(),
            pools,
            worker_trust,
            ..Default::default()
        };
        let packets = Packets::new(bus.clone(), config);
        let scheduler = Scheduler::new(packets.clone(), Arc::new(safety), store, options);
        let stop = CancellationToken::new();
        let scheduler = if a.metrics.metrics.is_some() {
            let m = cap_scheduler::SchedulerMetrics::register(&mut registry, scheduler.stats());
            registry.register_collector(Box::new(cap_runtime::metrics::PacketCollector::new(
                move || packets.stats(),
            )));
            super::observe::register_bus(&mut registry, &bus);
            super::observe::serve(&a.metrics, registry, stop.clone()).await?;
            scheduler.with_metrics(m)
        } else {
            scheduler
        };
        let s = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            s.cancel();
        });
        scheduler.run(stop).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Arguments of `cap approve` and `cap reject`.
#[derive(Args)]
pub struct ApprovalArgs {
    /// The job (its approval_ref).
    job_id: String,
    /// Why (recorded with a rejection).
    #[arg(long, default_value = "")]
    reason: String,
}

/// `cap approve` / `cap reject`: asks the scheduler over `NATS_URL`.
pub fn approval(a: ApprovalArgs, approve: bool) -> Result<ExitCode> {
    runtime()?.block_on(async move {
        let bus = NatsBus::connect(NatsOptions::from_env()?.without_jetstream())
            .await
            .context("connecting to NATS (NATS_URL)")?;
        let body = serde_json::json!({"job_id": a.job_id, "approve": approve, "reason": a.reason})
            .to_string();
        let reply = bus
            .request(APPROVAL_SUBJECT, Bytes::from(body), Duration::from_secs(5))
            .await
            .context("no scheduler answered")?;
        let v: serde_json::Value =
            serde_json::from_slice(reply.payload()).context("malformed answer")?;
        println!("{}", v["message"].as_str().unwrap_or_default());
        Ok(if v["ok"] == true {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

/// Arguments of `cap tail`.
#[derive(Args)]
pub struct TailArgs {
    /// Subjects or patterns (default: `sys.>`, `job.>`, `worker.>`).
    subjects: Vec<String>,
    /// Show each message's headers and its W3C trace context (`traceparent`,
    /// `tracestate`, the trace id and the sending span's id).
    #[arg(long)]
    headers: bool,
}

/// `cap tail`: every packet on the subjects as one line of JSON, until Ctrl-C.
pub fn tail(a: TailArgs) -> Result<ExitCode> {
    runtime()?.block_on(async move {
        let bus = NatsBus::connect(NatsOptions::from_env()?.without_jetstream())
            .await
            .context("connecting to NATS (NATS_URL)")?;
        let subjects = if a.subjects.is_empty() {
            vec![
                "sys.>".to_owned(),
                "job.>".to_owned(),
                "worker.>".to_owned(),
            ]
        } else {
            a.subjects
        };
        let mut streams = Vec::new();
        for s in &subjects {
            streams.push(
                bus.subscribe(s)
                    .await
                    .with_context(|| format!("subscribing to {s}"))?,
            );
        }
        let mut all = futures_util::stream::select_all(streams);
        loop {
            tokio::select! {
                _ = shutdown_signal() => return Ok(ExitCode::SUCCESS),
                m = all.next() => {
                    let Some(msg) = m else { return Ok(ExitCode::SUCCESS) };
                    let headers = a.headers.then(|| msg.headers());
                    println!("{}", line_with(msg.subject(), headers, msg.payload()));
                }
            }
        }
    })
}

/// One bus message as a line of JSON: the decoded packet, or why it does not decode;
/// with the message's headers and trace context when `headers` is given:
/// `"headers": {name: value}` and `"trace": {"traceparent", "tracestate", "trace_id",
/// "parent_id", "sampled"}` (`null` when the message carries no valid `traceparent`).
pub fn line_with(subject: &str, headers: Option<&cap_bus::Headers>, payload: &[u8]) -> String {
    let decoded = cap_proto::packet::decode(payload, cap_proto::packet::DEFAULT_MAX_PACKET_BYTES)
        .map_err(|e| e.to_string())
        .and_then(|p| cap_proto::json::to_value(&p).map_err(|e| e.to_string()));
    let mut v = match decoded {
        Ok(packet) => serde_json::json!({ "subject": subject, "packet": packet }),
        Err(error) => {
            serde_json::json!({ "subject": subject, "bytes": payload.len(), "error": error })
        }
    };
    if let Some(h) = headers {
        let all: serde_json::Map<String, serde_json::Value> = h
            .iter()
            .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
            .collect();
        let trace = cap_runtime::trace_context::TraceContext::from_headers(h).map(|c| {
            let mut parent = String::new();
            for b in c.span_id {
                parent.push_str(&format!("{b:02x}"));
            }
            serde_json::json!({
                "traceparent": c.traceparent(),
                "tracestate": c.state,
                "trace_id": c.trace_id_hex(),
                "parent_id": parent,
                "sampled": c.sampled,
            })
        });
        v["headers"] = serde_json::Value::Object(all);
        v["trace"] = trace.unwrap_or(serde_json::Value::Null);
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::line_with;

    fn line(subject: &str, payload: &[u8]) -> String {
        line_with(subject, None, payload)
    }
    use cap_proto::{Timestamp, v1};

    #[test]
    fn tail_headers_show_the_trace_context() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let h = cap_bus::Headers::new()
            .with("traceparent", tp)
            .unwrap()
            .with("tracestate", "k=v")
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line_with("sys.job.submit", Some(&h), b"\xff")).unwrap();
        assert_eq!(v["headers"]["traceparent"], tp);
        assert_eq!(v["trace"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["trace"]["parent_id"], "00f067aa0ba902b7");
        assert_eq!(v["trace"]["tracestate"], "k=v");
        assert_eq!(v["trace"]["sampled"], true);
        let v: serde_json::Value =
            serde_json::from_str(&line_with("x", Some(&cap_bus::Headers::new()), b"\xff")).unwrap();
        assert!(v["trace"].is_null());
        assert!(v["headers"].as_object().unwrap().is_empty());
        let v: serde_json::Value = serde_json::from_str(&line("x", b"\xff")).unwrap();
        assert!(v.get("headers").is_none() && v.get("trace").is_none());
    }

    #[test]
    fn tail_lines_decode_packets_and_report_garbage() {
        let pkt = v1::BusPacket::new(
            "t",
            "s",
            Timestamp::default(),
            v1::JobCancel {
                job_id: "j".into(),
                ..Default::default()
            },
        );
        let v: serde_json::Value =
            serde_json::from_str(&line("sys.job.cancel", &cap_proto::packet::encode(&pkt)))
                .unwrap();
        assert_eq!(v["subject"], "sys.job.cancel");
        assert_eq!(v["packet"]["jobCancel"]["jobId"], "j");
        let v: serde_json::Value = serde_json::from_str(&line("x", b"\xff\xff")).unwrap();
        assert_eq!(v["bytes"], 2);
        assert!(v["error"].as_str().unwrap().contains("malformed"));
        assert!(v.get("packet").is_none());
    }
}
