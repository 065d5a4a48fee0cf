//! [`SchedulerCore`]: the in-memory driver of the per-job state machine. It holds every
//! record, the workflow links, the idempotency keys, the worker registry and one
//! deadline per job; it routes each [`Event`] to its job's [`step`], applies the
//! follow-ups at once, and returns every action. No IO, no clock: every path is testable
//! step by step on a virtual clock. (The async shell drives the same [`step`] against a
//! shared [`JobStore`](crate::JobStore) instead.)

use super::config::Config;
use super::env::{Env, MapView};
use super::event::{Action, Claim, Event, FollowUp, JobEvent};
use super::job::{Hold, JobRecord, Millis};
use super::machine::step;
use super::pools::Pools;
use super::registry::Registry;
use super::timers::next_deadline;
use super::workers;
use std::collections::{BTreeSet, HashMap, VecDeque};

/// The scheduler's state and decisions, in memory.
pub struct SchedulerCore {
    config: Config,
    pools: Pools,
    id: String,
    /// Boxed: a record is large, and a growing map then moves pointers, not records.
    jobs: HashMap<String, Box<JobRecord>>,
    children: HashMap<String, Vec<String>>,
    idempotency: HashMap<String, String>,
    registry: Registry,
    /// When each job next needs a look, ordered by time, so a tick touches only the jobs
    /// that are due: one entry per job.
    timers: BTreeSet<(Millis, String)>,
    /// The entry of each job in `timers`.
    deadlines: HashMap<String, Millis>,
    ids: Box<dyn FnMut() -> String + Send>,
}

impl std::fmt::Debug for SchedulerCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerCore")
            .field("id", &self.id)
            .field("jobs", &self.jobs.len())
            .field("timers", &self.timers.len())
            .finish()
    }
}

impl SchedulerCore {
    /// A scheduler with no jobs. `id` is its sender id. Dispatch ids come from a
    /// counter (`dispatch-1`, `dispatch-2`, …): deterministic for tests; use
    /// [`with_ids`](Self::with_ids) for unpredictable ones.
    pub fn new(id: impl Into<String>, config: Config, pools: Pools) -> Self {
        let mut n = 0u64;
        SchedulerCore {
            config,
            pools,
            id: id.into(),
            jobs: HashMap::new(),
            children: HashMap::new(),
            idempotency: HashMap::new(),
            registry: Registry::default(),
            timers: BTreeSet::new(),
            deadlines: HashMap::new(),
            ids: Box::new(move || {
                n += 1;
                format!("dispatch-{n}")
            }),
        }
    }

    /// Draws dispatch ids from `ids`.
    pub fn with_ids(mut self, ids: impl FnMut() -> String + Send + 'static) -> Self {
        self.ids = Box::new(ids);
        self
    }

    /// Loads records persisted by an earlier run. Jobs that were waiting for a safety
    /// decision ask again on the next tick; dispatched and running jobs simply continue.
    pub fn restore(&mut self, records: impl IntoIterator<Item = JobRecord>, now: Millis) {
        for mut r in records {
            if matches!(r.hold, Some(Hold::Safety { .. })) {
                r.hold = Some(Hold::Recheck { at: now });
            }
            if let Some(key) = r.idempotency_key() {
                self.idempotency
                    .entry(key.to_owned())
                    .or_insert_with(|| r.id().to_owned());
            }
            if let Some(parent) = r.parent() {
                let c = self.children.entry(parent.to_owned()).or_default();
                if !c.iter().any(|x| x == r.id()) {
                    c.push(r.id().to_owned());
                }
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
            Event::Heartbeat { heartbeat } => self.registry.heartbeat(&heartbeat, now),
            Event::Handshake { handshake } => out.extend(workers::handshake(
                &mut self.registry,
                &self.config,
                &self.id,
                &handshake,
                now,
            )),
            Event::Tick => self.tick(now, &mut out),
            Event::Submitted {
                request,
                trace_id,
                sender,
                identity,
            } => {
                let id = request.job_id.clone();
                let claim = self.claim(&request);
                let ev = JobEvent::Submitted {
                    request,
                    trace_id,
                    sender,
                    identity,
                    claim,
                    internal: false,
                    chain: Vec::new(),
                    trace_parent: None,
                };
                self.apply(id, ev, now, &mut out);
            }
            Event::SafetyDecided { job_id, response } => {
                self.apply(job_id, JobEvent::SafetyDecided(response), now, &mut out)
            }
            Event::SafetyUnavailable { job_id, error } => {
                self.apply(job_id, JobEvent::SafetyUnavailable(error), now, &mut out)
            }
            Event::Approved { job_id } => self.apply(job_id, JobEvent::Approved, now, &mut out),
            Event::Rejected { job_id, reason } => {
                self.apply(job_id, JobEvent::Rejected(reason), now, &mut out)
            }
            Event::Result { result } => self.apply(
                result.job_id.clone(),
                JobEvent::Result(result),
                now,
                &mut out,
            ),
            Event::Progress { progress, sender } => self.apply(
                progress.job_id.clone(),
                JobEvent::Progress { progress, sender },
                now,
                &mut out,
            ),
            Event::Cancel { cancel } => self.apply(
                cancel.job_id.clone(),
                JobEvent::Cancel(cancel),
                now,
                &mut out,
            ),
        }
        out
    }

    /// Claims the idempotency key of a new job: the first job with a key leads, later
    /// ones follow it while its record exists.
    fn claim(&mut self, request: &cap_proto::v1::JobRequest) -> Option<Claim> {
        if self.jobs.contains_key(&request.job_id) {
            return None;
        }
        let key = request
            .meta
            .as_ref()
            .map(|m| m.idempotency_key.as_str())
            .filter(|k| !k.is_empty())?;
        match self.idempotency.get(key) {
            Some(leader) if leader != &request.job_id && self.jobs.contains_key(leader) => {
                Some(Claim::Follower {
                    leader: leader.clone(),
                })
            }
            _ => {
                self.idempotency
                    .insert(key.to_owned(), request.job_id.clone());
                Some(Claim::Leader)
            }
        }
    }

    /// Steps a job, then the jobs its follow-ups name, until nothing is left.
    fn apply(&mut self, job_id: String, event: JobEvent, now: Millis, out: &mut Vec<Action>) {
        let mut queue = VecDeque::from([(job_id, event)]);
        while let Some((id, event)) = queue.pop_front() {
            let due = matches!(event, JobEvent::Due);
            let s = {
                let view = MapView {
                    jobs: Some(&self.jobs),
                    children: Some(&self.children),
                    complete: true,
                    ..Default::default()
                };
                let mut env = Env::new(
                    &self.id,
                    &self.config,
                    &self.pools,
                    &mut self.registry,
                    now,
                    &view,
                    &mut *self.ids,
                );
                step(&mut env, self.jobs.get(&id).map(|j| &**j), event)
            };
            let changed = s.record.is_some();
            if let Some(record) = s.record {
                self.jobs.insert(id.clone(), record);
            }
            for action in s.actions {
                match &action {
                    Action::LinkChild { parent, child } => {
                        let c = self.children.entry(parent.clone()).or_default();
                        if !c.contains(child) {
                            c.push(child.clone());
                        }
                        continue;
                    }
                    Action::Evict { job_id } => self.evict(job_id),
                    _ => {}
                }
                out.push(action);
            }
            if changed || due {
                self.reschedule(&id, now);
            }
            for f in s.follow_ups {
                match f {
                    FollowUp::Submit {
                        request,
                        trace_id,
                        identity,
                        chain,
                    } => {
                        let claim = self.claim(&request);
                        let next = request.job_id.clone();
                        let ev = JobEvent::Submitted {
                            request,
                            trace_id,
                            sender: self.id.clone(),
                            identity,
                            claim,
                            internal: true,
                            chain,
                            trace_parent: None,
                        };
                        queue.push_back((next, ev));
                    }
                    FollowUp::Cancel(cancel) => {
                        queue.push_back((cancel.job_id.clone(), JobEvent::Cancel(cancel)))
                    }
                }
            }
        }
    }

    fn evict(&mut self, id: &str) {
        if let Some(job) = self.jobs.remove(id) {
            if let Some(key) = job.idempotency_key()
                && self.idempotency.get(key).map(String::as_str) == Some(id)
            {
                self.idempotency.remove(key);
            }
            if let Some(parent) = job.parent()
                && let Some(c) = self.children.get_mut(parent)
            {
                c.retain(|x| x != id);
                if c.is_empty() {
                    self.children.remove(parent);
                }
            }
        }
        if let Some(at) = self.deadlines.remove(id) {
            self.timers.remove(&(at, id.to_owned()));
        }
    }

    /// Puts the job's single timer entry at its next deadline.
    fn reschedule(&mut self, id: &str, now: Millis) {
        let next = self
            .jobs
            .get(id)
            .and_then(|j| next_deadline(j, &self.config, &self.pools, now, true));
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
            self.apply(id, JobEvent::Due, now, out);
        }
        let (lost, alerts) = workers::expire(&mut self.registry, &self.config, &self.id, now);
        for worker_id in lost {
            // Jobs sent straight to the lost worker (its subject is not durable) fail
            // retryably and go through the retry path to another worker.
            let mut orphans: Vec<String> = self
                .jobs
                .values()
                .filter(|j| j.dispatch.as_ref().is_some_and(|a| a.assigned == worker_id))
                .map(|j| j.id().to_owned())
                .collect();
            orphans.sort();
            for id in orphans {
                let ev = JobEvent::WorkerLost {
                    worker_id: worker_id.clone(),
                };
                self.apply(id, ev, now, out);
            }
        }
        out.extend(alerts);
    }
}
