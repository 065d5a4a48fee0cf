//! What the scheduler publishes itself passes the receive rules of cap-sdk-python 2.17.0
//! (as `cap_proto::validate` has them): its results carry `worker_id` = its own sender id
//! (the worker that ran the job is named in `error_message`), its alerts have a
//! complete legacy or structured shape. Dispatches relay the submitted packet's envelope
//! `identity` and every field of the JobRequest.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_proto::state::JobState;
use cap_proto::v1::{self, bus_packet::Payload};
use cap_proto::{ErrorCode, Timestamp, validate};
use cap_scheduler::core::{Action, Config, Event, Pools, SchedulerCore};
use std::time::Duration;

const SCHED: &str = "sched-1";
const ALLOW: i32 = 1;
const DENY: i32 = 2;
const REQUIRE_HUMAN: i32 = 3;

fn core(cfg: Config) -> SchedulerCore {
    SchedulerCore::new(SCHED, cfg, Pools::default())
}

fn req(id: &str) -> v1::JobRequest {
    v1::JobRequest {
        job_id: id.into(),
        topic: "job.x".into(),
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

fn worker_result(c: &mut SchedulerCore, id: &str, status: JobState, now: u64) -> Vec<Action> {
    let result = v1::JobResult {
        job_id: id.into(),
        status: status.status() as i32,
        worker_id: "worker-7".into(),
        error_message: if status == JobState::Succeeded {
            String::new()
        } else {
            "boom".into()
        },
        ..Default::default()
    };
    c.handle(Event::Result { result }, now)
}

/// Every packet the actions would publish, enveloped as the shell does (sender = the
/// scheduler), checked against the validation rules; returns the results.
fn check_published(actions: &[Action]) -> Vec<v1::JobResult> {
    let mut results = Vec::new();
    for a in actions {
        let payload: Payload = match a {
            Action::PublishResult { result, .. } | Action::DeadLetter { result, .. } => {
                results.push((**result).clone());
                (**result).clone().into()
            }
            Action::Alert { alert } => (**alert).clone().into(),
            Action::ForwardCancel { cancel, .. } => (**cancel).clone().into(),
            Action::Dispatch { request, .. } => (**request).clone().into(),
            _ => continue,
        };
        let p = v1::BusPacket::new("trace", SCHED, Timestamp::default(), payload);
        if let Err(v) = validate::packet(&p) {
            panic!("{a:?} breaks the rules: {v}");
        }
    }
    results
}

#[test]
fn results_for_jobs_that_ran_name_the_worker_in_the_message() {
    let mut c = core(Config::default());
    // A duplicate job id after the end: the outcome is announced again.
    submit(&mut c, req("dup"), 0);
    decide(&mut c, "dup", ALLOW, 1);
    worker_result(&mut c, "dup", JobState::Succeeded, 2);
    let again = check_published(&submit(&mut c, req("dup"), 3));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].worker_id, SCHED);
    assert_eq!(again[0].error_message, "run by worker worker-7");
    assert_eq!(again[0].status, JobState::Succeeded.status() as i32);

    // Retries exhausted: dead letter and final result, both the scheduler's.
    submit(&mut c, req("r"), 10);
    decide(&mut c, "r", ALLOW, 10);
    let mut now = 20;
    let mut last = Vec::new();
    for _ in 0..=Config::default().max_retries {
        last = worker_result(&mut c, "r", JobState::FailedRetryable, now);
        check_published(&last);
        now += 1_000_000;
        check_published(&c.handle(Event::Tick, now));
    }
    assert!(last.iter().any(|a| matches!(a, Action::DeadLetter { .. })));
    let results = check_published(&last);
    assert_eq!(results.len(), 2, "dead letter and final result");
    for r in &results {
        assert_eq!(r.worker_id, SCHED);
        assert!(
            r.error_message.contains("(worker worker-7)"),
            "{}",
            r.error_message
        );
    }
}

#[test]
fn idempotency_followers_get_the_outcome_as_the_schedulers_result() {
    let mut c = core(Config::default());
    let keyed = |id: &str| v1::JobRequest {
        meta: Some(v1::JobMetadata {
            idempotency_key: "k".into(),
            ..Default::default()
        }),
        ..req(id)
    };
    submit(&mut c, keyed("lead"), 0);
    check_published(&submit(&mut c, keyed("follow"), 1));
    decide(&mut c, "lead", ALLOW, 2);
    check_published(&worker_result(&mut c, "lead", JobState::Succeeded, 3));
    // The follower takes the outcome when it next looks at its leader.
    let copies =
        check_published(&c.handle(Event::Tick, 1 + cap_scheduler::core::timers::FOLLOW_POLL_MS));
    assert_eq!(copies.len(), 1);
    assert_eq!(
        (copies[0].job_id.as_str(), copies[0].worker_id.as_str()),
        ("follow", SCHED)
    );
    let late = check_published(&submit(&mut c, keyed("late"), 400));
    assert_eq!(
        (late[0].job_id.as_str(), late[0].worker_id.as_str()),
        ("late", SCHED)
    );
}

#[test]
fn denied_timed_out_cancelled_and_unroutable_results_are_the_schedulers() {
    let cfg = Config {
        dispatch_timeout: Duration::from_millis(100),
        worker_wait_timeout: Duration::from_millis(100),
        ..Config::default()
    };
    let mut c = core(cfg);
    submit(&mut c, req("deny"), 0);
    let denied = check_published(&decide(&mut c, "deny", DENY, 1));
    assert_eq!(denied[0].status, JobState::Denied.status() as i32);
    assert_eq!(denied[0].worker_id, SCHED);

    submit(&mut c, req("slow"), 0);
    decide(&mut c, "slow", ALLOW, 0);
    let timed_out = check_published(&c.handle(Event::Tick, 100));
    assert_eq!(timed_out[0].status, JobState::Timeout.status() as i32);
    assert_eq!(timed_out[0].worker_id, SCHED);

    submit(&mut c, req("run"), 200);
    decide(&mut c, "run", ALLOW, 200);
    worker_result(&mut c, "run", JobState::Running, 201);
    let cancel = v1::JobCancel {
        job_id: "run".into(),
        reason: "user".into(),
        requested_by: "alice".into(),
        ..Default::default()
    };
    check_published(&c.handle(Event::Cancel { cancel }, 202));

    let mut needs_gpu = req("gpu");
    needs_gpu.meta = Some(v1::JobMetadata {
        requires: vec!["gpu".into()],
        ..Default::default()
    });
    submit(&mut c, needs_gpu, 300);
    check_published(&decide(&mut c, "gpu", ALLOW, 300));
    let failed = check_published(&c.handle(Event::Tick, 500));
    assert_eq!(
        ErrorCode::of_result(&failed[0]),
        ErrorCode::JOB_WORKER_UNAVAILABLE
    );
    assert_eq!(failed[0].worker_id, SCHED);
}

#[test]
fn alerts_have_a_complete_shape() {
    let mut c = core(Config::default());
    submit(&mut c, req("held"), 0);
    // The approval notice has no error code: the legacy shape.
    let a = decide(&mut c, "held", REQUIRE_HUMAN, 1);
    check_published(&a);
    let notice = a
        .iter()
        .find_map(|x| match x {
            Action::Alert { alert } => Some(alert.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!((notice.severity, notice.error_code_enum), (0, 0));
    assert_eq!(notice.code, "NOTICE");
    // A lost worker: structured, from the scheduler.
    c.handle(
        Event::Heartbeat {
            heartbeat: v1::Heartbeat {
                worker_id: "w".into(),
                ..Default::default()
            },
        },
        0,
    );
    let a = c.handle(Event::Tick, 60_000);
    check_published(&a);
    assert!(a.iter().any(|x| matches!(x, Action::Alert { alert }
        if alert.source_component == SCHED && alert.error_code_enum == 206)));
}

#[test]
fn dispatches_relay_the_envelope_identity_and_every_request_field() {
    let mut c = core(Config::default());
    let identity = v1::IdentityBinding {
        tenant_id: "acme".into(),
        principal_id: "p-1".into(),
        actor_id: "alice".into(),
        delegation_id: "d-1".into(),
    };
    let mut request = req("full");
    request.labels = [
        ("team".to_string(), "a".to_string()),
        ("team_id".to_string(), "b".to_string()),
    ]
    .into();
    request.identity = Some(identity.clone());
    request.dispatch = Some(v1::DispatchIdentity {
        dispatch_id: "from-client".into(),
        attempt: 3,
        assigned_worker_id: "w".into(),
    });
    request.context_ref = Some(v1::ResourceRef {
        uri: "redis://ctx:full".into(),
        sha256: vec![1; 32],
        ..Default::default()
    });
    request.tenant_id = "acme".into();
    c.handle(
        Event::Submitted {
            request: request.clone(),
            trace_id: "trace".into(),
            sender: "client".into(),
            identity: Some(identity.clone()),
        },
        0,
    );
    let a = decide(&mut c, "full", ALLOW, 1);
    check_published(&a);
    let Some(Action::Dispatch {
        request: sent,
        identity: envelope,
        ..
    }) = a.iter().find(|x| matches!(x, Action::Dispatch { .. }))
    else {
        panic!("no dispatch")
    };
    // Every field is relayed unchanged, except `dispatch`: the scheduler fences each
    // dispatch itself (a client cannot choose the attempt it belongs to).
    let fenced = sent.dispatch.clone().unwrap();
    assert_eq!(fenced.attempt, 1);
    assert_ne!(fenced.dispatch_id, "from-client");
    let mut expected = request.clone();
    expected.dispatch = Some(fenced);
    assert_eq!(**sent, expected, "every other field relayed unchanged");
    assert_eq!(envelope.as_deref(), Some(&identity));
    // A record persisted and restored keeps it.
    let record = c.job("full").unwrap().clone();
    let text = serde_json::to_string(&record).unwrap();
    let back: cap_scheduler::core::JobRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(back.identity, Some(identity));
}
