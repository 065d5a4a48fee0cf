//! `lifecycle/*` (and the control-plane `cancellation/*`): a job is brought to the
//! `from` state by the real component, then the event that asks for `to` is applied,
//! and what the component did is compared with the expectation (`expect` absent: the
//! move happens; `reject` / `ignore`: it does not).
//!
//! Worker: the real worker runs a job whose handler produces each outcome; moves out of
//! a terminal state are attempted the only ways a worker meets them — a redelivery of
//! the finished job (whose handler would now produce `to`) and a cancel.
//!
//! Control plane: the scheduler core is driven with submits, safety decisions, worker
//! reports, cancels and the clock.

use super::outcome::{CaseError, Outcome, Params, Verdict, joined};
use super::plane::{self, Plane, TOPIC as CP_TOPIC, WORKER as CP_WORKER};
use super::worker_bed::{Bed, Step, WAIT};
use cap_proto::{ErrorCode, JobState, v1};

/// A worker-owned lifecycle case.
pub async fn worker(params: Params<'_>) -> Result<Outcome, CaseError> {
    let from = params.state("from")?;
    let to = params.state("to")?;
    let rejected = params.expect().is_some();
    let bed = Bed::start(Some(cap_bus::memory::DEFAULT_MAX_PAYLOAD)).await?;
    let out = match from {
        JobState::Running => worker_from_running(&bed, to, rejected).await,
        s if s.is_terminal() => worker_from_terminal(&bed, from, to).await,
        s => Err(CaseError::param(format!(
            "a worker case cannot start from {s}"
        ))),
    };
    bed.stop().await;
    out
}

/// RUNNING → `to`: the handler produces `to` (or, for RUNNING again, reports RUNNING
/// twice while the same job is delivered once more).
async fn worker_from_running(
    bed: &Bed,
    to: JobState,
    rejected: bool,
) -> Result<Outcome, CaseError> {
    if rejected {
        return Err(CaseError::param(
            "no worker move out of RUNNING is rejected",
        ));
    }
    let job = "tck-lifecycle";
    let request = bed.request(job, None).await?;
    let mut v = Verdict::new();
    if to == JobState::Running {
        bed.probe.plan(&[Step::Hold]);
        bed.deliver(request.clone()).await?;
        let started = bed
            .wait_for(WAIT, |b| {
                b.probe.invocations() == 1 && !b.reported_states(job).is_empty()
            })
            .await;
        // The same job again while it runs: a second "RUNNING".
        bed.deliver(request.clone()).await?;
        bed.settle().await;
        let while_running = bed.results(job).len();
        bed.release(1);
        bed.wait_for(WAIT, |b| !b.results(job).is_empty()).await;
        // A handler that reports RUNNING twice.
        let job2 = "tck-lifecycle-progress";
        bed.probe.plan(&[Step::RepeatRunning]);
        bed.deliver(bed.request(job2, None).await?).await?;
        bed.wait_for(WAIT, |b| !b.results(job2).is_empty()).await;
        bed.settle().await;
        let states = bed.reported_states(job);
        let states2 = bed.reported_states(job2);
        v.observe("states", joined(&states))
            .observe("repeatedReportStates", joined(&states2))
            .observe("handlerInvocations", bed.probe.invocations())
            .observe("progressRefused", bed.probe.progress_errors())
            .observe("resultsWhileRunning", while_running)
            .observe("rejections", bed.stats().rejected_total());
        v.check(started, "the job started (RUNNING reported)")
            .check(
                while_running == 0,
                "a second delivery while RUNNING changes nothing (no result)",
            )
            .check(
                states == ["RUNNING", "SUCCEEDED"],
                "the job reported RUNNING once, then SUCCEEDED",
            )
            .check(
                states2.iter().filter(|s| *s == "RUNNING").count() == 3
                    && states2.last().map(String::as_str) == Some("SUCCEEDED"),
                "RUNNING reported again (twice) is accepted and the job goes on to SUCCEEDED",
            )
            .check(
                bed.probe.progress_errors() == 0,
                "no progress report refused",
            )
            .check(bed.probe.invocations() == 2, "one handler call per job")
            .check(bed.stats().rejected_total() == 0, "nothing rejected");
        return Ok(v.finish("RUNNING again is an idempotent repeat"));
    }
    let step = match to {
        JobState::Succeeded => Step::Succeed,
        JobState::Failed | JobState::FailedRetryable | JobState::FailedFatal => Step::Fail(to),
        other => {
            return Err(CaseError::param(format!(
                "no handler outcome gives {other}"
            )));
        }
    };
    bed.probe.plan(&[step]);
    // Redeliveries run the handler again only if `to` is not terminal.
    bed.probe.otherwise(Step::Succeed);
    bed.deliver(request.clone()).await?;
    let finished = bed.wait_for(WAIT, |b| !b.results(job).is_empty()).await;
    let states = bed.reported_states(job);
    bed.deliver(request).await?;
    bed.wait_for(WAIT, |b| b.results(job).len() >= 2).await;
    bed.settle().await;
    let invocations = bed.probe.invocations();
    let results = bed.result_states(job);
    let first = bed.results(job).first().map(|(_, r)| r.clone());
    let code = first.as_ref().map(ErrorCode::of_result).unwrap_or_default();
    v.observe("states", joined(&states))
        .observe("resultAfterRedelivery", joined(&results))
        .observe("handlerInvocations", invocations)
        .observe("errorCode", code.as_i32());
    v.check(finished, format!("a result within {WAIT:?}"))
        .check(
            states == ["RUNNING".to_string(), to.to_string()],
            format!("RUNNING, then {to}"),
        );
    if to.is_terminal() {
        v.check(
            invocations == 1,
            format!("{to} is final: a redelivery does not run the handler again"),
        )
        .check(
            results.iter().all(|s| *s == to.to_string()),
            format!("a redelivery answers {to} again"),
        );
    } else {
        v.check(
            invocations == 2,
            format!("{to} is not terminal: a redelivery (a retry) runs the handler again"),
        );
    }
    Ok(v.finish(&format!("RUNNING → {to}")))
}

/// A terminal `from` → `to`: the job finishes with `from`; then it is delivered again
/// with a handler that would now produce `to`, and a cancel follows. Neither may move it.
async fn worker_from_terminal(
    bed: &Bed,
    from: JobState,
    to: JobState,
) -> Result<Outcome, CaseError> {
    let job = "tck-lifecycle-final";
    let first = match from {
        JobState::Succeeded => Step::Succeed,
        JobState::Failed | JobState::FailedFatal => Step::Fail(from),
        s => return Err(CaseError::param(format!("a worker job cannot end {s}"))),
    };
    let later = match to {
        JobState::Running => Step::Hold,
        JobState::Succeeded => Step::Succeed,
        s => Step::Fail(s),
    };
    bed.probe.plan(&[first]);
    bed.probe.otherwise(later);
    let request = bed.request(job, None).await?;
    bed.deliver(request.clone()).await?;
    let finished = bed.wait_for(WAIT, |b| !b.results(job).is_empty()).await;
    let before = bed.reported_states(job);
    // The finished job again, then a cancel.
    bed.deliver(request).await?;
    bed.wait_for(WAIT, |b| b.results(job).len() >= 2).await;
    bed.cancel(job, None).await?;
    bed.settle().await;
    let after = bed.reported_states(job);
    let later_states: Vec<String> = after[before.len().min(after.len())..].to_vec();
    let results = bed.results(job);
    let identical = results.windows(2).all(|w| w[0].0 == w[1].0);
    let mut v = Verdict::new();
    v.observe("statesBefore", joined(&before))
        .observe("statesAfter", joined(&later_states))
        .observe("handlerInvocations", bed.probe.invocations())
        .observe("results", results.len())
        .observe("identicalResultBytes", identical);
    v.check(finished, format!("the job ended within {WAIT:?}"))
        .check(
            before == ["RUNNING".to_string(), from.to_string()],
            format!("RUNNING, then {from}"),
        )
        .check(
            bed.probe.invocations() == 1,
            "the handler is not run again after the terminal state",
        )
        .check(
            !later_states.iter().any(|s| *s == to.to_string()),
            format!("{to} is never reported after {from}"),
        )
        .check(
            later_states.iter().all(|s| *s == from.to_string()),
            format!("only {from} is repeated"),
        )
        .check(identical, "a repeated result is the recorded bytes");
    Ok(v.finish(&format!("{from} → {to} not applied")))
}

/// A control-plane lifecycle or cancellation case.
pub fn control_plane(params: Params<'_>) -> Result<Outcome, CaseError> {
    let from = params.state("from")?;
    let to = params.state("to")?;
    let rejected = params.expect().is_some();
    let mut p = Plane::new(plane::config());
    let job = "tck-job";
    if from == JobState::Pending && to == JobState::Scheduled {
        return Ok(admission(&mut p, job));
    }
    reach(&mut p, job, from)?;
    let before = p.state(job);
    let mark = p.log.len();
    ask(&mut p, job, from, to)?;
    let after = p.log[mark..].to_vec();
    let moves = plane::transitions(&after, job);
    let state = p.state(job);
    let mut v = Verdict::new();
    v.observe("before", show(before))
        .observe("after", show(state))
        .observe("actions", plane::labels(&after));
    v.check(before == Some(from), format!("the job reached {from}"));
    if rejected {
        let ignored = plane::ignored(&after, job);
        v.observe("ignored", joined(&ignored));
        v.check(state == Some(from), format!("the job stays {from}"))
            .check(moves.is_empty(), "no state change")
            .check(
                !ignored.is_empty(),
                "the event is refused (logged as ignored)",
            )
            .check(
                plane::published(&after, job).is_empty(),
                "no result is published",
            );
        return Ok(v.finish(&format!("{from} → {to} refused")));
    }
    v.check(state == Some(to), format!("the job is {to}"))
        .check(moves.last() == Some(&to), format!("a transition to {to}"));
    let results = plane::published(&after, job);
    match to {
        JobState::Dispatched => {
            let d = plane::dispatches(&after, job);
            v.observe("dispatches", joined(d.iter().map(|(s, _)| s)));
            v.check(d.len() == 1, "one dispatch").check(
                d.first()
                    .and_then(|(_, id)| id.as_ref())
                    .is_some_and(|id| id.attempt == 1),
                "the dispatch carries attempt 1",
            );
        }
        JobState::Denied | JobState::Timeout | JobState::Cancelled => {
            let code = match to {
                JobState::Denied => ErrorCode::SAFETY_DENIED,
                JobState::Timeout => ErrorCode::JOB_TIMEOUT,
                _ => ErrorCode::UNSPECIFIED,
            };
            v.observe(
                "published",
                joined(
                    results
                        .iter()
                        .map(|r| super::worker_bed::status_name(r.status)),
                ),
            );
            v.check(
                results.len() == 1
                    && results[0].status == to.status() as i32
                    && ErrorCode::of_result(&results[0]) == code,
                format!("the scheduler publishes {to} (code {})", code.as_i32()),
            )
            .check(
                plane::dispatches(&p.log, job).len()
                    <= usize::from(from != JobState::Pending && from != JobState::Scheduled),
                "nothing dispatched beyond the attempt that was in flight",
            );
            if from == JobState::Dispatched || from == JobState::Running {
                let stop = after
                    .iter()
                    .any(|a| matches!(a, cap_scheduler::core::Action::ForwardCancel { cancel, .. } if cancel.dispatch.is_some()));
                v.check(stop, "the attempt in flight is told to stop (its identity)");
            }
        }
        _ => {}
    }
    Ok(v.finish(&format!("{from} → {to}")))
}

/// PENDING → SCHEDULED: a submission is recorded, then accepted for the safety check.
fn admission(p: &mut Plane, job: &str) -> Outcome {
    let a = p.submit(job, CP_TOPIC, None);
    let moves = plane::transitions(&a, job);
    let asked = a.iter().any(
        |x| matches!(x, cap_scheduler::core::Action::CheckSafety { job_id, .. } if job_id == job),
    );
    let mut v = Verdict::new();
    v.observe("transitions", joined(&moves))
        .observe("actions", plane::labels(&a))
        .observe("state", show(p.state(job)));
    v.check(
        moves == [JobState::Pending, JobState::Scheduled],
        "PENDING, then SCHEDULED",
    )
    .check(asked, "the safety kernel is asked")
    .check(
        plane::dispatches(&a, job).is_empty(),
        "nothing dispatched yet",
    );
    v.finish("PENDING → SCHEDULED")
}

/// Brings `job` to `state` through the real paths.
fn reach(p: &mut Plane, job: &str, state: JobState) -> Result<(), CaseError> {
    match state {
        JobState::Pending => {
            // A second submission with the idempotency key of a job still running waits
            // for it, PENDING.
            let meta = || {
                Some(v1::JobMetadata {
                    idempotency_key: "tck-key".into(),
                    ..Default::default()
                })
            };
            p.submit("tck-leader", CP_TOPIC, meta());
            p.submit(job, CP_TOPIC, meta());
        }
        JobState::Scheduled => {
            p.submit(job, CP_TOPIC, None);
        }
        JobState::Dispatched => {
            reach(p, job, JobState::Scheduled)?;
            p.decide(job, v1::DecisionType::Allow);
        }
        JobState::Running => {
            reach(p, job, JobState::Dispatched)?;
            let id = p.attempt(job);
            p.progress(job, CP_WORKER, id);
        }
        JobState::Succeeded | JobState::Failed | JobState::FailedFatal => {
            reach(p, job, JobState::Running)?;
            let id = p.attempt(job);
            p.result(job, state, CP_WORKER, id);
        }
        JobState::Denied => {
            reach(p, job, JobState::Scheduled)?;
            p.decide(job, v1::DecisionType::Deny);
        }
        JobState::Cancelled => {
            reach(p, job, JobState::Scheduled)?;
            p.cancel(job, None);
        }
        s => return Err(CaseError::param(format!("no control-plane path to {s}"))),
    }
    Ok(())
}

/// Applies the event that asks a job in `from` to move to `to`.
fn ask(p: &mut Plane, job: &str, from: JobState, to: JobState) -> Result<(), CaseError> {
    match to {
        JobState::Dispatched => {
            p.decide(job, v1::DecisionType::Allow);
        }
        JobState::Denied => {
            p.decide(job, v1::DecisionType::Deny);
        }
        JobState::Timeout => {
            let limit =
                u64::try_from(plane::config().dispatch_timeout.as_millis()).unwrap_or(u64::MAX);
            p.advance(limit + 1);
        }
        JobState::Cancelled => {
            p.cancel(job, None);
        }
        JobState::Running => {
            let id = p.attempt(job);
            p.progress(job, CP_WORKER, id);
        }
        // A worker report naming the state: the only way the rest are asked for.
        JobState::Scheduled
        | JobState::Succeeded
        | JobState::Failed
        | JobState::FailedFatal
        | JobState::FailedRetryable => {
            let id = p.attempt(job);
            p.result(job, to, CP_WORKER, id);
        }
        s => {
            return Err(CaseError::param(format!(
                "no control-plane event asks {from} → {s}"
            )));
        }
    }
    Ok(())
}

fn show(s: Option<JobState>) -> String {
    s.map(|s| s.to_string()).unwrap_or_else(|| "-".into())
}
