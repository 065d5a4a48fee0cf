//! Hostile input: policy text from the network (Simulate's `effective_config`) and
//! arbitrary requests never panic, never blow the stack, and stay bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cap_proto::v1::{JobMetadata, PolicyCheckRequest};
use cap_safety::{ErrorKind, Kernel, Policy};
use proptest::prelude::*;

#[test]
fn deep_nesting_and_alias_bombs_are_rejected_not_fatal() {
    let deep_flow = format!("rules: {}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_block: String = (0..5_000)
        .map(|i| format!("{}- \n", "  ".repeat(i)))
        .collect();
    let deep_json = format!(
        "{{\"rules\": {}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let mut bomb = String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
    for i in 0..9 {
        let prev = if i == 0 {
            "a".to_string()
        } else {
            format!("l{}", i - 1)
        };
        bomb.push_str(&format!("l{i}: &l{i} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    bomb.push_str("rules: [*l8]\n");
    for (name, text) in [
        ("flow", deep_flow),
        ("block", deep_block),
        ("json", deep_json),
        ("bomb", bomb),
    ] {
        let t0 = std::time::Instant::now();
        let e = Policy::from_text(&text, "hostile").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidPolicy, "{name}: {e}");
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(2),
            "{name} took {:?}",
            t0.elapsed()
        );
    }
}

fn arb_request() -> impl Strategy<Value = PolicyCheckRequest> {
    let s = "[ -~À-ÿ]{0,12}";
    (
        s,
        prop_oneof![
            Just("job.".to_string()),
            Just(String::new()),
            s.prop_map(|x| x)
        ],
        s,
        proptest::collection::btree_map(
            prop_oneof![
                Just("mcp.tool".to_string()),
                Just("secrets_present".to_string()),
                Just("env".to_string()),
                s.prop_map(|x| x)
            ],
            s,
            0..4,
        ),
        proptest::option::of((
            s,
            s,
            0..4i32,
            proptest::collection::vec(s, 0..3),
            proptest::collection::vec(s, 0..3),
        )),
    )
        .prop_map(|(tenant, prefix, rest, labels, meta)| PolicyCheckRequest {
            job_id: "j".into(),
            topic: format!("{prefix}{rest}"),
            tenant,
            labels,
            meta: meta.map(
                |(cap, actor, actor_type, risk_tags, requires)| JobMetadata {
                    capability: cap,
                    actor_id: actor,
                    actor_type,
                    risk_tags,
                    requires,
                    ..Default::default()
                },
            ),
            ..Default::default()
        })
}

const POLICY: &str = r#"
default_tenant: Ünïcode
rules:
  - id: a
    match: { tenants: [ACME, Ünïcode], topics: ["job.[a-m]*", "*.x?"], risk_tags: [Secrets] }
    decision: deny
  - id: b
    match: { labels: { env: prod }, requires: [gpu, net], actor_types: [human] }
    decision: require_human
  - id: c
    match: { mcp: { allow_tools: [read], deny_servers: [evil] } }
    decision: allow
tenants:
  acme: { deny_topics: ["job.z*"], allow_topics: ["job.*"] }
"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics_the_loader(text in ".{0,300}") {
        let _ = Policy::from_text(&text, "fuzz");
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_loader(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Policy::from_bytes(&bytes, "fuzz");
    }

    #[test]
    fn yaml_shaped_text_never_panics_the_loader(
        lines in proptest::collection::vec("( {0,4})(rules|- id|match|topics|decision|tenants|mcp|labels|constraints|&a|\\*a|\\[|\\{|-)(: ?)?[a-z\\[\\]{}*,\"]{0,8}", 0..12)
    ) {
        let _ = Policy::from_text(&lines.join("\n"), "fuzz");
    }

    #[test]
    fn evaluate_explain_and_check_agree_on_arbitrary_requests(req in arb_request()) {
        let policy = Policy::from_text(POLICY, "p").unwrap();
        let v = policy.evaluate(&req);
        let (e, trace) = policy.explain(&req);
        prop_assert_eq!(&v, &e);
        prop_assert!(trace.starts_with("decision: "));
        let k = Kernel::new(Policy::from_text(POLICY, "p").unwrap());
        let r1 = k.check(&req);
        let r2 = k.check(&req);
        prop_assert_eq!(&r1, &r2);
        prop_assert_eq!(r1.decision, v.decision().to_wire() as i32);
        prop_assert_eq!(r1.rule_id.as_str(), v.rule_id());
        // Topics outside job.* never reach a rule.
        if !req.topic.starts_with("job.") {
            prop_assert_eq!(v.decision(), cap_safety::Decision::Deny);
        }
    }
}
