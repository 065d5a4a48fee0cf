//! [`Snapshot`]: one loaded policy with its id, and [`PolicyStore`]: the current snapshot
//! (swapped atomically) plus a bounded history of snapshot ids.

use crate::policy::Policy;
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// How many snapshot ids [`PolicyStore::snapshots`] keeps by default.
pub const DEFAULT_HISTORY: usize = 16;

/// The snapshot id of a policy: `<version>@sha256:<first 16 hex digits of the SHA-256 of
/// the policy bytes>` (`unversioned` when the policy has no version).
pub fn snapshot_id(version: &str, content: &[u8]) -> String {
    let digest = Sha256::digest(content);
    let mut hex = String::with_capacity(16);
    for b in digest.iter().take(8) {
        let _ = write!(hex, "{b:02x}");
    }
    let version = if version.is_empty() {
        "unversioned"
    } else {
        version
    };
    format!("{version}@sha256:{hex}")
}

/// A loaded policy and its identity.
#[derive(Debug)]
pub struct Snapshot {
    id: String,
    seq: u64,
    source: String,
    loaded_at: SystemTime,
    policy: Policy,
}

impl Snapshot {
    /// A snapshot of `policy`, whose bytes were `content` (they determine the id).
    pub fn new(policy: Policy, content: &[u8], source: impl Into<String>) -> Snapshot {
        Snapshot {
            id: snapshot_id(policy.version(), content),
            seq: 0,
            source: source.into(),
            loaded_at: SystemTime::now(),
            policy,
        }
    }

    /// The snapshot id (`policy_snapshot` in responses).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Position in the store's load order (0 for the first snapshot).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Where the policy came from (a path or a label).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// When it was loaded.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    /// The compiled policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// The current snapshot and the ids of recent ones. Readers never block: the current
/// snapshot is an atomically swapped `Arc`.
#[derive(Debug)]
pub struct PolicyStore {
    current: ArcSwap<Snapshot>,
    history: Mutex<VecDeque<String>>,
    capacity: usize,
    next_seq: AtomicU64,
}

impl PolicyStore {
    /// A store holding `first`, remembering up to `history` snapshot ids (at least 1).
    pub fn new(mut first: Snapshot, history: usize) -> PolicyStore {
        first.seq = 0;
        let capacity = history.max(1);
        let mut ids = VecDeque::with_capacity(capacity);
        ids.push_front(first.id.clone());
        PolicyStore {
            current: ArcSwap::from_pointee(first),
            history: Mutex::new(ids),
            capacity,
            next_seq: AtomicU64::new(1),
        }
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A cheap guard on the current snapshot, for hot paths.
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Makes `next` current, unless it has the current snapshot's id (same version and
    /// content): then nothing changes and `None` is returned.
    pub fn install(&self, mut next: Snapshot) -> Option<Arc<Snapshot>> {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if self.current.load().id == next.id {
            return None;
        }
        next.seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let next = Arc::new(next);
        self.current.store(Arc::clone(&next));
        history.retain(|id| *id != next.id);
        history.push_front(next.id.clone());
        history.truncate(self.capacity);
        Some(next)
    }

    /// Snapshot ids, newest first (the current one first), at most the history capacity.
    pub fn snapshots(&self) -> Vec<String> {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.iter().cloned().collect()
    }
}
