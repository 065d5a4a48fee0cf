//! Observability of the long-running commands: `--metrics [ADDR]` (Prometheus `/metrics`,
//! loopback unless told otherwise).

use anyhow::{Context as _, Result};
use cap_bus::NatsBus;
use cap_runtime::metrics::{self, MetricsServer, Registry, ValueCollector, ValueKind};
use clap::Args;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio_util::sync::CancellationToken;

/// The `--metrics` flag.
#[derive(Args, Clone, Debug, Default)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at `http://ADDR/metrics` (`--metrics` alone:
    /// 127.0.0.1:9464; loopback unless an address says otherwise; port 0 picks one, and
    /// the address is printed).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = metrics::DEFAULT_METRICS_ADDR)]
    pub metrics: Option<SocketAddr>,
}

/// Serves `registry` when `--metrics` was given (until `stop`); prints
/// `metrics on http://ADDR/metrics`.
pub async fn serve(
    args: &MetricsArgs,
    registry: Registry,
    stop: CancellationToken,
) -> Result<Option<MetricsServer>> {
    let Some(addr) = args.metrics else {
        return Ok(None);
    };
    let server = metrics::serve(addr, Arc::new(registry), stop)
        .await
        .with_context(|| format!("--metrics {addr}"))?;
    println!("metrics on http://{}/metrics", server.local_addr());
    Ok(Some(server))
}

/// `cap_bus_reconnects_total` and `cap_bus_connected` of a NATS bus.
pub fn register_bus(registry: &mut Registry, bus: &NatsBus) {
    let stats = bus.client().statistics();
    registry.register_collector(Box::new(ValueCollector::new(
        "cap_bus_reconnects",
        "Connections to NATS re-established after the first",
        ValueKind::Counter,
        move || stats.connects.load(Ordering::Relaxed).saturating_sub(1),
    )));
    let bus = bus.clone();
    registry.register_collector(Box::new(ValueCollector::new(
        "cap_bus_connected",
        "1 while connected to NATS",
        ValueKind::Gauge,
        move || u64::from(cap_bus::Bus::is_connected(&bus)),
    )));
}
