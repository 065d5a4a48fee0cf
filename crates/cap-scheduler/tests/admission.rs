//! Admission at submit: pointers of unaccepted schemes, to the scheduler's own keys or
//! to private network targets end the job FAILED with 203 and a reason naming the rule,
//! without a safety check or a dispatch; accepted ones go on as before.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_proto::{ErrorCode, JobState, v1};
use cap_scheduler::core::{Action, Admission, Config, Event, Pools, SchedulerCore};

fn submit(c: &mut SchedulerCore, id: &str, ptr: &str) -> Vec<Action> {
    let request = v1::JobRequest {
        job_id: id.into(),
        topic: "job.echo".into(),
        context_ptr: ptr.into(),
        ..Default::default()
    };
    c.handle(
        Event::Submitted {
            request,
            trace_id: format!("trace-{id}"),
            sender: "client".into(),
            identity: None,
        },
        0,
    )
}

fn results(actions: &[Action]) -> Vec<(v1::JobResult, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::PublishResult {
                result, trace_id, ..
            } => Some(((**result).clone(), trace_id.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn refused_pointers_end_failed_203_naming_the_rule() {
    let mut core = SchedulerCore::new("sched", Config::default(), Pools::default());
    for (id, ptr, reason) in [
        (
            "a1",
            "redis://cap:sched:job:victim",
            "context_ptr refused: keys under `cap:` are reserved to CAP services",
        ),
        (
            "a2",
            "redis://cap:sched:jobs",
            "context_ptr refused: keys under `cap:` are reserved to CAP services",
        ),
        (
            "a3",
            "file:///etc/passwd",
            "context_ptr refused: scheme file:// is not accepted (accepted: redis, mem, s3, https)",
        ),
        (
            "a4",
            "https://169.254.169.254/latest/meta-data/",
            "context_ptr refused: https pointers to loopback, private, link-local or local-only hosts are refused",
        ),
        (
            "a5",
            "https://[::1]:8080/x",
            "context_ptr refused: https pointers to loopback, private, link-local or local-only hosts are refused",
        ),
    ] {
        let actions = submit(&mut core, id, ptr);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::CheckSafety { .. } | Action::Dispatch { .. })),
            "{ptr}: {actions:?}"
        );
        let out = results(&actions);
        assert_eq!(out.len(), 1, "{ptr}: {actions:?}");
        let (r, trace) = &out[0];
        assert_eq!(r.job_id, id);
        assert_eq!(trace, &format!("trace-{id}"));
        assert_eq!(r.status, v1::JobStatus::Failed as i32);
        assert_eq!(ErrorCode::of_result(r), ErrorCode::JOB_INVALID_INPUT);
        assert_eq!(r.error_message, reason);
        assert_eq!(core.job(id).unwrap().state, JobState::Failed);
        assert!(
            actions.iter().any(|a| matches!(
                a,
                Action::Transition { job_id, state: JobState::Failed, .. } if job_id == id
            )),
            "the refusal is recorded: {actions:?}"
        );
        // A re-delivery of the same submit re-announces the same outcome.
        let again = results(&submit(&mut core, id, ptr));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].0.error_message, reason);
    }
}

#[test]
fn accepted_pointers_go_to_the_safety_check() {
    let mut core = SchedulerCore::new("sched", Config::default(), Pools::default());
    for (id, ptr) in [
        ("ok1", "redis://ctx:ok1"),
        ("ok2", ""),
        ("ok3", "https://example.com/ctx"),
    ] {
        let actions = submit(&mut core, id, ptr);
        assert!(results(&actions).is_empty(), "{ptr}: {actions:?}");
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::CheckSafety { .. })),
            "{ptr}"
        );
    }
    // A deployment with a file store accepts file:// pointers.
    let config = Config {
        admission: Admission::with_schemes(["redis", "file"]),
        ..Config::default()
    };
    let mut core = SchedulerCore::new("sched", config, Pools::default());
    let actions = submit(&mut core, "f1", "file:///var/lib/cap/ctx:f1");
    assert!(results(&actions).is_empty(), "{actions:?}");
}
