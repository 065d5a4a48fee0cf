//! [`Registry`]: the workers the scheduler knows, fed by heartbeats and handshakes, and
//! the workers it refused ([`Refused`]: no protocol version in common).

use super::job::Millis;
use super::refused::Refused;
use cap_proto::subject;
use cap_proto::v1;
use std::collections::{BTreeMap, BTreeSet};

/// What is known about one worker.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct WorkerInfo {
    /// The worker id (its sender id).
    pub worker_id: String,
    /// Capabilities: the handshake's keys set to true plus the heartbeat's list.
    pub capabilities: BTreeSet<String>,
    /// Topics it is ready for (empty: unspecified, not "none").
    pub ready_topics: Vec<String>,
    /// Its pool.
    pub pool: String,
    /// Jobs it runs now.
    pub active_jobs: i32,
    /// Jobs it runs at most.
    pub max_parallel_jobs: i32,
    /// Jobs dispatched to it directly since its last heartbeat (load it has not reported yet).
    pub pending: i32,
    /// Last heartbeat or handshake.
    pub last_seen: Millis,
    /// The protocol version negotiated at its handshake: the highest both sides
    /// support (0: not negotiated, e.g. known from heartbeats only).
    pub version: i32,
}

impl WorkerInfo {
    /// Load as a fraction of capacity (lower is better).
    pub fn load(&self) -> f64 {
        let cap = f64::from(self.max_parallel_jobs.max(1));
        f64::from(self.active_jobs.max(0) + self.pending) / cap
    }

    /// Whether it has a free slot.
    pub fn has_capacity(&self) -> bool {
        self.max_parallel_jobs <= 0 || self.active_jobs + self.pending < self.max_parallel_jobs
    }

    /// Whether it advertises `topic` (a ready topic may be a pattern).
    pub fn ready_for(&self, topic: &str) -> bool {
        self.ready_topics
            .iter()
            .any(|t| t == topic || subject::matches(t, topic))
    }
}

/// Known workers by id.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    workers: BTreeMap<String, WorkerInfo>,
    refused: Refused,
}

impl Registry {
    /// Records a heartbeat (a refused worker's only refreshes its refusal: it is not
    /// registered by it).
    pub fn heartbeat(&mut self, hb: &v1::Heartbeat, now: Millis) {
        if self.refused.beat(&hb.worker_id, &hb.pool, now) {
            return;
        }
        let w = self.workers.entry(hb.worker_id.clone()).or_default();
        w.worker_id.clone_from(&hb.worker_id);
        w.capabilities.extend(hb.capabilities.iter().cloned());
        w.pool.clone_from(&hb.pool);
        w.active_jobs = hb.active_jobs;
        w.max_parallel_jobs = hb.max_parallel_jobs;
        w.pending = 0;
        w.last_seen = now;
    }

    /// Records a worker handshake (the caller has checked the role and the version).
    /// A refused worker is not recorded this way (only [`accept`](Self::accept), after
    /// a negotiation, ends a refusal): copies of old handshakes shared between scheduler
    /// instances cannot register it again.
    pub fn handshake(&mut self, hs: &v1::Handshake, now: Millis) {
        if self.refused.contains(&hs.component_id) {
            return;
        }
        let w = self.workers.entry(hs.component_id.clone()).or_default();
        w.worker_id.clone_from(&hs.component_id);
        w.capabilities = hs
            .capabilities
            .iter()
            .filter(|(_, on)| **on)
            .map(|(k, _)| k.clone())
            .collect();
        w.ready_topics.clone_from(&hs.ready_topics);
        w.last_seen = now;
    }

    /// Refuses a worker whose handshake shares no protocol version with the scheduler:
    /// it is removed, and until it negotiates a version (or falls silent) its
    /// heartbeats do not register it and what it claimed is known
    /// ([`refused_for`](Self::refused_for)).
    pub fn refuse(&mut self, hs: &v1::Handshake, now: Millis) {
        self.workers.remove(&hs.component_id);
        // The conformance kit's break test compiles this out (the scheduler then only
        // forgets the worker), to show the kit failing.
        #[cfg(not(feature = "tck-break-version-refusal"))]
        self.refused.insert(&hs.component_id, &hs.ready_topics, now);
        #[cfg(feature = "tck-break-version-refusal")]
        let _ = now;
    }

    /// Whether a worker is refused (no protocol version in common).
    pub fn is_refused(&self, id: &str) -> bool {
        self.refused.contains(id)
    }

    /// A refused worker that claims `topic` (routed to `pool`) when no registered
    /// worker could serve it: dispatching to the pool then would be on the refused
    /// worker's behalf.
    pub fn refused_for(&self, topic: &str, pool: &str) -> Option<&str> {
        let claimant = self.refused.claiming(topic, pool)?;
        let served = self.workers.values().any(|w| {
            w.ready_for(topic)
                || (w.ready_topics.is_empty()
                    && (pool.is_empty() || w.pool.is_empty() || w.pool == pool))
        });
        (!served).then_some(claimant)
    }

    /// Removes and returns the workers not seen since `deadline` (refused workers not
    /// heard since then are forgotten silently).
    pub fn expire(&mut self, deadline: Millis) -> Vec<WorkerInfo> {
        self.refused.expire(deadline);
        let lost: Vec<String> = self
            .workers
            .values()
            .filter(|w| w.last_seen < deadline)
            .map(|w| w.worker_id.clone())
            .collect();
        lost.iter()
            .filter_map(|id| self.workers.remove(id))
            .collect()
    }

    /// Records a worker handshake whose versions were negotiated: `version` is the
    /// highest both sides support.
    pub fn accept(&mut self, hs: &v1::Handshake, version: i32, now: Millis) {
        self.refused.remove(&hs.component_id);
        self.handshake(hs, now);
        if let Some(w) = self.workers.get_mut(&hs.component_id) {
            w.version = version;
        }
    }

    /// Forgets a worker (it handshook with no protocol version in common).
    pub fn forget(&mut self, id: &str) {
        self.workers.remove(id);
    }

    /// A worker by id.
    pub fn get(&self, id: &str) -> Option<&WorkerInfo> {
        self.workers.get(id)
    }

    /// All workers.
    pub fn iter(&self) -> impl Iterator<Item = &WorkerInfo> {
        self.workers.values()
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether no worker is known.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Whether any worker advertises ready topics that include `topic`.
    pub fn anyone_ready_for(&self, topic: &str) -> bool {
        self.workers.values().any(|w| w.ready_for(topic))
    }

    /// The least-loaded worker with every capability in `requires`, in `pool` when given,
    /// and ready for `topic` when `need_ready` (or advertising no topics at all); counts
    /// the dispatch against its load.
    pub fn pick(
        &mut self,
        topic: &str,
        pool: &str,
        requires: &[String],
        need_ready: bool,
    ) -> Option<String> {
        let best = self
            .workers
            .values()
            .filter(|w| requires.iter().all(|r| w.capabilities.contains(r)))
            .filter(|w| pool.is_empty() || w.pool.is_empty() || w.pool == pool)
            .filter(|w| {
                if need_ready {
                    w.ready_for(topic)
                } else {
                    w.ready_topics.is_empty() || w.ready_for(topic)
                }
            })
            .filter(|w| w.has_capacity())
            .min_by(|a, b| {
                a.load()
                    .total_cmp(&b.load())
                    .then_with(|| a.worker_id.cmp(&b.worker_id))
            })
            .map(|w| w.worker_id.clone())?;
        if let Some(w) = self.workers.get_mut(&best) {
            w.pending += 1;
        }
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(id: &str, caps: &[&str], active: i32, max: i32) -> v1::Heartbeat {
        v1::Heartbeat {
            worker_id: id.into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            active_jobs: active,
            max_parallel_jobs: max,
            ..Default::default()
        }
    }

    #[test]
    fn picks_the_least_loaded_capable_worker() {
        let mut r = Registry::default();
        r.heartbeat(&hb("a", &["gpu"], 3, 4), 0);
        r.heartbeat(&hb("b", &["gpu"], 1, 4), 0);
        r.heartbeat(&hb("c", &[], 0, 4), 0);
        let gpu = vec!["gpu".to_string()];
        assert_eq!(r.pick("job.x", "", &gpu, false).as_deref(), Some("b"));
        assert_eq!(r.pick("job.x", "", &gpu, false).as_deref(), Some("b"));
        // b now has 1 + 2 pending = 3 of 4, same as a; ties go by id.
        assert_eq!(r.pick("job.x", "", &gpu, false).as_deref(), Some("a"));
        // a is full (4/4), b has 3/4.
        assert_eq!(r.pick("job.x", "", &gpu, false).as_deref(), Some("b"));
        assert_eq!(
            r.pick("job.x", "", &gpu, false),
            None,
            "everyone with gpu is full"
        );
        assert_eq!(r.pick("job.x", "", &["tpu".into()], false), None);
    }

    #[test]
    fn ready_topics_and_handshakes() {
        let mut r = Registry::default();
        let hs = v1::Handshake {
            component_id: "w".into(),
            capabilities: [
                ("progress".to_string(), true),
                ("cancel".to_string(), false),
            ]
            .into(),
            ready_topics: vec!["job.echo".into(), "job.code.*".into()],
            ..Default::default()
        };
        r.handshake(&hs, 1);
        let w = r.get("w").unwrap();
        assert!(w.capabilities.contains("progress") && !w.capabilities.contains("cancel"));
        assert!(
            w.ready_for("job.echo") && w.ready_for("job.code.review") && !w.ready_for("job.other")
        );
        assert!(r.anyone_ready_for("job.echo"));
        assert_eq!(r.pick("job.echo", "", &[], true).as_deref(), Some("w"));
        assert_eq!(r.pick("job.other", "", &[], true), None);
    }

    // The refusal is what the kit's break build compiles out.
    #[cfg(not(feature = "tck-break-version-refusal"))]
    #[test]
    fn refused_workers_stay_out() {
        let mut r = Registry::default();
        let hs = v1::Handshake {
            component_id: "old".into(),
            ready_topics: vec!["job.legacy".into()],
            capabilities: [("gpu".to_string(), true)].into(),
            ..Default::default()
        };
        r.refuse(&hs, 1);
        assert!(r.is_refused("old") && r.get("old").is_none());
        // Its heartbeats and shared copies of an old handshake do not register it.
        let mut beat = hb("old", &["gpu"], 0, 4);
        beat.pool = "legacy".into();
        r.heartbeat(&beat, 2);
        r.handshake(&hs, 3);
        assert!(r.get("old").is_none());
        assert_eq!(r.pick("job.x", "", &["gpu".into()], false), None);
        // What it claimed: its ready topic, and its heartbeat's pool.
        assert_eq!(r.refused_for("job.legacy", ""), Some("old"));
        assert_eq!(r.refused_for("job.other", "legacy"), Some("old"));
        assert_eq!(r.refused_for("job.other", ""), None);
        // A registered worker that could serve the topic: not on its behalf any more.
        r.handshake(
            &v1::Handshake {
                component_id: "new".into(),
                ready_topics: vec!["job.legacy".into()],
                ..Default::default()
            },
            4,
        );
        assert_eq!(r.refused_for("job.legacy", ""), None);
        // A negotiated handshake ends the refusal; silence expires it.
        r.accept(&hs, 1, 5);
        assert!(!r.is_refused("old") && r.get("old").unwrap().version == 1);
        r.refuse(&hs, 6);
        r.expire(7);
        assert!(!r.is_refused("old"));
    }

    #[test]
    fn expiry() {
        let mut r = Registry::default();
        r.heartbeat(&hb("old", &[], 0, 1), 0);
        r.heartbeat(&hb("new", &[], 0, 1), 100);
        let lost = r.expire(50);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].worker_id, "old");
        assert_eq!(r.len(), 1);
    }
}
