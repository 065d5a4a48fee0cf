//! Submission: a new job is recorded, checked for its idempotency key and handed to the
//! safety kernel; a repeated submission re-announces the outcome.

use super::event::{Action, Claim};
use super::job::{Hold, JobRecord, TraceParent};
use super::machine::Work;
use super::messages::policy_request;
use cap_proto::{JobState, v1};
use std::sync::Arc;

impl Work<'_, '_> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn submit(
        &mut self,
        request: v1::JobRequest,
        (trace_id, trace_parent): (String, Option<Arc<TraceParent>>),
        sender: String,
        identity: Option<v1::IdentityBinding>,
        claim: Option<Claim>,
        internal: bool,
        chain: Vec<v1::JobRequest>,
    ) {
        if let Some(existing) = self.job.as_deref() {
            // At-least-once delivery: the same job again. Re-announce a final outcome
            // (to the client that may have missed it); the scheduler's own repeats of a
            // workflow compensation stay silent.
            if !internal && let Some(result) = existing.result.clone() {
                let trace_id = existing.trace_id.clone();
                let parent = existing.trace_parent.clone();
                let result = self.as_published(result);
                self.actions.push(Action::PublishResult {
                    result: Box::new(result),
                    trace_id,
                    parent,
                });
            }
            return;
        }
        let now = self.env.now;
        let id = request.job_id.clone();
        let mut record = JobRecord::new(request, trace_id, sender, now);
        record.identity = identity;
        record.chain = chain;
        record.trace_parent = trace_parent;
        let (tenant, topic) = (record.tenant().to_owned(), record.request.topic.clone());
        self.job = Some(Box::new(record));
        self.changed = true;
        self.actions.push(Action::Transition {
            job_id: id.clone(),
            state: JobState::Pending,
            at: now,
            tenant,
            topic,
            latency: None,
        });
        if let Some(Claim::Follower { leader }) = claim {
            if let Some(job) = self.job_mut() {
                job.hold = Some(Hold::Follow {
                    leader: leader.clone(),
                });
                job.history.push((now, format!("WAITING for {leader}")));
            }
            // Take the leader's outcome now if it has one; otherwise the follower's
            // timer looks again.
            self.follow(&leader);
            return;
        }
        self.admit();
    }

    /// Past the idempotency check: links the job to its workflow parent and asks the
    /// safety kernel.
    pub(crate) fn admit(&mut self) {
        let Some(job) = self.job.as_deref() else {
            return;
        };
        if let Some(parent) = job.parent() {
            self.actions.push(Action::LinkChild {
                parent: parent.to_owned(),
                child: job.id().to_owned(),
            });
        }
        let mut check = policy_request(&job.request);
        if check.identity.is_none() {
            check.identity.clone_from(&job.identity);
        }
        let id = job.id().to_owned();
        let refused = self.env.config.admission.admit(&job.request).err();
        self.move_to(JobState::Scheduled);
        // Refused pointers (scheme, reserved keys, private targets): FAILED 203 at once.
        if let Some(refused) = refused {
            self.finish(
                JobState::Failed,
                cap_proto::ErrorCode::JOB_INVALID_INPUT,
                &refused.to_string(),
            );
            return;
        }
        let asked = self.env.now;
        if let Some(job) = self.job_mut() {
            job.hold = Some(Hold::Safety { asked });
        }
        self.actions.push(Action::CheckSafety {
            job_id: id,
            request: Box::new(check),
            parent: self.trace_parent(),
        });
    }

    /// A follower looks at its leader: takes its outcome once it has one, runs itself if
    /// the leader is gone, waits otherwise.
    pub(crate) fn follow(&mut self, leader_id: &str) {
        let leader = self.env.other(leader_id);
        if !self.env.missing.is_empty() {
            return;
        }
        match leader {
            Some(leader) => {
                let Some(mut result) = leader.result.clone().filter(|_| leader.state.is_terminal())
                else {
                    return; // still running: wait
                };
                let now = self.env.now;
                let id = self.id();
                result.job_id.clone_from(&id);
                // Published by the scheduler: its own sender id.
                let result = self.as_published(result);
                let trace_id = self
                    .job
                    .as_ref()
                    .map(|j| j.trace_id.clone())
                    .unwrap_or_default();
                self.force_state(leader.state);
                if let Some(job) = self.job_mut() {
                    job.hold = None;
                    job.settled = true;
                    job.result = Some(result.clone());
                    job.history
                        .push((now, format!("OUTCOME of {leader_id}: {}", leader.state)));
                }
                self.actions.push(Action::PublishResult {
                    result: Box::new(result),
                    trace_id,
                    parent: self.trace_parent(),
                });
            }
            None => {
                // The leader's record is gone (it expired): this job runs itself.
                if let Some(job) = self.job_mut() {
                    job.hold = None;
                }
                self.admit();
            }
        }
    }
}
