//! Ending a job early: a client's cancel (cascading to workflow children) and the
//! reconciler's timeouts. Both fence the attempt in flight: its dispatch is withdrawn
//! from a durable bus and the workers are told to stop exactly that attempt.

use super::event::{Action, FollowUp};
use super::fence::{self, Reporter};
use super::job::Attempt;
use super::machine::Work;
use cap_proto::{ErrorCode, JobState, v1};

impl Work<'_, '_> {
    pub(crate) fn cancel(&mut self, cancel: v1::JobCancel) {
        let Some(job) = self.job.as_deref() else {
            // Not ours (perhaps dispatched without a scheduler): let the workers know.
            self.actions.push(Action::ForwardCancel {
                cancel: Box::new(cancel),
                trace_id: String::new(),
            });
            return;
        };
        let id = job.id().to_owned();
        if job.state == JobState::Cancelled
            || (cancel.requested_by == self.env.id && job.state.is_terminal())
        {
            // A repeat, or our own forwarded cancel (of a timeout) coming back.
            return;
        }
        if job.state.is_terminal() {
            self.actions.push(Action::Ignored {
                job_id: id,
                reason: format!("cancel after terminal state {}", job.state),
            });
            return;
        }
        // A cancel aimed at one attempt must be aimed at the one in flight.
        if cancel.dispatch.is_some()
            && let Err(f) = fence::check(job, cancel.dispatch.as_ref(), Reporter::Anyone)
        {
            self.actions.push(Action::Fenced {
                job_id: id,
                what: "cancel",
                fence: f,
                sender: cancel.requested_by.clone(),
            });
            return;
        }
        let reason = if cancel.reason.is_empty() {
            "cancelled".to_owned()
        } else {
            cancel.reason.clone()
        };
        let attempt = job.dispatch.clone();
        self.stop_attempt(attempt, &cancel.reason, &cancel.requested_by, true);
        self.finish(JobState::Cancelled, ErrorCode::UNSPECIFIED, &reason);
        let children = self.env.children_of(&id);
        if !children.is_empty() {
            if let Some(job) = self.job_mut() {
                job.settled = false;
            }
            for child in children {
                self.follow_ups.push(FollowUp::Cancel(v1::JobCancel {
                    job_id: child,
                    reason: format!("parent {id} cancelled"),
                    requested_by: cancel.requested_by.clone(),
                    ..Default::default()
                }));
            }
        }
    }

    /// The reconciler ends a job that did not start or did not finish in time.
    pub(crate) fn time_out(&mut self, why: &str) {
        // The verdict goes out before the cancel, so that clients hear TIMEOUT first and
        // the worker's CANCELLED answer is a late second terminal, ignored.
        let attempt = self.job.as_ref().and_then(|j| j.dispatch.clone());
        self.finish(
            JobState::Timeout,
            ErrorCode::JOB_TIMEOUT,
            &format!("job {why}"),
        );
        let id = self.env.id.to_owned();
        self.stop_attempt(attempt, &format!("timeout: {why}"), &id, false);
    }

    /// Tells the workers to stop the attempt in flight (a JobCancel carrying its
    /// dispatch identity) and withdraws its dispatch. `always`: send the cancel even
    /// when nothing was dispatched (a client's cancel of a job not yet sent).
    fn stop_attempt(
        &mut self,
        attempt: Option<Attempt>,
        reason: &str,
        requested_by: &str,
        always: bool,
    ) {
        let Some(job) = self.job.as_deref() else {
            return;
        };
        if attempt.is_none() && !always {
            return;
        }
        let cancel = v1::JobCancel {
            job_id: job.id().to_owned(),
            reason: if reason.is_empty() {
                "cancelled".to_owned()
            } else {
                reason.to_owned()
            },
            requested_by: requested_by.to_owned(),
            dispatch: attempt.as_ref().map(|a| a.identity()),
            ..Default::default()
        };
        let trace_id = job.trace_id.clone();
        let job_id = job.id().to_owned();
        self.actions.push(Action::ForwardCancel {
            cancel: Box::new(cancel),
            trace_id,
        });
        if let Some(a) = attempt {
            self.actions.push(Action::Withdraw {
                job_id,
                dispatch_id: a.dispatch_id,
            });
        }
    }
}
