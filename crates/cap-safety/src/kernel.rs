//! [`Kernel`]: the Safety Kernel itself — the current policy snapshot, the decision cache,
//! and the operations of the `SafetyKernel` service. It is the in-process evaluator (it
//! implements [`crate::SafetyClient`]) and what the gRPC server serves.

use crate::cache::DecisionCache;
use crate::policy::{Policy, read_policy_file};
use crate::snapshot::{DEFAULT_HISTORY, PolicyStore, Snapshot, snapshot_id};
use crate::{Decision, Error};
use cap_proto::v1::{PolicyCheckRequest, PolicyCheckResponse};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Source label of a candidate policy sent to Simulate.
pub const CANDIDATE_SOURCE: &str = "<effective_config>";

/// Tuning of a [`Kernel`].
#[derive(Debug, Clone)]
pub struct KernelOptions {
    /// How long a cached decision may be served (zero disables the cache). Default 5 s.
    pub cache_ttl: Duration,
    /// Most cached decisions. Default 10 000.
    pub cache_capacity: usize,
    /// How many snapshot ids `ListSnapshots` reports. Default 16.
    pub history: usize,
}

impl Default for KernelOptions {
    fn default() -> Self {
        KernelOptions {
            cache_ttl: Duration::from_secs(5),
            cache_capacity: 10_000,
            history: DEFAULT_HISTORY,
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone)]
pub enum ReloadOutcome {
    /// A new snapshot is current.
    Loaded(Arc<Snapshot>),
    /// The file has the current snapshot's version and content: nothing changed.
    Unchanged,
}

/// The Safety Kernel. Cheap to clone (one `Arc`); all clones share state.
#[derive(Debug, Clone)]
pub struct Kernel {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: PolicyStore,
    cache: DecisionCache,
    path: Option<PathBuf>,
    metrics: std::sync::OnceLock<crate::KernelMetrics>,
}

impl Kernel {
    /// A kernel for an in-memory policy with default options. The snapshot id hashes the
    /// policy's canonical JSON form.
    pub fn new(policy: Policy) -> Kernel {
        let content = serde_json::to_vec(policy.file()).unwrap_or_default();
        Kernel::build(
            Snapshot::new(policy, &content, "<memory>"),
            None,
            KernelOptions::default(),
        )
    }

    /// A kernel for a policy given as YAML or JSON text.
    pub fn from_text(text: &str, source: &str, options: KernelOptions) -> Result<Kernel, Error> {
        let policy = Policy::from_text(text, source)?;
        Ok(Kernel::build(
            Snapshot::new(policy, text.as_bytes(), source),
            None,
            options,
        ))
    }

    /// A kernel for a policy file; [`Kernel::reload`] re-reads that file.
    pub fn from_file(path: impl AsRef<Path>, options: KernelOptions) -> Result<Kernel, Error> {
        let path = path.as_ref();
        let bytes = read_policy_file(path)?;
        let source = path.display().to_string();
        let policy = Policy::from_bytes(&bytes, &source)?;
        Ok(Kernel::build(
            Snapshot::new(policy, &bytes, source),
            Some(path.to_owned()),
            options,
        ))
    }

    fn build(first: Snapshot, path: Option<PathBuf>, options: KernelOptions) -> Kernel {
        tracing::info!(
            snapshot = first.id(),
            source = first.source(),
            "policy loaded"
        );
        Kernel {
            inner: Arc::new(Inner {
                store: PolicyStore::new(first, options.history),
                cache: DecisionCache::new(options.cache_ttl, options.cache_capacity),
                path,
                metrics: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.store.current()
    }

    /// Snapshot ids, newest first (bounded history).
    pub fn snapshots(&self) -> Vec<String> {
        self.inner.store.snapshots()
    }

    /// The policy file this kernel reloads from, if any.
    pub fn policy_path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Number of cached decisions (for tests and metrics).
    pub fn cached_decisions(&self) -> usize {
        self.inner.cache.len()
    }

    /// Makes `policy` (whose bytes were `content`) the current snapshot and empties the
    /// decision cache. `None` when it is identical to the current snapshot.
    pub fn install(&self, policy: Policy, content: &[u8], source: &str) -> Option<Arc<Snapshot>> {
        let installed = self
            .inner
            .store
            .install(Snapshot::new(policy, content, source));
        if let Some(s) = &installed {
            self.inner.cache.clear();
            tracing::info!(snapshot = s.id(), source, "policy snapshot installed");
        }
        installed
    }

    /// Re-reads the policy file. On any error the running policy stays in force, the
    /// reason is logged, and the error is returned.
    pub fn reload(&self) -> Result<ReloadOutcome, Error> {
        let Some(path) = &self.inner.path else {
            return Err(Error::Config(
                "this kernel has no policy file to reload".into(),
            ));
        };
        let result = read_policy_file(path).and_then(|bytes| {
            let source = path.display().to_string();
            let policy = Policy::from_bytes(&bytes, &source)?;
            Ok(match self.install(policy, &bytes, &source) {
                Some(s) => ReloadOutcome::Loaded(s),
                None => ReloadOutcome::Unchanged,
            })
        });
        if let Err(e) = &result {
            tracing::warn!(
                error = %e,
                snapshot = self.snapshot().id(),
                "policy reload failed; keeping the running policy"
            );
        }
        result
    }

    /// Counts every check into `metrics` from now on; `false` (and nothing changes)
    /// when metrics were attached already.
    pub fn attach_metrics(&self, metrics: crate::KernelMetrics) -> bool {
        self.inner.metrics.set(metrics).is_ok()
    }

    /// Check / Evaluate: the decision for `req` under the current snapshot (cached).
    pub fn check(&self, req: &PolicyCheckRequest) -> PolicyCheckResponse {
        match self.inner.metrics.get() {
            None => self.check_inner(req).0,
            Some(m) => {
                let started = std::time::Instant::now();
                let (resp, cached) = self.check_inner(req);
                m.checked(&resp, cached, started.elapsed());
                resp
            }
        }
    }

    fn check_inner(&self, req: &PolicyCheckRequest) -> (PolicyCheckResponse, bool) {
        let snap = self.inner.store.load();
        let key = self.inner.cache.key(snap.seq(), req);
        if let Some(k) = &key
            && let Some(hit) = self.inner.cache.get(k)
        {
            let mut resp = (*hit).clone();
            if resp.approval_required {
                resp.approval_ref.clone_from(&req.job_id);
            }
            log_decision(&snap, req, &resp, "check", true);
            return (resp, true);
        }
        let verdict = snap.policy().evaluate(req);
        let mut resp = verdict.to_response("", snap.id());
        if let Some(k) = key {
            self.inner.cache.insert(k, Arc::new(resp.clone()));
        }
        if resp.approval_required {
            resp.approval_ref.clone_from(&req.job_id);
        }
        log_decision(&snap, req, &resp, "check", false);
        (resp, false)
    }

    /// Explain: the decision, with `reason` holding the evaluation trace (see
    /// [`Policy::explain`]); never cached.
    pub fn explain(&self, req: &PolicyCheckRequest) -> PolicyCheckResponse {
        let snap = self.inner.store.load();
        let (verdict, trace) = snap.policy().explain(req);
        let mut resp = verdict.to_response(&req.job_id, snap.id());
        resp.reason = trace;
        log_decision(&snap, req, &resp, "explain", false);
        resp
    }

    /// Simulate: evaluates the candidate policy in `req.effective_config` (YAML or JSON)
    /// without touching the loaded one; an empty `effective_config` means the loaded
    /// policy. The response's `policy_snapshot` is `candidate:<snapshot id>` for a
    /// candidate. An invalid candidate is an [`crate::ErrorKind::InvalidPolicy`] error.
    pub fn simulate(&self, req: &PolicyCheckRequest) -> Result<PolicyCheckResponse, Error> {
        let snap = self.inner.store.load();
        if req.effective_config.is_empty() {
            let resp = snap
                .policy()
                .evaluate(req)
                .to_response(&req.job_id, snap.id());
            log_decision(&snap, req, &resp, "simulate", false);
            return Ok(resp);
        }
        let candidate = Policy::from_bytes(&req.effective_config, CANDIDATE_SOURCE)?;
        let id = format!(
            "candidate:{}",
            snapshot_id(candidate.version(), &req.effective_config)
        );
        let resp = candidate.evaluate(req).to_response(&req.job_id, &id);
        log_decision(&snap, req, &resp, "simulate", false);
        Ok(resp)
    }
}

/// The one log line per decision: ids and names only, never payload contents.
fn log_decision(
    snap: &Snapshot,
    req: &PolicyCheckRequest,
    resp: &PolicyCheckResponse,
    op: &'static str,
    cached: bool,
) {
    if !tracing::enabled!(target: "cap_safety::decision", tracing::Level::INFO) {
        return;
    }
    let (tenant, _) = snap.policy().resolve_tenant(req);
    tracing::info!(
        target: "cap_safety::decision",
        op,
        job_id = %req.job_id,
        tenant = %tenant,
        topic = %req.topic,
        decision = %Decision::from_wire(resp.decision).0,
        rule_id = %resp.rule_id,
        snapshot = %resp.policy_snapshot,
        cached,
        "policy decision"
    );
}
