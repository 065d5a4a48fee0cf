//! [`Refused`]: the workers whose handshake shared no protocol version with the
//! scheduler. They are remembered (not merely forgotten) so that nothing they send
//! later registers them again — a heartbeat would otherwise re-create their registry
//! entry and make them eligible for direct dispatch — and so that the scheduler knows
//! which topics and pools only they claim, and does not dispatch there on their behalf.
//!
//! An entry ends when the worker handshakes again with a common version, or when it has
//! been silent as long as a lost worker (it is then forgotten without an alert). The set
//! is bounded ([`MAX_REFUSED`], oldest dropped first): handshakes are untrusted input.

use super::job::Millis;
use cap_proto::subject;
use std::collections::BTreeMap;

/// Most refused workers remembered.
pub const MAX_REFUSED: usize = 4096;

/// What a refused worker claimed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefusedWorker {
    /// The ready topics of its handshake.
    pub ready_topics: Vec<String>,
    /// The pool its heartbeats name.
    pub pool: String,
    /// When it was last heard.
    pub last_seen: Millis,
}

impl RefusedWorker {
    /// Whether it claims `topic` (a ready topic, or the pool the topic routes to).
    pub fn claims(&self, topic: &str, pool: &str) -> bool {
        self.ready_topics
            .iter()
            .any(|t| t == topic || subject::matches(t, topic))
            || (!pool.is_empty() && self.pool == pool)
    }
}

/// The refused workers, by id.
#[derive(Clone, Debug, Default)]
pub struct Refused {
    workers: BTreeMap<String, RefusedWorker>,
}

impl Refused {
    /// Records a refused handshake.
    pub fn insert(&mut self, id: &str, ready_topics: &[String], now: Millis) {
        if !self.workers.contains_key(id) && self.workers.len() >= MAX_REFUSED {
            let oldest = self
                .workers
                .iter()
                .min_by_key(|(_, w)| w.last_seen)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.workers.remove(&k);
            }
        }
        let w = self.workers.entry(id.to_owned()).or_default();
        w.ready_topics = ready_topics.to_vec();
        w.last_seen = now;
    }

    /// A heartbeat of `id`: `true` (and noted) when `id` is refused.
    pub fn beat(&mut self, id: &str, pool: &str, now: Millis) -> bool {
        match self.workers.get_mut(id) {
            Some(w) => {
                pool.clone_into(&mut w.pool);
                w.last_seen = now;
                true
            }
            None => false,
        }
    }

    /// Whether `id` is refused.
    pub fn contains(&self, id: &str) -> bool {
        self.workers.contains_key(id)
    }

    /// Ends the refusal of `id` (it negotiated a version).
    pub fn remove(&mut self, id: &str) {
        self.workers.remove(id);
    }

    /// Drops the workers not heard since `deadline`.
    pub fn expire(&mut self, deadline: Millis) {
        self.workers.retain(|_, w| w.last_seen >= deadline);
    }

    /// A refused worker claiming `topic` (routed to `pool`), if any.
    pub fn claiming(&self, topic: &str, pool: &str) -> Option<&str> {
        self.workers
            .iter()
            .find(|(_, w)| w.claims(topic, pool))
            .map(|(k, _)| k.as_str())
    }

    /// How many are remembered.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_beats_expiry_and_bound() {
        let mut r = Refused::default();
        r.insert("old", &["job.code.*".to_string()], 10);
        assert!(r.contains("old"));
        assert_eq!(r.claiming("job.code.review", ""), Some("old"));
        assert_eq!(r.claiming("job.other", ""), None);
        assert!(r.beat("old", "gpu", 20));
        assert!(!r.beat("stranger", "gpu", 20));
        assert_eq!(r.claiming("job.other", "gpu"), Some("old"));
        assert_eq!(
            r.claiming("job.other", ""),
            None,
            "an empty pool claims nothing"
        );
        r.expire(21);
        assert!(r.is_empty());

        for i in 0..MAX_REFUSED {
            r.insert(&format!("w{i}"), &[], i as Millis);
        }
        r.insert("newest", &[], 1_000_000);
        assert_eq!(r.len(), MAX_REFUSED);
        assert!(!r.contains("w0") && r.contains("w1") && r.contains("newest"));
        r.remove("newest");
        assert!(!r.contains("newest"));
    }
}
