//! The Grafana dashboard under `examples/grafana/` only names metrics that the scheduler,
//! the worker, the Safety Kernel and the packet layer export.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_runtime::metrics::{self, PacketCollector, Registry, ValueCollector, ValueKind};
use cap_runtime::worker::MetricsHook as _;
use std::collections::BTreeSet;

/// Every sample name a scrape of the components can hold (histograms: their `_bucket`,
/// `_sum` and `_count` series), read from the `# TYPE` lines of the real registries.
fn exported() -> BTreeSet<String> {
    let mut registry = Registry::default();
    cap_scheduler::SchedulerMetrics::register(&mut registry, Default::default());
    // A worker's series appear with its topics.
    let worker = metrics::WorkerMetrics::register(&mut registry);
    worker.job_received("j", "job.x");
    worker.job_completed("j", "job.x", std::time::Duration::ZERO);
    cap_safety::KernelMetrics::register(&mut registry);
    registry.register_collector(Box::new(PacketCollector::new(Default::default)));
    // What `cap` adds for its NATS connection (cmd/observe.rs).
    for (name, kind) in [
        ("cap_bus_reconnects", ValueKind::Counter),
        ("cap_bus_connected", ValueKind::Gauge),
    ] {
        registry.register_collector(Box::new(ValueCollector::new(name, "x", kind, || 0)));
    }
    let mut names = BTreeSet::new();
    for line in metrics::encode(&registry).lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        if kind == "histogram" {
            for s in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{s}"));
            }
        } else {
            names.insert(name.to_owned());
        }
    }
    names
}

#[test]
fn every_panel_queries_exported_metrics() {
    let exported = exported();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/grafana/cap-rs.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut used = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("cap_"))
                .collect();
            assert!(!names.is_empty(), "{title}: {expr} names no cap metric");
            for n in names {
                assert!(exported.contains(n), "{title}: {n} is not exported");
                used.insert(n.to_owned());
            }
        }
    }
    // The metrics the issue asks for each have a panel.
    for n in [
        "cap_scheduler_jobs_received_total",
        "cap_scheduler_jobs_dispatched_total",
        "cap_scheduler_jobs_completed_total",
        "cap_scheduler_safety_decisions_total",
        "cap_kernel_check_seconds_bucket",
        "cap_scheduler_dispatch_seconds_bucket",
        "cap_scheduler_run_seconds_bucket",
        "cap_scheduler_jobs_active",
        "cap_scheduler_queue_depth",
        "cap_scheduler_retries_total",
        "cap_scheduler_dead_letters_total",
        "cap_packets_rejected_total",
        "cap_scheduler_worker_sessions",
        "cap_bus_reconnects_total",
    ] {
        assert!(used.contains(n), "no panel for {n}");
    }
}
