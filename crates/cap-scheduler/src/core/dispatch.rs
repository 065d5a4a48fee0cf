//! Dispatch: choosing the subject (a pool, or a capable worker directly; never a pool
//! only a worker with no common protocol version claims) and opening a fenced attempt — a fresh unpredictable dispatch id, attempt = previous + 1, the
//! assigned worker — recorded before the JobRequest that carries it is published.

use super::event::Action;
use super::job::{Attempt, Hold};
use super::machine::Work;
use cap_proto::{ErrorCode, JobState};

impl Work<'_, '_> {
    pub(crate) fn try_dispatch(&mut self) {
        let now = self.env.now;
        let Some(job) = self.job.as_deref() else {
            return;
        };
        let topic = job.request.topic.clone();
        let route = self.env.pools.route(&topic);
        let mut requires = route.requires.clone();
        if let Some(meta) = &job.request.meta {
            requires.extend(meta.requires.iter().cloned());
        }
        // The worker a dispatch goes to directly, if any.
        let direct: Option<String> = if !requires.is_empty() {
            match self
                .env
                .registry
                .pick(&topic, &route.pool, &requires, false)
            {
                Some(w) => Some(w),
                None => {
                    let since = match job.hold {
                        Some(Hold::Worker { since }) => since,
                        _ => now,
                    };
                    if let Some(job) = self.job_mut() {
                        job.hold = Some(Hold::Worker { since });
                    }
                    return;
                }
            }
        } else if self.env.registry.anyone_ready_for(&topic) {
            self.env.registry.pick(&topic, &route.pool, &[], true)
        } else {
            None
        };
        // No worker chosen: the pool subject — unless the only workers known for this
        // topic share no protocol version with us, when that would be on their behalf.
        if direct.is_none()
            && job.state == JobState::Scheduled
            && let Some(refused) = self.env.registry.refused_for(&topic, &route.pool)
        {
            let why = format!(
                "no worker for {topic} shares a protocol version with this scheduler \
                 (worker {refused} was refused)"
            );
            self.finish(JobState::Failed, ErrorCode::PROTOCOL_VERSION_MISMATCH, &why);
            return;
        }
        let (subject, assigned) = match direct
            .as_deref()
            .and_then(|w| cap_proto::subject::worker_jobs(w).ok().map(|s| (s, w)))
        {
            Some((s, w)) => (s.into_string(), w.to_owned()),
            None => (route.subject.clone(), String::new()),
        };
        if !self.move_to(JobState::Dispatched) {
            return;
        }
        let dispatch_id = (self.env.ids)();
        let Some(job) = self.job_mut() else { return };
        job.hold = None;
        job.attempts += 1;
        let attempt = Attempt {
            dispatch_id,
            attempt: u64::from(job.attempts),
            runner: assigned.clone(),
            assigned,
        };
        job.dispatched_to.clone_from(&subject);
        let mut request = job.request.clone();
        request.context_ptr.clone_from(&job.dispatch_context_ptr);
        request.dispatch = Some(attempt.identity());
        if job.max_runtime_ms > 0 {
            let budget = request.budget.get_or_insert_with(Default::default);
            let limit = i64::try_from(job.max_runtime_ms).unwrap_or(i64::MAX);
            if budget.deadline_ms == 0 || budget.deadline_ms > limit {
                budget.deadline_ms = limit;
            }
        }
        job.dispatch = Some(attempt);
        let trace_id = job.trace_id.clone();
        let identity = job.identity.clone().map(Box::new);
        let parent = job.trace_parent.clone();
        self.actions.push(Action::Dispatch {
            subject,
            request: Box::new(request),
            trace_id,
            identity,
            parent,
        });
    }
}
