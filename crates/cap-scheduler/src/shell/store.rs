//! [`JobStore`]: the one truth about jobs, shared by every scheduler instance.
//!
//! Records are versioned; every change is a compare-and-set on the version the change was
//! decided from ([`JobStore::commit`]), so two instances can never apply conflicting
//! moves, and a terminal state, once written, is never rewritten. Deadlines live in the
//! store too and are *claimed* ([`JobStore::claim_due`]): exactly one instance acts on a
//! due job, and it commits only if the job is still the version it looked at. Finished
//! records expire after the retention. Instances keep nothing that cannot be dropped.

use crate::core::{JobRecord, Millis};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[error("job store: {0}")]
pub struct StoreError(pub String);

/// A record and the version it was read at.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    /// Bumped by every commit; 0 means "no record".
    pub version: u64,
    /// The record.
    pub record: JobRecord,
}

/// One compare-and-set.
#[derive(Clone, Debug)]
pub struct Commit<'a> {
    /// The record to write.
    pub record: &'a JobRecord,
    /// The version it was decided from (0: the job must not exist yet).
    pub expected: u64,
    /// The job's next deadline, if any (replaces its current one).
    pub deadline: Option<Millis>,
    /// Keep the record this long, then forget it (finished jobs); `None`: keep it.
    pub ttl: Option<Duration>,
}

/// What a compare-and-set did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Committed {
    /// Written; the record is now at this version.
    Yes(u64),
    /// Someone else changed (or created) the record first: nothing was written.
    Conflict,
    /// The store did not answer (a connection lost, a timeout): it may or may not have
    /// been written. The caller reads the record to find out.
    Unknown,
}

/// A worker as the registry knows it, shared between instances so that one started
/// later knows the workers' handshakes (ready topics are only in handshakes).
pub type WorkerEntry = crate::core::WorkerInfo;

/// Where job records, deadlines, idempotency keys and workflow links live.
pub trait JobStore: Send + Sync + 'static {
    /// Records by job id (absent ones as `None`), in one round trip where possible.
    fn load(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Option<Stored>>, StoreError>> + Send;

    /// Compare-and-sets, in one round trip where possible; one outcome per commit.
    fn commit(
        &self,
        commits: &[Commit<'_>],
    ) -> impl Future<Output = Result<Vec<Committed>, StoreError>> + Send;

    /// Claims up to `max` jobs whose deadline is at or before `now`: each is leased until
    /// `lease_until` (claimed again then if nobody committed it meanwhile).
    fn claim_due(
        &self,
        now: Millis,
        lease_until: Millis,
        max: usize,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Sets (or clears) the deadline of a job that did not change when it was due, if it
    /// is still at `version` (0: it has no record; its deadline is dropped).
    fn rearm(
        &self,
        id: &str,
        version: u64,
        deadline: Option<Millis>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Claims an idempotency key for `job_id` (kept for `ttl`); returns the job that
    /// holds it (`job_id` itself when this claim won or it already held it).
    fn claim_key(
        &self,
        key: &str,
        job_id: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;

    /// Records that `child` belongs to the workflow `parent` (kept for `ttl`).
    fn link_child(
        &self,
        parent: &str,
        child: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The children of a workflow parent.
    fn children(
        &self,
        parent: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Remembers a worker's handshake information for `ttl`.
    fn put_worker(
        &self,
        worker: &WorkerEntry,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The workers remembered and not expired.
    fn workers(&self) -> impl Future<Output = Result<Vec<WorkerEntry>, StoreError>> + Send;

    /// Remembers where the durable bus stored a job's dispatch (to withdraw it later).
    fn put_receipt(
        &self,
        job_id: &str,
        dispatch_id: &str,
        receipt: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes the receipt of a job's dispatch, if it is still the one recorded.
    fn take_receipt(
        &self,
        job_id: &str,
        dispatch_id: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// A page of one tenant's jobs ([`JobRecord::tenant`]), newest first: at most
    /// `limit` records ordered by (creation time, job id), descending, starting after
    /// the cursor `before` (the last `(created, job id)` of the previous page; `None`:
    /// from the newest). Expired records are left out. The default reads every record;
    /// the memory and Redis stores keep a per-tenant index.
    fn tenant_jobs(
        &self,
        tenant: &str,
        before: Option<(Millis, String)>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<JobRecord>, StoreError>> + Send {
        async move {
            let mut all: Vec<JobRecord> = self
                .load_all()
                .await?
                .into_iter()
                .filter(|r| r.tenant() == tenant)
                .filter(|r| {
                    before
                        .as_ref()
                        .is_none_or(|(c, id)| (r.created(), r.id()) < (*c, id.as_str()))
                })
                .collect();
            all.sort_by(|a, b| (b.created(), b.id()).cmp(&(a.created(), a.id())));
            all.truncate(limit);
            Ok(all)
        }
    }

    /// Every record (tools and tests; a store may cap it).
    fn load_all(&self) -> impl Future<Output = Result<Vec<JobRecord>, StoreError>> + Send;

    /// Why jobs would not survive a restart of the store, if they would not (a Redis
    /// that persists nothing): logged as a warning when a scheduler starts.
    fn durability_warning(&self) -> impl Future<Output = Option<String>> + Send {
        async { None }
    }
}

#[derive(Default)]
struct Mem {
    records: HashMap<String, (u64, Box<JobRecord>, Option<Millis>)>,
    due: BTreeSet<(Millis, String)>,
    deadline_of: HashMap<String, Millis>,
    keys: HashMap<String, (String, Millis)>,
    children: HashMap<String, (Vec<String>, Millis)>,
    workers: BTreeMap<String, (WorkerEntry, Millis)>,
    receipts: HashMap<String, (String, String, Millis)>,
    /// Per tenant: (created, job id) of its jobs.
    tenants: HashMap<String, BTreeSet<(Millis, String)>>,
}

impl Mem {
    fn set_deadline(&mut self, id: &str, at: Option<Millis>) {
        if let Some(old) = self.deadline_of.remove(id) {
            self.due.remove(&(old, id.to_owned()));
        }
        if let Some(at) = at {
            self.due.insert((at, id.to_owned()));
            self.deadline_of.insert(id.to_owned(), at);
        }
    }

    /// The version of a record, expiring it if its time has passed.
    fn version(&mut self, id: &str, now: Millis) -> u64 {
        match self.records.get(id) {
            Some((_, _, Some(expires))) if *expires <= now => {
                self.records.remove(id);
                0
            }
            Some((v, _, _)) => *v,
            None => 0,
        }
    }
}

/// The in-memory store (the embedded default; gone with the process). Shared by its
/// clones, so several scheduler instances in one process can share it, as they would a
/// Redis.
#[derive(Clone, Default)]
pub struct MemoryJobStore {
    inner: Arc<Mutex<Mem>>,
}

impl std::fmt::Debug for MemoryJobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryJobStore")
            .field("records", &self.lock().records.len())
            .finish()
    }
}

fn now() -> Millis {
    crate::shell::now_ms()
}

fn after(ttl: Duration) -> Millis {
    now().saturating_add(crate::core::timers::ms(ttl))
}

impl MemoryJobStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many records it holds (expired ones included until they are next touched).
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl JobStore for MemoryJobStore {
    async fn durability_warning(&self) -> Option<String> {
        Some("the in-memory job store keeps jobs only as long as this process runs".into())
    }

    async fn load(&self, ids: &[String]) -> Result<Vec<Option<Stored>>, StoreError> {
        let now = now();
        let mut m = self.lock();
        Ok(ids
            .iter()
            .map(|id| {
                let v = m.version(id, now);
                m.records.get(id).filter(|_| v > 0).map(|(v, r, _)| Stored {
                    version: *v,
                    record: (**r).clone(),
                })
            })
            .collect())
    }

    async fn commit(&self, commits: &[Commit<'_>]) -> Result<Vec<Committed>, StoreError> {
        let now = now();
        let mut m = self.lock();
        let mut out = Vec::with_capacity(commits.len());
        for c in commits {
            let id = c.record.id().to_owned();
            let current = m.version(&id, now);
            if current != c.expected {
                out.push(Committed::Conflict);
                continue;
            }
            let version = current + 1;
            let expires = c
                .ttl
                .map(|t| now.saturating_add(crate::core::timers::ms(t)));
            if c.expected == 0 {
                m.tenants
                    .entry(c.record.tenant().to_owned())
                    .or_default()
                    .insert((c.record.created(), id.clone()));
            }
            m.records
                .insert(id.clone(), (version, Box::new(c.record.clone()), expires));
            m.set_deadline(&id, c.deadline);
            out.push(Committed::Yes(version));
        }
        Ok(out)
    }

    async fn claim_due(
        &self,
        now: Millis,
        lease_until: Millis,
        max: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut m = self.lock();
        let due: Vec<String> = m
            .due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(max)
            .map(|(_, id)| id.clone())
            .collect();
        for id in &due {
            m.set_deadline(id, Some(lease_until));
        }
        Ok(due)
    }

    async fn rearm(
        &self,
        id: &str,
        version: u64,
        deadline: Option<Millis>,
    ) -> Result<(), StoreError> {
        let now = now();
        let mut m = self.lock();
        if m.version(id, now) == version {
            let at = if version == 0 { None } else { deadline };
            m.set_deadline(id, at);
        }
        Ok(())
    }

    async fn claim_key(
        &self,
        key: &str,
        job_id: &str,
        ttl: Duration,
    ) -> Result<String, StoreError> {
        let now = now();
        let mut m = self.lock();
        match m.keys.get(key) {
            Some((holder, expires)) if *expires > now => Ok(holder.clone()),
            _ => {
                m.keys
                    .insert(key.to_owned(), (job_id.to_owned(), after(ttl)));
                Ok(job_id.to_owned())
            }
        }
    }

    async fn link_child(&self, parent: &str, child: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut m = self.lock();
        let entry = m
            .children
            .entry(parent.to_owned())
            .or_insert_with(|| (Vec::new(), 0));
        if !entry.0.iter().any(|c| c == child) {
            entry.0.push(child.to_owned());
        }
        entry.1 = after(ttl);
        Ok(())
    }

    async fn children(&self, parent: &str) -> Result<Vec<String>, StoreError> {
        let now = now();
        let m = self.lock();
        Ok(m.children
            .get(parent)
            .filter(|(_, expires)| *expires > now)
            .map(|(c, _)| c.clone())
            .unwrap_or_default())
    }

    async fn put_worker(&self, worker: &WorkerEntry, ttl: Duration) -> Result<(), StoreError> {
        self.lock()
            .workers
            .insert(worker.worker_id.clone(), (worker.clone(), after(ttl)));
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerEntry>, StoreError> {
        let now = now();
        let mut m = self.lock();
        m.workers.retain(|_, (_, expires)| *expires > now);
        Ok(m.workers.values().map(|(w, _)| w.clone()).collect())
    }

    async fn put_receipt(
        &self,
        job_id: &str,
        dispatch_id: &str,
        receipt: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.lock().receipts.insert(
            job_id.to_owned(),
            (dispatch_id.to_owned(), receipt.to_owned(), after(ttl)),
        );
        Ok(())
    }

    async fn take_receipt(
        &self,
        job_id: &str,
        dispatch_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let now = now();
        let mut m = self.lock();
        match m.receipts.get(job_id) {
            Some((d, r, expires)) if d == dispatch_id && *expires > now => {
                let r = r.clone();
                m.receipts.remove(job_id);
                Ok(Some(r))
            }
            _ => Ok(None),
        }
    }

    async fn tenant_jobs(
        &self,
        tenant: &str,
        before: Option<(Millis, String)>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let now = now();
        let mut m = self.lock();
        let Some(index) = m.tenants.get(tenant) else {
            return Ok(Vec::new());
        };
        let entries: Vec<(Millis, String)> = match &before {
            Some(b) => index.range(..b.clone()).rev().cloned().collect(),
            None => index.iter().rev().cloned().collect(),
        };
        let mut out = Vec::new();
        let mut stale = Vec::new();
        for (created, id) in entries {
            if out.len() >= limit {
                break;
            }
            let live = m.version(&id, now) > 0;
            match m.records.get(&id) {
                Some((_, r, _)) if live && r.created() == created => out.push((**r).clone()),
                _ => stale.push((created, id)),
            }
        }
        if let Some(index) = m.tenants.get_mut(tenant) {
            for e in &stale {
                index.remove(e);
            }
        }
        Ok(out)
    }

    async fn load_all(&self) -> Result<Vec<JobRecord>, StoreError> {
        let now = now();
        let m = self.lock();
        Ok(m.records
            .values()
            .filter(|(_, _, e)| e.is_none_or(|e| e > now))
            .map(|(_, r, _)| (**r).clone())
            .collect())
    }
}
