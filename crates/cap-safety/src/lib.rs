//! # cap-safety
//!
//! The CAP Safety Kernel: the policy decisions a scheduler asks for before it dispatches
//! a job, as a library and as the `cordum.agent.v1.SafetyKernel` gRPC service.
//!
//! - A policy engine for the Cordum control plane's YAML policy format ([`policy`]):
//!   rules matched on topic globs, tenants, capabilities, risk tags, requirements, pack
//!   and actor ids, actor types, labels, secrets and MCP allow/deny lists; first match
//!   wins; the older per-tenant topic lists; strict validation with path-precise errors
//!   and a JSON Schema ([`policy::schema`]). Evaluation is pure and allocation-light.
//! - [`Kernel`]: the current policy snapshot (atomically swapped on reload), a decision
//!   cache, and the service operations (Check/Evaluate, Explain, Simulate, ListSnapshots).
//! - [`server`]: the gRPC server with health, reflection, size limits, optional TLS/mTLS,
//!   hot reload (file polling and SIGHUP) and graceful shutdown.
//! - [`SafetyClient`]: one trait for asking, implemented by the typed gRPC client
//!   ([`GrpcSafetyClient`]: timeouts, retries, fail-closed option) and by [`Kernel`]
//!   itself, so an embedded scheduler needs no server; [`conformance`] checks any
//!   implementation against a table of expected decisions.
//!
//! ```
//! use cap_safety::{Decision, Kernel, SafetyClient, policy::Policy};
//! use cap_proto::v1::{JobMetadata, PolicyCheckRequest, PolicyCheckResponse};
//!
//! let policy = Policy::from_text(r#"
//! version: 3
//! default_tenant: acme
//! rules:
//!   - id: approve-prod
//!     match:
//!       topics: ["job.deploy.*"]
//!       labels: { env: prod }
//!     decision: require_human
//!     reason: production changes need a human
//!   - id: sandbox-builds
//!     match: { capabilities: [build] }
//!     decision: allow
//!     constraints:
//!       sandbox: { isolated: true, network_allowlist: [crates.io] }
//! "#, "policy.yaml")?;
//!
//! // Pure evaluation, no kernel needed.
//! let build = PolicyCheckRequest {
//!     topic: "job.build".into(),
//!     meta: Some(JobMetadata { capability: "Build".into(), ..Default::default() }),
//!     ..Default::default()
//! };
//! let verdict = policy.evaluate(&build);
//! assert_eq!(verdict.decision(), Decision::AllowWithConstraints);
//! assert!(verdict.constraints().unwrap().sandbox.as_ref().unwrap().isolated);
//!
//! // A scheduler is generic over the client: a remote kernel (GrpcSafetyClient) or the
//! // embedded one, which needs no server.
//! async fn decide<C: SafetyClient>(client: &C, req: &PolicyCheckRequest)
//!     -> Result<PolicyCheckResponse, cap_safety::Error> {
//!     client.check(req).await
//! }
//! let kernel = Kernel::new(policy);
//! let deploy = PolicyCheckRequest {
//!     job_id: "job-7".into(),
//!     topic: "job.deploy.web".into(),
//!     labels: [("env".to_string(), "prod".to_string())].into(),
//!     ..Default::default()
//! };
//! let runtime = tokio::runtime::Builder::new_current_thread().build()?;
//! let resp = runtime.block_on(decide(&kernel, &deploy))?;
//! assert_eq!(cap_safety::decision_of(&resp), Decision::RequireApproval);
//! assert!(resp.approval_required);
//! assert_eq!(resp.approval_ref, "job-7");
//! assert_eq!(resp.rule_id, "approve-prod");
//! assert!(resp.policy_snapshot.starts_with("3@sha256:"));
//!
//! // Explain: the same decision, with the trace of the rules considered in `reason`.
//! let explained = kernel.explain(&deploy);
//! assert!(explained.reason.contains("rules[0] approve-prod: MATCH"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Decisions and their spellings
//! `allow` (alias `permit`), `deny` (`block`, `reject`), `require_approval`
//! (`require_human`, `approval`; `DECISION_TYPE_REQUIRE_HUMAN` on the wire, with
//! `approval_ref` = the job id), `allow_with_constraints` (`constrain`), `throttle`
//! (`rate_limit`); case-insensitive, `-` or `_`. An `allow` rule with constraints decides
//! `allow_with_constraints`; a rule without a decision denies; an unknown spelling makes
//! the file invalid; a client treats an unknown or unspecified wire decision as deny.
//!
//! ## Feature flags
//! - `tls`: TLS and mTLS for the server and the gRPC client (rustls with ring). Without
//!   it, asking for TLS is a [`ErrorKind::Config`] error.

pub mod bench;
mod cache;
mod client;
pub mod conformance;
mod decision;
mod error;
pub mod grpc;
mod kernel;
mod metrics;
pub mod policy;
pub mod reload;
pub mod server;
pub mod snapshot;

pub use client::{
    ClientTls, DynSafetyClient, GrpcClientOptions, GrpcSafetyClient, RULE_FAIL_CLOSED,
    SafetyClient, decision_of, normalize_response,
};
pub use decision::{DECISION_SPELLINGS, Decision};
pub use error::{Error, ErrorKind, PolicyError};
pub use kernel::{CANDIDATE_SOURCE, Kernel, KernelOptions, ReloadOutcome};
pub use metrics::{DecisionCounters, KernelMetrics, decision_label};
pub use policy::{Policy, Verdict};
/// The Prometheus client the kernel's metrics are made with.
pub use prometheus_client;
pub use snapshot::Snapshot;
