//! The CAP conformance kit over the vendored suites (`tck/scenarios`), run by the same
//! adapter-v1 runner `cargo xtask tck` uses (`xtask/src/tck/runner/`, included as it
//! is) against this build's `cap tck-adapter`, both roles: every `core` and every
//! `cap-production` case PASSes, each with evidence.
//!
//! Built with `tck-break-version-refusal` (a scheduler that only forgets workers sharing
//! no protocol version), the kit must FAIL exactly the case that checks it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    dead_code
)]

#[path = "../../../xtask/src/tck/runner/mod.rs"]
mod runner;

use runner::{Role, Run, Scenario, Status};
use std::path::PathBuf;

/// The cases this build breaks on purpose (none, normally).
const BROKEN: &[&str] = if cfg!(feature = "tck-break-version-refusal") {
    &["negotiation/rejects-when-no-common-version"]
} else {
    &[]
};

fn tck_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tck")
}

fn scenarios() -> Vec<Scenario> {
    runner::load_dir(&tck_dir().join("scenarios")).unwrap()
}

fn run(role: Role, scenarios: &[Scenario]) -> Run {
    let argv = vec![
        env!("CARGO_BIN_EXE_cap").to_owned(),
        "tck-adapter".to_owned(),
        "--role".to_owned(),
        role.as_str().to_owned(),
    ];
    let profiles = vec!["core".to_owned(), "cap-production".to_owned()];
    runner::run_adapter(&argv, scenarios, &profiles).unwrap()
}

fn print(run: &Run) {
    for c in run.cases.iter().filter(|c| c.applicable) {
        println!(
            "{:<11} {:<15} {} — {}",
            c.status.as_str(),
            c.profile,
            c.id,
            c.detail
        );
    }
}

fn check_role(role: Role) {
    let all = scenarios();
    let run = run(role, &all);
    print(&run);
    assert!(run.violations.is_empty(), "{:?}", run.violations);
    let hs = &run.handshake;
    assert_eq!(hs.role, role);
    assert_eq!(hs.protocol_version, 1);
    assert_eq!(hs.profiles, ["core", "cap-production"]);
    assert!(hs.sdk.starts_with("cap-rs/"), "{}", hs.sdk);
    assert_eq!(hs.transport, "memory");
    assert!(!hs.features.is_empty());
    let mine: Vec<_> = run.cases.iter().filter(|c| c.applicable).collect();
    assert_eq!(
        mine.len(),
        all.iter().filter(|s| s.role == role).count(),
        "every case of the role was sent"
    );
    for c in &mine {
        assert!(
            c.evidence.get("checks").is_some_and(|n| n != "0"),
            "{}: no evidence of checks ({:?})",
            c.id,
            c.evidence
        );
        assert!(c.evidence.len() > 1, "{}: evidence {:?}", c.id, c.evidence);
        match c.profile.as_str() {
            "core" if BROKEN.contains(&c.id.as_str()) => {
                assert_eq!(c.status, Status::Fail, "{} must FAIL in this build", c.id)
            }
            _ => assert_eq!(c.status, Status::Pass, "{}: {}", c.id, c.detail),
        }
    }
    let core_broken = mine.iter().any(|c| BROKEN.contains(&c.id.as_str()));
    assert_eq!(runner::summarize(&run, "core").conformant, !core_broken);
}

#[test]
fn the_worker_passes_every_core_case() {
    check_role(Role::Worker);
}

#[test]
fn the_control_plane_passes_every_core_case_and_fences_every_production_one() {
    check_role(Role::ControlPlane);
    // The scheduler side of CAP-PRODUCTION (dispatch fencing) is implemented.
    let all = scenarios();
    let prod: Vec<Scenario> = all
        .into_iter()
        .filter(|s| s.profile == "cap-production")
        .collect();
    let run = run(Role::ControlPlane, &prod);
    let s = runner::summarize(&run, "cap-production");
    assert!(s.conformant, "{s:?}");
    assert_eq!(s.pass, 4);
}

#[test]
fn the_coverage_index_names_only_vendored_cases() {
    let ids: Vec<String> = scenarios().into_iter().map(|s| s.id).collect();
    let text = std::fs::read_to_string(tck_dir().join("coverage.json")).unwrap();
    let cov: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut named = 0;
    for b in cov["behaviors"].as_array().unwrap() {
        for c in b["cases"].as_array().unwrap() {
            assert!(ids.contains(&c.as_str().unwrap().to_owned()), "{c}");
            named += 1;
        }
    }
    assert!(named >= 40);
}
