//! Invalid policies are rejected with the source, the path inside the document and what
//! is wrong; unknown keys are errors; the JSON Schema describes the same format.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cap_safety::{ErrorKind, Policy};

fn err(text: &str) -> cap_safety::PolicyError {
    match Policy::from_text(text, "p.yaml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidPolicy, "{e}");
            e.policy().unwrap().clone()
        }
    }
}

#[test]
fn unknown_keys_are_errors_at_every_level() {
    let rows = [
        ("verzion: 1\n", "verzion", "verzion"),
        (
            "rules:\n  - id: a\n    decison: deny\n",
            "rules[0].decison",
            "decison",
        ),
        (
            "rules:\n  - id: a\n  - id: b\n    match: { topic: [x] }\n",
            "rules[1].match.topic",
            "topic",
        ),
        (
            "rules:\n  - id: a\n    match: { mcp: { allow_server: [x] } }\n",
            "rules[0].match.mcp.allow_server",
            "allow_server",
        ),
        (
            "rules:\n  - id: a\n    constraints: { budget: {} }\n",
            "rules[0].constraints.budget",
            "budget",
        ),
        (
            "rules:\n  - id: a\n    constraints: { sandbox: { isolate: true } }\n",
            "rules[0].constraints.sandbox.isolate",
            "isolate",
        ),
        (
            "rules:\n  - id: a\n    remediations: [{ name: x }]\n",
            "rules[0].remediations[0].name",
            "name",
        ),
        (
            "tenants:\n  acme: { allow: [x] }\n",
            "tenants.acme.allow",
            "allow",
        ),
    ];
    for (text, path, key) in rows {
        let e = err(text);
        assert_eq!(e.path, path, "{text}");
        assert!(e.message.contains(key), "{text}: {}", e.message);
        assert!(e.message.contains("unknown field"), "{text}: {}", e.message);
        assert_eq!(e.source, "p.yaml");
    }
}

#[test]
fn type_errors_name_the_path_and_the_line() {
    let e = err("version: 1\nrules:\n  - id: a\n    match:\n      topics: job.x\n");
    assert_eq!(e.path, "rules[0].match.topics");
    assert!(e.message.contains("expected sequence"), "{}", e.message);
    assert_eq!(e.location.map(|l| l.0), Some(5));
    let shown = e.to_string();
    assert!(
        shown.starts_with("invalid policy p.yaml: at rules[0].match.topics:"),
        "{shown}"
    );
    assert!(shown.contains("line 5"), "{shown}");

    let e = err("rules:\n  - id: a\n    match: { secrets_present: maybe }\n");
    assert_eq!(e.path, "rules[0].match.secrets_present");
    let e = err("rules:\n  - match: {}\n");
    assert_eq!(e.path, "rules[0]");
    assert!(e.message.contains("missing field `id`"), "{}", e.message);
}

#[test]
fn semantic_errors_name_the_path() {
    let rows = [
        ("rules:\n  - id: \" \"\n", "rules[0].id", "empty"),
        ("rules:\n  - id: a\n  - id: a\n", "rules[1].id", "duplicate"),
        (
            "rules:\n  - id: a\n    match: { topics: [\"job.[x\"] }\n",
            "rules[0].match.topics[0]",
            "invalid topic pattern",
        ),
        (
            "rules:\n  - id: a\n    match: { topics: [\"\"] }\n",
            "rules[0].match.topics[0]",
            "empty",
        ),
        (
            "rules:\n  - id: a\n    match: { actor_types: [robot] }\n",
            "rules[0].match.actor_types[0]",
            "robot",
        ),
        (
            "rules:\n  - id: a\n    match: { tenants: [acme, \"\"] }\n",
            "rules[0].match.tenants[1]",
            "empty",
        ),
        (
            "rules:\n  - id: a\n    match: { requires: [\" \"] }\n",
            "rules[0].match.requires[0]",
            "empty",
        ),
        (
            "rules:\n  - id: a\n    match: { mcp: { deny_tools: [\"\"] } }\n",
            "rules[0].match.mcp.deny_tools[0]",
            "empty",
        ),
        (
            "rules:\n  - id: a\n    constraints: { budgets: { max_retries: -1 } }\n",
            "rules[0].constraints.budgets.max_retries",
            "negative",
        ),
        (
            "rules:\n  - id: a\n    constraints: { diff: { max_lines: -5 } }\n",
            "rules[0].constraints.diff.max_lines",
            "negative",
        ),
        (
            "tenants:\n  acme: { deny_topics: [\"job.{a\"] }\n",
            "tenants.acme.deny_topics[0]",
            "invalid topic pattern",
        ),
        (
            "default_decision: maybe\n",
            "default_decision",
            "unknown decision",
        ),
    ];
    for (text, path, what) in rows {
        let e = err(text);
        assert_eq!(e.path, path, "{text}");
        assert!(e.message.contains(what), "{text}: {}", e.message);
    }
}

#[test]
fn empty_non_utf8_and_garbage_inputs_are_typed_errors() {
    assert!(err("").message.contains("empty"));
    assert!(err("  \n# only a comment\n---\n").message.contains("empty"));
    let e = Policy::from_bytes(&[0xff, 0xfe, b'a'], "bin").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidPolicy);
    assert!(e.to_string().contains("UTF-8"));
    for garbage in [
        "[1, 2",
        "rules: [",
        "{\"rules\": 3}",
        "- a\n- b\n",
        ": :",
        "rules:\n  - *anchor\n",
    ] {
        let e = Policy::from_text(garbage, "g").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidPolicy, "{garbage}");
    }
    let huge = "#".repeat(cap_safety::policy::MAX_POLICY_BYTES + 1);
    assert!(err(&huge).message.contains("limit"));
}

#[test]
fn json_policies_work_and_report_paths_too() {
    let p = Policy::from_text(
        r#"{"version": "7", "rules": [{"id": "j", "match": {"topics": ["job.*"]}, "decision": "deny"}]}"#,
        "p.json",
    )
    .unwrap();
    assert_eq!(p.version(), "7");
    assert_eq!(p.rule_count(), 1);
    let e = Policy::from_text(
        r#"{"rules": [{"id": "j", "match": {"topicz": []}}]}"#,
        "p.json",
    )
    .unwrap_err();
    let e = e.policy().unwrap();
    assert_eq!(e.path, "rules[0].match.topicz");
    assert!(e.location.is_some());
    let e = Policy::from_text(r#"{"rules": []} extra"#, "p.json").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidPolicy);
}

#[test]
fn versions_may_be_numbers_or_strings() {
    assert_eq!(
        Policy::from_text("version: 2\n", "v").unwrap().version(),
        "2"
    );
    assert_eq!(
        Policy::from_text("version: \"2.1\"\n", "v")
            .unwrap()
            .version(),
        "2.1"
    );
    assert_eq!(
        Policy::from_text("version: 2.5\n", "v").unwrap().version(),
        "2.5"
    );
    assert!(Policy::from_text("version: [1]\n", "v").is_err());
}

#[test]
fn missing_files_are_io_errors() {
    let e = Policy::from_file("/nonexistent/policy.yaml").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.to_string().contains("/nonexistent/policy.yaml"));
}

#[test]
fn the_schema_forbids_unknown_keys_and_lists_the_decisions() {
    let s = cap_safety::policy::schema();
    assert_eq!(s["title"], "CAP safety policy");
    assert_eq!(s["additionalProperties"], false);
    let defs = &s["$defs"];
    for def in [
        "Rule",
        "Match",
        "McpLists",
        "Constraints",
        "Budgets",
        "Sandbox",
        "Toolchain",
        "Diff",
        "Remediation",
        "TenantTopics",
    ] {
        assert_eq!(defs[def]["additionalProperties"], false, "{def}");
    }
    let names: Vec<&str> = defs["Decision"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for n in [
        "allow",
        "deny",
        "require_approval",
        "require-human",
        "allow_with_constraints",
        "throttle",
        "permit",
        "block",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let rule = &defs["Rule"]["properties"];
    assert!(rule["match"].is_object() && rule["decision"].is_object());
    assert_eq!(defs["Rule"]["required"], serde_json::json!(["id"]));
    let m = &defs["Match"]["properties"];
    for f in [
        "tenants",
        "topics",
        "capabilities",
        "risk_tags",
        "requires",
        "pack_ids",
        "actor_ids",
        "actor_types",
        "labels",
        "secrets_present",
        "mcp",
    ] {
        assert!(m[f].is_object(), "{f}");
    }
}

#[test]
fn duplicate_keys_are_errors() {
    let e = err("version: 1\nversion: 2\n");
    assert!(
        e.message.to_lowercase().contains("duplicate"),
        "{}",
        e.message
    );
    let e = err("rules:\n  - id: a\n    match: { labels: { env: a, env: b } }\n");
    assert!(
        e.message.to_lowercase().contains("duplicate"),
        "{}",
        e.message
    );
}
