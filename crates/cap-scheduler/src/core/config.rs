//! [`Config`]: the scheduler's timeouts, retry and back-off settings.

use std::time::Duration;

/// Scheduler settings. All times are durations on the scheduler's clock.
#[derive(Clone, Debug)]
pub struct Config {
    /// A job dispatched but not started (no progress, no result) within this time times out.
    pub dispatch_timeout: Duration,
    /// A running job without a result within this time times out (unless its budget or
    /// policy sets a deadline).
    pub run_timeout: Duration,
    /// How long a job may wait for a worker with the capabilities it requires before it
    /// fails with `JOB_WORKER_UNAVAILABLE` (206).
    pub worker_wait_timeout: Duration,
    /// Retries of a FAILED_RETRYABLE job when the policy sets none.
    pub max_retries: u32,
    /// First retry delay; doubles with each attempt (with deterministic jitter).
    pub retry_base: Duration,
    /// Largest retry delay.
    pub retry_max: Duration,
    /// Attempts to reach the safety kernel before failing closed (DENIED).
    pub safety_attempts: u32,
    /// First re-check delay after a THROTTLE decision or an unreachable kernel.
    pub recheck_base: Duration,
    /// Expected heartbeat interval; a worker is lost after three missed intervals.
    pub heartbeat_interval: Duration,
    /// How long finished jobs are kept (for idempotent re-submission and late results).
    pub retention: Duration,
    /// Protocol versions this scheduler speaks.
    pub supported_versions: Vec<i32>,
    /// What is refused at submit (pointer schemes and targets).
    pub admission: super::Admission,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dispatch_timeout: Duration::from_secs(30),
            run_timeout: Duration::from_secs(300),
            worker_wait_timeout: Duration::from_secs(30),
            max_retries: 3,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            safety_attempts: 5,
            recheck_base: Duration::from_millis(200),
            heartbeat_interval: Duration::from_secs(5),
            retention: Duration::from_secs(3600),
            supported_versions: vec![cap_proto::PROTOCOL_VERSION],
            admission: super::Admission::default(),
        }
    }
}

/// Exponential back-off with deterministic jitter: `base × 2^attempt`, capped at `max`,
/// scaled by a factor in [0.5, 1.0) derived from `seed` (so that retries of many jobs
/// spread out, yet a test with a virtual clock sees the same delays every run).
pub fn backoff(base: Duration, max: Duration, attempt: u32, seed: &str) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(20)).min(max);
    // FNV-1a of seed and attempt: cheap, stable, no RNG.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes().chain(attempt.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let factor = 0.5 + (h % 1000) as f64 / 2000.0;
    exp.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let d0 = backoff(base, max, 0, "j");
        let d3 = backoff(base, max, 3, "j");
        assert!(d0 >= base / 2 && d0 < base);
        assert!(d3 >= base * 4 && d3 < base * 8);
        assert!(backoff(base, max, 30, "j") < max);
        assert_eq!(backoff(base, max, 2, "a"), backoff(base, max, 2, "a"));
        assert_ne!(backoff(base, max, 2, "a"), backoff(base, max, 2, "b"));
    }
}
