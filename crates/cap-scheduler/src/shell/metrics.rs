//! [`SchedulerMetrics`]: what a scheduler exports to Prometheus.

use super::stats::SchedulerStats;
use crate::core::{Fence, Millis};
use cap_proto::JobState;
use cap_proto::v1::PolicyCheckResponse;
use cap_safety::DecisionCounters;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

type Label = [(&'static str, &'static str); 1];

/// A scheduler's metrics. Label sets are bounded (states, decisions, fence kinds); no
/// job ids, no topics (topics are chosen by submitters):
///
/// - `cap_scheduler_jobs_received_total`: jobs submitted (PENDING),
/// - `cap_scheduler_jobs_dispatched_total`: dispatches published (DISPATCHED),
/// - `cap_scheduler_jobs_completed_total{status}`: jobs ended, by terminal state,
/// - `cap_scheduler_retries_total`: retryable failures retried (FAILED_RETRYABLE),
/// - `cap_scheduler_dead_letters_total`: jobs dead-lettered on `sys.job.dlq`,
/// - `cap_scheduler_safety_decisions_total{decision}`: safety answers by decision, or
///   `unavailable`,
/// - `cap_scheduler_safety_seconds`: safety check latency (the kernel as seen from here),
/// - `cap_scheduler_dispatch_seconds`: submit to dispatch,
/// - `cap_scheduler_run_seconds`: dispatch to the end of the job,
/// - `cap_scheduler_jobs_active`: jobs in flight held by this instance,
/// - `cap_scheduler_queue_depth`: inputs waiting for the event loop,
/// - `cap_scheduler_worker_sessions`: workers known (handshake or heartbeat, not expired),
/// - and the counters of [`SchedulerStats`]: `cap_scheduler_commits_total`,
///   `cap_scheduler_conflicts_total`, `cap_scheduler_given_back_total`,
///   `cap_scheduler_fenced_total{kind}`, `cap_scheduler_unknown_results_total`,
///   `cap_scheduler_withdrawn_total`.
///
/// Cheap to clone; clones count into the same metrics. Give it to
/// [`Scheduler::with_metrics`](super::Scheduler::with_metrics).
#[derive(Clone, Debug)]
pub struct SchedulerMetrics {
    received: Counter,
    dispatched: Counter,
    completed: Family<Label, Counter>,
    retries: Counter,
    dead_letters: Counter,
    decisions: DecisionCounters,
    /// The `unavailable` series of `decisions`.
    unavailable: Counter,
    safety_latency: Histogram,
    dispatch_latency: Histogram,
    run_time: Histogram,
    active: Gauge,
    queue_depth: Gauge,
    worker_sessions: Gauge,
    /// The series of `completed` for each of [`TERMINAL`], looked up once.
    completed_by: [Counter; TERMINAL.len()],
}

/// The terminal states with a series of their own.
const TERMINAL: [JobState; 6] = [
    JobState::Succeeded,
    JobState::Failed,
    JobState::FailedFatal,
    JobState::Cancelled,
    JobState::Denied,
    JobState::Timeout,
];

fn seconds(ms: Millis) -> f64 {
    ms as f64 / 1000.0
}

impl SchedulerMetrics {
    /// New metrics, registered in `registry` with the counters of `stats` (the
    /// scheduler's [`stats`](super::Scheduler::stats)).
    pub fn register(registry: &mut Registry, stats: SchedulerStats) -> Self {
        let hist = || Histogram::new(cap_runtime::metrics::LATENCY_BUCKETS);
        // Every series exists from the start (at 0), so rates and dashboards see them.
        let completed = Family::<Label, Counter>::default();
        let completed_by =
            TERMINAL.map(|s| completed.get_or_create(&[("status", s.name())]).clone());
        let decisions = DecisionCounters::default();
        let unavailable = decisions
            .family()
            .get_or_create(&[("decision", "unavailable")])
            .clone();
        let m = SchedulerMetrics {
            received: Counter::default(),
            dispatched: Counter::default(),
            completed,
            completed_by,
            retries: Counter::default(),
            dead_letters: Counter::default(),
            decisions,
            unavailable,
            safety_latency: hist(),
            dispatch_latency: hist(),
            run_time: hist(),
            active: Gauge::default(),
            queue_depth: Gauge::default(),
            worker_sessions: Gauge::default(),
        };
        let r = registry;
        r.register(
            "cap_scheduler_jobs_received",
            "Jobs submitted",
            m.received.clone(),
        );
        r.register(
            "cap_scheduler_jobs_dispatched",
            "Dispatches published",
            m.dispatched.clone(),
        );
        r.register(
            "cap_scheduler_jobs_completed",
            "Jobs ended, by terminal status",
            m.completed.clone(),
        );
        r.register(
            "cap_scheduler_retries",
            "Retryable failures retried",
            m.retries.clone(),
        );
        r.register(
            "cap_scheduler_dead_letters",
            "Jobs dead-lettered",
            m.dead_letters.clone(),
        );
        r.register(
            "cap_scheduler_safety_decisions",
            "Safety answers, by decision (or unavailable)",
            m.decisions.family().clone(),
        );
        r.register(
            "cap_scheduler_safety_seconds",
            "Safety check latency",
            m.safety_latency.clone(),
        );
        r.register(
            "cap_scheduler_dispatch_seconds",
            "Time from submit to dispatch",
            m.dispatch_latency.clone(),
        );
        r.register(
            "cap_scheduler_run_seconds",
            "Time from dispatch to the end of the job",
            m.run_time.clone(),
        );
        r.register(
            "cap_scheduler_jobs_active",
            "Jobs in flight held by this instance",
            m.active.clone(),
        );
        r.register(
            "cap_scheduler_queue_depth",
            "Inputs waiting for the event loop",
            m.queue_depth.clone(),
        );
        r.register(
            "cap_scheduler_worker_sessions",
            "Workers known to this instance",
            m.worker_sessions.clone(),
        );
        r.register_collector(Box::new(StatsCollector(stats)));
        m
    }

    /// A job moved to `state`; `latency` is how long the step it ends took (see
    /// [`JobRecord::latency_to`](crate::core::JobRecord::latency_to)): the wait for a
    /// worker on a dispatch, the run on a terminal state.
    pub(crate) fn transition(&self, state: JobState, latency: Option<Millis>) {
        match state {
            JobState::Pending => {
                self.received.inc();
            }
            JobState::Dispatched => {
                self.dispatched.inc();
                if let Some(ms) = latency {
                    self.dispatch_latency.observe(seconds(ms));
                }
            }
            JobState::FailedRetryable => {
                self.retries.inc();
            }
            s if s.is_terminal() => {
                match TERMINAL.iter().position(|t| *t == s) {
                    Some(i) => self.completed_by[i].inc(),
                    None => self.completed.get_or_create(&[("status", "OTHER")]).inc(),
                };
                if let Some(ms) = latency {
                    self.run_time.observe(seconds(ms));
                }
            }
            _ => {}
        }
    }

    /// A safety check answered (`Some`) or failed (`None`) after `elapsed`.
    pub(crate) fn safety(&self, answer: Option<&PolicyCheckResponse>, elapsed: Duration) {
        match answer {
            Some(r) => self.decisions.inc(r.decision),
            None => {
                self.unavailable.inc();
            }
        }
        self.safety_latency.observe(elapsed.as_secs_f64());
    }

    pub(crate) fn dead_letter(&self) {
        self.dead_letters.inc();
    }

    /// Sizes read after each batch.
    pub(crate) fn gauges(&self, active: usize, queue_depth: usize, workers: usize) {
        let g = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.active.set(g(active));
        self.queue_depth.set(g(queue_depth));
        self.worker_sessions.set(g(workers));
    }
}

/// Exports [`SchedulerStats`] at scrape time.
#[derive(Debug)]
struct StatsCollector(SchedulerStats);

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        for (name, help, v) in [
            (
                "cap_scheduler_commits",
                "Job changes committed to the store",
                s.commits(),
            ),
            (
                "cap_scheduler_conflicts",
                "Compare-and-sets lost to another writer",
                s.conflicts(),
            ),
            (
                "cap_scheduler_given_back",
                "Events given back for redelivery because the store did not take them",
                s.given_back(),
            ),
            (
                "cap_scheduler_unknown_results",
                "Results for jobs this scheduler does not know",
                s.unknown_results(),
            ),
            (
                "cap_scheduler_withdrawn",
                "Dispatches withdrawn from the durable bus after their attempt ended",
                s.withdrawn(),
            ),
        ] {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let mut m = encoder.encode_descriptor(
            "cap_scheduler_fenced",
            "Reports dropped for not belonging to the attempt in flight, by kind",
            None,
            MetricType::Counter,
        )?;
        for kind in [Fence::Inactive, Fence::Stale, Fence::Future, Fence::Foreign] {
            ConstCounter::new(s.fenced(kind))
                .encode(m.encode_family(&[("kind", kind.as_str())])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cap_runtime::metrics::{encode, sample};

    #[test]
    fn transitions_decisions_and_stats_are_exported() {
        let mut registry = Registry::default();
        let stats = SchedulerStats::default();
        let m = SchedulerMetrics::register(&mut registry, stats.clone());
        // Job a: dispatched after 5 ms, retried, dispatched after 10 ms, ran 50 ms.
        m.transition(JobState::Pending, None);
        m.transition(JobState::Dispatched, Some(5));
        m.transition(JobState::Running, None);
        m.transition(JobState::FailedRetryable, None);
        m.transition(JobState::Dispatched, Some(10));
        m.transition(JobState::Succeeded, Some(50));
        // Job b: denied, never dispatched.
        m.transition(JobState::Pending, None);
        m.transition(JobState::Denied, None);
        m.safety(
            Some(&PolicyCheckResponse {
                decision: cap_proto::v1::DecisionType::Deny as i32,
                ..Default::default()
            }),
            Duration::from_millis(2),
        );
        m.safety(None, Duration::from_millis(2));
        m.dead_letter();
        m.gauges(3, 4, 5);
        stats.fence(Fence::Stale);
        let t = encode(&registry);
        let v = |n: &str| sample(&t, n);
        assert_eq!(v("cap_scheduler_jobs_received_total"), Some(2.0));
        assert_eq!(v("cap_scheduler_jobs_dispatched_total"), Some(2.0));
        assert_eq!(v("cap_scheduler_retries_total"), Some(1.0));
        assert_eq!(
            v("cap_scheduler_jobs_completed_total{status=\"SUCCEEDED\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("cap_scheduler_jobs_completed_total{status=\"DENIED\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("cap_scheduler_safety_decisions_total{decision=\"deny\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("cap_scheduler_safety_decisions_total{decision=\"unavailable\"}"),
            Some(1.0)
        );
        assert_eq!(v("cap_scheduler_dead_letters_total"), Some(1.0));
        assert_eq!(v("cap_scheduler_dispatch_seconds_count"), Some(2.0));
        // Dispatch 5 ms, then 10 ms after the retry; run 50 ms from the last dispatch.
        let near = |n: &str, want: f64| (v(n).unwrap() - want).abs() < 1e-9;
        assert!(near("cap_scheduler_dispatch_seconds_sum", 0.015), "{t}");
        assert!(near("cap_scheduler_run_seconds_sum", 0.05), "{t}");
        assert_eq!(v("cap_scheduler_run_seconds_count"), Some(1.0));
        assert_eq!(v("cap_scheduler_jobs_active"), Some(3.0));
        assert_eq!(v("cap_scheduler_queue_depth"), Some(4.0));
        assert_eq!(v("cap_scheduler_worker_sessions"), Some(5.0));
        assert_eq!(
            v("cap_scheduler_fenced_total{kind=\"stale\"}"),
            Some(1.0),
            "{t}"
        );
        assert_eq!(v("cap_scheduler_commits_total"), Some(0.0));
    }
}
