//! The conformance kit catches a broken behaviour: in the `tck-break-version-refusal`
//! build the scheduler only forgets a worker that shares no protocol version (the
//! refusal is compiled out, see `cap_scheduler::core::Registry::refuse`), and the kit
//! must turn `negotiation/rejects-when-no-common-version` to FAIL — with evidence of the
//! dispatches it made on that worker's behalf — while the other negotiation cases still
//! PASS. Only compiled in that build: `.ci/run` runs it in its `--all-features` step
//! (`cargo test -p cap-cli --features tck-break-version-refusal --test tck_break --
//! --ignored` by hand).
#![cfg(feature = "tck-break-version-refusal")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    dead_code
)]

#[path = "../../../xtask/src/tck/runner/mod.rs"]
mod runner;

use runner::{Role, Status};
use std::path::PathBuf;

#[test]
#[ignore = "the tck-break-version-refusal build only: run by .ci/run with --all-features"]
fn the_kit_fails_a_scheduler_that_does_not_refuse_old_workers() {
    let suite =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tck/scenarios/core-negotiation.json");
    let scenarios = runner::load_suite(&std::fs::read_to_string(suite).unwrap()).unwrap();
    let argv = vec![
        env!("CARGO_BIN_EXE_cap").to_owned(),
        "tck-adapter".to_owned(),
        "--role".to_owned(),
        "control-plane".to_owned(),
    ];
    let run = runner::run_adapter(&argv, &scenarios, &["core".to_owned()]).unwrap();
    assert_eq!(run.handshake.role, Role::ControlPlane);
    for c in &run.cases {
        println!("{} {} — {} {:?}", c.status, c.id, c.detail, c.evidence);
    }
    let case = run
        .cases
        .iter()
        .find(|c| c.id == "negotiation/rejects-when-no-common-version")
        .unwrap();
    assert_eq!(case.status, Status::Fail);
    // Why, from the run: its heartbeat registered it again and jobs went its way.
    assert_eq!(case.evidence["registeredAfterHeartbeat"], "true");
    assert_ne!(case.evidence["dispatchesToWorker"], "0");
    assert_eq!(case.evidence["topicJobDispatches"], "job.tck");
    assert!(case.detail.contains("its heartbeats do not register it"));
    // The handshake itself is still refused with an alert: the kit saw past it.
    assert_eq!(
        case.evidence["handshakeAlerts"],
        "ERROR_CODE_PROTOCOL_VERSION_MISMATCH"
    );
    let others: Vec<_> = run.cases.iter().filter(|c| c.id != case.id).collect();
    assert_eq!(others.len(), 4);
    assert!(
        others.iter().all(|c| c.status == Status::Pass),
        "{others:?}"
    );
    assert!(!runner::summarize(&run, "core").conformant);
}
