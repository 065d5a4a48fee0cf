//! Prometheus metrics: a [`prometheus_client`] registry served over HTTP at `/metrics`,
//! collectors that export the counters components already keep (the packet layer's
//! [`PacketStats`](crate::packets::PacketStats), any value a closure reads), and
//! [`WorkerMetrics`], a [`MetricsHook`](crate::worker::MetricsHook) for workers.
//!
//! Components register their metrics into one [`Registry`], then [`serve`] it (bound to
//! loopback unless told otherwise). Label sets are bounded: no job ids, only topics a
//! worker serves, statuses, decisions and error codes.
//!
//! ```
//! use cap_runtime::metrics::{self, Registry, WorkerMetrics};
//! use cap_runtime::worker::MetricsHook;
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let mut registry = Registry::default();
//! let worker = WorkerMetrics::register(&mut registry);
//! worker.job_received("j-1", "job.echo");
//! let text = metrics::encode(&registry);
//! assert!(text.contains("cap_worker_jobs_received_total{topic=\"job.echo\"} 1"));
//!
//! let stop = tokio_util::sync::CancellationToken::new();
//! let server = metrics::serve("127.0.0.1:0".parse().unwrap(), registry.into(), stop.clone())
//!     .await
//!     .unwrap();
//! assert!(server.local_addr().port() > 0);
//! stop.cancel();
//! # });
//! ```

mod collect;
mod http;
mod worker;

pub use collect::{PacketCollector, ValueCollector, ValueKind};
pub use http::{MetricsServer, serve};
pub use prometheus_client;
pub use prometheus_client::registry::Registry;
pub use worker::WorkerMetrics;

/// Default address of `--metrics`: loopback only.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

/// Buckets (seconds) of the latency histograms: 100 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// A histogram with [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(LATENCY_BUCKETS)
}

/// `registry` in the Prometheus text format (version 0.0.4).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    out
}

/// The value of the sample `name` (with its labels, exactly as encoded, e.g.
/// `cap_worker_jobs_completed_total{topic="job.echo",status="SUCCEEDED"}`) in a
/// text exposition; `None` when absent. For tests and tools that read a scrape.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_back_by_exact_name() {
        let text = "# HELP a_total x\na_total 3\na_total_x 9\nb{k=\"v\"} 2.5\n";
        assert_eq!(sample(text, "a_total"), Some(3.0));
        assert_eq!(sample(text, "b{k=\"v\"}"), Some(2.5));
        assert_eq!(sample(text, "b"), None);
        assert_eq!(sample(text, "c"), None);
    }
}
