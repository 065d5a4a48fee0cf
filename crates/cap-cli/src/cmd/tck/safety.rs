//! `safety/*`: a job is submitted to the real scheduler core, the safety kernel's
//! `decision` is fed back, and the clock runs on; the order of the core's actions shows
//! whether the decision gates the dispatch.

use super::outcome::{CaseError, Outcome, Params, Verdict, code_name, joined};
use super::plane::{self, Plane, TOPIC};
use cap_proto::{ErrorCode, JobState, v1};
use cap_scheduler::core::{Action, Event, Hold};

/// A control-plane safety case.
pub fn control_plane(params: Params<'_>) -> Result<Outcome, CaseError> {
    let name = params.required("decision")?;
    let decision = plane::decision_named(name)
        .ok_or_else(|| CaseError::param(format!("unknown decision {name:?}")))?;
    let mut p = Plane::new(plane::config());
    let job = "tck-safety";
    let submitted = p.submit(job, TOPIC, None);
    let asked = submitted
        .iter()
        .any(|a| matches!(a, Action::CheckSafety { job_id, .. } if job_id == job));
    let dispatched_before = plane::dispatches(&p.log, job).len();
    let at_decision = p.log.len();
    let decided = p.decide(job, decision);
    let mut v = Verdict::new();
    v.observe("onSubmit", plane::labels(&submitted))
        .observe("onDecision", plane::labels(&decided));
    v.check(asked, "the safety kernel is asked on submit")
        .check(
            dispatched_before == 0,
            "nothing is dispatched before the decision",
        );
    let out = match params.expect() {
        None => allow(&mut p, &mut v, job, at_decision),
        Some("no-dispatch") => held(&mut p, &mut v, job, decision, params.err()?),
        Some(other) => return Err(CaseError::param(format!("unknown expectation {other:?}"))),
    };
    Ok(out.unwrap_or_else(|| v.finish(&format!("{name} gates the dispatch"))))
}

/// ALLOW: the dispatch comes after the decision, from it.
fn allow(p: &mut Plane, v: &mut Verdict, job: &str, at_decision: usize) -> Option<Outcome> {
    let order: Vec<(usize, String)> = p
        .log
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(a, Action::CheckSafety { .. } | Action::Dispatch { .. }))
        .map(|(i, a)| (i, plane::label(a)))
        .collect();
    let dispatch_at = p
        .log
        .iter()
        .position(|a| matches!(a, Action::Dispatch { request, .. } if request.job_id == job));
    v.observe(
        "order",
        joined(order.iter().map(|(i, l)| format!("{l}@{i}"))),
    )
    .observe("decisionAt", at_decision)
    .observe("state", show(p.state(job)));
    v.check(
        dispatch_at.is_some_and(|i| i >= at_decision),
        "the dispatch follows the recorded ALLOW",
    )
    .check(plane::dispatches(&p.log, job).len() == 1, "one dispatch")
    .check(
        p.state(job) == Some(JobState::Dispatched),
        "the job is DISPATCHED",
    );
    None
}

/// DENY, REQUIRE_HUMAN, THROTTLE: no dispatch, however long the clock runs; then what
/// each decision does next.
fn held(
    p: &mut Plane,
    v: &mut Verdict,
    job: &str,
    decision: v1::DecisionType,
    code: Option<ErrorCode>,
) -> Option<Outcome> {
    let hold = p.core().job(job).and_then(|j| j.hold.clone());
    let state_after_decision = p.state(job);
    // The clock runs on for a while (re-checks, deadlines).
    let mark = p.log.len();
    for _ in 0..10 {
        p.advance(500);
    }
    let later = p.log[mark..].to_vec();
    let dispatches = plane::dispatches(&p.log, job).len();
    v.observe("stateAfterDecision", show(state_after_decision))
        .observe("hold", format!("{hold:?}"))
        .observe("dispatches", dispatches)
        .observe("later", plane::labels(&later));
    v.check(dispatches == 0, "zero dispatches");
    match decision {
        v1::DecisionType::Deny => {
            let results = plane::published(&p.log, job);
            let got = results.first().map(ErrorCode::of_result);
            v.observe("published", joined(results.iter().map(|r| r.status)))
                .observe("code", got.map(code_name).unwrap_or_else(|| "-".into()));
            v.check(
                state_after_decision == Some(JobState::Denied),
                "the job is DENIED",
            )
            .check(
                results.len() == 1 && results[0].status == JobState::Denied.status() as i32,
                "one DENIED result",
            );
            if let Some(code) = code {
                v.check(
                    got == Some(code),
                    format!("the result carries {}", code_name(code)),
                );
            }
        }
        v1::DecisionType::RequireHuman => {
            v.check(
                matches!(hold, Some(Hold::Approval { .. })),
                "the job waits for approval",
            )
            .check(
                state_after_decision == Some(JobState::Scheduled),
                "the job stays SCHEDULED",
            );
            // Paused, not dropped: an approval releases it.
            let approved = p.handle(Event::Approved { job_id: job.into() });
            let released = plane::dispatches(&approved, job).len();
            v.observe("onApproval", plane::labels(&approved));
            v.check(released == 1, "an approval dispatches it");
        }
        v1::DecisionType::Throttle => {
            let rechecks = later
                .iter()
                .filter(|a| matches!(a, Action::CheckSafety { job_id, .. } if job_id == job))
                .count();
            v.observe("rechecks", rechecks);
            v.check(
                matches!(hold, Some(Hold::Recheck { .. })),
                "the job waits to be checked again",
            )
            .check(
                state_after_decision == Some(JobState::Scheduled),
                "the job stays SCHEDULED",
            )
            .check(
                rechecks >= 1,
                "the kernel is asked again later (not a dispatch)",
            );
        }
        other => {
            return Some(Outcome::unsupported(format!(
                "no expectation is defined for {}",
                other.as_str_name()
            )));
        }
    }
    None
}

fn show(s: Option<JobState>) -> String {
    s.map(|s| s.to_string()).unwrap_or_else(|| "-".into())
}
