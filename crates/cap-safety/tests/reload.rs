//! Hot reload: good and bad reloads, file watching, SIGHUP, snapshot history, and the
//! decision cache never serving across snapshots.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use cap_safety::reload::{self, ReloadOptions};
use cap_safety::{Decision, ErrorKind, Kernel, KernelOptions, Policy, ReloadOutcome, decision_of};
use common::req;
use std::time::{Duration, Instant};

fn policy_text(version: u32, decision: &str) -> String {
    format!(
        "version: {version}\nrules:\n  - id: r{version}\n    match: {{ topics: [\"job.*\"] }}\n    decision: {decision}\n"
    )
}

fn write(path: &std::path::Path, text: &str) {
    // Write-then-rename, as deployment tools do, so a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_good_reload_swaps_the_snapshot_and_a_bad_one_keeps_the_running_policy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    write(&path, &policy_text(1, "allow"));
    let k = Kernel::from_file(&path, KernelOptions::default()).unwrap();
    let first = k.snapshot().id().to_owned();
    assert!(first.starts_with("1@sha256:"), "{first}");
    let r = req("job.x").build();
    assert_eq!(decision_of(&k.check(&r)), Decision::Allow);

    // Unchanged content: nothing happens.
    assert!(matches!(k.reload().unwrap(), ReloadOutcome::Unchanged));

    write(&path, &policy_text(2, "deny"));
    let ReloadOutcome::Loaded(s) = k.reload().unwrap() else {
        panic!("not reloaded")
    };
    assert!(s.id().starts_with("2@sha256:"));
    let resp = k.check(&r);
    assert_eq!(
        (decision_of(&resp), resp.rule_id.as_str()),
        (Decision::Deny, "r2")
    );
    assert_eq!(resp.policy_snapshot, s.id());

    // Invalid file: the error says why, and the running policy stays.
    write(&path, "rules:\n  - id: r\n    decision: sometimes\n");
    let e = k.reload().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidPolicy);
    assert_eq!(e.policy().unwrap().path, "rules[0].decision");
    assert_eq!(k.snapshot().id(), s.id());
    assert_eq!(decision_of(&k.check(&r)), Decision::Deny);

    // Missing file: same.
    std::fs::remove_file(&path).unwrap();
    assert_eq!(k.reload().unwrap_err().kind(), ErrorKind::Io);
    assert_eq!(k.snapshot().id(), s.id());

    assert_eq!(k.snapshots(), vec![s.id().to_owned(), first]);
}

#[test]
fn the_cache_never_serves_a_decision_from_another_snapshot() {
    let k = Kernel::from_text(&policy_text(1, "allow"), "mem", KernelOptions::default()).unwrap();
    let r = req("job.cached").build();
    assert_eq!(decision_of(&k.check(&r)), Decision::Allow);
    assert_eq!(decision_of(&k.check(&r)), Decision::Allow);
    assert_eq!(
        k.cached_decisions(),
        1,
        "identical requests share one entry"
    );

    let text = policy_text(2, "throttle");
    let p = Policy::from_text(&text, "mem").unwrap();
    assert!(k.install(p, text.as_bytes(), "mem").is_some());
    assert_eq!(
        k.cached_decisions(),
        0,
        "installing a snapshot empties the cache"
    );
    let resp = k.check(&r);
    assert_eq!(
        (decision_of(&resp), resp.rule_id.as_str()),
        (Decision::Throttle, "r2")
    );
    assert!(resp.policy_snapshot.starts_with("2@"));
}

#[test]
fn a_disabled_cache_stores_nothing_and_an_expired_entry_is_recomputed() {
    let off = KernelOptions {
        cache_ttl: Duration::ZERO,
        ..KernelOptions::default()
    };
    let k = Kernel::from_text(&policy_text(1, "allow"), "mem", off).unwrap();
    k.check(&req("job.x").build());
    assert_eq!(k.cached_decisions(), 0);

    let short = KernelOptions {
        cache_ttl: Duration::from_millis(5),
        ..KernelOptions::default()
    };
    let k = Kernel::from_text(&policy_text(1, "allow"), "mem", short).unwrap();
    let r = req("job.x").build();
    k.check(&r);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(decision_of(&k.check(&r)), Decision::Allow);
}

#[test]
fn snapshot_history_is_bounded_and_newest_first() {
    let opts = KernelOptions {
        history: 3,
        ..KernelOptions::default()
    };
    let k = Kernel::from_text(&policy_text(0, "allow"), "mem", opts).unwrap();
    let mut ids = vec![k.snapshot().id().to_owned()];
    for v in 1..=5 {
        let text = policy_text(v, "allow");
        let s = k
            .install(
                Policy::from_text(&text, "mem").unwrap(),
                text.as_bytes(),
                "mem",
            )
            .unwrap();
        ids.push(s.id().to_owned());
        assert_eq!(s.seq(), u64::from(v));
    }
    ids.reverse();
    ids.truncate(3);
    assert_eq!(k.snapshots(), ids);
    // Re-installing an older policy makes it newest again, without duplicates.
    let text = policy_text(4, "allow");
    let s = k
        .install(
            Policy::from_text(&text, "mem").unwrap(),
            text.as_bytes(),
            "mem",
        )
        .unwrap();
    assert_eq!(k.snapshots()[0], s.id());
    assert_eq!(k.snapshots().len(), 3);
    assert_eq!(k.snapshots().iter().filter(|i| **i == s.id()).count(), 1);
}

#[tokio::test]
async fn the_watcher_reloads_changed_files_and_survives_bad_edits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    write(&path, &policy_text(1, "allow"));
    let k = Kernel::from_file(&path, KernelOptions::default()).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = reload::spawn(
        k.clone(),
        ReloadOptions {
            poll_interval: Some(Duration::from_millis(20)),
            sighup: false,
        },
        stopped,
    );

    write(&path, &policy_text(2, "deny"));
    wait_for("reload of v2", || k.snapshot().id().starts_with("2@")).await;

    write(&path, "rules: [oops\n");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(k.snapshot().id().starts_with("2@"), "a bad edit keeps v2");

    write(
        &path,
        &format!("{}# longer file\n", policy_text(3, "throttle")),
    );
    wait_for("reload of v3", || k.snapshot().id().starts_with("3@")).await;
    assert_eq!(
        decision_of(&k.check(&req("job.x").build())),
        Decision::Throttle
    );

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_policy_file() {
    use tokio::signal::unix::{SignalKind, signal};
    // Install a SIGHUP handler for this process first, so the signal can never fall back
    // to its default action (terminate) while the watcher starts.
    let _guard = signal(SignalKind::hangup()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    write(&path, &policy_text(1, "allow"));
    let k = Kernel::from_file(&path, KernelOptions::default()).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = reload::spawn(
        k.clone(),
        ReloadOptions {
            poll_interval: None,
            sighup: true,
        },
        stopped,
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    write(&path, &policy_text(2, "deny"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        k.snapshot().id().starts_with("1@"),
        "no polling: nothing until SIGHUP"
    );
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for("reload on SIGHUP", || k.snapshot().id().starts_with("2@")).await;

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}
