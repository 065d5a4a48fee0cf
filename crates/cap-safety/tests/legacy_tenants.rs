//! The older per-tenant form: `tenants.<name>.deny_topics` / `allow_topics`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use cap_safety::Decision;
use common::{policy, req};

const POLICY: &str = r#"
version: legacy
default_tenant: default
tenants:
  Acme:
    allow_topics: ["job.acme.*", "job.shared"]
    deny_topics: ["job.acme.admin.*"]
  default:
    deny_topics: ["job.danger"]
"#;

#[test]
fn deny_lists_win_then_allow_lists_restrict() {
    let p = policy(POLICY);
    let rows = [
        (
            "deny first",
            req("job.acme.admin.reset").tenant("acme"),
            Decision::Deny,
            "legacy:Acme:deny:1",
        ),
        (
            "allowed",
            req("job.acme.build").tenant("ACME"),
            Decision::Allow,
            "legacy:Acme:allow:1",
        ),
        (
            "second allow pattern",
            req("job.shared").meta_tenant("acme"),
            Decision::Allow,
            "legacy:Acme:allow:2",
        ),
        (
            "outside allow list",
            req("job.other").tenant("acme"),
            Decision::Deny,
            "legacy:Acme:not-allowed",
        ),
        (
            "default tenant deny",
            req("job.danger"),
            Decision::Deny,
            "legacy:default:deny:1",
        ),
        (
            "default tenant, no allow list",
            req("job.fine"),
            Decision::Allow,
            "",
        ),
        (
            "unknown tenant",
            req("job.other").tenant("zeta"),
            Decision::Allow,
            "",
        ),
    ];
    for (name, r, d, id) in rows {
        let v = p.evaluate(&r.0);
        assert_eq!((v.decision(), v.rule_id()), (d, id), "row `{name}`");
    }
}

#[test]
fn rules_come_before_tenant_lists() {
    let p = policy(&format!(
        "{POLICY}rules:\n  - id: ops-override\n    match: {{ topics: [\"job.acme.admin.*\"], actor_types: [human] }}\n    decision: require_approval\n"
    ));
    let v = p.evaluate(&req("job.acme.admin.x").tenant("acme").actor_type(1).0);
    assert_eq!(
        (v.decision(), v.rule_id()),
        (Decision::RequireApproval, "ops-override")
    );
    let v = p.evaluate(&req("job.acme.admin.x").tenant("acme").actor_type(2).0);
    assert_eq!(v.rule_id(), "legacy:Acme:deny:1");
}

#[test]
fn tenant_names_must_be_unique_ignoring_case() {
    let err = cap_safety::Policy::from_text(
        "tenants:\n  acme: { deny_topics: [a] }\n  ACME: { deny_topics: [b] }\n",
        "dup.yaml",
    )
    .unwrap_err();
    assert!(err.policy().unwrap().message.contains("twice"), "{err}");
}
