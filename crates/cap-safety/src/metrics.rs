//! [`KernelMetrics`]: what a Safety Kernel exports to Prometheus.

use cap_proto::v1::{DecisionType, PolicyCheckResponse};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Buckets (seconds) of the check latency: 5 µs to 100 ms (evaluation is in memory).
const BUCKETS: [f64; 12] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.025, 0.1,
];

type Label = [(&'static str, &'static str); 1];

/// A kernel's metrics (attach them with [`Kernel::attach_metrics`](crate::Kernel::attach_metrics)):
///
/// - `cap_kernel_decisions_total{decision}`: Check/Evaluate answers by decision
///   (`allow`, `deny`, `require_human`, `throttle`, `allow_with_constraints`, …),
/// - `cap_kernel_cache_hits_total`: answers served from the decision cache,
/// - `cap_kernel_check_seconds`: time to answer a check.
///
/// Cheap to clone; clones count into the same metrics.
///
/// ```
/// use cap_safety::{Kernel, KernelMetrics, KernelOptions, conformance};
/// use prometheus_client::registry::Registry;
/// let mut registry = Registry::default();
/// let kernel = Kernel::from_text(conformance::POLICY, "c", KernelOptions::default()).unwrap();
/// kernel.attach_metrics(KernelMetrics::register(&mut registry));
/// kernel.check(&Default::default());
/// let mut text = String::new();
/// prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
/// assert!(text.contains("cap_kernel_check_seconds_count 1"));
/// ```
#[derive(Clone, Debug)]
pub struct KernelMetrics {
    decisions: Family<Label, Counter>,
    cache_hits: Counter,
    latency: Histogram,
}

impl KernelMetrics {
    /// New metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = KernelMetrics {
            decisions: Family::default(),
            cache_hits: Counter::default(),
            latency: Histogram::new(BUCKETS),
        };
        registry.register(
            "cap_kernel_decisions",
            "Check answers, by decision",
            m.decisions.clone(),
        );
        registry.register(
            "cap_kernel_cache_hits",
            "Check answers served from the decision cache",
            m.cache_hits.clone(),
        );
        registry.register(
            "cap_kernel_check_seconds",
            "Time to answer a check",
            m.latency.clone(),
        );
        // Every series exists from the start (at 0), so rates and dashboards see them.
        for d in [
            DecisionType::Allow,
            DecisionType::Deny,
            DecisionType::RequireHuman,
            DecisionType::Throttle,
            DecisionType::AllowWithConstraints,
        ] {
            let _ = m
                .decisions
                .get_or_create(&[("decision", decision_label(d as i32))]);
        }
        m
    }

    pub(crate) fn checked(&self, resp: &PolicyCheckResponse, cached: bool, elapsed: Duration) {
        self.decisions
            .get_or_create(&[("decision", decision_label(resp.decision))])
            .inc();
        if cached {
            self.cache_hits.inc();
        }
        self.latency.observe(elapsed.as_secs_f64());
    }
}

/// The label of a wire decision.
pub fn decision_label(decision: i32) -> &'static str {
    match DecisionType::try_from(decision).unwrap_or(DecisionType::Unspecified) {
        DecisionType::Unspecified => "unspecified",
        DecisionType::Allow => "allow",
        DecisionType::Deny => "deny",
        DecisionType::RequireHuman => "require_human",
        DecisionType::Throttle => "throttle",
        DecisionType::AllowWithConstraints => "allow_with_constraints",
        DecisionType::Quarantine => "quarantine",
        DecisionType::Redact => "redact",
    }
}
