//! Tests of the adapter-v1 runner: the strict checks of adapter lines and suites, and
//! whole runs against scripted adapters (`sh` scripts) that behave and misbehave.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::runner::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

fn scenario(id: &str, role: Role, profile: &str) -> Scenario {
    Scenario {
        id: id.into(),
        title: String::new(),
        role,
        profile: profile.into(),
        required: true,
        params: [("k".to_string(), "v".to_string())].into(),
    }
}

fn suite() -> Vec<Scenario> {
    vec![
        scenario("a/worker-fail", Role::Worker, "core"),
        scenario("b/worker-pass", Role::Worker, "core"),
        scenario("c/cp-other-role", Role::ControlPlane, "core"),
        scenario("d/worker-prod", Role::Worker, "cap-production"),
    ]
}

fn profiles() -> Vec<String> {
    vec!["core".into(), "cap-production".into()]
}

/// An adapter written in sh: the handshake, then `body` for each run (with `$id` set),
/// until bye.
fn sh(handshake: &str, body: &str) -> Vec<String> {
    let script = format!(
        r#"read -r hello
printf '%s\n' '{handshake}'
while read -r line; do
  case "$line" in *'"type":"bye"'*) exit 0;; esac
  id=$(printf '%s' "$line" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
  {body}
done"#
    );
    vec!["sh".into(), "-c".into(), script]
}

const HS: &str = r#"{"type":"handshake","protocolVersion":1,"role":"worker","profiles":["core"],"sdk":"sh","transport":"none"}"#;
const ANSWER: &str = r#"case "$id" in *fail*) st=FAIL;; *) st=PASS;; esac
  printf '{"type":"result","id":"%s","status":"%s","evidence":{"seen":"%s"}}\n' "$id" "$st" "$id""#;

fn quick() -> Timeouts {
    Timeouts {
        handshake: Duration::from_secs(5),
        case: Duration::from_millis(800),
        grace: Duration::from_secs(1),
    }
}

#[test]
fn adapter_lines_are_checked_strictly() {
    let ok = parse_message(r#"{"type":"result","id":"x","status":"N/A","evidence":{"a":"b"}}"#);
    assert!(matches!(
        ok,
        Ok(Message::Result {
            status: Status::NotApplicable,
            ..
        })
    ));
    let hs = parse_message(HS).unwrap();
    assert!(
        matches!(hs, Message::Handshake(h) if h.role == Role::Worker && h.protocol_version == 1)
    );
    for (line, why) in [
        (
            r#"{"type":"result","id":"x","status":"PASS","extra":1}"#,
            "unknown field",
        ),
        (
            r#"{"type":"result","id":"x","id":"y","status":"PASS"}"#,
            "duplicate key",
        ),
        (
            r#"{"type":"result","id":"x","status":"PASS","evidence":{"a":"1","a":"2"}}"#,
            "duplicate key",
        ),
        (
            r#"{"type":"result","id":"x","status":"MAYBE"}"#,
            "unknown status",
        ),
        (r#"{"type":"result","status":"PASS"}"#, "requires"),
        (
            r#"{"type":"result","id":7,"status":"PASS"}"#,
            "must be a string",
        ),
        (
            r#"{"type":"result","id":"x","status":"PASS","evidence":{"n":1}}"#,
            "must be a string",
        ),
        (r#"{"type":"handshake","role":"worker"}"#, "requires"),
        (
            r#"{"type":"handshake","protocolVersion":"1","role":"worker"}"#,
            "integer",
        ),
        (
            r#"{"type":"handshake","protocolVersion":1,"role":"gateway"}"#,
            "unknown role",
        ),
        (
            r#"{"type":"handshake","protocolVersion":1,"role":"worker","profiles":[1]}"#,
            "strings",
        ),
        (
            r#"{"type":"run","id":"x","scenario":"x"}"#,
            "runner message",
        ),
        (r#"{"type":"hello"}"#, "runner message"),
        (r#"{"type":"welcome"}"#, "unknown message type"),
        (r#"{"id":"x"}"#, "`type` is required"),
        (
            r#"{"type":"result","id":"x","status":"PASS"} {}"#,
            "trailing",
        ),
        (r#"["result"]"#, "not a JSON object"),
    ] {
        let err = parse_message(line).unwrap_err();
        assert!(err.contains(why), "{line}: {err}");
    }
    let long = format!(
        r#"{{"type":"result","id":"x","status":"PASS","detail":"{}"}}"#,
        "d".repeat(MAX_LINE_BYTES)
    );
    assert!(parse_message(&long).unwrap_err().contains("limit"));
}

#[test]
fn suites_are_checked_against_the_scenario_schema() {
    let ok = r#"{"version":1,"scenarios":[{"id":"a","role":"worker","profile":"core","required":true,"params":{"x":"1"}}]}"#;
    let s = load_suite(ok).unwrap();
    assert_eq!(s[0].params["x"], "1");
    assert!(s[0].required);
    for (text, why) in [
        (r#"{"version":0,"scenarios":[]}"#, "version"),
        (
            r#"{"version":1,"scenarios":[],"more":1}"#,
            "unknown suite field",
        ),
        (
            r#"{"version":1,"scenarios":[{"id":"a","role":"worker","profile":"core","x":1}]}"#,
            "unknown scenario field",
        ),
        (
            r#"{"version":1,"scenarios":[{"id":"","role":"worker","profile":"core"}]}"#,
            "id",
        ),
        (
            r#"{"version":1,"scenarios":[{"id":"a","role":"boss","profile":"core"}]}"#,
            "role",
        ),
        (
            r#"{"version":1,"scenarios":[{"id":"a","role":"worker","profile":""}]}"#,
            "profile",
        ),
        (
            r#"{"version":1,"scenarios":[{"id":"a","role":"worker","profile":"p","required":"yes"}]}"#,
            "boolean",
        ),
        (
            r#"{"version":1,"scenarios":[{"id":"a","role":"worker","profile":"p","params":{"n":2}}]}"#,
            "string",
        ),
    ] {
        let err = load_suite(text).unwrap_err();
        assert!(err.contains(why), "{text}: {err}");
    }
}

#[test]
fn the_vendored_suites_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tck/scenarios");
    let all = load_dir(&dir).unwrap();
    assert_eq!(all.len(), 49);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "sorted by id");
    assert!(all.iter().all(|s| s.required));
    let prod = all.iter().filter(|s| s.profile == "cap-production").count();
    assert_eq!(prod, 14);
    let tmp = std::env::temp_dir().join(format!("tck-dup-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let one = r#"{"version":1,"scenarios":[{"id":"a","role":"worker","profile":"core"}]}"#;
    std::fs::write(tmp.join("1.json"), one).unwrap();
    std::fs::write(tmp.join("2.json"), one).unwrap();
    assert!(
        load_dir(&tmp)
            .unwrap_err()
            .contains("duplicate scenario id")
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_behaving_adapter_is_graded_case_by_case() {
    let run = run_adapter_with(&sh(HS, ANSWER), &suite(), &profiles(), quick()).unwrap();
    assert!(run.violations.is_empty(), "{:?}", run.violations);
    assert_eq!(run.handshake.sdk, "sh");
    let by_id: BTreeMap<_, _> = run.cases.iter().map(|c| (c.id.as_str(), c)).collect();
    assert_eq!(by_id["a/worker-fail"].status, Status::Fail);
    assert_eq!(by_id["b/worker-pass"].status, Status::Pass);
    assert_eq!(by_id["b/worker-pass"].evidence["seen"], "b/worker-pass");
    // The other role's case is not sent.
    assert_eq!(by_id["c/cp-other-role"].status, Status::NotApplicable);
    assert!(!by_id["c/cp-other-role"].applicable);
    let core = summarize(&run, "core");
    assert_eq!((core.total, core.pass, core.fail, core.na), (3, 1, 1, 1));
    assert!(!core.conformant, "a required FAIL");
    let prod = summarize(&run, "cap-production");
    assert!(prod.conformant && prod.pass == 1);
    // The report has the schema's shape.
    let r = report(&run, "sh", "core", "test");
    assert_eq!(r["summary"]["conformant"], false);
    assert_eq!(r["cases"].as_array().unwrap().len(), 3);
    assert!(r["cases"][0]["durationMs"].is_u64());
    let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "adapter",
            "cases",
            "profile",
            "role",
            "sdk",
            "summary",
            "toolVersion",
            "transport"
        ]
    );
}

#[test]
fn unsupported_and_adapter_na_are_not_conformant() {
    let body = r#"printf '{"type":"result","id":"%s","status":"UNSUPPORTED"}\n' "$id""#;
    let run = run_adapter_with(&sh(HS, body), &suite(), &profiles(), quick()).unwrap();
    assert!(!summarize(&run, "cap-production").conformant);
    let body = r#"printf '{"type":"result","id":"%s","status":"N/A"}\n' "$id""#;
    let run = run_adapter_with(&sh(HS, body), &suite(), &profiles(), quick()).unwrap();
    assert!(!summarize(&run, "cap-production").conformant);
}

#[test]
fn wrong_ids_unknown_fields_and_extra_results_are_violations() {
    // Answers every run twice: the second answer is taken for the next run (wrong id),
    // and the last one is left over.
    let twice = format!("{ANSWER}\n  {ANSWER}");
    let run = run_adapter_with(&sh(HS, &twice), &suite(), &profiles(), quick()).unwrap();
    let statuses: Vec<Status> = run
        .cases
        .iter()
        .filter(|c| c.applicable)
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [Status::Fail, Status::Error, Status::Error]);
    assert!(
        run.violations.iter().any(|v| v.contains("where")),
        "{:?}",
        run.violations
    );
    assert!(!summarize(&run, "cap-production").conformant);

    let extra = r#"printf '{"type":"result","id":"%s","status":"PASS","verdict":"ok"}\n' "$id""#;
    let run = run_adapter_with(&sh(HS, extra), &suite(), &profiles(), quick()).unwrap();
    assert!(
        run.cases
            .iter()
            .filter(|c| c.applicable)
            .all(|c| c.status == Status::Error)
    );
    assert!(
        run.violations
            .iter()
            .any(|v| v.contains("unknown field `verdict`"))
    );
}

#[test]
fn a_silent_adapter_times_out_and_the_rest_is_error() {
    let body = r#"case "$id" in a/*) sleep 5;; esac
  printf '{"type":"result","id":"%s","status":"PASS"}\n' "$id""#;
    let run = run_adapter_with(&sh(HS, body), &suite(), &profiles(), quick()).unwrap();
    let a = &run.cases[0];
    assert_eq!(a.status, Status::Error);
    assert!(a.detail.contains("no result within"));
    let b = &run.cases[1];
    assert_eq!(b.status, Status::Error);
    assert!(b.detail.contains("stopped after a/worker-fail timed out"));
}

#[test]
fn handshakes_are_required_and_versioned() {
    let none = vec!["sh".into(), "-c".into(), "read -r hello; exit 0".into()];
    let err = run_adapter_with(&none, &suite(), &profiles(), quick()).unwrap_err();
    assert!(err.contains("ended before its handshake"), "{err}");
    let v2 = HS.replace(r#""protocolVersion":1"#, r#""protocolVersion":2"#);
    let err = run_adapter_with(&sh(&v2, ANSWER), &suite(), &profiles(), quick()).unwrap_err();
    assert!(err.contains("adapter-v2"), "{err}");
    let bad = HS.replace(r#""sdk""#, r#""vendor""#);
    let err = run_adapter_with(&sh(&bad, ANSWER), &suite(), &profiles(), quick()).unwrap_err();
    assert!(err.contains("unknown field `vendor`"), "{err}");
    let slow = vec!["sh".into(), "-c".into(), "sleep 3".into()];
    let limits = Timeouts {
        handshake: Duration::from_millis(300),
        ..quick()
    };
    let err = run_adapter_with(&slow, &suite(), &profiles(), limits).unwrap_err();
    assert!(err.contains("no handshake within"), "{err}");
    let err = run_adapter_with(
        &["/nonexistent/adapter".to_string()],
        &suite(),
        &profiles(),
        quick(),
    )
    .unwrap_err();
    assert!(err.contains("starting"), "{err}");
}
