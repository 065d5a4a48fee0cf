//! The per-job state machine: [`step`] takes one job's record (or none), one
//! [`JobEvent`] and the [`Env`], and returns the record to commit, the actions to carry
//! out and the follow-ups for other jobs. It is a pure function: no IO, no clock, no
//! randomness beyond what `Env` hands it, so a shell may run it again after a failed
//! compare-and-set, and several scheduler instances may run it on the same job without
//! ever committing conflicting moves.
//!
//! The decisions live in one file per concern: [`submit`](super::submit),
//! [`safety`](super::safety), [`dispatch`](super::dispatch), [`outcome`](super::outcome),
//! [`cancel`](super::cancel), [`workflow`](super::workflow), [`timers`](super::timers).

use super::env::Env;
use super::event::{Action, FollowUp, JobEvent};
use super::job::{JobRecord, TraceParent};
use super::messages::alert;
use cap_proto::state::{self, JobState, Transition};
use cap_proto::{ErrorCode, v1};
use std::sync::Arc;

/// What one step decided.
#[derive(Debug, Default)]
pub struct Step {
    /// The record after the step, when it changed (commit it); `None` when unchanged.
    pub record: Option<Box<JobRecord>>,
    /// Whether the record is new (commit it only if no record exists yet).
    pub created: bool,
    /// What to publish, ask, log.
    pub actions: Vec<Action>,
    /// Work for other jobs, to be applied after this step is committed.
    pub follow_ups: Vec<FollowUp>,
}

/// Steps one job. `current` is its committed record, `None` if it has none.
pub fn step(env: &mut Env<'_>, current: Option<&JobRecord>, event: JobEvent) -> Step {
    let mut w = Work {
        job: current.map(|r| Box::new(r.clone())),
        existed: current.is_some(),
        changed: false,
        actions: Vec::new(),
        follow_ups: Vec::new(),
        env,
    };
    match event {
        JobEvent::Submitted {
            request,
            trace_id,
            sender,
            identity,
            claim,
            internal,
            chain,
            trace_parent,
        } => w.submit(
            request,
            (trace_id, trace_parent),
            sender,
            identity,
            claim,
            internal,
            chain,
        ),
        JobEvent::SafetyDecided(response) => w.decided(response),
        JobEvent::SafetyUnavailable(error) => w.kernel_down(&error),
        JobEvent::Approved => w.approved(),
        JobEvent::Rejected(reason) => w.rejected(&reason),
        JobEvent::Result(result) => w.result(result),
        JobEvent::Progress { progress, sender } => w.progress(&progress, &sender),
        JobEvent::Cancel(cancel) => w.cancel(cancel),
        JobEvent::Due => w.due(),
        JobEvent::WorkerLost { worker_id } => w.worker_lost(&worker_id),
    }
    w.finish_step()
}

/// One step in progress: a working copy of the record and what was decided so far.
pub(crate) struct Work<'s, 'e> {
    pub(crate) env: &'s mut Env<'e>,
    pub(crate) job: Option<Box<JobRecord>>,
    pub(crate) existed: bool,
    pub(crate) changed: bool,
    pub(crate) actions: Vec<Action>,
    pub(crate) follow_ups: Vec<FollowUp>,
}

impl Work<'_, '_> {
    fn finish_step(self) -> Step {
        let changed = self.changed && self.job.is_some();
        Step {
            created: changed && !self.existed,
            record: if changed { self.job } else { None },
            actions: self.actions,
            follow_ups: self.follow_ups,
        }
    }

    /// The trace context the job was submitted with, if known.
    pub(crate) fn trace_parent(&self) -> Option<Arc<TraceParent>> {
        self.job.as_ref().and_then(|j| j.trace_parent.clone())
    }

    /// The job's id (empty when there is no record).
    pub(crate) fn id(&self) -> String {
        self.job
            .as_ref()
            .map(|j| j.id().to_owned())
            .unwrap_or_default()
    }

    /// The working record, marked changed.
    pub(crate) fn job_mut(&mut self) -> Option<&mut JobRecord> {
        self.changed = true;
        self.job.as_deref_mut()
    }

    pub(crate) fn state(&self) -> Option<JobState> {
        self.job.as_ref().map(|j| j.state)
    }

    /// Moves the job to `to` if the state machine allows it. Leaving DISPATCHED or
    /// RUNNING for anything else ends (fences) the attempt in flight.
    pub(crate) fn move_to(&mut self, to: JobState) -> bool {
        let now = self.env.now;
        let Some(job) = self.job.as_deref_mut() else {
            return false;
        };
        match state::transition(job.state, to) {
            Ok(Transition::Moved) => {
                let latency = job.latency_to(to, now);
                job.set_state(to, now);
                if !matches!(to, JobState::Dispatched | JobState::Running) {
                    job.dispatch = None;
                }
                self.changed = true;
                self.actions.push(Action::Transition {
                    job_id: job.id().to_owned(),
                    state: to,
                    at: now,
                    tenant: job.tenant().to_owned(),
                    topic: job.request.topic.clone(),
                    latency,
                });
                true
            }
            Ok(Transition::Unchanged) => false,
            Err(e) => {
                self.actions.push(Action::Ignored {
                    job_id: job.id().to_owned(),
                    reason: e.to_string(),
                });
                false
            }
        }
    }

    /// Sets a state the state machine does not reach by itself (a job that never found a
    /// worker fails from SCHEDULED; a follower takes its leader's outcome).
    pub(crate) fn force_state(&mut self, to: JobState) {
        let now = self.env.now;
        let Some(job) = self.job_mut() else { return };
        let latency = job.latency_to(to, now);
        job.set_state(to, now);
        job.dispatch = None;
        let id = job.id().to_owned();
        let (tenant, topic) = (job.tenant().to_owned(), job.request.topic.clone());
        self.actions.push(Action::Transition {
            job_id: id,
            state: to,
            at: now,
            tenant,
            topic,
            latency,
        });
    }

    /// A result the scheduler publishes itself, for this job.
    pub(crate) fn own_result(
        &self,
        status: JobState,
        code: ErrorCode,
        message: &str,
    ) -> v1::JobResult {
        let job = self.job.as_deref();
        let mut r = v1::JobResult {
            job_id: job.map(|j| j.id().to_owned()).unwrap_or_default(),
            status: status.status() as i32,
            worker_id: job.map(|j| j.worker_id.clone()).unwrap_or_default(),
            error_message: message.to_owned(),
            ..Default::default()
        };
        if code != ErrorCode::UNSPECIFIED {
            code.apply_to(&mut r);
        }
        self.as_published(r)
    }

    /// A result as the scheduler publishes it under its own sender id: `worker_id` is
    /// the scheduler's (CAP receivers require `worker_id == sender_id`); the worker that
    /// ran the job, if any, is named in `error_message` instead.
    pub(crate) fn as_published(&self, mut r: v1::JobResult) -> v1::JobResult {
        if r.worker_id != self.env.id {
            if !r.worker_id.is_empty() {
                r.error_message = if r.error_message.is_empty() {
                    format!("run by worker {}", r.worker_id)
                } else {
                    format!("{} (worker {})", r.error_message, r.worker_id)
                };
            }
            r.worker_id = self.env.id.to_owned();
        }
        r
    }

    /// Ends the job with a result the scheduler decides (DENIED, TIMEOUT, CANCELLED,
    /// FAILED for no worker) and publishes it.
    pub(crate) fn finish(&mut self, status: JobState, code: ErrorCode, message: &str) {
        let Some(state_now) = self.state() else {
            return;
        };
        let result = self.own_result(status, code, message);
        let moved = if state_now == JobState::Scheduled && status == JobState::Failed {
            // A job that never found a worker: the scheduler ends it itself (206).
            self.force_state(status);
            true
        } else {
            self.move_to(status)
        };
        if !moved {
            return;
        }
        let trace_id = self
            .job
            .as_ref()
            .map(|j| j.trace_id.clone())
            .unwrap_or_default();
        if let Some(job) = self.job_mut() {
            job.hold = None;
            job.result = Some(result.clone());
        }
        self.actions.push(Action::PublishResult {
            result: Box::new(result),
            trace_id,
            parent: self.trace_parent(),
        });
        self.after_terminal();
    }

    /// A SystemAlert from the scheduler about this job.
    pub(crate) fn alert(&mut self, severity: v1::AlertSeverity, code: ErrorCode, message: &str) {
        let trace = self
            .job
            .as_ref()
            .map(|j| j.trace_id.clone())
            .unwrap_or_default();
        self.actions.push(Action::Alert {
            alert: alert(severity, code, self.env.id, message, &trace),
        });
    }
}
