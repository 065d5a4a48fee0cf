//! [`Env`]: what a job's step may read besides the job itself — settings, routing, the
//! worker registry, the time, fresh dispatch ids and a read-only [`JobView`] of other
//! jobs.

use super::config::Config;
use super::job::{JobRecord, Millis};
use super::pools::Pools;
use super::registry::Registry;
use std::collections::HashMap;

/// Read-only access to jobs other than the one being stepped (an idempotency leader, a
/// workflow parent's children). The records may be a little old; the step only reads
/// facts that never change back (a terminal outcome) or tolerate being late.
///
/// A view that does not have a record at hand answers [`Lookup::Missing`]; the shell then
/// fetches it and runs the step again (steps are pure, so that is safe).
pub trait JobView {
    /// Another job's record.
    fn job(&self, id: &str) -> Lookup<&JobRecord>;
    /// The children of a workflow parent.
    fn children(&self, parent: &str) -> Lookup<Vec<String>>;
}

/// The answer of a [`JobView`].
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup<T> {
    /// Here it is.
    Found(T),
    /// Known not to exist.
    Absent,
    /// Not at hand: fetch it and step again.
    Missing,
}

impl<T> Lookup<T> {
    /// The value, if found.
    pub fn found(self) -> Option<T> {
        match self {
            Lookup::Found(t) => Some(t),
            _ => None,
        }
    }
}

/// Everything a step may read, and the two things it may draw from: the registry's
/// load counters and fresh dispatch ids.
pub struct Env<'a> {
    /// The scheduler's sender id.
    pub id: &'a str,
    /// Settings.
    pub config: &'a Config,
    /// Topic → pool routing.
    pub pools: &'a Pools,
    /// Known workers (a pick counts against a worker's load).
    pub registry: &'a mut Registry,
    /// The time.
    pub now: Millis,
    /// Other jobs.
    pub view: &'a dyn JobView,
    /// Fresh, unpredictable dispatch ids.
    pub ids: &'a mut dyn FnMut() -> String,
    /// No job is timed out for silence before this time: the shell lost its bus (or
    /// just got it back), so a missing result may be a result it could not hear.
    pub hold_timeouts_until: Millis,
    /// Set by a step that read something the view did not have.
    pub(crate) missing: Vec<String>,
}

impl<'a> Env<'a> {
    /// An environment for one step.
    pub fn new(
        id: &'a str,
        config: &'a Config,
        pools: &'a Pools,
        registry: &'a mut Registry,
        now: Millis,
        view: &'a dyn JobView,
        ids: &'a mut dyn FnMut() -> String,
    ) -> Self {
        Env {
            id,
            config,
            pools,
            registry,
            now,
            view,
            ids,
            hold_timeouts_until: 0,
            missing: Vec::new(),
        }
    }

    /// Holds timeouts for silence until `until` (see [`hold_timeouts_until`](Self::hold_timeouts_until)).
    pub fn holding_timeouts_until(mut self, until: Millis) -> Self {
        self.hold_timeouts_until = until;
        self
    }

    /// The job ids a step asked the view for but the view did not have (fetch them and
    /// step again). Empty when the step saw everything it needed.
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// Another job's record; notes a miss.
    pub(crate) fn other(&mut self, id: &str) -> Option<JobRecord> {
        match self.view.job(id) {
            Lookup::Found(r) => Some(r.clone()),
            Lookup::Absent => None,
            Lookup::Missing => {
                self.missing.push(id.to_owned());
                None
            }
        }
    }

    /// A parent's children; notes a miss (as `children:<parent>`).
    pub(crate) fn children_of(&mut self, parent: &str) -> Vec<String> {
        match self.view.children(parent) {
            Lookup::Found(c) => c,
            Lookup::Absent => Vec::new(),
            Lookup::Missing => {
                self.missing.push(format!("{CHILDREN}{parent}"));
                Vec::new()
            }
        }
    }
}

/// Prefix of a missing-children entry in [`Env::missing`].
pub const CHILDREN: &str = "children:";

/// A [`JobView`] over maps held in memory (the in-memory driver, and the shell's
/// per-batch snapshot).
#[derive(Debug, Default)]
pub struct MapView<'a> {
    /// Records by id.
    pub jobs: Option<&'a HashMap<String, Box<JobRecord>>>,
    /// Extra records fetched for this step.
    pub fetched: HashMap<String, Option<JobRecord>>,
    /// Children by parent.
    pub children: Option<&'a HashMap<String, Vec<String>>>,
    /// Extra children lists fetched for this step.
    pub fetched_children: HashMap<String, Vec<String>>,
    /// Whether a record absent from the maps is known not to exist (`true` for the
    /// in-memory driver, which holds every record) or merely not fetched yet.
    pub complete: bool,
}

impl JobView for MapView<'_> {
    fn job(&self, id: &str) -> Lookup<&JobRecord> {
        if let Some(r) = self.jobs.and_then(|j| j.get(id)) {
            return Lookup::Found(r);
        }
        match self.fetched.get(id) {
            Some(Some(r)) => Lookup::Found(r),
            Some(None) => Lookup::Absent,
            None if self.complete => Lookup::Absent,
            None => Lookup::Missing,
        }
    }

    fn children(&self, parent: &str) -> Lookup<Vec<String>> {
        if let Some(c) = self.children.and_then(|c| c.get(parent)) {
            return Lookup::Found(c.clone());
        }
        match self.fetched_children.get(parent) {
            Some(c) => Lookup::Found(c.clone()),
            None if self.complete => Lookup::Absent,
            None => Lookup::Missing,
        }
    }
}
