//! Every rule condition, table-driven: each row is (request, expected rule id or "" for
//! "fell through to the default").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Req, decide, policy, req};

/// One rule per condition, each denying; the default is allow.
const POLICY: &str = r#"
version: 1
rules:
  - id: tenants
    match: { tenants: [" Acme ", beta], topics: ["job.tenant.*"] }
    decision: deny
  - id: topics-class
    match: { topics: ["job.[xy].?"] }
    decision: deny
  - id: capabilities
    match: { capabilities: [Shell, exec], topics: ["job.cap.*"] }
    decision: deny
  - id: risk-any
    match: { risk_tags: [pii, money], topics: ["job.risk.*"] }
    decision: deny
  - id: requires-all
    match: { requires: [gpu, " Network "], topics: ["job.req.*"] }
    decision: deny
  - id: packs
    match: { pack_ids: [Pack-A], topics: ["job.pack.*"] }
    decision: deny
  - id: actors
    match: { actor_ids: [alice], topics: ["job.actor.*"] }
    decision: deny
  - id: actor-types
    match: { actor_types: [Human], topics: ["job.atype.*"] }
    decision: deny
  - id: labels
    match: { labels: { env: prod, tier: "1" }, topics: ["job.label.*"] }
    decision: deny
  - id: secrets
    match: { secrets_present: true, topics: ["job.secret.*"] }
    decision: deny
  - id: no-secrets
    match: { secrets_present: false, topics: ["job.nosecret.*"] }
    decision: deny
  - id: everything
    match:
      tenants: [acme]
      topics: ["job.all.*"]
      capabilities: [x]
      risk_tags: [r]
      requires: [q]
      pack_ids: [p]
      actor_ids: [a]
      actor_types: [service]
      labels: { k: v }
      secrets_present: false
    decision: deny
"#;

fn check(rows: &[(&str, Req, &str)]) {
    let p = policy(POLICY);
    for (name, r, want) in rows {
        let (_, got) = decide(&p, r);
        assert_eq!(&got, want, "row `{name}`");
    }
}

#[test]
fn tenants_compare_ignoring_case_and_space_and_resolve_from_request_meta_default() {
    check(&[
        (
            "request tenant",
            req("job.tenant.a").tenant("ACME"),
            "tenants",
        ),
        ("trimmed", req("job.tenant.a").tenant("  beta "), "tenants"),
        ("other tenant", req("job.tenant.a").tenant("gamma"), ""),
        (
            "meta tenant",
            req("job.tenant.a").meta_tenant("Acme"),
            "tenants",
        ),
        (
            "request wins over meta",
            req("job.tenant.a").tenant("gamma").meta_tenant("acme"),
            "",
        ),
        ("no tenant", req("job.tenant.a"), ""),
    ]);
    let with_default = policy(
        "default_tenant: ACME\nrules:\n  - id: t\n    match: { tenants: [acme] }\n    decision: deny\n",
    );
    assert_eq!(decide(&with_default, &req("job.x")).1, "t");
    assert_eq!(
        decide(&with_default, &req("job.x").meta_tenant("other")).1,
        ""
    );
}

#[test]
fn topic_globs_cover_dots_classes_and_single_characters() {
    check(&[
        ("class and ?", req("job.x.1"), "topics-class"),
        ("class miss", req("job.z.1"), ""),
        ("? is one char", req("job.x.12"), ""),
        (
            "star spans dots",
            req("job.tenant.a.b.c").tenant("acme"),
            "tenants",
        ),
    ]);
}

#[test]
fn capabilities_packs_actors_compare_ignoring_case() {
    check(&[
        (
            "capability",
            req("job.cap.run").capability("SHELL"),
            "capabilities",
        ),
        (
            "capability other",
            req("job.cap.run").capability("read"),
            "",
        ),
        ("capability missing", req("job.cap.run"), ""),
        ("pack", req("job.pack.x").pack(" pack-a"), "packs"),
        ("pack other", req("job.pack.x").pack("pack-b"), ""),
        ("actor", req("job.actor.x").actor("Alice"), "actors"),
        ("actor other", req("job.actor.x").actor("bob"), ""),
    ]);
}

#[test]
fn risk_tags_match_any_and_requires_match_all() {
    check(&[
        (
            "one risk tag",
            req("job.risk.x").risk_tags(&["io", "PII"]),
            "risk-any",
        ),
        (
            "no risk tag in list",
            req("job.risk.x").risk_tags(&["io"]),
            "",
        ),
        ("no risk tags", req("job.risk.x"), ""),
        (
            "all requires",
            req("job.req.x").requires(&["network", "GPU", "disk"]),
            "requires-all",
        ),
        ("some requires", req("job.req.x").requires(&["gpu"]), ""),
        ("no requires", req("job.req.x"), ""),
    ]);
}

#[test]
fn actor_types_are_human_or_service() {
    check(&[
        ("human", req("job.atype.x").actor_type(1), "actor-types"),
        ("service", req("job.atype.x").actor_type(2), ""),
        ("unspecified", req("job.atype.x"), ""),
        ("unknown value", req("job.atype.x").actor_type(9), ""),
    ]);
}

#[test]
fn labels_compare_exactly_from_request_then_meta() {
    check(&[
        (
            "both labels",
            req("job.label.x").label("env", "prod").label("tier", "1"),
            "labels",
        ),
        (
            "meta labels",
            req("job.label.x")
                .meta_label("env", "prod")
                .meta_label("tier", "1"),
            "labels",
        ),
        (
            "mixed",
            req("job.label.x")
                .label("env", "prod")
                .meta_label("tier", "1"),
            "labels",
        ),
        (
            "request shadows meta",
            req("job.label.x")
                .label("env", "dev")
                .meta_label("env", "prod")
                .label("tier", "1"),
            "",
        ),
        (
            "case differs",
            req("job.label.x").label("env", "Prod").label("tier", "1"),
            "",
        ),
        ("one missing", req("job.label.x").label("env", "prod"), ""),
    ]);
}

#[test]
fn secrets_come_from_the_label_or_the_secrets_risk_tag() {
    check(&[
        (
            "label true",
            req("job.secret.x").label("secrets_present", "true"),
            "secrets",
        ),
        (
            "label YES",
            req("job.secret.x").label("secrets_present", " YES "),
            "secrets",
        ),
        (
            "label 1 in meta",
            req("job.secret.x").meta_label("secrets_present", "1"),
            "secrets",
        ),
        (
            "risk tag",
            req("job.secret.x").risk_tags(&["Secrets"]),
            "secrets",
        ),
        (
            "label false",
            req("job.secret.x").label("secrets_present", "false"),
            "",
        ),
        ("nothing", req("job.secret.x"), ""),
        ("want absent: absent", req("job.nosecret.x"), "no-secrets"),
        (
            "want absent: present",
            req("job.nosecret.x").label("secrets_present", "true"),
            "",
        ),
    ]);
}

#[test]
fn every_condition_present_must_hold() {
    let full = || {
        req("job.all.x")
            .tenant("acme")
            .capability("x")
            .risk_tags(&["r"])
            .requires(&["q"])
            .pack("p")
            .actor("a")
            .actor_type(2)
            .label("k", "v")
    };
    check(&[
        ("all hold", full(), "everything"),
        ("tenant off", full().tenant("b"), ""),
        (
            "topic off",
            Req(cap_proto::v1::PolicyCheckRequest {
                topic: "job.al".into(),
                ..full().build()
            }),
            "",
        ),
        ("capability off", full().capability("y"), ""),
        ("risk off", full().risk_tags(&["s"]), ""),
        ("requires off", full().requires(&[]), ""),
        ("pack off", full().pack("o"), ""),
        ("actor off", full().actor("b"), ""),
        ("actor type off", full().actor_type(1), ""),
        ("label off", full().label("k", "w"), ""),
        ("secrets off", full().label("secrets_present", "yes"), ""),
    ]);
}

#[test]
fn an_empty_match_matches_every_job_topic() {
    let p = policy("rules:\n  - id: all\n    decision: throttle\n");
    assert_eq!(decide(&p, &req("job.anything")).1, "all");
}

#[test]
fn first_match_wins() {
    let p = policy(
        "rules:\n  - id: first\n    match: { topics: [\"job.a*\"] }\n    decision: allow\n  - id: second\n    match: { topics: [\"job.ab\"] }\n    decision: deny\n",
    );
    assert_eq!(decide(&p, &req("job.ab")).1, "first");
}

#[test]
fn mcp_lists_deny_named_items_on_deny_lists_or_missing_from_allow_lists() {
    let p = policy(
        r#"
rules:
  - id: mcp-gate
    match:
      topics: ["job.mcp.*"]
      mcp:
        allow_servers: [GitHub, gitlab]
        deny_tools: [delete_repo]
        allow_resources: ["repo:public"]
        deny_actions: [write]
    decision: allow
    reason: mcp ok
"#,
    );
    use cap_safety::Decision::*;
    let rows: &[(&str, Req, cap_safety::Decision)] = &[
        (
            "allowed server",
            req("job.mcp.call").label("mcp.server", "github"),
            Allow,
        ),
        (
            "server not on allow list",
            req("job.mcp.call").label("mcp.server", "evil"),
            Deny,
        ),
        (
            "denied tool",
            req("job.mcp.call")
                .label("mcp.server", "github")
                .label("mcp.tool", "Delete_Repo"),
            Deny,
        ),
        (
            "other tool",
            req("job.mcp.call")
                .label("mcp.server", "gitlab")
                .label("mcp.tool", "read"),
            Allow,
        ),
        (
            "resource not allowed",
            req("job.mcp.call").label("mcp.resource", "repo:private"),
            Deny,
        ),
        (
            "resource allowed",
            req("job.mcp.call").label("mcp.resource", "repo:public"),
            Allow,
        ),
        (
            "denied action via meta label",
            req("job.mcp.call").meta_label("mcp.action", "WRITE"),
            Deny,
        ),
        ("no mcp use", req("job.mcp.call"), Allow),
    ];
    for (name, r, want) in rows {
        let v = p.evaluate(&r.0);
        assert_eq!(v.decision(), *want, "row `{name}`: {}", v.reason());
        assert_eq!(v.rule_id(), "mcp-gate", "row `{name}`");
        if *want == Deny {
            assert!(
                v.reason().starts_with("mcp "),
                "row `{name}`: {}",
                v.reason()
            );
        }
    }
    // The MCP gate applies only when the rule's other conditions hold.
    assert_eq!(
        decide(&p, &req("job.other").label("mcp.server", "evil")).1,
        ""
    );
}

#[test]
fn empty_topic_and_topics_outside_job_are_denied_before_rules() {
    let p = policy("rules:\n  - id: all\n    decision: allow\n");
    use cap_safety::policy::{RULE_EMPTY_TOPIC, RULE_NON_JOB_TOPIC};
    for (topic, rule) in [
        ("", RULE_EMPTY_TOPIC),
        ("   ", RULE_EMPTY_TOPIC),
        ("sys.job.submit", RULE_NON_JOB_TOPIC),
        ("jobs.x", RULE_NON_JOB_TOPIC),
        ("JOB.x", RULE_NON_JOB_TOPIC),
    ] {
        let v = p.evaluate(&req(topic).0);
        assert_eq!(
            (v.decision(), v.rule_id()),
            (cap_safety::Decision::Deny, rule),
            "{topic:?}"
        );
    }
}
