//! CAP-PRODUCTION dispatch fencing in the scheduler core: every dispatch carries a fresh
//! DispatchIdentity, and results, progress and cancels are applied only for the attempt
//! in flight (the control-plane cases of the conformance kit's `duplicates/*` and
//! `retries/*`, and the zombie attempt of a timed-out job).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_proto::{JobState, v1};
use cap_scheduler::core::{Action, Config, Event, Fence, Hold, Pools, SchedulerCore};
use std::time::Duration;

const ALLOW: i32 = 1;

fn core() -> SchedulerCore {
    let cfg = Config {
        dispatch_timeout: Duration::from_millis(100),
        max_retries: 3,
        ..Config::default()
    };
    SchedulerCore::new("sched", cfg, Pools::default())
}

fn submit_and_allow(c: &mut SchedulerCore, id: &str) -> Vec<Action> {
    c.handle(
        Event::Submitted {
            request: v1::JobRequest {
                job_id: id.into(),
                topic: "job.x".into(),
                context_ptr: format!("redis://ctx:{id}"),
                ..Default::default()
            },
            trace_id: "trace".into(),
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

fn dispatched(actions: &[Action]) -> Vec<v1::DispatchIdentity> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Dispatch { request, .. } => request.dispatch.clone(),
            _ => None,
        })
        .collect()
}

fn result(
    id: &str,
    status: JobState,
    worker: &str,
    dispatch: Option<v1::DispatchIdentity>,
) -> Event {
    Event::Result {
        result: v1::JobResult {
            job_id: id.into(),
            status: status.status() as i32,
            worker_id: worker.into(),
            dispatch,
            ..Default::default()
        },
    }
}

fn fenced(actions: &[Action]) -> Vec<(&'static str, Fence)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Fenced { what, fence, .. } => Some((*what, *fence)),
            _ => None,
        })
        .collect()
}

fn state(c: &SchedulerCore, id: &str) -> JobState {
    c.job(id).unwrap().state
}

/// Dispatches `id`, fails attempt 1 retryably and dispatches attempt 2; returns both
/// identities.
fn two_attempts(c: &mut SchedulerCore, id: &str) -> (v1::DispatchIdentity, v1::DispatchIdentity) {
    let first = dispatched(&submit_and_allow(c, id)).remove(0);
    c.handle(
        result(id, JobState::FailedRetryable, "w1", Some(first.clone())),
        1,
    );
    let Some(Hold::Retry { at }) = c.job(id).unwrap().hold.clone() else {
        panic!("retry expected")
    };
    let second = dispatched(&c.handle(Event::Tick, at)).remove(0);
    (first, second)
}

#[test]
fn every_dispatch_carries_a_fresh_identity_and_the_next_attempt() {
    let mut n = 0;
    let mut c = core().with_ids(move || {
        n += 1;
        format!("unpredictable-{n}")
    });
    let (first, second) = two_attempts(&mut c, "j");
    assert_eq!(first.attempt, 1);
    assert_eq!(second.attempt, 2);
    assert_eq!(first.dispatch_id, "unpredictable-1");
    assert_eq!(second.dispatch_id, "unpredictable-2");
    // A pool dispatch names no worker: any worker of the pool may take it.
    assert_eq!(first.assigned_worker_id, "");
    let rec = c.job("j").unwrap();
    assert_eq!(
        rec.dispatch.as_ref().unwrap().dispatch_id,
        "unpredictable-2"
    );
}

#[test]
fn a_duplicate_result_of_the_same_attempt_applies_once() {
    let mut c = core();
    let d = dispatched(&submit_and_allow(&mut c, "j")).remove(0);
    let first = c.handle(result("j", JobState::Succeeded, "w1", Some(d.clone())), 1);
    assert!(first.iter().any(|a| matches!(
        a,
        Action::Transition {
            state: JobState::Succeeded,
            ..
        }
    )));
    let again = c.handle(result("j", JobState::Succeeded, "w1", Some(d)), 2);
    assert!(
        again.is_empty(),
        "the redelivered result changes nothing: {again:?}"
    );
    assert_eq!(state(&c, "j"), JobState::Succeeded);
}

#[test]
fn reports_of_a_stale_attempt_are_dropped() {
    let mut c = core();
    let (first, second) = two_attempts(&mut c, "j");
    assert_eq!(state(&c, "j"), JobState::Dispatched);

    // A late SUCCEEDED from attempt 1 does not end attempt 2's job.
    let a = c.handle(
        result("j", JobState::Succeeded, "w1", Some(first.clone())),
        10,
    );
    assert_eq!(fenced(&a), [("result", Fence::Stale)]);
    assert_eq!(state(&c, "j"), JobState::Dispatched);

    // Stale progress does not move it to RUNNING.
    let a = c.handle(
        Event::Progress {
            progress: v1::JobProgress {
                job_id: "j".into(),
                status: JobState::Running.status() as i32,
                dispatch: Some(first.clone()),
                ..Default::default()
            },
            sender: "w1".into(),
        },
        11,
    );
    assert_eq!(fenced(&a), [("progress", Fence::Stale)]);
    assert_eq!(state(&c, "j"), JobState::Dispatched);

    // A stale cancel does not cancel the new attempt.
    let a = c.handle(
        Event::Cancel {
            cancel: v1::JobCancel {
                job_id: "j".into(),
                requested_by: "someone".into(),
                dispatch: Some(first),
                ..Default::default()
            },
        },
        12,
    );
    assert_eq!(fenced(&a), [("cancel", Fence::Stale)]);
    assert_eq!(state(&c, "j"), JobState::Dispatched);

    // A future attempt, and the right attempt with another dispatch id, are dropped too.
    let mut future = second.clone();
    future.attempt = 9;
    let a = c.handle(result("j", JobState::Succeeded, "w1", Some(future)), 13);
    assert_eq!(fenced(&a), [("result", Fence::Future)]);
    let mut foreign = second.clone();
    foreign.dispatch_id = "forged".into();
    let a = c.handle(result("j", JobState::Succeeded, "w1", Some(foreign)), 14);
    assert_eq!(fenced(&a), [("result", Fence::Foreign)]);

    // The attempt in flight is applied.
    let a = c.handle(result("j", JobState::Succeeded, "w2", Some(second)), 15);
    assert!(fenced(&a).is_empty());
    assert_eq!(state(&c, "j"), JobState::Succeeded);
}

#[test]
fn a_cancel_aimed_at_the_attempt_in_flight_cancels_it() {
    let mut c = core();
    let (_, second) = two_attempts(&mut c, "j");
    let a = c.handle(
        Event::Cancel {
            cancel: v1::JobCancel {
                job_id: "j".into(),
                requested_by: "alice".into(),
                dispatch: Some(second.clone()),
                ..Default::default()
            },
        },
        20,
    );
    assert_eq!(state(&c, "j"), JobState::Cancelled);
    // The workers are told to stop exactly that attempt, and its dispatch is withdrawn.
    let forwarded: Vec<_> = a
        .iter()
        .filter_map(|x| match x {
            Action::ForwardCancel { cancel, .. } => cancel.dispatch.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(forwarded, std::slice::from_ref(&second));
    assert!(a.iter().any(
        |x| matches!(x, Action::Withdraw { dispatch_id, .. } if *dispatch_id == second.dispatch_id)
    ));
}

#[test]
fn a_timed_out_attempt_is_fenced_and_withdrawn() {
    let mut c = core();
    let d = dispatched(&submit_and_allow(&mut c, "z")).remove(0);
    // Nobody takes the job: it times out.
    let a = c.handle(Event::Tick, 100);
    assert_eq!(state(&c, "z"), JobState::Timeout);
    let cancel = a
        .iter()
        .find_map(|x| match x {
            Action::ForwardCancel { cancel, .. } => Some(cancel.clone()),
            _ => None,
        })
        .expect("a cancel for the attempt");
    assert_eq!(cancel.dispatch.as_ref(), Some(&d));
    assert!(a.iter().any(
        |x| matches!(x, Action::Withdraw { job_id, dispatch_id } if job_id == "z" && *dispatch_id == d.dispatch_id)
    ));
    // A worker that started it late anyway: its progress and result are refused, and the
    // TIMEOUT stands.
    let a = c.handle(
        Event::Progress {
            progress: v1::JobProgress {
                job_id: "z".into(),
                dispatch: Some(d.clone()),
                ..Default::default()
            },
            sender: "late".into(),
        },
        27_000,
    );
    assert_eq!(fenced(&a), [("progress", Fence::Inactive)]);
    let a = c.handle(result("z", JobState::Succeeded, "late", Some(d)), 27_001);
    assert_eq!(fenced(&a), [("result", Fence::Inactive)]);
    assert_eq!(state(&c, "z"), JobState::Timeout);
    assert_eq!(
        c.job("z").unwrap().result.as_ref().unwrap().status,
        JobState::Timeout.status() as i32
    );
}

#[test]
fn legacy_reports_are_matched_by_sender_while_the_attempt_is_in_flight() {
    let mut c = core();
    submit_and_allow(&mut c, "l");
    // A peer older than 2.17 sends no DispatchIdentity: the first worker to report takes
    // the pool dispatch; another worker's report is foreign.
    let a = c.handle(
        Event::Progress {
            progress: v1::JobProgress {
                job_id: "l".into(),
                ..Default::default()
            },
            sender: "w1".into(),
        },
        1,
    );
    assert!(fenced(&a).is_empty());
    assert_eq!(state(&c, "l"), JobState::Running);
    let a = c.handle(result("l", JobState::Succeeded, "w2", None), 2);
    assert_eq!(fenced(&a), [("result", Fence::Foreign)]);
    assert_eq!(state(&c, "l"), JobState::Running);
    c.handle(result("l", JobState::Succeeded, "w1", None), 3);
    assert_eq!(state(&c, "l"), JobState::Succeeded);
    // After the end, a legacy result has no attempt to belong to.
    let a = c.handle(result("l", JobState::Failed, "w1", None), 4);
    assert_eq!(fenced(&a), [("result", Fence::Inactive)]);
}

#[test]
fn a_direct_dispatch_names_its_worker_and_only_that_worker_may_report() {
    let mut c = core();
    c.handle(
        Event::Handshake {
            handshake: v1::Handshake {
                component_id: "w7".into(),
                role: v1::ComponentRole::Worker as i32,
                supported_versions: vec![1],
                ready_topics: vec!["job.x".into()],
                ..Default::default()
            },
        },
        0,
    );
    let d = dispatched(&submit_and_allow(&mut c, "d")).remove(0);
    assert_eq!(d.assigned_worker_id, "w7");
    let a = c.handle(result("d", JobState::Succeeded, "w8", Some(d.clone())), 1);
    assert_eq!(fenced(&a), [("result", Fence::Foreign)]);
    c.handle(result("d", JobState::Succeeded, "w7", Some(d)), 2);
    assert_eq!(state(&c, "d"), JobState::Succeeded);
}

#[test]
fn the_start_report_of_the_attempt_that_ended_the_job_arriving_after_its_result_is_quiet() {
    // Progress and results travel on different subjects: a worker's "started" report may
    // arrive after its own result. It is the attempt that ended the job, not a zombie.
    let mut c = core();
    let d = dispatched(&submit_and_allow(&mut c, "q")).remove(0);
    c.handle(result("q", JobState::Succeeded, "w1", Some(d.clone())), 1);
    assert_eq!(state(&c, "q"), JobState::Succeeded);
    let late = |dispatch: v1::DispatchIdentity| Event::Progress {
        progress: v1::JobProgress {
            job_id: "q".into(),
            status: JobState::Running.status() as i32,
            dispatch: Some(dispatch),
            ..Default::default()
        },
        sender: "w1".into(),
    };
    let a = c.handle(late(d.clone()), 2);
    assert!(fenced(&a).is_empty(), "{a:?}");
    assert!(a.is_empty(), "nothing at all: {a:?}");
    // Another dispatch id for that attempt is still refused.
    let other = v1::DispatchIdentity {
        dispatch_id: "forged".into(),
        ..d
    };
    assert_eq!(
        fenced(&c.handle(late(other), 3)),
        [("progress", Fence::Inactive)]
    );
    assert_eq!(state(&c, "q"), JobState::Succeeded);
}

#[test]
fn a_pool_dispatch_redelivered_to_another_worker_is_finished_by_it() {
    // Worker w1 takes the pool dispatch, starts, and dies; JetStream gives the same
    // dispatch to w2, which starts it and finishes it.
    let mut c = core();
    let d = dispatched(&submit_and_allow(&mut c, "p")).remove(0);
    let start = |worker: &str, dispatch: Option<v1::DispatchIdentity>| Event::Progress {
        progress: v1::JobProgress {
            job_id: "p".into(),
            status: JobState::Running.status() as i32,
            dispatch,
            ..Default::default()
        },
        sender: worker.into(),
    };
    assert!(fenced(&c.handle(start("w1", Some(d.clone())), 1)).is_empty());
    assert!(fenced(&c.handle(start("w2", Some(d.clone())), 2)).is_empty());
    let a = c.handle(result("p", JobState::Succeeded, "w2", Some(d.clone())), 3);
    assert!(fenced(&a).is_empty(), "{a:?}");
    assert_eq!(state(&c, "p"), JobState::Succeeded);
    assert_eq!(c.job("p").unwrap().worker_id, "w2");

    // The same with peers older than 2.17 (no identity): w2's start takes the attempt
    // over, so w1's late result is foreign.
    let mut c = core();
    submit_and_allow(&mut c, "q");
    let legacy_start = |worker: &str| Event::Progress {
        progress: v1::JobProgress {
            job_id: "q".into(),
            status: JobState::Running.status() as i32,
            ..Default::default()
        },
        sender: worker.into(),
    };
    c.handle(legacy_start("w1"), 1);
    assert!(fenced(&c.handle(legacy_start("w2"), 2)).is_empty());
    let a = c.handle(result("q", JobState::Succeeded, "w1", None), 3);
    assert_eq!(fenced(&a), [("result", Fence::Foreign)]);
    c.handle(result("q", JobState::Succeeded, "w2", None), 4);
    assert_eq!(state(&c, "q"), JobState::Succeeded);
}
