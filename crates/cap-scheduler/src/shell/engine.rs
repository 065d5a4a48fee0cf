//! [`Engine`]: applies batches of job events against the shared [`JobStore`].
//!
//! For each job of a batch: take its record (from a bounded cache, else the store), run
//! its events through the pure [`step`], and commit the result as one compare-and-set
//! on the version it was decided from. A conflict means another instance (or a stale
//! cache) got there first: the record is read again and the job's events are decided
//! again. Only the actions of committed steps are carried out, so what goes on the bus
//! always matches what the store holds.
//!
//! A step that commits nothing is not checked by any compare-and-set, so when it was
//! decided from a cached record that can still change, and it let an event go (a report
//! outside the attempt in flight, a move the state machine refuses, a repeated submit
//! with nothing to re-announce), it is decided again from a fresh read first.

use super::store::{Commit, Committed, JobStore, StoreError, Stored};
use crate::core::{
    Action, CHILDREN, Claim, Config, Env, FollowUp, JobEvent, JobRecord, MapView, Millis, Pools,
    Registry, step, timers,
};
use cap_proto::JobState;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Conflicts tolerated for one job in one batch before its events are given back.
const MAX_ROUNDS: usize = 8;

/// A record as last seen in the store.
struct Cached {
    version: u64,
    record: Box<JobRecord>,
}

/// Counters of what the engine did (for logs, metrics and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Steps committed.
    pub commits: u64,
    /// Compare-and-sets lost to another writer (the job was decided again).
    pub conflicts: u64,
    /// Events for jobs the store does not know (results of unknown jobs, mostly).
    pub unknown: u64,
    /// Events given back because the store failed or conflicts did not settle.
    pub failed: u64,
    /// Steps that let an event go on a cached record, decided again from a fresh read.
    pub rechecked: u64,
}

/// What a batch decided: the actions to carry out, in order, and the events that could
/// not be applied (their messages are given back for redelivery).
#[derive(Debug, Default)]
pub struct Outcome {
    /// Actions of committed steps (and of steps that changed nothing), in order.
    pub actions: Vec<Action>,
    /// Indexes (into the batch) of events not applied.
    pub failed: Vec<usize>,
    /// Results for jobs the store does not know: (job id, worker id, status).
    pub unknown_results: Vec<(String, String, i32)>,
}

/// The store-backed driver of the job state machine, owned by one scheduler instance.
pub struct Engine<S: JobStore> {
    store: Arc<S>,
    id: String,
    config: Config,
    pools: Pools,
    /// The workers this instance knows.
    pub registry: Registry,
    cache: HashMap<String, Cached>,
    cache_cap: usize,
    ids: Box<dyn FnMut() -> String + Send>,
    stats: EngineStats,
    /// See [`Env::hold_timeouts_until`].
    hold_timeouts_until: Millis,
}

impl<S: JobStore> Engine<S> {
    /// An engine over `store`; `ids` draws fresh dispatch ids.
    pub fn new(
        store: Arc<S>,
        id: String,
        config: Config,
        pools: Pools,
        cache_cap: usize,
        ids: Box<dyn FnMut() -> String + Send>,
    ) -> Self {
        Engine {
            store,
            id,
            config,
            pools,
            registry: Registry::default(),
            cache: HashMap::new(),
            cache_cap: cache_cap.max(1),
            ids,
            stats: EngineStats::default(),
            hold_timeouts_until: 0,
        }
    }

    /// Holds timeouts for silence until `until`: the shell lost its bus (see
    /// [`Env::hold_timeouts_until`]).
    pub fn hold_timeouts_until(&mut self, until: Millis) {
        self.hold_timeouts_until = self.hold_timeouts_until.max(until);
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The scheduler id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Counters so far.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Records held in the cache (active jobs seen by this instance).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// A cached record (may be older than the store's).
    pub fn cached_record(&self, id: &str) -> Option<&JobRecord> {
        self.cache.get(id).map(|c| &*c.record)
    }

    /// Ids of cached jobs whose attempt in flight was sent straight to `worker`.
    pub fn sent_to(&self, worker: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .cache
            .iter()
            .filter(|(_, c)| {
                c.record
                    .dispatch
                    .as_ref()
                    .is_some_and(|a| a.assigned == worker)
            })
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Forgets a cached record (another instance is known to have changed it).
    pub fn forget(&mut self, id: &str) {
        self.cache.remove(id);
    }

    /// Applies `events` (each for the job named with it) and, to a fixed point, the
    /// follow-ups they produce. Events of one job are applied in the order given.
    pub async fn apply(&mut self, events: Vec<(String, JobEvent)>, now: Millis) -> Outcome {
        let mut out = Outcome::default();
        let mut pending: Vec<(String, JobEvent, Option<usize>)> = events
            .into_iter()
            .enumerate()
            .map(|(i, (id, ev))| (id, ev, Some(i)))
            .collect();
        // Follow-ups spawn more rounds; a chain of compensations is short, but bound it.
        for _ in 0..64 {
            if pending.is_empty() {
                break;
            }
            let follow_ups = self
                .round(std::mem::take(&mut pending), now, &mut out)
                .await;
            pending = follow_ups;
        }
        if !pending.is_empty() {
            tracing::error!(
                left = pending.len(),
                "follow-ups did not settle; they are retried by the settle timer"
            );
        }
        out
    }

    /// One round: the given events, grouped by job; returns the follow-ups.
    async fn round(
        &mut self,
        events: Vec<(String, JobEvent, Option<usize>)>,
        now: Millis,
        out: &mut Outcome,
    ) -> Vec<(String, JobEvent, Option<usize>)> {
        // Group by job, keeping the order of first appearance and of events within a job.
        let mut order: Vec<String> = Vec::new();
        let mut groups: HashMap<String, Vec<(JobEvent, Option<usize>)>> = HashMap::new();
        for (id, ev, idx) in events {
            if !groups.contains_key(&id) {
                order.push(id.clone());
            }
            groups.entry(id).or_default().push((ev, idx));
        }
        let mut follow_ups = Vec::new();
        let mut todo = order;
        for _ in 0..MAX_ROUNDS {
            if todo.is_empty() {
                break;
            }
            match self
                .decide_and_commit(&todo, &mut groups, now, out, &mut follow_ups)
                .await
            {
                Ok(conflicted) => todo = conflicted,
                Err(e) => {
                    tracing::error!(error = %e, jobs = todo.len(), "job store failed; events given back");
                    break;
                }
            }
        }
        for id in todo {
            // Store down or conflicts that did not settle: give the events back.
            for (_, idx) in groups.remove(&id).unwrap_or_default() {
                self.stats.failed += 1;
                out.failed.extend(idx);
            }
        }
        follow_ups
    }

    /// Decides the jobs in `todo` and commits them; returns the ids that conflicted.
    async fn decide_and_commit(
        &mut self,
        todo: &[String],
        groups: &mut HashMap<String, Vec<(JobEvent, Option<usize>)>>,
        now: Millis,
        out: &mut Outcome,
        follow_ups: &mut Vec<(String, JobEvent, Option<usize>)>,
    ) -> Result<Vec<String>, StoreError> {
        // Records not cached are read in one go.
        let uncached: Vec<String> = todo
            .iter()
            .filter(|id| !self.cache.contains_key(*id))
            .cloned()
            .collect();
        let fresh: HashSet<&str> = uncached.iter().map(String::as_str).collect();
        let mut absent: Vec<String> = Vec::new();
        if !uncached.is_empty() {
            for (id, stored) in uncached.iter().zip(self.store.load(&uncached).await?) {
                match stored {
                    Some(Stored { version, record }) => {
                        self.cache_put(id, version, record);
                    }
                    None => absent.push(id.clone()),
                }
            }
        }
        // New jobs with an idempotency key claim it before their first step.
        for id in &absent {
            if let Some(events) = groups.get_mut(id) {
                for (ev, _) in events.iter_mut() {
                    if let JobEvent::Submitted { request, claim, .. } = ev
                        && claim.is_none()
                        && let Some(key) = request
                            .meta
                            .as_ref()
                            .map(|m| m.idempotency_key.clone())
                            .filter(|k| !k.is_empty())
                    {
                        let holder = self
                            .store
                            .claim_key(&key, id, self.config.retention)
                            .await?;
                        *claim = Some(if holder == *id {
                            Claim::Leader
                        } else {
                            Claim::Follower { leader: holder }
                        });
                    }
                }
            }
        }

        struct Decided {
            id: String,
            base: u64,
            record: Option<Box<JobRecord>>,
            actions: Vec<Action>,
            follow_ups: Vec<FollowUp>,
            due_unchanged: bool,
            /// Let an event go on a cached record that may have changed since it was
            /// read: to be decided again from the store.
            recheck: bool,
        }
        let mut decided: Vec<Decided> = Vec::with_capacity(todo.len());
        let mut fetched: HashMap<String, Option<JobRecord>> = HashMap::new();
        let mut fetched_children: HashMap<String, Vec<String>> = HashMap::new();
        for id in todo {
            let events: Vec<JobEvent> = groups
                .get(id)
                .map(|g| g.iter().map(|(e, _)| e.clone()).collect())
                .unwrap_or_default();
            // A step that reads other jobs the view does not have is run again once
            // they are fetched (fresh from the store: a sibling's outcome must be true).
            let mut tries = 0;
            let d = loop {
                tries += 1;
                let base = self.cache.get(id).map(|c| c.version).unwrap_or(0);
                let mut current: Option<Box<JobRecord>> =
                    self.cache.get(id).map(|c| c.record.clone());
                // A terminal record never changes: a cached one is the stored one.
                let from_cache = !fresh.contains(id.as_str())
                    && current.as_ref().is_some_and(|r| !r.state.is_terminal());
                let mut changed = false;
                let mut actions = Vec::new();
                let mut fups = Vec::new();
                let mut due_only = true;
                let mut missing: Vec<String> = Vec::new();
                {
                    let view = MapView {
                        fetched: std::mem::take(&mut fetched),
                        fetched_children: std::mem::take(&mut fetched_children),
                        complete: false,
                        ..Default::default()
                    };
                    for ev in &events {
                        due_only &= matches!(ev, JobEvent::Due);
                        let mut env = Env::new(
                            &self.id,
                            &self.config,
                            &self.pools,
                            &mut self.registry,
                            now,
                            &view,
                            &mut *self.ids,
                        )
                        .holding_timeouts_until(self.hold_timeouts_until);
                        let s = step(&mut env, current.as_deref(), ev.clone());
                        missing.extend(env.missing().iter().cloned());
                        if let Some(r) = s.record {
                            current = Some(r);
                            changed = true;
                        }
                        actions.extend(s.actions);
                        fups.extend(s.follow_ups);
                    }
                    fetched = view.fetched;
                    fetched_children = view.fetched_children;
                }
                if missing.is_empty() || tries > 3 {
                    let recheck = from_cache && !changed && lets_go(&events, &actions);
                    break Decided {
                        id: id.clone(),
                        base,
                        record: if changed { current } else { None },
                        actions,
                        follow_ups: fups,
                        due_unchanged: due_only && !changed,
                        recheck,
                    };
                }
                let mut ids = Vec::new();
                for m in missing {
                    match m.strip_prefix(CHILDREN) {
                        Some(parent) => {
                            let kids = self.store.children(parent).await?;
                            fetched_children.insert(parent.to_owned(), kids);
                        }
                        None if !fetched.contains_key(&m) && !ids.contains(&m) => ids.push(m),
                        None => {}
                    }
                }
                if !ids.is_empty() {
                    let got = self.store.load(&ids).await?;
                    for (id, stored) in ids.into_iter().zip(got) {
                        fetched.insert(id, stored.map(|s| s.record));
                    }
                }
            };
            decided.push(d);
        }

        // One compare-and-set per changed job, in one round trip.
        let commits: Vec<Commit<'_>> = decided
            .iter()
            .filter_map(|d| {
                d.record.as_deref().map(|r| Commit {
                    record: r,
                    expected: d.base,
                    deadline: timers::next_deadline(r, &self.config, &self.pools, now, false),
                    ttl: r.state.is_terminal().then_some(self.config.retention),
                })
            })
            .collect();
        let mut results = self.store.commit(&commits).await?;
        drop(commits);
        // Commits the store did not answer: read the record; ours is there if it is
        // exactly what we wrote, at the version after the one we decided from.
        let unknown: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == Committed::Unknown)
            .map(|(i, _)| i)
            .collect();
        if !unknown.is_empty() {
            let changed: Vec<&Decided> = decided.iter().filter(|d| d.record.is_some()).collect();
            let ids: Vec<String> = unknown.iter().map(|i| changed[*i].id.clone()).collect();
            let stored = self.store.load(&ids).await?;
            for (i, s) in unknown.iter().zip(stored) {
                let d = changed[*i];
                results[*i] = match (s, d.record.as_deref()) {
                    (Some(s), Some(ours)) if s.version == d.base + 1 && s.record == *ours => {
                        Committed::Yes(s.version)
                    }
                    _ => Committed::Conflict,
                };
            }
        }
        let mut results = results.into_iter();
        let mut conflicted = Vec::new();
        let mut rearm: Vec<(String, u64, Option<Millis>)> = Vec::new();
        for d in decided {
            let committed = match &d.record {
                Some(_) => results.next().unwrap_or(Committed::Conflict),
                None => Committed::Yes(d.base),
            };
            match committed {
                Committed::Conflict | Committed::Unknown => {
                    self.stats.conflicts += 1;
                    self.cache.remove(&d.id);
                    conflicted.push(d.id);
                    continue;
                }
                Committed::Yes(_) if d.recheck => {
                    // Nothing written, so nothing checked the cached record: read it
                    // again before the event is let go for good.
                    self.stats.rechecked += 1;
                    self.cache.remove(&d.id);
                    conflicted.push(d.id);
                    continue;
                }
                Committed::Yes(version) => {
                    if let Some(record) = d.record {
                        self.stats.commits += 1;
                        self.cache_put(&d.id, version, *record);
                    } else if d.base == 0 && d.actions.is_empty() {
                        self.stats.unknown += 1;
                        for (ev, _) in groups.get(&d.id).map(Vec::as_slice).unwrap_or_default() {
                            if let JobEvent::Result(r) = ev {
                                out.unknown_results.push((
                                    r.job_id.clone(),
                                    r.worker_id.clone(),
                                    r.status,
                                ));
                            }
                        }
                    }
                    if d.due_unchanged {
                        let hold = self.hold_timeouts_until;
                        let next = self.cache.get(&d.id).and_then(|c| {
                            let at = timers::next_deadline(
                                &c.record,
                                &self.config,
                                &self.pools,
                                now,
                                false,
                            )?;
                            // A deadline held back by an outage comes again when it ends.
                            let held =
                                matches!(c.record.state, JobState::Dispatched | JobState::Running);
                            Some(if held && at <= now { at.max(hold) } else { at })
                        });
                        rearm.push((d.id.clone(), d.base, next));
                    }
                }
            }
            // Links are made before anything is published about the child.
            for a in &d.actions {
                if let Action::LinkChild { parent, child } = a {
                    self.store
                        .link_child(parent, child, self.config.retention)
                        .await?;
                }
            }
            out.actions.extend(
                d.actions
                    .into_iter()
                    .filter(|a| !matches!(a, Action::LinkChild { .. } | Action::Evict { .. })),
            );
            for f in d.follow_ups {
                follow_ups.push(match f {
                    FollowUp::Submit {
                        request,
                        trace_id,
                        identity,
                        chain,
                    } => (
                        request.job_id.clone(),
                        JobEvent::Submitted {
                            request,
                            trace_id,
                            sender: self.id.clone(),
                            identity,
                            claim: None,
                            internal: true,
                            chain,
                            trace_parent: None,
                        },
                        None,
                    ),
                    FollowUp::Cancel(c) => (c.job_id.clone(), JobEvent::Cancel(c), None),
                });
            }
            groups.remove(&d.id);
            self.evict_settled(&d.id);
        }
        for (id, version, next) in rearm {
            self.store.rearm(&id, version, next).await?;
        }
        Ok(conflicted)
    }

    fn cache_put(&mut self, id: &str, version: u64, record: JobRecord) {
        if self.cache.len() >= self.cache_cap && !self.cache.contains_key(id) {
            // Only a cache: dropping it costs a read per job, never correctness.
            self.cache.clear();
        }
        self.cache.insert(
            id.to_owned(),
            Cached {
                version,
                record: Box::new(record),
            },
        );
    }

    /// Finished and settled jobs leave the cache at once: memory stays bounded by the
    /// jobs in flight.
    fn evict_settled(&mut self, id: &str) {
        if self
            .cache
            .get(id)
            .is_some_and(|c| c.record.state.is_terminal() && c.record.settled)
        {
            self.cache.remove(id);
        }
    }
}

/// Whether a step that changed nothing let an event go that a fresher record might have
/// taken: a report fenced off or a move refused, or any event but a timer (re-armed on
/// its version) or a progress report (a repeat of RUNNING).
fn lets_go(events: &[JobEvent], actions: &[Action]) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Fenced { .. } | Action::Ignored { .. }))
        || events
            .iter()
            .any(|e| !matches!(e, JobEvent::Due | JobEvent::Progress { .. }))
}
