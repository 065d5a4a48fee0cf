//! Results and progress from workers: fenced against the attempt in flight, then applied
//! — RUNNING, a terminal outcome, or FAILED_RETRYABLE with a retry after back-off until
//! the retries run out and the job is dead-lettered.

use super::config::backoff;
use super::event::{Action, Fence};
use super::fence::{self, Reporter};
use super::job::Hold;
use super::machine::Work;
use super::timers::ms;
use cap_proto::{ErrorCode, JobState, v1};

impl Work<'_, '_> {
    /// Drops a report that does not belong to the attempt in flight; `true` when it does.
    fn admitted(
        &mut self,
        what: &'static str,
        report: Option<&v1::DispatchIdentity>,
        from: Reporter<'_>,
        start: bool,
    ) -> bool {
        let Some(job) = self.job.as_deref() else {
            return false;
        };
        let mut verdict = fence::check(job, report, from);
        // A peer older than 2.17 reports without an identity: a start report from
        // another worker of the pool is the pool's redelivery of the attempt after its
        // first taker died, and that worker takes the attempt over.
        if verdict == Err(Fence::Foreign)
            && start
            && report.is_none()
            && job.dispatch.as_ref().is_some_and(|a| a.assigned.is_empty())
        {
            verdict = Ok(());
        }
        match verdict {
            Ok(()) => {
                // The worker reporting on a pool dispatch is the one running it now.
                if let Reporter::Worker(sender) = from
                    && job
                        .dispatch
                        .as_ref()
                        .is_some_and(|a| a.assigned.is_empty() && a.runner != sender)
                    && let Some(job) = self.job_mut()
                    && let Some(a) = job.dispatch.as_mut()
                {
                    a.runner = sender.to_owned();
                }
                true
            }
            Err(f) => {
                let sender = match from {
                    Reporter::Worker(s) => s.to_owned(),
                    Reporter::Anyone => String::new(),
                };
                self.actions.push(Action::Fenced {
                    job_id: job.id().to_owned(),
                    what,
                    fence: f,
                    sender,
                });
                false
            }
        }
    }

    pub(crate) fn result(&mut self, result: v1::JobResult) {
        let Some(job) = self.job.as_deref() else {
            return;
        };
        let id = job.id().to_owned();
        let Some(to) = JobState::from_i32(result.status) else {
            self.actions.push(Action::Ignored {
                job_id: id,
                reason: format!("unknown status {}", result.status),
            });
            return;
        };
        if job.state == to {
            return; // a repeat (or our own published result coming back)
        }
        if !self.admitted(
            "result",
            result.dispatch.as_ref(),
            Reporter::Worker(&result.worker_id),
            false,
        ) {
            return;
        }
        let running_successor = matches!(
            to,
            JobState::Succeeded
                | JobState::Failed
                | JobState::FailedRetryable
                | JobState::FailedFatal
        );
        if self.state() == Some(JobState::Dispatched) && running_successor {
            // The worker did not report a start: it did start.
            self.move_to(JobState::Running);
        }
        if !result.worker_id.is_empty()
            && let Some(job) = self.job_mut()
        {
            job.worker_id.clone_from(&result.worker_id);
        }
        if to == JobState::FailedRetryable {
            self.retry_or_fail(result);
            return;
        }
        if !self.move_to(to) {
            return;
        }
        if let Some(job) = self.job_mut() {
            job.hold = None;
            if to.is_terminal() {
                job.result = Some(result);
            }
        }
        if to.is_terminal() {
            self.after_terminal();
        }
    }

    /// A retryable failure: retry after back-off, or, with the retries used up, fail for
    /// good and dead-letter.
    pub(crate) fn retry_or_fail(&mut self, last: v1::JobResult) {
        let (base, max, now) = (
            self.env.config.retry_base,
            self.env.config.retry_max,
            self.env.now,
        );
        let Some(job) = self.job.as_deref() else {
            return;
        };
        let id = job.id().to_owned();
        let retries_used = job.attempts.saturating_sub(1);
        if retries_used < job.max_retries {
            if !self.move_to(JobState::FailedRetryable) {
                return;
            }
            let delay = backoff(base, max, retries_used, &id);
            if let Some(job) = self.job_mut() {
                job.hold = Some(Hold::Retry {
                    at: now + ms(delay),
                });
            }
            return;
        }
        // Retries exhausted: the job fails for good and goes to the dead-letter queue.
        let trace_id = job.trace_id.clone();
        let attempts = job.attempts;
        if !self.move_to(JobState::Failed) {
            return;
        }
        let mut dead = last.clone();
        dead.status = JobState::Failed.status() as i32;
        // Published by the scheduler: its own sender id, the worker named in the text.
        let dead = self.as_published(dead);
        self.actions.push(Action::DeadLetter {
            result: Box::new(dead.clone()),
            trace_id: trace_id.clone(),
            parent: self.trace_parent(),
        });
        self.alert(
            v1::AlertSeverity::Warning,
            ErrorCode::of_result(&dead),
            &format!("job {id} dead-lettered"),
        );
        // The scheduler announces the end itself, as its own sender.
        let mut own = self.own_result(
            JobState::Failed,
            ErrorCode::UNSPECIFIED,
            &format!(
                "retries exhausted ({attempts} attempts): {}",
                last.error_message
            ),
        );
        own.error_code = dead.error_code;
        own.error_code_enum = dead.error_code_enum;
        own.result_ptr = dead.result_ptr;
        own.artifact_ptrs = dead.artifact_ptrs;
        own.execution_ms = dead.execution_ms.max(0);
        own.dispatch = dead.dispatch;
        if let Some(job) = self.job_mut() {
            job.hold = None;
            job.result = Some(own.clone());
        }
        self.actions.push(Action::PublishResult {
            result: Box::new(own),
            trace_id,
            parent: self.trace_parent(),
        });
        self.after_terminal();
    }

    pub(crate) fn progress(&mut self, p: &v1::JobProgress, sender: &str) {
        let Some(job) = self.job.as_deref() else {
            return;
        };
        let ended_by_this_attempt = p.dispatch.is_some()
            && job.result.as_ref().and_then(|r| r.dispatch.as_ref()) == p.dispatch.as_ref();
        if job.state.is_terminal() && (p.dispatch.is_none() || ended_by_this_attempt) {
            // Late progress of a job that ended, or of the very attempt whose own result
            // ended it (progress and results travel on different subjects and may arrive
            // in either order): nothing to fence against, nothing to do.
            return;
        }
        let start = p.status == JobState::Running.status() as i32;
        if !self.admitted(
            "progress",
            p.dispatch.as_ref(),
            Reporter::Worker(sender),
            start,
        ) {
            return;
        }
        if self.state() == Some(JobState::Dispatched)
            && (p.status == 0 || p.status == JobState::Running.status() as i32)
        {
            self.move_to(JobState::Running);
            if let Some(job) = self.job_mut() {
                job.worker_id = sender.to_owned();
            }
        }
    }

    /// The worker this job was sent to directly stopped beating: the attempt fails
    /// retryably and the job goes to another worker (or, out of retries, fails).
    pub(crate) fn worker_lost(&mut self, worker_id: &str) {
        let Some(job) = self.job.as_deref() else {
            return;
        };
        let direct_to_lost = job
            .dispatch
            .as_ref()
            .is_some_and(|a| a.assigned == worker_id);
        if !direct_to_lost || !matches!(job.state, JobState::Dispatched | JobState::Running) {
            return;
        }
        let mut result = v1::JobResult {
            job_id: job.id().to_owned(),
            status: JobState::FailedRetryable.status() as i32,
            worker_id: self.env.id.to_owned(),
            error_message: format!("worker {worker_id} lost"),
            ..Default::default()
        };
        ErrorCode::JOB_WORKER_UNAVAILABLE.apply_to(&mut result);
        if self.state() == Some(JobState::Dispatched) {
            self.move_to(JobState::Running);
        }
        self.retry_or_fail(result);
    }
}
