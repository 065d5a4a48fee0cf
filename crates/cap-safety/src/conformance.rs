//! A conformance kit for [`SafetyClient`] implementations: serve [`POLICY`] from the
//! kernel behind the client, then [`run`] checks a table of requests against the
//! decisions this crate's engine gives. It runs here against the embedded [`crate::Kernel`]
//! and the gRPC client, and can run against any other kernel speaking
//! `cordum.agent.v1.SafetyKernel` (e.g. another implementation of the Cordum format).
//!
//! ```
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! # rt.block_on(async {
//! use cap_safety::{Kernel, KernelOptions, conformance};
//! let kernel = Kernel::from_text(conformance::POLICY, "conformance", KernelOptions::default()).unwrap();
//! conformance::run(&kernel).await.unwrap();
//! # });
//! ```

use crate::{Decision, SafetyClient, decision_of};
use cap_proto::v1::{JobMetadata, PolicyCheckRequest};

/// The policy the kernel under test must serve.
pub const POLICY: &str = r#"
version: conformance-1
default_tenant: acme
rules:
  - id: deny-admin
    match: { topics: ["job.admin.*"] }
    decision: deny
    reason: no admin jobs
  - id: approve-prod
    match: { tenants: [acme], labels: { env: prod } }
    decision: require_human
  - id: sandbox-build
    match: { capabilities: [build], risk_tags: [net, pii] }
    decision: allow
    constraints: { sandbox: { isolated: true } }
  - id: throttle-batch
    match: { requires: [gpu, bulk], actor_types: [service] }
    decision: throttle
  - id: no-secrets
    match: { secrets_present: true }
    decision: deny
  - id: mcp-gate
    match: { topics: ["job.mcp.*"], mcp: { allow_servers: [github], deny_tools: [rm] } }
    decision: allow
tenants:
  beta:
    deny_topics: ["job.beta.off.*"]
    allow_topics: ["job.beta.*"]
"#;

/// One request and the decision it must get.
#[derive(Debug, Clone)]
pub struct Case {
    /// What the case checks.
    pub name: &'static str,
    /// The request.
    pub request: PolicyCheckRequest,
    /// The expected decision.
    pub decision: Decision,
    /// The expected rule id (`""`: the default decision).
    pub rule_id: &'static str,
}

fn req(
    topic: &str,
    f: impl FnOnce(&mut PolicyCheckRequest, &mut JobMetadata),
) -> PolicyCheckRequest {
    let mut r = PolicyCheckRequest {
        job_id: "conformance-job".into(),
        topic: topic.into(),
        ..Default::default()
    };
    let mut m = JobMetadata::default();
    f(&mut r, &mut m);
    if m != JobMetadata::default() {
        r.meta = Some(m);
    }
    r
}

fn label(r: &mut PolicyCheckRequest, k: &str, v: &str) {
    r.labels.insert(k.into(), v.into());
}

/// The cases for [`POLICY`].
pub fn cases() -> Vec<Case> {
    use Decision::*;
    let c = |name, request, decision, rule_id| Case {
        name,
        request,
        decision,
        rule_id,
    };
    vec![
        c(
            "empty topic",
            req("", |_, _| {}),
            Deny,
            crate::policy::RULE_EMPTY_TOPIC,
        ),
        c(
            "non-job topic",
            req("sys.job.submit", |_, _| {}),
            Deny,
            crate::policy::RULE_NON_JOB_TOPIC,
        ),
        c(
            "topic glob spans dots",
            req("job.admin.db.drop", |_, _| {}),
            Deny,
            "deny-admin",
        ),
        c(
            "default tenant + exact label",
            req("job.web", |r, _| label(r, "env", "prod")),
            RequireApproval,
            "approve-prod",
        ),
        c(
            "other tenant",
            req("job.web", |r, _| {
                r.tenant = "zeta".into();
                label(r, "env", "prod")
            }),
            Allow,
            "",
        ),
        c(
            "label values are case-sensitive",
            req("job.web", |r, _| label(r, "env", "PROD")),
            Allow,
            "",
        ),
        c(
            "constraints",
            req("job.build", |_, m| {
                m.capability = "Build".into();
                m.risk_tags = vec!["PII".into()]
            }),
            AllowWithConstraints,
            "sandbox-build",
        ),
        c(
            "requires all + actor type",
            req("job.batch", |_, m| {
                m.requires = vec!["bulk".into(), "gpu".into()];
                m.actor_type = 2
            }),
            Throttle,
            "throttle-batch",
        ),
        c(
            "requires all, one missing",
            req("job.batch", |_, m| {
                m.requires = vec!["gpu".into()];
                m.actor_type = 2
            }),
            Allow,
            "",
        ),
        c(
            "secrets via risk tag",
            req("job.x", |_, m| m.risk_tags = vec!["secrets".into()]),
            Deny,
            "no-secrets",
        ),
        c(
            "secrets via label",
            req("job.x", |r, _| label(r, "secrets_present", "yes")),
            Deny,
            "no-secrets",
        ),
        c(
            "mcp allowed",
            req("job.mcp.call", |r, _| label(r, "mcp.server", "GitHub")),
            Allow,
            "mcp-gate",
        ),
        c(
            "mcp server not allowed",
            req("job.mcp.call", |r, _| label(r, "mcp.server", "gitlab")),
            Deny,
            "mcp-gate",
        ),
        c(
            "mcp tool denied",
            req("job.mcp.call", |r, _| {
                label(r, "mcp.server", "github");
                label(r, "mcp.tool", "rm")
            }),
            Deny,
            "mcp-gate",
        ),
        c(
            "legacy deny",
            req("job.beta.off.x", |r, _| r.tenant = "Beta".into()),
            Deny,
            "legacy:beta:deny:1",
        ),
        c(
            "legacy allow",
            req("job.beta.run", |r, _| r.tenant = "beta".into()),
            Allow,
            "legacy:beta:allow:1",
        ),
        c(
            "legacy not allowed",
            req("job.other", |r, _| r.tenant = "beta".into()),
            Deny,
            "legacy:beta:not-allowed",
        ),
        c("no match", req("job.anything", |_, _| {}), Allow, ""),
    ]
}

/// Checks every case against `client`; the error lists each mismatch.
pub async fn run<C: SafetyClient + ?Sized>(client: &C) -> Result<(), Vec<String>> {
    let mut failures = Vec::new();
    for case in cases() {
        match client.check(&case.request).await {
            Ok(resp) => {
                let got = decision_of(&resp);
                if got != case.decision || resp.rule_id != case.rule_id {
                    failures.push(format!(
                        "{}: want {} by {:?}, got {} by {:?}",
                        case.name, case.decision, case.rule_id, got, resp.rule_id
                    ));
                }
                if (case.decision == Decision::RequireApproval)
                    != (resp.approval_required && resp.approval_ref == case.request.job_id)
                {
                    failures.push(format!("{}: approval fields wrong: {resp:?}", case.name));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}
