//! Explain: the decision Check gives, with a trace of every rule considered.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use cap_safety::Kernel;
use common::{policy, req};

const POLICY: &str = r#"
version: 5
rules:
  - id: allow-echo
    match: { topics: [job.echo] }
    decision: allow
  - id: deny-secrets
    match: { secrets_present: true }
    decision: deny
  - id: gate-prod
    match: { tenants: [acme], topics: ["job.deploy.*"], labels: { env: prod } }
    decision: require_approval
    reason: production deploys need a ticket
  - id: never-reached
    decision: deny
"#;

#[test]
fn the_trace_lists_each_rule_considered_and_why() {
    let k = Kernel::new(policy(POLICY));
    let r = req("job.deploy.web")
        .tenant("Acme")
        .label("env", "prod")
        .job("j9")
        .build();
    let checked = k.check(&r);
    let explained = k.explain(&r);
    assert_eq!(explained.decision, checked.decision);
    assert_eq!(explained.rule_id, "gate-prod");
    assert_eq!(explained.approval_ref, "j9");
    assert_eq!(explained.policy_snapshot, checked.policy_snapshot);
    let t = explained.reason;
    let expect = [
        "decision: require_approval (rule gate-prod, rules[2])",
        "reason: production deploys need a ticket",
        "tenant: acme (from request.tenant)",
        "topic: job.deploy.web",
        "rules[0] allow-echo: no match",
        "  - topics: no (job.deploy.web matches none of [job.echo])",
        "rules[1] deny-secrets: no match",
        "  - secrets_present: no (want true, request has false)",
        "rules[2] gate-prod: MATCH",
        "  - tenants: yes (\"acme\" in [acme])",
        "  - labels: yes (env=prod ok)",
        "  - topics: yes (job.deploy.web matches one of [job.deploy.*])",
    ];
    for line in expect {
        assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
    }
    assert!(
        !t.contains("never-reached"),
        "rules after the match are not considered:\n{t}"
    );
}

#[test]
fn the_trace_covers_defaults_builtins_and_mcp_denials() {
    let k = Kernel::new(policy(POLICY));
    let t = k
        .explain(&req("job.other").label("env", "dev").build())
        .reason;
    assert!(
        t.starts_with("decision: deny (rule never-reached, rules[3])"),
        "{t}"
    );
    assert!(
        t.contains("rules[3] never-reached: MATCH (no conditions)"),
        "{t}"
    );

    let t = k.explain(&req("sys.job.submit").build()).reason;
    assert!(
        t.starts_with("decision: deny (built-in builtin:non-job-topic)"),
        "{t}"
    );

    let open = Kernel::new(policy(
        "rules:\n  - id: only\n    match: { topics: [job.a] }\n    decision: deny\n",
    ));
    let t = open.explain(&req("job.b").build()).reason;
    assert!(t.starts_with("decision: allow (no rule matched)"), "{t}");
    assert!(
        t.contains("tenant:  (none given and no default_tenant)"),
        "{t}"
    );

    let mcp = Kernel::new(policy(
        "rules:\n  - id: gate\n    match: { mcp: { deny_tools: [rm] } }\n    decision: allow\n",
    ));
    let t = mcp
        .explain(&req("job.x").label("mcp.tool", "rm").build())
        .reason;
    assert!(
        t.contains("rules[0] gate: MATCH, but deny: mcp tool `rm` is on deny_tools of rule gate"),
        "{t}"
    );
}
