//! An end-to-end load generator: submit→result round trips with a fixed number of jobs
//! in flight, timed per job. `cap bench e2e` and the `e2e` bench run it.

use crate::client::{Client, SubmitOptions};
use crate::{Error, ErrorKind};
use bytes::Bytes;
use cap_blob::BlobStore;
use cap_bus::Bus;
use cap_proto::v1;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LoadConfig {
    /// The topic (the echo worker's).
    pub topic: String,
    /// Jobs in total.
    pub jobs: u64,
    /// Jobs in flight at once.
    pub inflight: usize,
    /// Submit straight to the topic (no scheduler).
    pub direct: bool,
    /// The input of every job (JSON bytes).
    pub input: Bytes,
    /// How long one job may take.
    pub timeout: Duration,
    /// Also read each job's output through its `result_ptr`.
    pub read_output: bool,
}

impl LoadConfig {
    /// `jobs` jobs to `topic`, `inflight` at a time, direct, a small JSON input, 30 s
    /// timeout, outputs read.
    pub fn new(topic: impl Into<String>, jobs: u64, inflight: usize) -> Self {
        LoadConfig {
            topic: topic.into(),
            jobs,
            inflight: inflight.max(1),
            direct: true,
            input: Bytes::from_static(br#"{"message":"hello","n":42}"#),
            timeout: Duration::from_secs(30),
            read_output: true,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct LoadReport {
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Jobs that failed or timed out.
    pub failed: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Succeeded jobs per second.
    pub jobs_per_sec: f64,
    /// Median submit→result latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Slowest job.
    pub max: Duration,
}

impl LoadReport {
    /// The report as a JSON object (latencies in milliseconds).
    pub fn to_json(&self) -> serde_json::Value {
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        serde_json::json!({
            "succeeded": self.succeeded,
            "failed": self.failed,
            "elapsed_s": (self.elapsed.as_secs_f64() * 1e3).round() / 1e3,
            "jobs_per_sec": self.jobs_per_sec.round(),
            "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99),
            "max_ms": ms(self.max),
        })
    }
}

/// The `q` quantile (0-1) of sorted latencies.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q.clamp(0.0, 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn one<B: Bus, S: BlobStore + 'static>(
    client: &Client<B, S>,
    cfg: &LoadConfig,
) -> Result<Duration, Error> {
    let started = Instant::now();
    let options = if cfg.direct {
        SubmitOptions::default().direct()
    } else {
        SubmitOptions::default()
    };
    let mut handle = client
        .submit_bytes(&cfg.topic, cfg.input.clone(), options)
        .await?;
    if cfg.read_output {
        handle.output_bytes_within(cfg.timeout).await?;
    } else {
        let r = handle.result_within(cfg.timeout).await?;
        if r.status != v1::JobStatus::Succeeded as i32 {
            return Err(Error::job_failed(r.clone()));
        }
    }
    Ok(started.elapsed())
}

/// Runs the load; `on_done` is called after every finished job with the number done.
pub async fn run<B: Bus, S: BlobStore + 'static>(
    client: &Client<B, S>,
    cfg: &LoadConfig,
    on_done: impl FnMut(u64),
) -> Result<LoadReport, Error> {
    if cfg.jobs == 0 {
        return Err(Error::new(ErrorKind::Config, "no jobs to run"));
    }
    run_with(cfg.jobs, cfg.inflight, || one(client, cfg), on_done).await
}

/// The driver behind [`run`], for any round trip: `jobs` calls of `one`, `inflight` at
/// a time, each giving its latency or an error. Failed jobs are counted (the first
/// error is logged); if every job failed, the first error is returned. `on_done` is
/// called after every finished job with the number done.
pub async fn run_with<F, Fut, E>(
    jobs: u64,
    inflight: usize,
    mut one: F,
    mut on_done: impl FnMut(u64),
) -> Result<LoadReport, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Duration, E>>,
    E: std::fmt::Display,
{
    let inflight = inflight.max(1);
    let mut latencies = Vec::with_capacity(usize::try_from(jobs).unwrap_or(0));
    let mut failed = 0u64;
    let mut first_error: Option<E> = None;
    let mut started = 0u64;
    let mut in_flight = FuturesUnordered::new();
    let t0 = Instant::now();
    while started < jobs && in_flight.len() < inflight {
        in_flight.push(one());
        started += 1;
    }
    let mut done = 0u64;
    while let Some(r) = in_flight.next().await {
        done += 1;
        match r {
            Ok(d) => latencies.push(d),
            Err(e) => {
                failed += 1;
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
        on_done(done);
        if started < jobs {
            in_flight.push(one());
            started += 1;
        }
    }
    let elapsed = t0.elapsed();
    if latencies.is_empty()
        && let Some(e) = first_error
    {
        return Err(e);
    }
    if let Some(e) = &first_error {
        tracing::warn!(failed, error = %e, "some jobs failed");
    }
    latencies.sort_unstable();
    let succeeded = latencies.len() as u64;
    Ok(LoadReport {
        succeeded,
        failed,
        elapsed,
        jobs_per_sec: succeeded as f64 / elapsed.as_secs_f64().max(1e-9),
        p50: quantile(&latencies, 0.50),
        p99: quantile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or_default(),
    })
}

/// The peak resident set size of this process (`VmHWM`) and the current one (`VmRSS`),
/// in bytes, from `/proc/self/status`.
pub fn rss_bytes() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(51));
        assert_eq!(quantile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[tokio::test]
    async fn run_with_bounds_concurrency_and_counts_failures() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (now, peak, calls) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        let mut done_seen = 0;
        let report = run_with(
            50,
            4,
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(running, Ordering::SeqCst);
                tokio::task::yield_now().await;
                now.fetch_sub(1, Ordering::SeqCst);
                if n % 10 == 0 {
                    Err(format!("job {n} failed"))
                } else {
                    Ok(Duration::from_millis(n as u64))
                }
            },
            |d| done_seen = d,
        )
        .await
        .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 50);
        assert_eq!(
            peak.load(Ordering::SeqCst),
            4,
            "never more than 4 in flight"
        );
        assert_eq!((report.succeeded, report.failed), (45, 5));
        assert_eq!(done_seen, 50);
        assert_eq!(report.max, Duration::from_millis(49));

        let all_failed = run_with(3, 2, || async { Err::<Duration, _>("down") }, |_| {}).await;
        assert_eq!(all_failed.unwrap_err(), "down");
    }
}
