//! `cap safety serve|check|schema` and `cap bench safety`: thin wrappers over cap-safety.
//!
//! `cap safety check` prints the decision as proto3 JSON and exits 0 when the job may be
//! dispatched now (allow, allow_with_constraints), 3 when it may not (deny,
//! require_approval, throttle), 1 on errors.

use anyhow::{Context, Result, bail};
use cap_proto::v1::{JobMetadata, PolicyCheckRequest};
use cap_safety::bench::{BenchOptions, BenchTarget};
use cap_safety::reload::ReloadOptions;
use cap_safety::server::{self, ServeOptions, TlsFiles};
use cap_safety::{GrpcClientOptions, GrpcSafetyClient, Kernel, KernelOptions, SafetyClient};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Exit status of `cap safety check` when the job may not be dispatched now.
const EXIT_NOT_DISPATCHABLE: u8 = 3;

/// The Safety Kernel commands.
#[derive(Subcommand)]
pub enum SafetyCommand {
    /// Run the Safety Kernel gRPC server (cordum.agent.v1.SafetyKernel, health, reflection).
    ///
    /// The policy file is reloaded when it changes and on SIGHUP; a reload that fails
    /// keeps the running policy. SIGTERM or Ctrl-C stops the server gracefully.
    Serve(ServeArgs),
    /// Ask for one decision (from a policy file or a running kernel) and print it as JSON.
    ///
    /// Exit status: 0 when the job may be dispatched now (allow, allow_with_constraints),
    /// 3 when it may not (deny, require_approval, throttle), 1 on errors.
    #[command(group(ArgGroup::new("source").required(true).args(["policy", "addr"])))]
    Check(CheckArgs),
    /// Print the JSON Schema of safety policy files.
    Schema,
}

/// Arguments of `cap safety serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Policy file (YAML or JSON).
    #[arg(long, env = server::ENV_POLICY)]
    policy: PathBuf,
    /// Address to listen on.
    #[arg(long, env = server::ENV_LISTEN, default_value = server::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Server certificate chain (PEM); enables TLS (needs cap-safety's `tls` feature).
    #[arg(long, env = server::ENV_TLS_CERT, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = server::ENV_TLS_KEY, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA for client certificates (PEM): require mTLS.
    #[arg(long, env = server::ENV_CLIENT_CA, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// How long a cached decision is served, in milliseconds (0 disables the cache).
    #[arg(long, env = "CAP_SAFETY_CACHE_TTL_MS", default_value_t = 5000)]
    cache_ttl_ms: u64,
    /// How often the policy file is checked for changes, in milliseconds (0: only SIGHUP).
    #[arg(long, env = "CAP_SAFETY_RELOAD_INTERVAL_MS", default_value_t = 1000)]
    reload_interval_ms: u64,
    /// Largest request or response message, in bytes.
    #[arg(long, env = "CAP_SAFETY_MAX_MESSAGE_BYTES", default_value_t = server::DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Prometheus metrics.
    #[command(flatten)]
    metrics: super::observe::MetricsArgs,
}

/// `meta.actor_type` values.
#[derive(Clone, Copy, ValueEnum)]
enum ActorType {
    Human,
    Service,
}

/// Arguments of `cap safety check`.
#[derive(Args)]
pub struct CheckArgs {
    /// Evaluate in-process with this policy file.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Ask the kernel at this URL (`http://host:port`).
    #[arg(long, env = server::ENV_ADDR)]
    addr: Option<String>,
    /// Job topic, e.g. `job.deploy.prod`.
    #[arg(long)]
    topic: String,
    /// Tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// A label (repeatable), e.g. `--label env=prod --label mcp.tool=read`.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Job id (returned as approval_ref when approval is required).
    #[arg(long, default_value = "cli-check")]
    job_id: String,
    /// `meta.capability`.
    #[arg(long)]
    capability: Option<String>,
    /// `meta.risk_tags` (repeatable).
    #[arg(long = "risk-tag")]
    risk_tags: Vec<String>,
    /// `meta.requires` (repeatable).
    #[arg(long = "requires")]
    requires: Vec<String>,
    /// `meta.pack_id`.
    #[arg(long)]
    pack_id: Option<String>,
    /// `meta.actor_id`.
    #[arg(long)]
    actor_id: Option<String>,
    /// `meta.actor_type`.
    #[arg(long, value_enum)]
    actor_type: Option<ActorType>,
    /// Explain: the reason holds a trace of the rules considered.
    #[arg(long)]
    explain: bool,
    /// One line instead of indented JSON.
    #[arg(long)]
    compact: bool,
    /// Per-call timeout for `--addr`, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
}

/// Arguments of `cap bench safety`.
#[derive(Args)]
#[command(group(ArgGroup::new("target").args(["addr", "policy"])))]
pub struct BenchSafetyArgs {
    /// Drive a running kernel at this URL (gRPC only).
    #[arg(long)]
    addr: Option<String>,
    /// Measure this policy: in-process, then gRPC against an in-process loopback server.
    /// Without `--addr` or `--policy`, a built-in 50-rule policy.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Concurrent gRPC callers.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// HTTP/2 connections shared by the callers.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Prints `text` and a newline; a closed stdout (`| head`) is an error, not a panic.
fn print_line(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .context("writing stdout")
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// Runs a `cap safety` command. Needs a tokio runtime (multi-threaded for `serve`).
pub async fn run(cmd: SafetyCommand) -> Result<ExitCode> {
    match cmd {
        SafetyCommand::Serve(a) => serve(a).await,
        SafetyCommand::Check(a) => check(a).await,
        SafetyCommand::Schema => {
            let schema = cap_safety::policy::schema();
            print_line(&serde_json::to_string_pretty(&schema)?)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(a: ServeArgs) -> Result<ExitCode> {
    // The kernel logs one line per decision (and reloads) through `tracing`
    // (`CAP_LOG=debug|info|warn` sets the level).
    super::worker::init_logging();

    let options = KernelOptions {
        cache_ttl: Duration::from_millis(a.cache_ttl_ms),
        ..KernelOptions::default()
    };
    let kernel = Kernel::from_file(&a.policy, options)?;
    let stop_metrics = tokio_util::sync::CancellationToken::new();
    if a.metrics.metrics.is_some() {
        let mut registry = cap_runtime::metrics::Registry::default();
        kernel.attach_metrics(cap_safety::KernelMetrics::register(&mut registry));
        super::observe::serve(&a.metrics, registry, stop_metrics.clone()).await?;
    }
    let _stop_metrics = stop_metrics.drop_guard();
    let tls = match (a.tls_cert, a.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert,
            key,
            client_ca: a.client_ca,
        }),
        _ => None,
    };
    let serve = ServeOptions {
        listen: a.listen,
        max_message_bytes: a.max_message_bytes,
        tls,
        reload: ReloadOptions {
            poll_interval: (a.reload_interval_ms > 0)
                .then(|| Duration::from_millis(a.reload_interval_ms)),
            sighup: true,
        },
    };
    server::serve(kernel, serve, server::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

fn request(a: &CheckArgs) -> PolicyCheckRequest {
    let meta = JobMetadata {
        capability: a.capability.clone().unwrap_or_default(),
        risk_tags: a.risk_tags.clone(),
        requires: a.requires.clone(),
        pack_id: a.pack_id.clone().unwrap_or_default(),
        actor_id: a.actor_id.clone().unwrap_or_default(),
        actor_type: match a.actor_type {
            Some(ActorType::Human) => cap_proto::v1::ActorType::Human as i32,
            Some(ActorType::Service) => cap_proto::v1::ActorType::Service as i32,
            None => 0,
        },
        ..JobMetadata::default()
    };
    PolicyCheckRequest {
        job_id: a.job_id.clone(),
        topic: a.topic.clone(),
        tenant: a.tenant.clone().unwrap_or_default(),
        labels: a.labels.iter().cloned().collect(),
        meta: (meta != JobMetadata::default()).then_some(meta),
        ..PolicyCheckRequest::default()
    }
}

async fn check(a: CheckArgs) -> Result<ExitCode> {
    let req = request(&a);
    let resp = match (&a.policy, &a.addr) {
        (Some(path), _) => {
            let kernel = Kernel::from_file(path, KernelOptions::default())?;
            if a.explain {
                kernel.explain(&req)
            } else {
                kernel.check(&req)
            }
        }
        (None, Some(addr)) => {
            let mut o = GrpcClientOptions::new(addr.clone());
            o.timeout = Duration::from_millis(a.timeout_ms);
            let client = GrpcSafetyClient::new(o)?;
            if a.explain {
                client.explain(&req).await?
            } else {
                SafetyClient::check(&client, &req).await?
            }
        }
        (None, None) => bail!("give --policy FILE or --addr URL"),
    };
    let text = if a.compact {
        cap_proto::json::to_string(&resp)
    } else {
        cap_proto::json::to_string_pretty(&resp)
    }
    .context("printing the decision")?;
    print_line(&text)?;
    Ok(if cap_safety::decision_of(&resp).dispatches() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_DISPATCHABLE)
    })
}

/// Runs `cap bench safety`: requests/s and p50/p99 (JSON with `--json`).
pub async fn bench(a: BenchSafetyArgs) -> Result<ExitCode> {
    if !(a.duration > 0.0 && a.duration.is_finite()) {
        bail!("--duration must be a positive number of seconds");
    }
    let target = match (a.addr, a.policy) {
        (Some(addr), _) => BenchTarget::Addr(addr),
        (None, Some(p)) => BenchTarget::Policy(p),
        (None, None) => BenchTarget::Sample,
    };
    let options = BenchOptions {
        concurrency: a.concurrency.max(1),
        duration: Duration::from_secs_f64(a.duration),
        connections: a.connections.max(1),
        ..BenchOptions::default()
    };
    let summary = cap_safety::bench::run(target, &options).await?;
    if a.json {
        print_line(&serde_json::to_string(&summary)?)?;
    } else {
        if let Some(r) = &summary.in_process {
            print_line(&r.line())?;
        }
        print_line(&summary.grpc.line())?;
    }
    Ok(ExitCode::SUCCESS)
}
