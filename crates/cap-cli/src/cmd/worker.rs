//! `cap worker echo`: a real echo worker against NATS (`NATS_URL`) and Redis (`REDIS_URL`).

use anyhow::{Context as _, Result, bail};
use cap_blob::scope::PREFIXES_ENV;
use cap_blob::{PointerScope, RedisBlobStore, RedisConfig};
use cap_bus::{NatsBus, NatsOptions};
use cap_runtime::packets::Profile;
use cap_runtime::trust::{WorkerTrustConfig, WorkerTrustMode};
use cap_runtime::{Context, JobError, Worker};
use cap_sign::{KeyRing, PrivateKey, PublicKey, TrustMode, TrustPolicy};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The workers.
#[derive(Subcommand)]
pub enum WorkerCommand {
    /// Echo every job's input back as its output.
    Echo(EchoArgs),
}

/// Arguments of `cap worker echo`.
#[derive(Args)]
pub struct EchoArgs {
    /// Topic (subject) to serve, in the queue group of the same name.
    #[arg(long, default_value = "job.echo")]
    pub topic: String,
    /// Private key (PKCS#8 or SEC1 PEM): sign every packet.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Directory of `<sender_id>.pem` public keys: require signed packets from those senders.
    #[arg(long)]
    pub trust: Option<PathBuf>,
    /// Worker id (default `echo-<random>`).
    #[arg(long)]
    pub id: Option<String>,
    /// Pool reported in heartbeats.
    #[arg(long, default_value = "echo")]
    pub pool: String,
    /// Jobs run at once at most (at least 1).
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    pub max_parallel: usize,
    /// Milliseconds each job sleeps before answering (for load and memory tests).
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Seconds running jobs get to finish on Ctrl-C / SIGTERM.
    #[arg(long, default_value_t = 10.0)]
    pub grace: f64,
    /// Core NATS only, no JetStream (same as `CAP_JETSTREAM=off`).
    #[arg(long)]
    pub no_jetstream: bool,
    /// The worker trust handshake.
    #[command(flatten)]
    pub worker_trust: WorkerTrustArgs,
    /// The signature profile: `legacy` (default) or `production` (CAP-PRODUCTION:
    /// exact-wire signatures with the proof key, only the scheduler's production packets
    /// admitted, once; needs `--worker-trust enforce`). Dispatch fencing is on in both.
    #[arg(long, default_value = "legacy", value_parser = parse_profile)]
    pub profile: Profile,
    /// The production profile's replay store in this Redis (keys
    /// `cap:replay:worker:<id>:…`); default: in memory.
    #[arg(long)]
    pub redis: Option<String>,
    /// Fail jobs whose input object has this field: `"retryable"` (FAILED_RETRYABLE),
    /// `"fatal"` (FAILED_FATAL) or any other value (FAILED); others are echoed. For
    /// exercising retries and dead letters.
    #[arg(long, value_name = "FIELD")]
    pub fail_field: Option<String>,
    /// Prometheus metrics.
    #[command(flatten)]
    pub metrics: super::observe::MetricsArgs,
}

/// Parses `legacy | production`.
pub fn parse_profile(s: &str) -> std::result::Result<Profile, String> {
    s.parse().map_err(|e: cap_runtime::Error| e.to_string())
}

/// The replay store of a production component: Redis at `url` under `prefix`, or memory.
pub async fn replay_store(
    url: Option<&str>,
    prefix: &str,
) -> Result<Arc<dyn cap_sign::production::DynReplayStore>> {
    Ok(match url {
        Some(url) => Arc::new(
            cap_runtime::replay::RedisReplayStore::connect(url, prefix)
                .await
                .with_context(|| format!("connecting the replay store to {}", redact(url)))?,
        ),
        None => Arc::new(cap_sign::production::MemoryReplayStore::default()),
    })
}

/// `url` without a password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The worker trust flags of a worker.
#[derive(Args, Clone, Debug, Default)]
pub struct WorkerTrustArgs {
    /// Worker trust: `off` (default), `warn` (handshake; run without a session when the
    /// scheduler does not answer) or `enforce` (no session, no jobs). In `warn` and
    /// `enforce` only packets signed by `--scheduler-id` with a `--scheduler-key` are
    /// accepted.
    #[arg(long = "worker-trust", default_value = "off", value_parser = super::scheduler::parse_mode)]
    pub mode: WorkerTrustMode,
    /// The worker's proof key (PKCS#8 or SEC1 PEM), registered with the scheduler.
    #[arg(long)]
    pub proof_key: Option<PathBuf>,
    /// The proof key's id at the scheduler (default: the worker id).
    #[arg(long)]
    pub proof_key_id: Option<String>,
    /// The scheduler's sender id.
    #[arg(long, default_value = "cap-scheduler")]
    pub scheduler_id: String,
    /// A key of the scheduler: `ID=PEM`, its `server_key_id` and public key file
    /// (repeatable).
    #[arg(long = "scheduler-key", value_name = "ID=PEM")]
    pub scheduler_keys: Vec<String>,
    /// The tenant the scheduler binds to the proof key (the production profile's
    /// tenant).
    #[arg(long, default_value = cap_runtime::trust::DEFAULT_TENANT)]
    pub tenant: String,
}

impl WorkerTrustArgs {
    /// The trust configuration of worker `worker_id` (`None` in `off` mode).
    pub fn config(&self, worker_id: &str) -> Result<Option<WorkerTrustConfig>> {
        let given = self.proof_key.is_some()
            || self.proof_key_id.is_some()
            || !self.scheduler_keys.is_empty();
        if self.mode == WorkerTrustMode::Off {
            if given {
                bail!(
                    "--proof-key, --proof-key-id and --scheduler-key need --worker-trust warn|enforce"
                );
            }
            return Ok(None);
        }
        let path = self
            .proof_key
            .as_deref()
            .with_context(|| format!("--worker-trust {} needs --proof-key PEM", self.mode))?;
        if self.scheduler_keys.is_empty() {
            bail!("--worker-trust {} needs --scheduler-key ID=PEM", self.mode);
        }
        let key_id = self
            .proof_key_id
            .clone()
            .unwrap_or_else(|| worker_id.to_owned());
        let mut config = WorkerTrustConfig::new(
            self.mode,
            key_id,
            Arc::new(load_key(path)?),
            self.scheduler_id.clone(),
        )
        .tenant_id(self.tenant.clone());
        for item in &self.scheduler_keys {
            let (id, pem) = item
                .split_once('=')
                .with_context(|| format!("--scheduler-key {item:?}: expected ID=PEM"))?;
            let text = std::fs::read_to_string(pem).with_context(|| format!("reading {pem}"))?;
            let key = PublicKey::from_pem(&text).with_context(|| format!("scheduler key {pem}"))?;
            config = config.scheduler_key(id, key);
        }
        config.resolve(worker_id)?;
        Ok(Some(config))
    }
}

/// A count that must be at least 1 (`--max-parallel`).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (0 would never run a job)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads a private key file.
pub fn load_key(path: &Path) -> Result<PrivateKey> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    PrivateKey::from_pem(&pem).with_context(|| format!("key {}", path.display()))
}

/// `require` mode over the keys in `dir`, or the default (verify signed packets only).
pub fn trust_policy(dir: Option<&Path>) -> Result<TrustPolicy> {
    match dir {
        None => Ok(TrustPolicy::default()),
        Some(dir) => {
            let ring: KeyRing =
                KeyRing::load_dir(dir).with_context(|| format!("trust dir {}", dir.display()))?;
            Ok(TrustPolicy::new(TrustMode::Require, ring))
        }
    }
}

/// Installs the log writer and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, span export
/// (see [`super::telemetry::init`]).
pub fn init_logging() {
    super::telemetry::init();
}

/// A Tokio runtime for a command.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Runs a worker command.
pub fn run(cmd: WorkerCommand) -> Result<ExitCode> {
    match cmd {
        WorkerCommand::Echo(a) => {
            init_logging();
            runtime()?.block_on(echo(a))
        }
    }
}

async fn echo(a: EchoArgs) -> Result<ExitCode> {
    echo_until(a, shutdown_signal()).await
}

/// Runs the echo worker until `stop` completes.
pub async fn echo_until(
    a: EchoArgs,
    stop: impl std::future::Future<Output = ()>,
) -> Result<ExitCode> {
    let id =
        a.id.clone()
            .unwrap_or_else(|| cap_runtime::id::new_component_id("echo"));
    let signer = a.key.as_deref().map(load_key).transpose()?;
    let trust = trust_policy(a.trust.as_deref())?;
    let worker_trust = a.worker_trust.config(&id)?;
    if worker_trust.is_some() && a.trust.is_some() {
        bail!(
            "--trust does not apply with --worker-trust warn|enforce (only the scheduler's packets are accepted)"
        );
    }
    match a.profile {
        Profile::Production if a.worker_trust.mode != WorkerTrustMode::Enforce => {
            bail!("--profile production needs --worker-trust enforce");
        }
        Profile::Production if signer.is_some() => {
            bail!(
                "--key does not apply with --profile production (packets are sealed with --proof-key)"
            );
        }
        Profile::Legacy if a.redis.is_some() => {
            bail!("--redis (the replay store) applies to --profile production only");
        }
        _ => {}
    }
    let mut opts = NatsOptions::from_env()?.name(id.clone());
    if a.no_jetstream {
        opts = opts.without_jetstream();
    }
    // In-progress reports three times per ack wait: a live job is never redelivered,
    // a killed worker's jobs are after one ack wait. Prefetch no more jobs than can run,
    // so jobs do not wait unreported in the client's buffer.
    let keepalive = match &mut opts.jetstream {
        Some(js) => {
            js.batch = js.batch.min(a.max_parallel).max(1);
            js.ack_wait / 3
        }
        None => cap_runtime::worker::DEFAULT_KEEPALIVE,
    };
    let bus = NatsBus::connect(opts)
        .await
        .context("connecting to NATS (NATS_URL)")?;
    let store = RedisBlobStore::connect(RedisConfig::from_env())
        .await
        .context("connecting to Redis (REDIS_URL)")?;
    let replay = match a.profile {
        Profile::Production => {
            Some(replay_store(a.redis.as_deref(), &format!("cap:replay:worker:{id}:")).await?)
        }
        Profile::Legacy => None,
    };
    let delay = Duration::from_millis(a.delay_ms);
    let fail_field = a.fail_field.clone();
    let mut builder = Worker::builder(bus.clone(), store)
        .id(id.clone())
        .pool(a.pool.clone())
        .max_parallel(a.max_parallel)
        .keepalive(keepalive)
        .pointer_scope(PointerScope::from_env().context(PREFIXES_ENV)?)
        .trust(trust)
        .handshake_on(cap_runtime::reconnect::nats_reconnects(
            bus.clone(),
            Duration::from_secs(1),
        ))
        .handler(
            a.topic.clone(),
            move |_ctx: Context, input: serde_json::Value| {
                let fail_field = fail_field.clone();
                async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    if let Some(how) = fail_field.as_deref().and_then(|f| input.get(f)) {
                        let code = cap_proto::ErrorCode::UNSPECIFIED;
                        return Err(match how.as_str() {
                            Some("retryable") => {
                                JobError::retryable(code, "asked to fail (retryable)")
                            }
                            Some("fatal") => JobError::fatal(code, "asked to fail (fatal)"),
                            _ => JobError::failed("asked to fail"),
                        });
                    }
                    Ok::<_, JobError>(input)
                }
            },
        );
    if let Some(key) = signer {
        builder = builder.signer(Arc::new(key));
    }
    if let Some(config) = worker_trust {
        builder = builder.worker_trust(config);
    }
    if let Some(replay) = replay {
        builder = builder.production(replay);
    }
    let stop_metrics = tokio_util::sync::CancellationToken::new();
    if a.metrics.metrics.is_some() {
        let mut registry = cap_runtime::metrics::Registry::default();
        builder = builder.metrics(Arc::new(cap_runtime::metrics::WorkerMetrics::register(
            &mut registry,
        )));
        super::observe::register_bus(&mut registry, &bus);
        super::observe::serve(&a.metrics, registry, stop_metrics.clone()).await?;
    }
    let _stop_metrics = stop_metrics.drop_guard();
    let worker = builder.build()?.start().await?;
    println!(
        "worker {id} ready on {} (pid {}, profile {})",
        a.topic,
        std::process::id(),
        a.profile
    );
    stop.await;
    let report = worker
        .shutdown(Duration::from_secs_f64(a.grace.max(0.0)))
        .await;
    println!(
        "worker {id} stopped: {} jobs completed, {} finished and {} cancelled at shutdown",
        report.completed_total, report.finished, report.cancelled
    );
    let _ = cap_bus::Bus::close(&bus).await;
    Ok(ExitCode::SUCCESS)
}
