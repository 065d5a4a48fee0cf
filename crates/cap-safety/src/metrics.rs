//! [`KernelMetrics`]: what a Safety Kernel exports to Prometheus.

use cap_proto::v1::{DecisionType, PolicyCheckResponse};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::{Arc, OnceLock};
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
    decisions: DecisionCounters,
    cache_hits: Counter,
    latency: Histogram,
}

impl KernelMetrics {
    /// New metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = KernelMetrics {
            decisions: DecisionCounters::default(),
            cache_hits: Counter::default(),
            latency: Histogram::new(BUCKETS),
        };
        registry.register(
            "cap_kernel_decisions",
            "Check answers, by decision",
            m.decisions.family().clone(),
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
        m
    }

    pub(crate) fn checked(&self, resp: &PolicyCheckResponse, cached: bool, elapsed: Duration) {
        self.decisions.inc(resp.decision);
        if cached {
            self.cache_hits.inc();
        }
        self.latency.observe(elapsed.as_secs_f64());
    }
}

/// Answers counted by decision: a `Family` labelled `decision` whose series are each
/// looked up once, so counting an answer costs one atomic add (no label set hashed).
/// The usual decisions (`allow`, `deny`, `require_human`, `throttle`,
/// `allow_with_constraints`) exist from the start, at 0, so rates and dashboards see
/// them; the others appear when they first occur.
///
/// ```
/// use cap_safety::DecisionCounters;
/// use cap_proto::v1::DecisionType;
/// let counters = DecisionCounters::default();
/// counters.inc(DecisionType::Deny as i32);
/// counters.inc(42); // not a decision: counted as unspecified
/// let get = |d: &'static str| counters.family().get_or_create(&[("decision", d)]).get();
/// assert_eq!((get("deny"), get("unspecified"), get("allow")), (1, 1, 0));
/// ```
#[derive(Clone, Debug)]
pub struct DecisionCounters {
    family: Family<Label, Counter>,
    /// The series of each wire decision (indexed by its value), made on first use.
    by_decision: Arc<[OnceLock<Counter>; DECISIONS]>,
}

/// Wire decisions known (`DecisionType` values 0 to 7).
const DECISIONS: usize = 8;

impl Default for DecisionCounters {
    fn default() -> Self {
        let counters = DecisionCounters {
            family: Family::default(),
            by_decision: Arc::default(),
        };
        for d in [
            DecisionType::Allow,
            DecisionType::Deny,
            DecisionType::RequireHuman,
            DecisionType::Throttle,
            DecisionType::AllowWithConstraints,
        ] {
            let _ = counters.series(d as i32);
        }
        counters
    }
}

impl DecisionCounters {
    /// The family to register.
    pub fn family(&self) -> &Family<Label, Counter> {
        &self.family
    }

    /// Counts one answer of `decision` (a wire value; one this version does not know
    /// counts as `unspecified`).
    pub fn inc(&self, decision: i32) {
        self.series(decision).inc();
    }

    fn series(&self, decision: i32) -> &Counter {
        let known = DecisionType::try_from(decision).unwrap_or(DecisionType::Unspecified);
        let slot = usize::try_from(known as i32)
            .unwrap_or(0)
            .min(DECISIONS - 1);
        self.by_decision[slot].get_or_init(|| {
            self.family
                .get_or_create(&[("decision", decision_label(known as i32))])
                .clone()
        })
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
