//! `cap gateway`: the HTTP API gateway (and its dashboard) on NATS and Redis.

use super::worker::{init_logging, runtime};
use anyhow::{Context as _, Result, bail};
use cap_blob::{RedisBlobStore, RedisConfig};
use cap_bus::{NatsBus, NatsOptions};
use cap_gateway::{Gateway, GatewayConfig, GatewayMetrics};
use cap_runtime::packets::{PacketConfig, Packets};
use cap_scheduler::RedisJobStore;
use clap::Args;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Arguments of `cap gateway`.
#[derive(Args, Clone, Debug)]
pub struct GatewayArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// An API key and the tenant it acts for, `KEY=TENANT` (repeat for more).
    #[arg(long = "api-key", value_name = "KEY=TENANT", required = true, value_parser = parse_api_key)]
    pub api_keys: Vec<(String, String)>,
    /// NATS server.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// Redis of the job store and the blobs.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/0")]
    pub redis: String,
    /// Key prefix of the scheduler's job store (its `--store-prefix`).
    #[arg(long, default_value = "cap:sched:")]
    pub store_prefix: String,
    /// The gateway's sender id.
    #[arg(long, default_value = "cap-gateway")]
    pub id: String,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Requests per second per API key (0: no limit).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Prometheus metrics.
    #[command(flatten)]
    pub metrics: super::observe::MetricsArgs,
}

/// Parses `KEY=TENANT`.
pub fn parse_api_key(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, t)) if !k.is_empty() && !t.is_empty() => Ok((k.to_owned(), t.to_owned())),
        _ => Err(format!("`{s}`: expected KEY=TENANT")),
    }
}

/// The gateway settings of the arguments.
pub fn config(a: &GatewayArgs) -> GatewayConfig {
    let mut c = GatewayConfig::default();
    for (k, t) in &a.api_keys {
        c = c.api_key(k, t);
    }
    c.max_body_bytes = a.max_body;
    c.rate_per_second = a.rate;
    c
}

/// `cap gateway`.
pub fn gateway(a: GatewayArgs) -> Result<ExitCode> {
    init_logging();
    runtime()?.block_on(async move {
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            s.cancel();
        });
        serve(a, stop).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Serves the gateway on NATS and Redis until `stop`.
pub async fn serve(a: GatewayArgs, stop: CancellationToken) -> Result<()> {
    if a.api_keys.is_empty() {
        bail!("give at least one --api-key KEY=TENANT");
    }
    let bus = NatsBus::connect(NatsOptions::new(&a.nats).name(a.id.clone()))
        .await
        .with_context(|| format!("connecting to NATS at {}", a.nats))?;
    let jobs = RedisJobStore::connect(&a.redis, a.store_prefix.clone()).await?;
    let blobs = RedisBlobStore::connect(RedisConfig::new(a.redis.clone()))
        .await
        .context("connecting to Redis (blobs)")?;
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    let packets = Packets::new(bus.clone(), PacketConfig::new(a.id.clone()));
    let mut config = config(&a);
    if a.metrics.metrics.is_some() {
        let mut registry = cap_runtime::metrics::Registry::default();
        config = config.metrics(GatewayMetrics::register(&mut registry));
        let p = packets.clone();
        registry.register_collector(Box::new(cap_runtime::metrics::PacketCollector::new(
            move || p.stats(),
        )));
        super::observe::register_bus(&mut registry, &bus);
        super::observe::serve(&a.metrics, registry, stop.clone()).await?;
    }
    let gw = Gateway::new(packets, jobs, blobs, config);
    tracing::info!(listen = %a.listen, keys = a.api_keys.len(), "gateway up");
    eprintln!("cap gateway listening on http://{}", listener.local_addr()?);
    gw.serve(listener, stop).await?;
    Ok(())
}
