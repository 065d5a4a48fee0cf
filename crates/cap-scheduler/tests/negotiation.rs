//! Version negotiation in the scheduler core: the version a worker negotiated is
//! recorded, and a worker that shares none is refused — it gets no job, neither directly
//! (not even once its heartbeats come in) nor through a pool dispatched on its behalf
//! (the conformance kit's `negotiation/*` cases, control-plane side).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
// The refusal is what the kit's break build compiles out.
#![cfg(not(feature = "tck-break-version-refusal"))]

use cap_proto::{ErrorCode, JobState, v1};
use cap_scheduler::core::{Action, Config, Event, Pools, SchedulerCore};

const ALLOW: i32 = 1;

fn core(versions: Vec<i32>) -> SchedulerCore {
    let cfg = Config {
        supported_versions: versions,
        ..Config::default()
    };
    SchedulerCore::new("sched", cfg, Pools::default())
}

fn handshake(c: &mut SchedulerCore, id: &str, versions: Vec<i32>, topics: &[&str]) -> Vec<Action> {
    c.handle(
        Event::Handshake {
            handshake: v1::Handshake {
                component_id: id.into(),
                role: v1::ComponentRole::Worker as i32,
                supported_versions: versions,
                capabilities: [("gpu".to_string(), true)].into(),
                ready_topics: topics.iter().map(|t| t.to_string()).collect(),
                ..Default::default()
            },
        },
        0,
    )
}

fn run(c: &mut SchedulerCore, id: &str, topic: &str, requires: &[&str]) -> Vec<Action> {
    c.handle(
        Event::Submitted {
            request: v1::JobRequest {
                job_id: id.into(),
                topic: topic.into(),
                meta: Some(v1::JobMetadata {
                    requires: requires.iter().map(|r| r.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            trace_id: "t".into(),
            sender: "client".into(),
            identity: None,
        },
        0,
    );
    c.handle(
        Event::SafetyDecided {
            job_id: id.into(),
            response: v1::PolicyCheckResponse {
                decision: ALLOW,
                ..Default::default()
            },
        },
        0,
    )
}

fn subjects(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Dispatch { subject, .. } => Some(subject.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_highest_common_version_is_recorded() {
    let mut c = core(vec![1, 2, 3]);
    assert!(handshake(&mut c, "w", vec![2, 3], &["job.x"]).is_empty());
    assert_eq!(c.registry().get("w").unwrap().version, 3);
    assert_eq!(subjects(&run(&mut c, "j", "job.x", &[])), ["worker.w.jobs"]);
}

#[test]
fn a_worker_with_no_common_version_gets_no_job() {
    let mut c = core(vec![3]);
    let a = handshake(&mut c, "old", vec![1, 2], &["job.legacy"]);
    assert!(a.iter().any(
        |x| matches!(x, Action::Alert { alert } if alert.error_code_enum == ErrorCode::PROTOCOL_VERSION_MISMATCH.as_i32())
    ));
    // Its heartbeats (pool, capability) do not register it.
    c.handle(
        Event::Heartbeat {
            heartbeat: v1::Heartbeat {
                worker_id: "old".into(),
                pool: "legacy".into(),
                capabilities: vec!["gpu".into()],
                max_parallel_jobs: 4,
                ..Default::default()
            },
        },
        0,
    );
    assert!(c.registry().get("old").is_none());
    assert!(c.registry().is_refused("old"));
    // A job only it could run waits (and is never sent to it).
    assert!(subjects(&run(&mut c, "gpu", "job.legacy", &["gpu"])).is_empty());
    // A job on its topic is not sent to the pool on its behalf: it fails with 100.
    let a = run(&mut c, "topic", "job.legacy", &[]);
    assert!(subjects(&a).is_empty());
    let rec = c.job("topic").unwrap();
    assert_eq!(rec.state, JobState::Failed);
    assert_eq!(
        ErrorCode::of_result(rec.result.as_ref().unwrap()),
        ErrorCode::PROTOCOL_VERSION_MISMATCH
    );
    // Topics it does not claim still go to their pool.
    assert_eq!(
        subjects(&run(&mut c, "other", "job.other", &[])),
        ["job.other"]
    );
    // Once a worker that shares a version serves the topic, it gets such jobs.
    assert!(handshake(&mut c, "new", vec![3], &["job.legacy"]).is_empty());
    assert_eq!(
        subjects(&run(&mut c, "again", "job.legacy", &[])),
        ["worker.new.jobs"]
    );
    // And the refused worker, upgraded, negotiates and is registered again.
    assert!(handshake(&mut c, "old", vec![3], &["job.legacy"]).is_empty());
    assert!(!c.registry().is_refused("old"));
    assert_eq!(c.registry().get("old").unwrap().version, 3);
}
