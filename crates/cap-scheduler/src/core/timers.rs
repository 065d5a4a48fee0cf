//! Deadlines: when a job next needs a look ([`next_deadline`], a pure function of its
//! record) and what happens when that time comes (the reconciler's [`JobEvent::Due`]).
//!
//! [`JobEvent::Due`]: super::event::JobEvent::Due

use super::config::Config;
use super::event::Action;
use super::job::{Hold, JobRecord, Millis};
use super::machine::Work;
use super::pools::Pools;
use cap_proto::{ErrorCode, JobState};
use std::time::Duration;

/// How often a job waiting for a capable worker looks for one again.
pub const WORKER_POLL_MS: Millis = 100;
/// How often a job following another (same idempotency key) looks at its leader.
pub const FOLLOW_POLL_MS: Millis = 250;
/// How long after its end an unsettled job repeats what its end sets off.
pub const SETTLE_MS: Millis = 2_000;
/// How long a job waits for a safety decision before it asks again (the instance that
/// asked may have died between recording the job and recording the decision; a
/// redelivered submit of a known job is a no-op, so nothing else would ask).
pub const SAFETY_STALL_MS: Millis = 30_000;

/// A duration in milliseconds (saturating).
pub fn ms(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How long a dispatched job may wait to start.
pub fn dispatch_limit(job: &JobRecord, config: &Config, pools: &Pools) -> Millis {
    ms(pools
        .dispatch_timeout(&job.request.topic)
        .unwrap_or(config.dispatch_timeout))
}

/// How long a running job may run.
pub fn run_limit(job: &JobRecord, config: &Config, pools: &Pools) -> Millis {
    if job.max_runtime_ms > 0 {
        job.max_runtime_ms
    } else {
        ms(pools
            .run_timeout(&job.request.topic)
            .unwrap_or(config.run_timeout))
    }
}

/// When `job` next needs a look, if ever. `retention`: whether a finished job keeps a
/// deadline at the end of its retention (the in-memory driver evicts it then; a store
/// with expiring records does not need one).
pub fn next_deadline(
    job: &JobRecord,
    config: &Config,
    pools: &Pools,
    now: Millis,
    retention: bool,
) -> Option<Millis> {
    match (job.state, &job.hold) {
        (JobState::Scheduled, Some(Hold::Recheck { at })) => Some(*at),
        (JobState::Scheduled, Some(Hold::Safety { asked })) => {
            Some(asked.saturating_add(SAFETY_STALL_MS))
        }
        (JobState::FailedRetryable, Some(Hold::Retry { at })) => Some(*at),
        (JobState::Scheduled, Some(Hold::Worker { since })) => {
            let give_up = since.saturating_add(ms(config.worker_wait_timeout));
            Some(give_up.min(now.saturating_add(WORKER_POLL_MS)))
        }
        (JobState::Pending, Some(Hold::Follow { .. })) => Some(now.saturating_add(FOLLOW_POLL_MS)),
        (JobState::Dispatched, _) => {
            Some(job.since.saturating_add(dispatch_limit(job, config, pools)))
        }
        (JobState::Running, _) => Some(job.since.saturating_add(run_limit(job, config, pools))),
        (s, _) if s.is_terminal() && !job.settled => Some(job.since.saturating_add(SETTLE_MS)),
        (s, _) if s.is_terminal() && retention => {
            Some(job.since.saturating_add(ms(config.retention)))
        }
        _ => None,
    }
}

impl Work<'_, '_> {
    /// The job's deadline came: the reconciler's look.
    pub(crate) fn due(&mut self) {
        let now = self.env.now;
        let (config, pools) = (self.env.config, self.env.pools);
        let Some(job) = self.job.as_deref() else {
            return;
        };
        let age = now.saturating_sub(job.since);
        match (job.state, job.hold.clone()) {
            (JobState::Scheduled, Some(Hold::Recheck { at })) if at <= now => self.recheck_now(),
            (JobState::Scheduled, Some(Hold::Safety { asked }))
                if now.saturating_sub(asked) >= SAFETY_STALL_MS =>
            {
                self.recheck_now()
            }
            (JobState::FailedRetryable, Some(Hold::Retry { at })) if at <= now => {
                self.try_dispatch()
            }
            (JobState::Scheduled, Some(Hold::Worker { since })) => {
                if now.saturating_sub(since) >= ms(config.worker_wait_timeout) {
                    self.finish(
                        JobState::Failed,
                        ErrorCode::JOB_WORKER_UNAVAILABLE,
                        "no worker with the required capabilities became available",
                    );
                } else {
                    self.try_dispatch();
                }
            }
            (JobState::Pending, Some(Hold::Follow { leader })) => self.follow(&leader),
            // Silence is no evidence while the bus was down: the deadline waits.
            (JobState::Dispatched | JobState::Running, _) if now < self.env.hold_timeouts_until => {
            }
            (JobState::Dispatched, _) if age >= dispatch_limit(job, config, pools) => {
                self.time_out("not started in time")
            }
            (JobState::Running, _) if age >= run_limit(job, config, pools) => {
                self.time_out("ran past its deadline")
            }
            (s, _) if s.is_terminal() && !job.settled && age >= SETTLE_MS => self.settle(),
            (s, _) if s.is_terminal() && job.settled && age >= ms(config.retention) => {
                let job_id = job.id().to_owned();
                self.actions.push(Action::Evict { job_id });
            }
            _ => {}
        }
    }
}
