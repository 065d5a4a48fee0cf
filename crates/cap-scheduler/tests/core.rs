//! Every decision path of the scheduler core, step by step on a virtual clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_proto::{ErrorCode, JobState, v1};
use cap_scheduler::core::{Action, Config, Event, Fence, Hold, Pools, SchedulerCore};
use std::time::Duration;

fn core() -> SchedulerCore {
    SchedulerCore::new("sched", Config::default(), Pools::default())
}

fn req(id: &str, topic: &str) -> v1::JobRequest {
    v1::JobRequest {
        job_id: id.into(),
        topic: topic.into(),
        context_ptr: format!("redis://ctx:{id}"),
        ..Default::default()
    }
}

fn submit(c: &mut SchedulerCore, r: v1::JobRequest, now: u64) -> Vec<Action> {
    c.handle(
        Event::Submitted {
            request: r,
            trace_id: "trace".into(),
            sender: "client".into(),
            identity: None,
        },
        now,
    )
}

fn decide(c: &mut SchedulerCore, id: &str, decision: i32, now: u64) -> Vec<Action> {
    let response = v1::PolicyCheckResponse {
        decision,
        reason: format!("decision {decision}"),
        ..Default::default()
    };
    c.handle(
        Event::SafetyDecided {
            job_id: id.into(),
            response,
        },
        now,
    )
}

fn result(c: &mut SchedulerCore, id: &str, status: JobState, now: u64) -> Vec<Action> {
    let result = v1::JobResult {
        job_id: id.into(),
        status: status.status() as i32,
        worker_id: "w1".into(),
        ..Default::default()
    };
    c.handle(Event::Result { result }, now)
}

fn dispatched_to(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::Dispatch { subject, .. } = a {
                Some(subject.clone())
            } else {
                None
            }
        })
        .collect()
}

fn published(actions: &[Action]) -> Vec<v1::JobResult> {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::PublishResult { result, .. } = a {
                Some((**result).clone())
            } else {
                None
            }
        })
        .collect()
}

fn state(c: &SchedulerCore, id: &str) -> JobState {
    c.job(id).unwrap().state
}

fn history(c: &SchedulerCore, id: &str) -> Vec<String> {
    c.job(id)
        .unwrap()
        .history
        .iter()
        .map(|(_, s)| s.clone())
        .collect()
}

const ALLOW: i32 = 1;
const DENY: i32 = 2;
const REQUIRE_HUMAN: i32 = 3;
const THROTTLE: i32 = 4;

#[test]
fn happy_path_submit_check_dispatch_succeed() {
    let mut c = core();
    let a = submit(&mut c, req("j1", "job.echo"), 0);
    assert!(
        a.iter().any(
            |x| matches!(x, Action::CheckSafety { request, .. } if request.topic == "job.echo")
        )
    );
    assert_eq!(state(&c, "j1"), JobState::Scheduled);
    let a = decide(&mut c, "j1", ALLOW, 1);
    assert_eq!(dispatched_to(&a), ["job.echo"]);
    let a = result(&mut c, "j1", JobState::Succeeded, 2);
    assert!(
        published(&a).is_empty(),
        "the worker's own result reaches the client"
    );
    assert_eq!(
        history(&c, "j1"),
        ["PENDING", "SCHEDULED", "DISPATCHED", "RUNNING", "SUCCEEDED"]
    );
    assert_eq!(c.job("j1").unwrap().worker_id, "w1");
}

#[test]
fn deny_publishes_a_denied_result_with_300() {
    let mut c = core();
    submit(&mut c, req("j", "job.x"), 0);
    let a = decide(&mut c, "j", DENY, 1);
    assert!(dispatched_to(&a).is_empty());
    let r = &published(&a)[0];
    assert_eq!(r.status, JobState::Denied.status() as i32);
    assert_eq!(r.error_code_enum, ErrorCode::SAFETY_DENIED.as_i32());
    assert_eq!(r.error_message, "decision 2");
    // Unknown decisions and QUARANTINE also deny.
    for (id, d) in [("u", 0), ("q", 6), ("x", 42)] {
        submit(&mut c, req(id, "job.x"), 0);
        decide(&mut c, id, d, 1);
        assert_eq!(state(&c, id), JobState::Denied, "decision {d}");
    }
}

#[test]
fn require_human_waits_for_approval_or_rejection() {
    let mut c = core();
    submit(&mut c, req("a", "job.x"), 0);
    submit(&mut c, req("b", "job.x"), 0);
    let actions = decide(&mut c, "a", REQUIRE_HUMAN, 1);
    assert!(actions.iter().any(|x| matches!(x, Action::Alert { .. })));
    decide(&mut c, "b", REQUIRE_HUMAN, 1);
    assert_eq!(
        c.job("a").unwrap().hold,
        Some(Hold::Approval {
            approval_ref: "a".into()
        })
    );
    assert!(
        dispatched_to(&c.handle(Event::Tick, 100_000)).is_empty(),
        "held jobs do not time out or move"
    );
    let a = c.handle(Event::Approved { job_id: "a".into() }, 2);
    assert_eq!(dispatched_to(&a), ["job.x"]);
    let a = c.handle(
        Event::Rejected {
            job_id: "b".into(),
            reason: "no".into(),
        },
        2,
    );
    assert_eq!(published(&a)[0].status, JobState::Denied.status() as i32);
    assert!(published(&a)[0].error_message.contains("no"));
    // Approving something not held does nothing.
    assert!(
        c.handle(Event::Approved { job_id: "b".into() }, 3)
            .is_empty()
    );
}

#[test]
fn throttle_rechecks_later_with_backoff() {
    let mut c = core();
    submit(&mut c, req("t", "job.x"), 0);
    decide(&mut c, "t", THROTTLE, 0);
    let Some(Hold::Recheck { at }) = c.job("t").unwrap().hold.clone() else {
        panic!()
    };
    assert!(at > 0);
    assert!(
        c.handle(Event::Tick, at - 1)
            .iter()
            .all(|a| !matches!(a, Action::CheckSafety { .. }))
    );
    assert!(
        c.handle(Event::Tick, at)
            .iter()
            .any(|a| matches!(a, Action::CheckSafety { .. }))
    );
    assert_eq!(
        dispatched_to(&decide(&mut c, "t", ALLOW, at + 1)),
        ["job.x"]
    );
}

#[test]
fn unreachable_kernel_fails_closed_after_the_attempts() {
    let mut c = core();
    submit(&mut c, req("k", "job.x"), 0);
    let mut now = 0;
    for i in 1..Config::default().safety_attempts {
        c.handle(
            Event::SafetyUnavailable {
                job_id: "k".into(),
                error: "down".into(),
            },
            now,
        );
        let Some(Hold::Recheck { at }) = c.job("k").unwrap().hold.clone() else {
            panic!("attempt {i}")
        };
        now = at;
        assert!(
            c.handle(Event::Tick, now)
                .iter()
                .any(|a| matches!(a, Action::CheckSafety { .. }))
        );
    }
    let a = c.handle(
        Event::SafetyUnavailable {
            job_id: "k".into(),
            error: "down".into(),
        },
        now,
    );
    assert_eq!(state(&c, "k"), JobState::Denied);
    assert!(published(&a)[0].error_message.contains("fail closed"));
}

#[test]
fn retryable_failures_are_redispatched_then_dead_lettered() {
    let mut c = core(); // max_retries 3
    submit(&mut c, req("r", "job.x"), 0);
    decide(&mut c, "r", ALLOW, 0);
    let mut now = 10;
    for attempt in 1..=3 {
        result(&mut c, "r", JobState::FailedRetryable, now);
        assert_eq!(state(&c, "r"), JobState::FailedRetryable);
        let Some(Hold::Retry { at }) = c.job("r").unwrap().hold.clone() else {
            panic!()
        };
        assert!(dispatched_to(&c.handle(Event::Tick, at - 1)).is_empty());
        assert_eq!(
            dispatched_to(&c.handle(Event::Tick, at)),
            ["job.x"],
            "retry {attempt}"
        );
        assert_eq!(c.job("r").unwrap().attempts, attempt + 1);
        now = at + 10;
    }
    let a = result(&mut c, "r", JobState::FailedRetryable, now);
    assert_eq!(state(&c, "r"), JobState::Failed);
    assert!(a.iter().any(|x| matches!(x, Action::DeadLetter { .. })));
    assert!(
        a.iter().any(
            |x| matches!(x, Action::Alert { alert } if alert.message.contains("dead-lettered"))
        )
    );
    let last = &published(&a)[0];
    assert_eq!(last.status, JobState::Failed.status() as i32);
    assert!(
        last.error_message
            .contains("retries exhausted (4 attempts)")
    );
}

#[test]
fn policy_constraints_set_retries_and_deadline() {
    let mut c = core();
    submit(&mut c, req("p", "job.x"), 0);
    let response = v1::PolicyCheckResponse {
        decision: 5,
        constraints: Some(v1::PolicyConstraints {
            budgets: Some(v1::BudgetConstraints {
                max_retries: 1,
                max_runtime_ms: 500,
                ..Default::default()
            }),
            ..Default::default()
        }),
        redacted_context_ptr: "redis://ctx:redacted".into(),
        ..Default::default()
    };
    let a = c.handle(
        Event::SafetyDecided {
            job_id: "p".into(),
            response,
        },
        0,
    );
    let Some(Action::Dispatch { request, .. }) =
        a.iter().find(|x| matches!(x, Action::Dispatch { .. }))
    else {
        panic!()
    };
    assert_eq!(request.context_ptr, "redis://ctx:redacted");
    assert_eq!(request.budget.unwrap().deadline_ms, 500);
    c.handle(
        Event::Progress {
            progress: v1::JobProgress {
                job_id: "p".into(),
                percent: 1,
                ..Default::default()
            },
            sender: "w1".into(),
        },
        10,
    );
    assert_eq!(state(&c, "p"), JobState::Running);
    let a = c.handle(Event::Tick, 509);
    assert!(published(&a).is_empty());
    let a = c.handle(Event::Tick, 510);
    assert_eq!(published(&a)[0].status, JobState::Timeout.status() as i32);
    // One retry allowed: a second retryable failure dead-letters.
    let mut c = core();
    submit(&mut c, req("q", "job.x"), 0);
    let response = v1::PolicyCheckResponse {
        decision: 5,
        constraints: Some(v1::PolicyConstraints {
            budgets: Some(v1::BudgetConstraints {
                max_retries: 1,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    c.handle(
        Event::SafetyDecided {
            job_id: "q".into(),
            response,
        },
        0,
    );
    result(&mut c, "q", JobState::FailedRetryable, 1);
    let Some(Hold::Retry { at }) = c.job("q").unwrap().hold.clone() else {
        panic!()
    };
    c.handle(Event::Tick, at);
    let a = result(&mut c, "q", JobState::FailedRetryable, at + 1);
    assert!(a.iter().any(|x| matches!(x, Action::DeadLetter { .. })));
}

#[test]
fn reconciler_times_out_unstarted_and_overrunning_jobs() {
    let cfg = Config {
        dispatch_timeout: Duration::from_millis(100),
        run_timeout: Duration::from_millis(1000),
        ..Config::default()
    };
    let mut c = SchedulerCore::new("sched", cfg, Pools::default());
    submit(&mut c, req("d", "job.x"), 0);
    decide(&mut c, "d", ALLOW, 0);
    submit(&mut c, req("r", "job.x"), 0);
    decide(&mut c, "r", ALLOW, 0);
    c.handle(
        Event::Progress {
            progress: v1::JobProgress {
                job_id: "r".into(),
                status: 4,
                ..Default::default()
            },
            sender: "w1".into(),
        },
        50,
    );
    let a = c.handle(Event::Tick, 100);
    assert_eq!(state(&c, "d"), JobState::Timeout);
    let publish_at = a
        .iter()
        .position(|x| matches!(x, Action::PublishResult { .. }))
        .unwrap();
    let cancel_at = a
        .iter()
        .position(|x| matches!(x, Action::ForwardCancel { .. }))
        .unwrap();
    assert!(
        publish_at < cancel_at,
        "TIMEOUT is announced before the cancel goes out"
    );
    assert_eq!(
        published(&a)[0].error_code_enum,
        ErrorCode::JOB_TIMEOUT.as_i32()
    );
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::ForwardCancel { cancel, .. } if cancel.job_id == "d"))
    );
    assert_eq!(state(&c, "r"), JobState::Running);
    c.handle(Event::Tick, 1049);
    assert_eq!(state(&c, "r"), JobState::Running);
    c.handle(Event::Tick, 1050);
    assert_eq!(state(&c, "r"), JobState::Timeout);
    // A late result after the timeout belongs to a fenced attempt: dropped.
    let a = result(&mut c, "r", JobState::Succeeded, 2000);
    assert!(a.iter().any(|x| matches!(
        x,
        Action::Fenced {
            what: "result",
            fence: Fence::Inactive,
            ..
        }
    )));
    assert_eq!(state(&c, "r"), JobState::Timeout);
}

#[test]
fn per_pool_timeouts_from_the_pools_file() {
    let pools = Pools::from_yaml(
        "topics:\n  job.slow: slow\npools:\n  slow:\n    dispatch_timeout_ms: 5000\n",
    )
    .unwrap();
    let cfg = Config {
        dispatch_timeout: Duration::from_millis(100),
        ..Config::default()
    };
    let mut c = SchedulerCore::new("sched", cfg, pools);
    submit(&mut c, req("s", "job.slow"), 0);
    assert_eq!(dispatched_to(&decide(&mut c, "s", ALLOW, 0)), ["job.slow"]);
    c.handle(Event::Tick, 4999);
    assert_eq!(state(&c, "s"), JobState::Dispatched);
    c.handle(Event::Tick, 5000);
    assert_eq!(state(&c, "s"), JobState::Timeout);
}

#[test]
fn cancel_running_after_terminal_and_unknown() {
    let mut c = core();
    submit(&mut c, req("c", "job.x"), 0);
    decide(&mut c, "c", ALLOW, 0);
    let cancel = v1::JobCancel {
        job_id: "c".into(),
        reason: "user".into(),
        requested_by: "alice".into(),
        ..Default::default()
    };
    let a = c.handle(
        Event::Cancel {
            cancel: cancel.clone(),
        },
        1,
    );
    assert_eq!(state(&c, "c"), JobState::Cancelled);
    assert!(a.iter().any(|x| matches!(x, Action::ForwardCancel { .. })));
    assert_eq!(published(&a)[0].status, JobState::Cancelled.status() as i32);
    assert!(
        c.handle(Event::Cancel { cancel }, 2).is_empty(),
        "a repeated cancel is idempotent"
    );
    submit(&mut c, req("done", "job.x"), 0);
    decide(&mut c, "done", ALLOW, 0);
    result(&mut c, "done", JobState::Succeeded, 1);
    let late = v1::JobCancel {
        job_id: "done".into(),
        ..Default::default()
    };
    let a = c.handle(Event::Cancel { cancel: late }, 2);
    assert!(
        matches!(&a[..], [Action::Ignored { .. }]),
        "cancel after a terminal state"
    );
    let own = v1::JobCancel {
        job_id: "done".into(),
        requested_by: "sched".into(),
        ..Default::default()
    };
    assert!(
        c.handle(Event::Cancel { cancel: own }, 3).is_empty(),
        "our own forwarded cancel"
    );
    let a = c.handle(
        Event::Cancel {
            cancel: v1::JobCancel {
                job_id: "other".into(),
                ..Default::default()
            },
        },
        2,
    );
    assert!(matches!(&a[..], [Action::ForwardCancel { .. }]));
}

#[test]
fn duplicate_job_ids_run_once() {
    let mut c = core();
    submit(&mut c, req("dup", "job.x"), 0);
    let a = submit(&mut c, req("dup", "job.x"), 1);
    assert!(
        a.is_empty(),
        "a redelivered submit changes nothing while the job runs"
    );
    decide(&mut c, "dup", ALLOW, 2);
    result(&mut c, "dup", JobState::Succeeded, 3);
    let a = submit(&mut c, req("dup", "job.x"), 4);
    assert_eq!(
        published(&a).len(),
        1,
        "after the end, the outcome is announced again"
    );
    assert!(
        !a.iter()
            .any(|x| matches!(x, Action::CheckSafety { .. } | Action::Dispatch { .. }))
    );
}

#[test]
fn idempotency_keys_share_one_run_and_its_outcome() {
    let mut c = core();
    let keyed = |id: &str| {
        let mut r = req(id, "job.x");
        r.meta = Some(v1::JobMetadata {
            idempotency_key: "k1".into(),
            ..Default::default()
        });
        r
    };
    submit(&mut c, keyed("first"), 0);
    let a = submit(&mut c, keyed("second"), 1);
    assert!(!a.iter().any(|x| matches!(x, Action::CheckSafety { .. })));
    decide(&mut c, "first", ALLOW, 2);
    let mut res = v1::JobResult {
        job_id: "first".into(),
        status: 5,
        worker_id: "w".into(),
        result_ptr: "redis://res:first".into(),
        ..Default::default()
    };
    let a = c.handle(
        Event::Result {
            result: res.clone(),
        },
        3,
    );
    assert!(
        published(&a).is_empty(),
        "the leader's result is the worker's"
    );
    // The follower looks at its leader on its next deadline and takes the outcome.
    let a = c.handle(Event::Tick, 1 + cap_scheduler::core::timers::FOLLOW_POLL_MS);
    let copies = published(&a);
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].job_id, "second");
    assert_eq!(copies[0].result_ptr, "redis://res:first");
    // Published by the scheduler under its own id; the worker is named in the message.
    assert_eq!(copies[0].worker_id, "sched");
    assert_eq!(copies[0].error_message, "run by worker w");
    assert_eq!(state(&c, "second"), JobState::Succeeded);
    // Later submitters get the outcome at once.
    let a = submit(&mut c, keyed("third"), 400);
    assert_eq!(published(&a)[0].job_id, "third");
    res.job_id = "third".into();
    res.worker_id = "sched".into();
    res.error_message = "run by worker w".into();
    assert_eq!(published(&a)[0], res);
}

#[test]
fn capabilities_route_to_the_least_loaded_worker_or_wait_then_fail_206() {
    let cfg = Config {
        worker_wait_timeout: Duration::from_millis(1000),
        ..Config::default()
    };
    let mut c = SchedulerCore::new("sched", cfg, Pools::default());
    let hb = |id: &str, active: i32| v1::Heartbeat {
        worker_id: id.into(),
        capabilities: vec!["gpu".into()],
        active_jobs: active,
        max_parallel_jobs: 4,
        ..Default::default()
    };
    c.handle(
        Event::Heartbeat {
            heartbeat: hb("busy", 3),
        },
        0,
    );
    c.handle(
        Event::Heartbeat {
            heartbeat: hb("idle", 0),
        },
        0,
    );
    let mut r = req("g", "job.train");
    r.meta = Some(v1::JobMetadata {
        requires: vec!["gpu".into()],
        ..Default::default()
    });
    submit(&mut c, r, 0);
    assert_eq!(
        dispatched_to(&decide(&mut c, "g", ALLOW, 0)),
        ["worker.idle.jobs"]
    );

    let mut r = req("t", "job.train");
    r.meta = Some(v1::JobMetadata {
        requires: vec!["tpu".into()],
        ..Default::default()
    });
    submit(&mut c, r, 0);
    assert!(dispatched_to(&decide(&mut c, "t", ALLOW, 0)).is_empty());
    assert!(matches!(
        c.job("t").unwrap().hold,
        Some(Hold::Worker { since: 0 })
    ));
    c.handle(Event::Tick, 500);
    assert_eq!(state(&c, "t"), JobState::Scheduled);
    let a = c.handle(Event::Tick, 1000);
    assert_eq!(state(&c, "t"), JobState::Failed);
    assert_eq!(
        published(&a)[0].error_code_enum,
        ErrorCode::JOB_WORKER_UNAVAILABLE.as_i32()
    );

    // A matching worker that appears in time gets the job.
    let mut r = req("t2", "job.train");
    r.meta = Some(v1::JobMetadata {
        requires: vec!["tpu".into()],
        ..Default::default()
    });
    submit(&mut c, r, 1000);
    decide(&mut c, "t2", ALLOW, 1000);
    let mut tpu = hb("tpu-1", 0);
    tpu.capabilities = vec!["tpu".into()];
    c.handle(Event::Heartbeat { heartbeat: tpu }, 1100);
    assert_eq!(
        dispatched_to(&c.handle(Event::Tick, 1200)),
        ["worker.tpu-1.jobs"]
    );
}

#[test]
fn ready_topics_direct_dispatch_and_version_negotiation() {
    let mut c = core();
    let hs = |id: &str, versions: Vec<i32>| v1::Handshake {
        component_id: id.into(),
        role: v1::ComponentRole::Worker as i32,
        supported_versions: versions,
        ready_topics: vec!["job.echo".into()],
        ..Default::default()
    };
    let a = c.handle(
        Event::Handshake {
            handshake: hs("future", vec![2]),
        },
        0,
    );
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Alert { alert } if alert.error_code_enum == 100))
    );
    assert!(c.registry().get("future").is_none());
    c.handle(
        Event::Handshake {
            handshake: hs("w-echo", vec![1]),
        },
        0,
    );
    submit(&mut c, req("e", "job.echo"), 0);
    assert_eq!(
        dispatched_to(&decide(&mut c, "e", ALLOW, 0)),
        ["worker.w-echo.jobs"]
    );
    submit(&mut c, req("o", "job.other"), 0);
    assert_eq!(dispatched_to(&decide(&mut c, "o", ALLOW, 0)), ["job.other"]);
}

#[test]
fn pools_file_routes_topics_to_pool_subjects() {
    let pools = Pools::from_yaml("topics:\n  job.code.*: code\n").unwrap();
    let mut c = SchedulerCore::new("sched", Config::default(), pools);
    submit(&mut c, req("p", "job.code.review"), 0);
    assert_eq!(dispatched_to(&decide(&mut c, "p", ALLOW, 0)), ["job.code"]);
}

#[test]
fn lost_workers_raise_an_alert() {
    let mut c = core();
    c.handle(
        Event::Heartbeat {
            heartbeat: v1::Heartbeat {
                worker_id: "w".into(),
                ..Default::default()
            },
        },
        0,
    );
    assert!(c.handle(Event::Tick, 14_999).is_empty());
    let a = c.handle(Event::Tick, 15_001);
    assert!(
        a.iter().any(
            |x| matches!(x, Action::Alert { alert } if alert.message.contains("worker w lost"))
        )
    );
    assert!(c.registry().is_empty());
}

#[test]
fn backwards_moves_and_second_terminals_are_ignored() {
    let mut c = core();
    submit(&mut c, req("b", "job.x"), 0);
    decide(&mut c, "b", ALLOW, 0);
    result(&mut c, "b", JobState::Succeeded, 1);
    // After the end, the attempt is fenced: a second terminal or a backwards move from
    // it is dropped.
    let a = result(&mut c, "b", JobState::Failed, 2);
    assert!(matches!(
        &a[..],
        [Action::Fenced {
            fence: Fence::Inactive,
            ..
        }]
    ));
    let a = result(&mut c, "b", JobState::Running, 3);
    assert!(matches!(
        &a[..],
        [Action::Fenced {
            fence: Fence::Inactive,
            ..
        }]
    ));
    // While the attempt is in flight, a backwards move is refused by the state machine.
    submit(&mut c, req("d", "job.x"), 0);
    decide(&mut c, "d", ALLOW, 0);
    let a = result(&mut c, "d", JobState::Scheduled, 1);
    assert!(matches!(&a[..], [Action::Ignored { .. }]));
    assert_eq!(state(&c, "d"), JobState::Dispatched);
    assert_eq!(state(&c, "b"), JobState::Succeeded);
    assert!(result(&mut c, "unknown", JobState::Succeeded, 3).is_empty());
}

#[test]
fn cancelling_a_parent_cancels_its_children() {
    let mut c = core();
    submit(&mut c, req("parent", "job.flow"), 0);
    decide(&mut c, "parent", ALLOW, 0);
    for i in 0..2 {
        let mut r = req(&format!("child{i}"), "job.step");
        r.parent_job_id = "parent".into();
        submit(&mut c, r, 1);
        decide(&mut c, &format!("child{i}"), ALLOW, 1);
    }
    let a = c.handle(
        Event::Cancel {
            cancel: v1::JobCancel {
                job_id: "parent".into(),
                ..Default::default()
            },
        },
        2,
    );
    for id in ["parent", "child0", "child1"] {
        assert_eq!(state(&c, id), JobState::Cancelled, "{id}");
    }
    assert_eq!(published(&a).len(), 3);
}

#[test]
fn a_fatal_child_compensates_succeeded_siblings_in_reverse_order() {
    let mut c = core();
    submit(&mut c, req("wf", "job.flow"), 0);
    decide(&mut c, "wf", ALLOW, 0);
    for (i, id) in ["s0", "s1", "s2"].iter().enumerate() {
        let mut r = req(id, "job.step");
        r.parent_job_id = "wf".into();
        r.workflow_id = "flow-1".into();
        r.step_index = i as i32;
        r.compensation = Some(v1::Compensation {
            topic: "job.undo".into(),
            context_ptr: format!("redis://ctx:undo-{id}"),
            ..Default::default()
        });
        submit(&mut c, r, 1);
        decide(&mut c, id, ALLOW, 1);
    }
    result(&mut c, "s0", JobState::Succeeded, 2);
    result(&mut c, "s1", JobState::Succeeded, 3);
    let a = result(&mut c, "s2", JobState::FailedFatal, 4);
    // First the most recent step's compensation, alone.
    let checks: Vec<_> = a
        .iter()
        .filter_map(|x| {
            if let Action::CheckSafety { job_id, .. } = x {
                Some(job_id.clone())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(checks, ["s1.compensate"]);
    let comp = c.job("s1.compensate").unwrap();
    assert_eq!(comp.request.topic, "job.undo");
    assert_eq!(comp.idempotency_key(), Some("compensate:s1"));
    decide(&mut c, "s1.compensate", ALLOW, 5);
    let a = result(&mut c, "s1.compensate", JobState::Succeeded, 6);
    let checks: Vec<_> = a
        .iter()
        .filter_map(|x| {
            if let Action::CheckSafety { job_id, .. } = x {
                Some(job_id.clone())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(checks, ["s0.compensate"], "then the earlier step");
    assert_eq!(
        c.job("s0.compensate").unwrap().request.context_ptr,
        "redis://ctx:undo-s0"
    );
}

#[test]
fn restart_restores_jobs_in_flight() {
    let mut c = core();
    submit(&mut c, req("d", "job.x"), 0);
    decide(&mut c, "d", ALLOW, 0);
    submit(&mut c, req("s", "job.x"), 0); // waiting for safety when the scheduler stops
    let saved: Vec<String> = c
        .jobs()
        .map(|j| serde_json::to_string(j).unwrap())
        .collect();

    let mut again = core();
    again.restore(saved.iter().map(|t| serde_json::from_str(t).unwrap()), 10);
    let a = again.handle(Event::Tick, 10);
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::CheckSafety { job_id, .. } if job_id == "s"))
    );
    assert!(
        dispatched_to(&a).is_empty(),
        "dispatched jobs are not dispatched again"
    );
    result(&mut again, "d", JobState::Succeeded, 11);
    assert_eq!(state(&again, "d"), JobState::Succeeded);
}

#[test]
fn finished_jobs_are_evicted_after_the_retention() {
    let cfg = Config {
        retention: Duration::from_millis(100),
        ..Config::default()
    };
    let mut c = SchedulerCore::new("sched", cfg, Pools::default());
    submit(&mut c, req("old", "job.x"), 0);
    decide(&mut c, "old", DENY, 0);
    assert!(c.handle(Event::Tick, 99).is_empty());
    let a = c.handle(Event::Tick, 100);
    assert!(matches!(&a[..], [Action::Evict { job_id }] if job_id == "old"));
    assert!(c.job("old").is_none());
}

#[test]
fn jobs_of_a_lost_worker_are_retried_elsewhere() {
    let mut c = core();
    let hs = |id: &str| v1::Handshake {
        component_id: id.into(),
        role: v1::ComponentRole::Worker as i32,
        supported_versions: vec![1],
        ready_topics: vec!["job.echo".into()],
        ..Default::default()
    };
    c.handle(Event::Handshake { handshake: hs("a") }, 0);
    submit(&mut c, req("j", "job.echo"), 0);
    assert_eq!(
        dispatched_to(&decide(&mut c, "j", ALLOW, 0)),
        ["worker.a.jobs"]
    );
    // Another worker shows up and keeps beating; "a" goes silent.
    c.handle(Event::Handshake { handshake: hs("b") }, 10_000);
    c.handle(
        Event::Heartbeat {
            heartbeat: v1::Heartbeat {
                worker_id: "b".into(),
                ..Default::default()
            },
        },
        14_000,
    );
    let a = c.handle(Event::Tick, 15_001);
    assert!(
        a.iter().any(
            |x| matches!(x, Action::Alert { alert } if alert.message.contains("worker a lost"))
        )
    );
    assert_eq!(state(&c, "j"), JobState::FailedRetryable);
    let Some(Hold::Retry { at }) = c.job("j").unwrap().hold.clone() else {
        panic!()
    };
    assert_eq!(dispatched_to(&c.handle(Event::Tick, at)), ["worker.b.jobs"]);
}

#[test]
fn the_reconciler_keeps_one_deadline_per_job() {
    let mut c = core();
    for i in 0..1000 {
        let id = format!("j{i}");
        submit(&mut c, req(&id, "job.x"), 0);
        decide(&mut c, &id, ALLOW, 1);
        c.handle(
            Event::Progress {
                progress: v1::JobProgress {
                    job_id: id.clone(),
                    status: 4,
                    ..Default::default()
                },
                sender: "w1".into(),
            },
            2,
        );
        result(&mut c, &id, JobState::Succeeded, 3);
    }
    // Each job changed state five times; each keeps one entry (its retention end).
    assert_eq!(c.scheduled_checks(), 1000);
    assert!(
        c.handle(Event::Tick, 4).is_empty(),
        "nothing is due, nothing is looked at"
    );
    let retention = ms(Config::default().retention);
    let a = c.handle(Event::Tick, 3 + retention);
    assert_eq!(a.len(), 1000, "all evicted at once");
    assert_eq!(c.scheduled_checks(), 0);
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
