//! Decisions: every canonical name and alias, constraints, approvals, remediations,
//! the default decision and fail-closed rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use cap_safety::{DECISION_SPELLINGS, Decision, Kernel, Policy};
use common::{decide, policy, req};

fn one_rule(decision: &str) -> Policy {
    policy(&format!(
        "rules:\n  - id: r\n    match: {{ topics: [\"job.*\"] }}\n    decision: {decision}\n"
    ))
}

#[test]
fn every_spelling_and_alias_decides_as_documented() {
    let rows = [
        ("allow", Decision::Allow),
        ("permit", Decision::Allow),
        ("deny", Decision::Deny),
        ("block", Decision::Deny),
        ("reject", Decision::Deny),
        ("require_approval", Decision::RequireApproval),
        ("require-approval", Decision::RequireApproval),
        ("require_human", Decision::RequireApproval),
        ("Require-Human", Decision::RequireApproval),
        ("approval", Decision::RequireApproval),
        ("allow_with_constraints", Decision::AllowWithConstraints),
        ("allow-with-constraints", Decision::AllowWithConstraints),
        ("constrain", Decision::AllowWithConstraints),
        ("throttle", Decision::Throttle),
        ("rate_limit", Decision::Throttle),
        ("\" THROTTLE \"", Decision::Throttle),
    ];
    for (spelling, want) in rows {
        assert_eq!(
            decide(&one_rule(spelling), &req("job.x")).0,
            want,
            "{spelling}"
        );
    }
    // The documented table is exactly what parses.
    for (name, d) in DECISION_SPELLINGS {
        assert_eq!(decide(&one_rule(name), &req("job.x")).0, *d, "{name}");
    }
}

#[test]
fn wire_values_follow_the_decision_enum() {
    let k = |d: &str| Kernel::new(one_rule(d));
    let wire = |d: &str| k(d).check(&req("job.x").build()).decision;
    assert_eq!(wire("allow"), 1);
    assert_eq!(wire("deny"), 2);
    assert_eq!(wire("require_approval"), 3);
    assert_eq!(wire("throttle"), 4);
    assert_eq!(wire("allow_with_constraints"), 5);
}

#[test]
fn unknown_decisions_make_the_file_invalid_and_missing_ones_deny() {
    let err =
        Policy::from_text("rules:\n  - id: r\n    decision: alow\n", "typo.yaml").unwrap_err();
    let e = err.policy().unwrap();
    assert_eq!(e.path, "rules[0].decision");
    assert!(
        e.message.contains("unknown decision `alow`"),
        "{}",
        e.message
    );
    assert_eq!(e.source, "typo.yaml");

    let p = policy("rules:\n  - id: r\n    match: { topics: [\"job.*\"] }\n");
    let v = p.evaluate(&req("job.x").0);
    assert_eq!(v.decision(), Decision::Deny);
    assert!(v.reason().contains("no decision"), "{}", v.reason());
}

#[test]
fn allow_with_constraints_carries_them_and_plain_allow_becomes_constrained() {
    let p = policy(
        r#"
rules:
  - id: constrained
    match: { topics: ["job.build.*"] }
    decision: allow
    reason: builds run sandboxed
    constraints:
      budgets: { max_runtime_ms: 60000, max_retries: 2, max_artifact_bytes: 1048576, max_concurrent_jobs: 4 }
      sandbox: { isolated: true, network_allowlist: [crates.io], fs_read_only: [/src], fs_read_write: [/tmp] }
      toolchain: { allowed_tools: [cargo], allowed_commands: [cargo build] }
      diff: { max_files: 10, max_lines: 500, deny_path_globs: ["*.pem"] }
      redaction_level: strict
  - id: empty-constraints
    match: { topics: ["job.plain"] }
    decision: allow
    constraints: {}
  - id: awc-without-constraints
    match: { topics: ["job.awc"] }
    decision: allow_with_constraints
"#,
    );
    let v = p.evaluate(&req("job.build.x").0);
    assert_eq!(v.decision(), Decision::AllowWithConstraints);
    let c = v.constraints().unwrap();
    let b = c.budgets.unwrap();
    assert_eq!(
        (
            b.max_runtime_ms,
            b.max_retries,
            b.max_artifact_bytes,
            b.max_concurrent_jobs
        ),
        (60000, 2, 1048576, 4)
    );
    let s = c.sandbox.as_ref().unwrap();
    assert!(s.isolated);
    assert_eq!(s.network_allowlist, ["crates.io"]);
    assert_eq!(s.fs_read_only, ["/src"]);
    assert_eq!(s.fs_read_write, ["/tmp"]);
    let t = c.toolchain.as_ref().unwrap();
    assert_eq!(
        (t.allowed_tools.as_slice(), t.allowed_commands.as_slice()),
        (&["cargo".to_string()][..], &["cargo build".to_string()][..])
    );
    let d = c.diff.as_ref().unwrap();
    assert_eq!(
        (d.max_files, d.max_lines, d.deny_path_globs.as_slice()),
        (10, 500, &["*.pem".to_string()][..])
    );
    assert_eq!(c.redaction_level, "strict");
    assert_eq!(v.reason(), "builds run sandboxed");

    let r = v.to_response("j", "snap");
    assert_eq!(r.decision, 5);
    assert_eq!(r.constraints.as_ref(), Some(c));

    let plain = p.evaluate(&req("job.plain").0);
    assert_eq!(
        (plain.decision(), plain.constraints()),
        (Decision::Allow, None)
    );
    assert_eq!(
        p.evaluate(&req("job.awc").0).decision(),
        Decision::AllowWithConstraints
    );
}

#[test]
fn require_approval_sets_approval_ref_to_the_job_id_and_remediations_are_returned() {
    let p = policy(
        r#"
rules:
  - id: approve
    match: { topics: ["job.pay.*"] }
    decision: require_human
    reason: payments need a human
    remediations:
      - id: use-sandbox
        title: Use the sandbox
        summary: run against the test ledger
        replacement_topic: job.pay.sandbox
        replacement_capability: pay-test
        add_labels: { env: test }
        remove_labels: [prod]
"#,
    );
    let k = Kernel::new(p);
    let r = k.check(&req("job.pay.out").job("job-42").build());
    assert_eq!(r.decision, 3);
    assert!(r.approval_required);
    assert_eq!(r.approval_ref, "job-42");
    assert_eq!(r.rule_id, "approve");
    assert_eq!(r.reason, "payments need a human");
    assert_eq!(r.remediations.len(), 1);
    let m = &r.remediations[0];
    assert_eq!(m.id, "use-sandbox");
    assert_eq!(m.title, "Use the sandbox");
    assert_eq!(m.summary, "run against the test ledger");
    assert_eq!(m.replacement_topic, "job.pay.sandbox");
    assert_eq!(m.replacement_capability, "pay-test");
    assert_eq!(m.add_labels.get("env").map(String::as_str), Some("test"));
    assert_eq!(m.remove_labels, ["prod"]);

    // A second job with identical content is served from the cache: its own approval_ref.
    let again = k.check(&req("job.pay.out").job("job-43").build());
    assert_eq!(again.approval_ref, "job-43");
    // Non-approval decisions carry no approval fields.
    let allow = k.check(&req("job.other").build());
    assert!(!allow.approval_required);
    assert_eq!(allow.approval_ref, "");
}

#[test]
fn no_match_allows_unless_default_decision_says_otherwise() {
    let open =
        policy("rules:\n  - id: r\n    match: { topics: [\"job.a\"] }\n    decision: deny\n");
    let v = open.evaluate(&req("job.b").0);
    assert_eq!((v.decision(), v.rule_id()), (Decision::Allow, ""));
    assert!(v.reason().contains("no rule matched"));
    let closed = policy("default_decision: deny\nrules: []\n");
    assert_eq!(closed.evaluate(&req("job.b").0).decision(), Decision::Deny);
}

#[test]
fn generated_reasons_name_the_rule() {
    let p = policy("rules:\n  - id: quiet\n    decision: throttle\n");
    assert_eq!(
        p.evaluate(&req("job.x").0).reason(),
        "throttle by rule quiet"
    );
}
