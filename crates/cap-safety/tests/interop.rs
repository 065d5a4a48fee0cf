//! Interop with the reference peer: the grpcio stubs inside cap-sdk-python 2.10.0
//! (`cap.pb.cordum.agent.v1.safety_pb2_grpc`) call our SafetyKernel server.
//!
//! Needs env `CAP_INTEROP_PYTHON` (a Python with cap-sdk-python==2.10.0 installed; run
//! `cargo xtask interop`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cap_safety::server::{self, ServeOptions};
use cap_safety::{Kernel, KernelOptions};
use serde_json::Value;
use std::path::PathBuf;

const POLICY: &str = r#"
version: peer-1
default_tenant: acme
rules:
  - id: deny-admin
    match: { tenants: [acme], topics: ["job.admin.*"] }
    decision: deny
    reason: no admin jobs
  - id: approve-pay
    match: { topics: ["job.pay.*"] }
    decision: require_human
  - id: sandbox-build
    match: { capabilities: [build], risk_tags: [net, pii] }
    decision: allow
    constraints:
      budgets: { max_runtime_ms: 60000 }
      sandbox: { isolated: true, network_allowlist: [crates.io] }
    remediations:
      - { id: offline, title: Build offline, add_labels: { net: "off" } }
  - id: mcp-gate
    match: { topics: ["job.mcp.*"], mcp: { deny_tools: [rm] } }
    decision: allow
"#;

fn python() -> PathBuf {
    match std::env::var_os("CAP_INTEROP_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "CAP_INTEROP_PYTHON is not set: run `cargo xtask interop` (it builds the cap-sdk-python 2.10.0 venv)"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python reference peer (CAP_INTEROP_PYTHON): run by `cargo xtask interop`"]
async fn peer_grpcio_stubs_call_our_safety_kernel() {
    let py = python();
    let kernel = Kernel::from_text(POLICY, "peer.yaml", KernelOptions::default()).unwrap();
    let snapshot = kernel.snapshot().id().to_owned();
    let h = server::spawn(
        kernel,
        ServeOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            ..ServeOptions::default()
        },
    )
    .await
    .unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peer/safety_client.py");
    let out = tokio::process::Command::new(&py)
        .arg(&script)
        .arg(h.local_addr().to_string())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    h.shutdown().await.unwrap();
    assert!(
        out.status.success(),
        "peer script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();

    // Enum names as the peer knows them.
    let e = &v["enum"];
    assert_eq!(e["DECISION_TYPE_DENY"], 2);
    assert_eq!(e["DECISION_TYPE_REQUIRE_HUMAN"], 3);

    let deny = &v["deny"];
    assert_eq!(deny["decision"], "DECISION_TYPE_DENY");
    assert_eq!(deny["rule_id"], "deny-admin");
    assert_eq!(deny["reason"], "no admin jobs");
    assert_eq!(deny["policy_snapshot"], snapshot.as_str());

    let ap = &v["approval"];
    assert_eq!(ap["decision"], "DECISION_TYPE_REQUIRE_HUMAN");
    assert_eq!(ap["approval_required"], true);
    assert_eq!(ap["approval_ref"], "py-approve");

    let c = &v["constrained"];
    assert_eq!(c["decision"], "DECISION_TYPE_ALLOW_WITH_CONSTRAINTS");
    assert_eq!(c["constraints"]["budgets"]["max_runtime_ms"], "60000");
    assert_eq!(c["constraints"]["sandbox"]["isolated"], true);
    assert_eq!(
        c["constraints"]["sandbox"]["network_allowlist"][0],
        "crates.io"
    );
    assert_eq!(c["remediations"][0]["id"], "offline");
    assert_eq!(c["remediations"][0]["add_labels"]["net"], "off");

    assert_eq!(v["mcp"]["decision"], "DECISION_TYPE_DENY");
    assert_eq!(v["mcp"]["rule_id"], "mcp-gate");
    assert_eq!(v["default"]["decision"], "DECISION_TYPE_ALLOW");
    assert!(v["default"].get("rule_id").is_none());

    let ex = v["explain"]["reason"].as_str().unwrap();
    assert!(ex.contains("rules[0] deny-admin: MATCH"), "{ex}");

    assert_eq!(v["simulate"]["rule_id"], "open");
    assert!(
        v["simulate"]["policy_snapshot"]
            .as_str()
            .unwrap()
            .starts_with("candidate:cand@")
    );
    assert_eq!(v["bad_simulate"]["code"], "INVALID_ARGUMENT");
    assert!(
        v["bad_simulate"]["details"]
            .as_str()
            .unwrap()
            .contains("rules[0].nope")
    );

    assert_eq!(v["snapshots"], serde_json::json!([snapshot]));
}
