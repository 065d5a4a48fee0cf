//! [`SchedulerMetrics`]: what a scheduler exports to Prometheus.

use super::stats::SchedulerStats;
use crate::core::{Fence, Millis};
use cap_proto::JobState;
use cap_proto::v1::{DecisionType, PolicyCheckResponse};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Label = [(&'static str, &'static str); 1];

/// Most jobs whose submit or dispatch time is remembered for the latency histograms (a
/// job that ends on another instance is never removed here; past this the memory is
/// dropped, losing a few samples, never growing without bound).
const MAX_TIMED: usize = 100_000;

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
    decisions: Family<Label, Counter>,
    safety_latency: Histogram,
    dispatch_latency: Histogram,
    run_time: Histogram,
    active: Gauge,
    queue_depth: Gauge,
    worker_sessions: Gauge,
    /// Job id → submit (or retry) time and `false` until dispatched, then the dispatch
    /// time and `true` until the end.
    timed: Arc<Mutex<HashMap<String, (Millis, bool)>>>,
}

/// The label of a terminal state: the status name without its prefix.
fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Succeeded => "SUCCEEDED",
        JobState::Failed => "FAILED",
        JobState::FailedFatal => "FAILED_FATAL",
        JobState::Cancelled => "CANCELLED",
        JobState::Denied => "DENIED",
        JobState::Timeout => "TIMEOUT",
        _ => "OTHER",
    }
}

fn seconds(ms: Millis) -> f64 {
    ms as f64 / 1000.0
}

impl SchedulerMetrics {
    /// New metrics, registered in `registry` with the counters of `stats` (the
    /// scheduler's [`stats`](super::Scheduler::stats)).
    pub fn register(registry: &mut Registry, stats: SchedulerStats) -> Self {
        let hist = || Histogram::new(cap_runtime::metrics::LATENCY_BUCKETS);
        let m = SchedulerMetrics {
            received: Counter::default(),
            dispatched: Counter::default(),
            completed: Family::default(),
            retries: Counter::default(),
            dead_letters: Counter::default(),
            decisions: Family::default(),
            safety_latency: hist(),
            dispatch_latency: hist(),
            run_time: hist(),
            active: Gauge::default(),
            queue_depth: Gauge::default(),
            worker_sessions: Gauge::default(),
            timed: Arc::default(),
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
            m.decisions.clone(),
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
        // Every series exists from the start (at 0), so rates and dashboards see them.
        for s in [
            JobState::Succeeded,
            JobState::Failed,
            JobState::FailedFatal,
            JobState::Cancelled,
            JobState::Denied,
            JobState::Timeout,
        ] {
            let _ = m.completed.get_or_create(&[("status", state_name(s))]);
        }
        for d in [
            DecisionType::Allow,
            DecisionType::Deny,
            DecisionType::RequireHuman,
            DecisionType::Throttle,
            DecisionType::AllowWithConstraints,
        ] {
            let _ = m
                .decisions
                .get_or_create(&[("decision", cap_safety::decision_label(d as i32))]);
        }
        let _ = m.decisions.get_or_create(&[("decision", "unavailable")]);
        m
    }

    /// A job changed state at `at`.
    pub(crate) fn transition(&self, job_id: &str, state: JobState, at: Millis) {
        let mut timed = self.timed.lock().unwrap_or_else(|e| e.into_inner());
        match state {
            JobState::Pending => {
                self.received.inc();
                if timed.len() >= MAX_TIMED {
                    timed.clear();
                }
                timed.insert(job_id.to_owned(), (at, false));
            }
            JobState::Dispatched => {
                self.dispatched.inc();
                if let Some(t) = timed.get_mut(job_id) {
                    if !t.1 {
                        self.dispatch_latency
                            .observe(seconds(at.saturating_sub(t.0)));
                    }
                    *t = (at, true);
                }
            }
            JobState::FailedRetryable => {
                self.retries.inc();
                // The next dispatch is measured from here.
                if let Some(t) = timed.get_mut(job_id) {
                    *t = (at, false);
                }
            }
            s if s.is_terminal() => {
                self.completed
                    .get_or_create(&[("status", state_name(s))])
                    .inc();
                if let Some((since, true)) = timed.remove(job_id) {
                    self.run_time.observe(seconds(at.saturating_sub(since)));
                }
            }
            _ => {}
        }
    }

    /// A safety check answered (`Some`) or failed (`None`) after `elapsed`.
    pub(crate) fn safety(&self, answer: Option<&PolicyCheckResponse>, elapsed: Duration) {
        let name = answer.map_or("unavailable", |r| cap_safety::decision_label(r.decision));
        self.decisions.get_or_create(&[("decision", name)]).inc();
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
        m.transition("a", JobState::Pending, 1_000);
        m.transition("a", JobState::Dispatched, 1_005);
        m.transition("a", JobState::Running, 1_006);
        m.transition("a", JobState::FailedRetryable, 1_010);
        m.transition("a", JobState::Dispatched, 1_020);
        m.transition("a", JobState::Succeeded, 1_070);
        m.transition("b", JobState::Pending, 1_000);
        m.transition("b", JobState::Denied, 1_001);
        m.safety(
            Some(&PolicyCheckResponse {
                decision: DecisionType::Deny as i32,
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
