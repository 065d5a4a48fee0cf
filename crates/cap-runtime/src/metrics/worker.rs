//! [`WorkerMetrics`]: a [`MetricsHook`] that counts into a Prometheus registry.

use crate::worker::MetricsHook;
use cap_proto::v1::JobStatus;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::{Arc, RwLock};
use std::time::Duration;

type Topic = [(&'static str, String); 1];
type TopicStatus = [(&'static str, String); 2];

/// A worker's metrics, labelled by topic (the topics the worker serves: a bounded set)
/// and status; never by job id:
///
/// - `cap_worker_jobs_received_total{topic}`: jobs accepted for execution,
/// - `cap_worker_jobs_completed_total{topic,status}`: jobs ended (`SUCCEEDED`,
///   `FAILED`, `FAILED_RETRYABLE`, `FAILED_FATAL`, `TIMEOUT`, `CANCELLED`),
/// - `cap_worker_run_seconds{topic}`: run time histogram,
/// - `cap_worker_jobs_in_flight`: jobs running now,
/// - `cap_worker_heartbeats_total`: heartbeats published.
///
/// Cheap to clone; clones count into the same metrics.
#[derive(Clone, Debug)]
pub struct WorkerMetrics {
    received: Family<Topic, Counter>,
    completed: Family<TopicStatus, Counter>,
    run: Family<Topic, Histogram>,
    in_flight: Gauge,
    heartbeats: Counter,
    /// Each topic's series, found by the topic's name: a job counts without building a
    /// label set (two strings) or hashing one. A worker serves a few topics: a list
    /// compared by length first beats a hash of the name.
    topics: Arc<RwLock<Vec<Named>>>,
}

/// A topic's name and its series.
type Named = (Box<str>, Arc<TopicSeries>);

/// The series of one topic (handles onto the families' own metrics).
#[derive(Debug)]
struct TopicSeries {
    received: Counter,
    run: Histogram,
    /// By status, filled as statuses occur.
    completed: RwLock<Vec<(JobStatus, Counter)>>,
}

impl WorkerMetrics {
    /// New metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = WorkerMetrics {
            received: Family::default(),
            completed: Family::default(),
            run: Family::new_with_constructor(super::latency_histogram),
            in_flight: Gauge::default(),
            heartbeats: Counter::default(),
            topics: Arc::default(),
        };
        registry.register(
            "cap_worker_jobs_received",
            "Jobs accepted for execution",
            m.received.clone(),
        );
        registry.register(
            "cap_worker_jobs_completed",
            "Jobs ended, by status",
            m.completed.clone(),
        );
        registry.register("cap_worker_run_seconds", "Run time of jobs", m.run.clone());
        registry.register(
            "cap_worker_jobs_in_flight",
            "Jobs running now",
            m.in_flight.clone(),
        );
        registry.register(
            "cap_worker_heartbeats",
            "Heartbeats published",
            m.heartbeats.clone(),
        );
        m
    }

    /// The series of `topic`, made on its first job.
    fn topic(&self, topic: &str) -> Arc<TopicSeries> {
        let find = |list: &[Named]| {
            list.iter()
                .find(|(name, _)| **name == *topic)
                .map(|(_, s)| s.clone())
        };
        if let Some(series) = find(&self.topics.read().unwrap_or_else(|e| e.into_inner())) {
            return series;
        }
        let label = [("topic", topic.to_owned())];
        let series = Arc::new(TopicSeries {
            received: self.received.get_or_create_owned(&label),
            run: self.run.get_or_create_owned(&label),
            completed: RwLock::default(),
        });
        let mut list = self.topics.write().unwrap_or_else(|e| e.into_inner());
        if let Some(raced) = find(&list) {
            return raced;
        }
        list.push((topic.into(), series.clone()));
        series
    }

    fn ended(&self, topic: &str, status: JobStatus, elapsed: Duration) {
        self.in_flight.dec();
        let series = self.topic(topic);
        let known = series
            .completed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, c)| c.clone());
        let counter = known.unwrap_or_else(|| {
            let c = self.completed.get_or_create_owned(&[
                ("topic", topic.to_owned()),
                ("status", status_name(status).to_owned()),
            ]);
            series
                .completed
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push((status, c.clone()));
            c
        });
        counter.inc();
        series.run.observe(elapsed.as_secs_f64());
    }
}

/// The status label: the proto name without its `JOB_STATUS_` prefix.
pub(crate) fn status_name(status: JobStatus) -> &'static str {
    let name = status.as_str_name();
    name.strip_prefix("JOB_STATUS_").unwrap_or(name)
}

impl MetricsHook for WorkerMetrics {
    fn job_received(&self, _job_id: &str, topic: &str) {
        self.in_flight.inc();
        self.topic(topic).received.inc();
    }

    fn job_completed(&self, _job_id: &str, topic: &str, elapsed: Duration) {
        self.ended(topic, JobStatus::Succeeded, elapsed);
    }

    fn job_failed(&self, _job_id: &str, topic: &str, status: JobStatus, elapsed: Duration) {
        self.ended(topic, status, elapsed);
    }

    fn heartbeat_sent(&self, _active_jobs: usize) {
        self.heartbeats.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{encode, sample};

    #[test]
    fn counts_by_topic_and_status() {
        let mut registry = Registry::default();
        let m = WorkerMetrics::register(&mut registry);
        m.job_received("a", "job.x");
        m.job_received("b", "job.x");
        m.job_completed("a", "job.x", Duration::from_millis(3));
        m.job_failed(
            "b",
            "job.x",
            JobStatus::FailedRetryable,
            Duration::from_millis(1),
        );
        m.heartbeat_sent(0);
        let t = encode(&registry);
        assert_eq!(
            sample(&t, "cap_worker_jobs_received_total{topic=\"job.x\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &t,
                "cap_worker_jobs_completed_total{topic=\"job.x\",status=\"SUCCEEDED\"}"
            ),
            Some(1.0),
            "{t}"
        );
        assert_eq!(
            sample(
                &t,
                "cap_worker_jobs_completed_total{topic=\"job.x\",status=\"FAILED_RETRYABLE\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, "cap_worker_run_seconds_count{topic=\"job.x\"}"),
            Some(2.0)
        );
        assert_eq!(sample(&t, "cap_worker_jobs_in_flight"), Some(0.0));
        assert_eq!(sample(&t, "cap_worker_heartbeats_total"), Some(1.0));
    }
}
