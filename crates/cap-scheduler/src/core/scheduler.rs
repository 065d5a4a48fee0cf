//! [`SchedulerCore`]: the pure decision logic of the scheduler. It owns the job records
//! and the worker registry, takes an [`Event`] and the time, and returns the [`Action`]s
//! to carry out. No IO, no clock, no randomness: every path is testable step by step on a
//! virtual clock.

use super::config::{Config, backoff};
use super::event::{Action, Event};
use super::job::{Hold, JobRecord, Millis};
use super::pools::Pools;
use super::registry::Registry;
use cap_proto::state::{self, JobState, Transition};
use cap_proto::{ErrorCode, v1};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

const ALLOW: i32 = 1;
const REQUIRE_HUMAN: i32 = 3;
const THROTTLE: i32 = 4;
const ALLOW_WITH_CONSTRAINTS: i32 = 5;
const REDACT: i32 = 7;

fn ms(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The scheduler's state and decisions.
#[derive(Debug)]
pub struct SchedulerCore {
    config: Config,
    pools: Pools,
    id: String,
    /// Boxed: a record is large, and a growing map then moves pointers, not records.
    jobs: HashMap<String, Box<JobRecord>>,
    idempotency: HashMap<String, String>,
    registry: Registry,
    /// Compensations still to run after the one in flight, by compensation job id.
    compensation_chains: HashMap<String, Vec<v1::JobRequest>>,
    /// When each job next needs a look (retry due, timeout, retention end), ordered by
    /// time, so a tick touches only the jobs that are due: one entry per job.
    timers: BTreeSet<(Millis, String)>,
    /// The entry of each job in `timers`.
    deadlines: HashMap<String, Millis>,
}

/// How often a job waiting for a capable worker looks for one again.
const WORKER_POLL_MS: Millis = 100;

impl SchedulerCore {
    /// A scheduler with no jobs. `id` is its sender id (worker_id of results it writes).
    pub fn new(id: impl Into<String>, config: Config, pools: Pools) -> Self {
        SchedulerCore {
            config,
            pools,
            id: id.into(),
            jobs: HashMap::new(),
            idempotency: HashMap::new(),
            registry: Registry::default(),
            compensation_chains: HashMap::new(),
            timers: BTreeSet::new(),
            deadlines: HashMap::new(),
        }
    }

    /// Loads records persisted by an earlier run. Jobs that were waiting for a safety
    /// decision ask again on the next tick; dispatched and running jobs simply continue.
    pub fn restore(&mut self, records: impl IntoIterator<Item = JobRecord>, now: Millis) {
        for mut r in records {
            if r.hold == Some(Hold::Safety) {
                r.hold = Some(Hold::Recheck { at: now });
            }
            if let Some(key) = r.idempotency_key() {
                self.idempotency.insert(key.to_owned(), r.id().to_owned());
            }
            let id = r.id().to_owned();
            self.jobs.insert(id.clone(), Box::new(r));
            self.reschedule(&id, now);
        }
    }

    /// A job's record.
    pub fn job(&self, id: &str) -> Option<&JobRecord> {
        self.jobs.get(id).map(|j| &**j)
    }

    /// Every job record.
    pub fn jobs(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.values().map(|j| &**j)
    }

    /// How many jobs have a pending deadline (at most one entry per job).
    pub fn scheduled_checks(&self) -> usize {
        self.timers.len()
    }

    /// The known workers.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Reacts to one event.
    pub fn handle(&mut self, event: Event, now: Millis) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Submitted {
                request,
                trace_id,
                sender,
                identity,
            } => self.submit(request, trace_id, sender, identity, now, &mut out),
            Event::SafetyDecided { job_id, response } => {
                self.decided(&job_id, response, now, &mut out)
            }
            Event::SafetyUnavailable { job_id, error } => {
                self.kernel_down(&job_id, &error, now, &mut out)
            }
            Event::Approved { job_id } => {
                if matches!(self.hold_of(&job_id), Some(Hold::Approval { .. })) {
                    self.try_dispatch(&job_id, now, &mut out);
                }
            }
            Event::Rejected { job_id, reason } => {
                if matches!(self.hold_of(&job_id), Some(Hold::Approval { .. })) {
                    self.deny(
                        &job_id,
                        &format!("rejected by a human: {reason}"),
                        now,
                        &mut out,
                    );
                }
            }
            Event::Result { result } => self.result(result, now, &mut out),
            Event::Progress { progress } => self.progress(&progress, now, &mut out),
            Event::Cancel { cancel } => self.cancel(cancel, now, &mut out),
            Event::Heartbeat { heartbeat } => self.registry.heartbeat(&heartbeat, now),
            Event::Handshake { handshake } => self.handshake(&handshake, now, &mut out),
            Event::Tick => self.tick(now, &mut out),
        }
        // Every change to a job is persisted: those are the jobs whose next deadline
        // may have moved.
        let changed: Vec<String> = out
            .iter()
            .filter_map(|a| match a {
                Action::Persist { job_id } => Some(job_id.clone()),
                _ => None,
            })
            .collect();
        for id in changed {
            self.reschedule(&id, now);
        }
        out
    }

    /// When `job` next needs a look, if ever (a pure function of the record).
    fn next_deadline(&self, job: &JobRecord, now: Millis) -> Option<Millis> {
        match (job.state, &job.hold) {
            (JobState::Scheduled, Some(Hold::Recheck { at })) => Some(*at),
            (JobState::FailedRetryable, Some(Hold::Retry { at })) => Some(*at),
            (JobState::Scheduled, Some(Hold::Worker { since })) => {
                let give_up = since.saturating_add(ms(self.config.worker_wait_timeout));
                Some(give_up.min(now.saturating_add(WORKER_POLL_MS)))
            }
            (JobState::Dispatched, _) => {
                Some(job.since.saturating_add(ms(self.dispatch_limit(job))))
            }
            (JobState::Running, _) => Some(job.since.saturating_add(self.run_limit_ms(job))),
            (s, _) if s.is_terminal() => Some(job.since.saturating_add(ms(self.config.retention))),
            _ => None,
        }
    }

    fn dispatch_limit(&self, job: &JobRecord) -> Duration {
        self.pools
            .dispatch_timeout(&job.request.topic)
            .unwrap_or(self.config.dispatch_timeout)
    }

    fn run_limit_ms(&self, job: &JobRecord) -> Millis {
        if job.max_runtime_ms > 0 {
            job.max_runtime_ms
        } else {
            ms(self
                .pools
                .run_timeout(&job.request.topic)
                .unwrap_or(self.config.run_timeout))
        }
    }

    /// Puts the job's single timer entry at its next deadline.
    fn reschedule(&mut self, id: &str, now: Millis) {
        let next = self.jobs.get(id).and_then(|j| self.next_deadline(j, now));
        let old = self.deadlines.get(id).copied();
        if old == next {
            return;
        }
        if let Some(at) = old {
            self.timers.remove(&(at, id.to_owned()));
            self.deadlines.remove(id);
        }
        if let Some(at) = next {
            self.timers.insert((at, id.to_owned()));
            self.deadlines.insert(id.to_owned(), at);
        }
    }

    fn hold_of(&self, id: &str) -> Option<&Hold> {
        self.jobs.get(id).and_then(|j| j.hold.as_ref())
    }

    fn move_to(&mut self, id: &str, to: JobState, now: Millis, out: &mut Vec<Action>) -> bool {
        let Some(job) = self.jobs.get_mut(id) else {
            return false;
        };
        match state::transition(job.state, to) {
            Ok(Transition::Moved) => {
                job.set_state(to, now);
                out.push(Action::Transition {
                    job_id: id.to_owned(),
                    state: to,
                    at: now,
                });
                true
            }
            Ok(Transition::Unchanged) => false,
            Err(e) => {
                out.push(Action::Ignored {
                    job_id: id.to_owned(),
                    reason: e.to_string(),
                });
                false
            }
        }
    }

    fn result_for(
        &self,
        job: &JobRecord,
        status: JobState,
        code: ErrorCode,
        message: &str,
    ) -> v1::JobResult {
        let mut r = v1::JobResult {
            job_id: job.id().to_owned(),
            status: status.status() as i32,
            worker_id: job.worker_id.clone(),
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
    fn as_published(&self, mut r: v1::JobResult) -> v1::JobResult {
        if r.worker_id != self.id {
            if !r.worker_id.is_empty() {
                r.error_message = if r.error_message.is_empty() {
                    format!("run by worker {}", r.worker_id)
                } else {
                    format!("{} (worker {})", r.error_message, r.worker_id)
                };
            }
            r.worker_id.clone_from(&self.id);
        }
        r
    }

    /// Ends a job the scheduler decided to end, publishing the result.
    fn finish(
        &mut self,
        id: &str,
        status: JobState,
        code: ErrorCode,
        message: &str,
        now: Millis,
        out: &mut Vec<Action>,
    ) {
        let Some(job) = self.jobs.get(id) else { return };
        let result = self.result_for(job, status, code, message);
        let trace_id = job.trace_id.clone();
        let moved = if job.state == JobState::Scheduled && matches!(status, JobState::Failed) {
            // A job that never found a worker: the scheduler ends it itself (206).
            if let Some(job) = self.jobs.get_mut(id) {
                job.set_state(status, now);
            }
            out.push(Action::Transition {
                job_id: id.to_owned(),
                state: status,
                at: now,
            });
            true
        } else {
            self.move_to(id, status, now, out)
        };
        if !moved {
            return;
        }
        if let Some(job) = self.jobs.get_mut(id) {
            job.hold = None;
            job.result = Some(result.clone());
        }
        out.push(Action::PublishResult {
            result: Box::new(result),
            trace_id,
        });
        self.after_terminal(id, now, out);
    }

    fn submit(
        &mut self,
        request: v1::JobRequest,
        trace_id: String,
        sender: String,
        identity: Option<v1::IdentityBinding>,
        now: Millis,
        out: &mut Vec<Action>,
    ) {
        let id = request.job_id.clone();
        if let Some(existing) = self.jobs.get(&id) {
            // At-least-once delivery: the same job again. Re-announce a final outcome.
            if let Some(result) = existing.result.clone() {
                out.push(Action::PublishResult {
                    result: Box::new(self.as_published(result)),
                    trace_id: existing.trace_id.clone(),
                });
            }
            return;
        }
        let mut record = JobRecord::new(request, trace_id, sender, now);
        record.identity = identity;
        out.push(Action::Transition {
            job_id: id.clone(),
            state: JobState::Pending,
            at: now,
        });
        if let Some(key) = record.idempotency_key().map(str::to_owned) {
            if let Some(leader_id) = self.idempotency.get(&key).cloned()
                && let Some(leader) = self.jobs.get_mut(&leader_id)
            {
                match leader.result.clone() {
                    Some(mut result) => {
                        result.job_id = id.clone();
                        record.result = Some(result.clone());
                        record
                            .history
                            .push((now, format!("DUPLICATE of {leader_id}")));
                        let trace = record.trace_id.clone();
                        self.jobs.insert(id.clone(), Box::new(record));
                        out.push(Action::PublishResult {
                            result: Box::new(self.as_published(result)),
                            trace_id: trace,
                        });
                    }
                    None => {
                        leader.followers.push(id.clone());
                        record
                            .history
                            .push((now, format!("WAITING for {leader_id}")));
                        self.jobs.insert(id.clone(), Box::new(record));
                        out.push(Action::Persist { job_id: leader_id });
                    }
                }
                out.push(Action::Persist { job_id: id });
                return;
            }
            self.idempotency.insert(key, id.clone());
        }
        if !record.request.parent_job_id.is_empty()
            && let Some(parent) = self.jobs.get_mut(&record.request.parent_job_id)
        {
            parent.children.push(id.clone());
            out.push(Action::Persist {
                job_id: parent.id().to_owned(),
            });
        }
        let check = policy_request(&record.request);
        self.jobs.insert(id.clone(), Box::new(record));
        self.move_to(&id, JobState::Scheduled, now, out);
        if let Some(job) = self.jobs.get_mut(&id) {
            job.hold = Some(Hold::Safety);
        }
        out.push(Action::Persist { job_id: id.clone() });
        out.push(Action::CheckSafety {
            job_id: id,
            request: Box::new(check),
        });
    }

    fn decided(
        &mut self,
        id: &str,
        response: v1::PolicyCheckResponse,
        now: Millis,
        out: &mut Vec<Action>,
    ) {
        let waiting = matches!(self.hold_of(id), Some(Hold::Safety | Hold::Recheck { .. }));
        if !waiting || self.jobs.get(id).map(|j| j.state) != Some(JobState::Scheduled) {
            return;
        }
        let reason = if response.reason.is_empty() {
            "denied by policy".to_owned()
        } else {
            response.reason.clone()
        };
        let redacted = !response.redacted_context_ptr.is_empty();
        match response.decision {
            ALLOW | ALLOW_WITH_CONSTRAINTS => {}
            REDACT if redacted => {}
            REQUIRE_HUMAN => {
                let approval_ref = if response.approval_ref.is_empty() {
                    id.to_owned()
                } else {
                    response.approval_ref.clone()
                };
                if let Some(job) = self.jobs.get_mut(id) {
                    job.hold = Some(Hold::Approval {
                        approval_ref: approval_ref.clone(),
                    });
                    out.push(Action::Alert {
                        alert: alert(
                            v1::AlertSeverity::Info,
                            ErrorCode::UNSPECIFIED,
                            &self.id,
                            &format!("job {id} needs approval (ref {approval_ref})"),
                            &job.trace_id,
                        ),
                    });
                }
                out.push(Action::Persist {
                    job_id: id.to_owned(),
                });
                return;
            }
            THROTTLE => {
                if let Some(job) = self.jobs.get_mut(id) {
                    job.safety_failures += 1;
                }
                self.recheck_later(id, now, out);
                return;
            }
            // DENY, QUARANTINE, REDACT without a redacted context, unknown or missing: deny.
            _ => {
                self.deny(id, &reason, now, out);
                return;
            }
        }
        if let Some(job) = self.jobs.get_mut(id) {
            job.safety_failures = 0;
            job.max_retries = self.config.max_retries;
            if let Some(b) = response
                .constraints
                .as_ref()
                .and_then(|c| c.budgets.as_ref())
            {
                if b.max_retries > 0 {
                    job.max_retries = b.max_retries as u32;
                }
                if b.max_runtime_ms > 0 {
                    job.max_runtime_ms = b.max_runtime_ms as u64;
                }
            }
            if redacted {
                job.dispatch_context_ptr
                    .clone_from(&response.redacted_context_ptr);
            }
        }
        self.try_dispatch(id, now, out);
    }

    fn deny(&mut self, id: &str, reason: &str, now: Millis, out: &mut Vec<Action>) {
        self.finish(
            id,
            JobState::Denied,
            ErrorCode::SAFETY_DENIED,
            reason,
            now,
            out,
        );
    }

    fn kernel_down(&mut self, id: &str, error: &str, now: Millis, out: &mut Vec<Action>) {
        if !matches!(self.hold_of(id), Some(Hold::Safety | Hold::Recheck { .. })) {
            return;
        }
        let attempts = self.config.safety_attempts;
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        job.safety_failures += 1;
        if job.safety_failures >= attempts {
            let msg = format!(
                "safety kernel unreachable after {attempts} attempts (fail closed): {error}"
            );
            self.deny(id, &msg, now, out);
            return;
        }
        self.recheck_later(id, now, out);
    }

    /// Asks the kernel again after a back-off that grows with the failures so far.
    fn recheck_later(&mut self, id: &str, now: Millis, out: &mut Vec<Action>) {
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        let delay = backoff(
            self.config.recheck_base,
            self.config.retry_max,
            job.safety_failures,
            id,
        );
        job.hold = Some(Hold::Recheck {
            at: now + ms(delay),
        });
        out.push(Action::Persist {
            job_id: id.to_owned(),
        });
    }

    fn try_dispatch(&mut self, id: &str, now: Millis, out: &mut Vec<Action>) {
        let Some(job) = self.jobs.get(id) else { return };
        let topic = job.request.topic.clone();
        let route = self.pools.route(&topic);
        let mut requires = route.requires.clone();
        if let Some(meta) = &job.request.meta {
            requires.extend(meta.requires.iter().cloned());
        }
        let subject = if !requires.is_empty() {
            match self.registry.pick(&topic, &route.pool, &requires, false) {
                Some(w) => worker_subject(&w, &route.subject),
                None => {
                    let since = match job.hold {
                        Some(Hold::Worker { since }) => since,
                        _ => now,
                    };
                    if let Some(job) = self.jobs.get_mut(id) {
                        job.hold = Some(Hold::Worker { since });
                    }
                    out.push(Action::Persist {
                        job_id: id.to_owned(),
                    });
                    return;
                }
            }
        } else if self.registry.anyone_ready_for(&topic) {
            match self.registry.pick(&topic, &route.pool, &[], true) {
                Some(w) => worker_subject(&w, &route.subject),
                None => route.subject.clone(),
            }
        } else {
            route.subject.clone()
        };
        if !self.move_to(id, JobState::Dispatched, now, out) {
            return;
        }
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        job.hold = None;
        job.attempts += 1;
        job.dispatched_to.clone_from(&subject);
        let mut request = job.request.clone();
        request.context_ptr.clone_from(&job.dispatch_context_ptr);
        if job.max_runtime_ms > 0 {
            let budget = request.budget.get_or_insert_with(Default::default);
            let limit = i64::try_from(job.max_runtime_ms).unwrap_or(i64::MAX);
            if budget.deadline_ms == 0 || budget.deadline_ms > limit {
                budget.deadline_ms = limit;
            }
        }
        out.push(Action::Dispatch {
            subject,
            request: Box::new(request),
            trace_id: job.trace_id.clone(),
            identity: job.identity.clone().map(Box::new),
        });
        out.push(Action::Persist {
            job_id: id.to_owned(),
        });
    }

    fn result(&mut self, result: v1::JobResult, now: Millis, out: &mut Vec<Action>) {
        let id = result.job_id.clone();
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let Some(to) = JobState::from_i32(result.status) else {
            out.push(Action::Ignored {
                job_id: id,
                reason: format!("unknown status {}", result.status),
            });
            return;
        };
        if job.state == to {
            return; // a repeat (or our own published result coming back)
        }
        let running_successor = matches!(
            to,
            JobState::Succeeded
                | JobState::Failed
                | JobState::FailedRetryable
                | JobState::FailedFatal
        );
        if job.state == JobState::Dispatched && running_successor {
            // The worker did not report a start: it did start.
            self.move_to(&id, JobState::Running, now, out);
        }
        if !result.worker_id.is_empty()
            && let Some(job) = self.jobs.get_mut(&id)
        {
            job.worker_id.clone_from(&result.worker_id);
        }
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        if to == JobState::FailedRetryable {
            let retries_used = job.attempts.saturating_sub(1);
            if retries_used < job.max_retries {
                if !self.move_to(&id, JobState::FailedRetryable, now, out) {
                    return;
                }
                let delay = backoff(
                    self.config.retry_base,
                    self.config.retry_max,
                    retries_used,
                    &id,
                );
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.hold = Some(Hold::Retry {
                        at: now + ms(delay),
                    });
                }
                out.push(Action::Persist { job_id: id });
                return;
            }
            // Retries exhausted: the job fails for good and goes to the dead-letter queue.
            let trace_id = job.trace_id.clone();
            if !self.move_to(&id, JobState::Failed, now, out) {
                return;
            }
            let mut last = result;
            last.status = JobState::Failed.status() as i32;
            let message = format!(
                "retries exhausted ({} attempts): {}",
                self.jobs.get(&id).map_or(0, |j| j.attempts),
                last.error_message
            );
            out.push(Action::DeadLetter {
                result: Box::new(self.as_published(last.clone())),
                trace_id: trace_id.clone(),
            });
            out.push(Action::Alert {
                alert: alert(
                    v1::AlertSeverity::Warning,
                    ErrorCode::of_result(&last),
                    &self.id,
                    &format!("job {id} dead-lettered"),
                    &trace_id,
                ),
            });
            last.error_message = message;
            if let Some(job) = self.jobs.get_mut(&id) {
                job.result = Some(last.clone());
            }
            out.push(Action::PublishResult {
                result: Box::new(self.as_published(last)),
                trace_id,
            });
            self.after_terminal(&id, now, out);
            return;
        }
        if !self.move_to(&id, to, now, out) {
            return;
        }
        if let Some(job) = self.jobs.get_mut(&id) {
            job.hold = None;
            if to.is_terminal() {
                job.result = Some(result);
            }
        }
        if to.is_terminal() {
            self.after_terminal(&id, now, out);
        } else {
            out.push(Action::Persist { job_id: id });
        }
    }

    /// Followers get the outcome; workflow consequences; persist.
    fn after_terminal(&mut self, id: &str, now: Millis, out: &mut Vec<Action>) {
        out.push(Action::Persist {
            job_id: id.to_owned(),
        });
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        let followers = std::mem::take(&mut job.followers);
        let result = job.result.clone();
        let state_now = job.state;
        let parent = job.request.parent_job_id.clone();
        let published = result.map(|r| self.as_published(r));
        for f in followers {
            if let (Some(mut r), Some(fj)) = (published.clone(), self.jobs.get_mut(&f)) {
                r.job_id.clone_from(&f);
                fj.result = Some(r.clone());
                fj.history.push((now, format!("OUTCOME {state_now}")));
                out.push(Action::PublishResult {
                    result: Box::new(r),
                    trace_id: fj.trace_id.clone(),
                });
                out.push(Action::Persist { job_id: f });
            }
        }
        if state_now == JobState::FailedFatal && !parent.is_empty() {
            self.compensate_siblings(id, &parent, now, out);
        }
        if let Some(mut chain) = self.compensation_chains.remove(id)
            && !chain.is_empty()
        {
            let next = chain.remove(0);
            let next_id = next.job_id.clone();
            let (trace, identity) = self
                .jobs
                .get(id)
                .map(|j| (j.trace_id.clone(), j.identity.clone()))
                .unwrap_or_default();
            if !chain.is_empty() {
                self.compensation_chains.insert(next_id, chain);
            }
            self.submit(next, trace, self.id.clone(), identity, now, out);
        }
    }

    /// A child failed fatally: undo its succeeded siblings, most recent step first, one
    /// after the other.
    fn compensate_siblings(
        &mut self,
        failed: &str,
        parent: &str,
        now: Millis,
        out: &mut Vec<Action>,
    ) {
        let Some(p) = self.jobs.get(parent) else {
            return;
        };
        let mut done: Vec<&JobRecord> = p
            .children
            .iter()
            .filter(|c| c.as_str() != failed)
            .filter_map(|c| self.job(c))
            .filter(|c| c.state == JobState::Succeeded && c.request.compensation.is_some())
            .collect();
        done.sort_by(|a, b| {
            b.request
                .step_index
                .cmp(&a.request.step_index)
                .then_with(|| b.since.cmp(&a.since))
        });
        let mut chain: Vec<v1::JobRequest> = done
            .iter()
            .filter_map(|s| compensation_request(s))
            .collect();
        if chain.is_empty() {
            return;
        }
        // Compensations run for whom the workflow ran: the failed step's identity.
        let (trace, identity) = self
            .jobs
            .get(failed)
            .map(|j| (j.trace_id.clone(), j.identity.clone()))
            .unwrap_or_default();
        let first = chain.remove(0);
        if !chain.is_empty() {
            self.compensation_chains.insert(first.job_id.clone(), chain);
        }
        self.submit(first, trace, self.id.clone(), identity, now, out);
    }

    fn progress(&mut self, p: &v1::JobProgress, now: Millis, out: &mut Vec<Action>) {
        let Some(job) = self.jobs.get(&p.job_id) else {
            return;
        };
        if job.state == JobState::Dispatched
            && (p.status == 0 || p.status == JobState::Running.status() as i32)
        {
            let id = p.job_id.clone();
            if self.move_to(&id, JobState::Running, now, out) {
                out.push(Action::Persist { job_id: id });
            }
        }
    }

    fn cancel(&mut self, cancel: v1::JobCancel, now: Millis, out: &mut Vec<Action>) {
        let id = cancel.job_id.clone();
        let Some(job) = self.jobs.get(&id) else {
            // Not ours (perhaps dispatched without a scheduler): let the workers know.
            out.push(Action::ForwardCancel {
                cancel: Box::new(cancel),
                trace_id: String::new(),
            });
            return;
        };
        if job.state == JobState::Cancelled || cancel.requested_by == self.id {
            // A repeat, or our own forwarded cancel coming back: nothing to do.
            return;
        }
        if job.state.is_terminal() {
            out.push(Action::Ignored {
                job_id: id,
                reason: format!("cancel after terminal state {}", job.state),
            });
            return;
        }
        let trace_id = job.trace_id.clone();
        let children = job.children.clone();
        let reason = if cancel.reason.is_empty() {
            "cancelled".to_owned()
        } else {
            cancel.reason.clone()
        };
        out.push(Action::ForwardCancel {
            cancel: Box::new(cancel.clone()),
            trace_id,
        });
        self.finish(
            &id,
            JobState::Cancelled,
            ErrorCode::UNSPECIFIED,
            &reason,
            now,
            out,
        );
        for child in children {
            let c = v1::JobCancel {
                job_id: child,
                reason: format!("parent {id} cancelled"),
                requested_by: cancel.requested_by.clone(),
                ..Default::default()
            };
            self.cancel(c, now, out);
        }
    }

    fn handshake(&mut self, hs: &v1::Handshake, now: Millis, out: &mut Vec<Action>) {
        if hs.role != v1::ComponentRole::Worker as i32 {
            return;
        }
        if cap_proto::negotiate::version(&self.config.supported_versions, &hs.supported_versions)
            .is_err()
        {
            out.push(Action::Alert {
                alert: alert(
                    v1::AlertSeverity::Error,
                    ErrorCode::PROTOCOL_VERSION_MISMATCH,
                    &self.id,
                    &format!(
                        "worker {} shares no protocol version with this scheduler",
                        hs.component_id
                    ),
                    "",
                ),
            });
            return;
        }
        self.registry.handshake(hs, now);
    }

    fn tick(&mut self, now: Millis, out: &mut Vec<Action>) {
        // Only the jobs whose deadline has come (earliest first).
        let mut due = Vec::new();
        while let Some((at, _)) = self.timers.first() {
            if *at > now {
                break;
            }
            if let Some((_, id)) = self.timers.pop_first() {
                self.deadlines.remove(&id);
                due.push(id);
            }
        }
        for id in due {
            self.check_due(id, now, out);
            // Jobs that did not change (nothing persisted) still need their next look.
        }
        self.expire_workers(now, out);
    }

    /// The reconciler's look at one job whose deadline has come.
    fn check_due(&mut self, id: String, now: Millis, out: &mut Vec<Action>) {
        {
            let Some(job) = self.jobs.get(&id) else {
                return;
            };
            match (job.state, job.hold.clone()) {
                (JobState::Scheduled, Some(Hold::Recheck { at })) if at <= now => {
                    let check = policy_request(&job.request);
                    if let Some(job) = self.jobs.get_mut(&id) {
                        job.hold = Some(Hold::Safety);
                    }
                    out.push(Action::CheckSafety {
                        job_id: id.clone(),
                        request: Box::new(check),
                    });
                }
                (JobState::FailedRetryable, Some(Hold::Retry { at })) if at <= now => {
                    self.try_dispatch(&id, now, out);
                }
                (JobState::Scheduled, Some(Hold::Worker { since })) => {
                    if now.saturating_sub(since) >= ms(self.config.worker_wait_timeout) {
                        let msg = "no worker with the required capabilities became available";
                        self.finish(
                            &id,
                            JobState::Failed,
                            ErrorCode::JOB_WORKER_UNAVAILABLE,
                            msg,
                            now,
                            out,
                        );
                    } else {
                        self.try_dispatch(&id, now, out);
                    }
                }
                (JobState::Dispatched, _)
                    if now.saturating_sub(job.since) >= ms(self.dispatch_limit(job)) =>
                {
                    self.time_out(&id, "not started in time", now, out);
                }
                (JobState::Running, _)
                    if now.saturating_sub(job.since) >= self.run_limit_ms(job) =>
                {
                    self.time_out(&id, "ran past its deadline", now, out);
                }
                (s, _)
                    if s.is_terminal()
                        && now.saturating_sub(job.since) >= ms(self.config.retention) =>
                {
                    if let Some(key) = job.idempotency_key().map(str::to_owned)
                        && self.idempotency.get(&key) == Some(&id)
                    {
                        self.idempotency.remove(&key);
                    }
                    self.jobs.remove(&id);
                    out.push(Action::Evict { job_id: id });
                    return;
                }
                _ => {}
            }
        }
        // Not finished with it (a timer ahead, or a state that changed meanwhile).
        self.reschedule(&id, now);
    }

    fn expire_workers(&mut self, now: Millis, out: &mut Vec<Action>) {
        let deadline = now.saturating_sub(3 * ms(self.config.heartbeat_interval));
        for lost in self.registry.expire(deadline) {
            // Jobs sent straight to the lost worker (its subject is not durable) fail
            // retryably and go through the retry path to another worker.
            let direct = worker_subject(&lost.worker_id, "");
            let mut orphans: Vec<String> = self
                .jobs
                .values()
                .filter(|j| {
                    matches!(j.state, JobState::Dispatched | JobState::Running)
                        && j.dispatched_to == direct
                })
                .map(|j| j.id().to_owned())
                .collect();
            orphans.sort();
            for id in orphans {
                let mut result = v1::JobResult {
                    job_id: id.clone(),
                    status: JobState::FailedRetryable.status() as i32,
                    worker_id: lost.worker_id.clone(),
                    error_message: format!("worker {} lost", lost.worker_id),
                    ..Default::default()
                };
                ErrorCode::JOB_WORKER_UNAVAILABLE.apply_to(&mut result);
                self.result(result, now, out);
            }
            out.push(Action::Alert {
                alert: alert(
                    v1::AlertSeverity::Warning,
                    ErrorCode::JOB_WORKER_UNAVAILABLE,
                    &self.id,
                    &format!(
                        "worker {} lost (no heartbeat for three intervals)",
                        lost.worker_id
                    ),
                    "",
                ),
            });
        }
    }

    fn time_out(&mut self, id: &str, why: &str, now: Millis, out: &mut Vec<Action>) {
        let Some(job) = self.jobs.get(id) else { return };
        let trace_id = job.trace_id.clone();
        // The verdict goes out before the cancel, so that clients hear TIMEOUT first and
        // the worker's CANCELLED answer is a late second terminal, ignored.
        self.finish(
            id,
            JobState::Timeout,
            ErrorCode::JOB_TIMEOUT,
            &format!("job {why}"),
            now,
            out,
        );
        let cancel = v1::JobCancel {
            job_id: id.to_owned(),
            reason: format!("timeout: {why}"),
            requested_by: self.id.clone(),
            ..Default::default()
        };
        out.push(Action::ForwardCancel {
            cancel: Box::new(cancel),
            trace_id,
        });
    }
}

fn worker_subject(worker: &str, fallback: &str) -> String {
    cap_proto::subject::worker_jobs(worker)
        .map(|s| s.into_string())
        .unwrap_or_else(|_| fallback.to_owned())
}

/// What the safety kernel is asked about a job.
pub fn policy_request(r: &v1::JobRequest) -> v1::PolicyCheckRequest {
    v1::PolicyCheckRequest {
        job_id: r.job_id.clone(),
        topic: r.topic.clone(),
        tenant: r.tenant_id.clone(),
        priority: r.priority,
        budget: r.budget,
        principal_id: r.principal_id.clone(),
        labels: r.labels.clone(),
        memory_id: r.memory_id.clone(),
        meta: r.meta.clone(),
        identity: r.identity.clone(),
        input_ref: r.context_ref.clone(),
        ..Default::default()
    }
}

/// The compensation job of a succeeded step, with its own id and idempotency key.
fn compensation_request(step: &JobRecord) -> Option<v1::JobRequest> {
    let c = step.request.compensation.as_ref()?;
    let mut meta = c.meta.clone().unwrap_or_default();
    meta.idempotency_key = format!("compensate:{}", step.id());
    Some(v1::JobRequest {
        job_id: format!("{}.compensate", step.id()),
        topic: c.topic.clone(),
        priority: c.priority,
        context_ptr: c.context_ptr.clone(),
        adapter_id: c.adapter_id.clone(),
        env: c.env.clone(),
        parent_job_id: step.request.parent_job_id.clone(),
        workflow_id: step.request.workflow_id.clone(),
        step_index: step.request.step_index,
        memory_id: c.memory_id.clone(),
        context_hints: c.context_hints.clone(),
        budget: c.budget,
        tenant_id: c.tenant_id.clone(),
        principal_id: c.principal_id.clone(),
        labels: c.labels.clone(),
        meta: Some(meta),
        compensation: None,
        identity: c.identity.clone(),
        // The scheduler assigns every dispatch itself.
        dispatch: None,
        context_ref: c.context_ref.clone(),
    })
}

/// A SystemAlert from the scheduler (`source` is its sender id). With an error code it
/// has the structured shape (severity, code, `source_component` = `source`); without one
/// the legacy shape (level, component and a `NOTICE` code string): CAP receivers accept
/// a structured alert only with a known error code.
pub fn alert(
    severity: v1::AlertSeverity,
    code: ErrorCode,
    source: &str,
    message: &str,
    trace_id: &str,
) -> Box<v1::SystemAlert> {
    let level = severity
        .as_str_name()
        .trim_start_matches("ALERT_SEVERITY_")
        .to_owned();
    let structured = code != ErrorCode::UNSPECIFIED;
    Box::new(v1::SystemAlert {
        level,
        message: message.to_owned(),
        component: "scheduler".into(),
        code: if structured {
            code.to_string()
        } else {
            "NOTICE".into()
        },
        severity: if structured { severity as i32 } else { 0 },
        error_code_enum: code.as_i32(),
        source_component: if structured {
            source.to_owned()
        } else {
            String::new()
        },
        trace_id: trace_id.to_owned(),
        ..Default::default()
    })
}
