//! `retries/*` (CAP-PRODUCTION attempt fencing).
//!
//! Worker: the job's active attempt (`activeAttempt`, this worker; its dispatch id is
//! `dispatchId` when the event names that attempt, another one otherwise) is delivered
//! first; then the event (`dispatch` or `cancel`) carrying (`dispatchId`,
//! `attempt`, `assignedWorkerId`) reaches the worker. A dispatch that must be rejected
//! is tried twice on fresh workers: while the active attempt runs, and after it ended
//! retryably (where no duplicate-by-job-id rule can hide a missing attempt check). A new
//! attempt is tried after the active one ended retryably, as a scheduler's retry.
//!
//! Control plane: the scheduler core dispatches the job, fails it retryably until
//! `activeAttempt` is in flight, then receives the event (a result, progress or cancel)
//! carrying the identity of attempt `attempt`, which must be fenced.

use super::outcome::{CaseError, Outcome, Params, Verdict, joined};
use super::plane::{self, Plane, WORKER as CP_WORKER};
use super::worker_bed::{Bed, SETTLE, Step, WAIT, WORKER_ID, identity, show};
use cap_proto::{JobState, v1};
use cap_scheduler::core::{Fence, Hold};

/// The event of a case.
struct Event<'a> {
    dispatch_id: &'a str,
    attempt: u64,
    active: u64,
    assigned: &'a str,
}

impl<'a> Event<'a> {
    fn of(params: Params<'a>) -> Result<Self, CaseError> {
        Ok(Event {
            dispatch_id: params.required("dispatchId")?,
            attempt: params.number("attempt")?,
            active: params.number("activeAttempt")?,
            assigned: params.get("assignedWorkerId").unwrap_or(WORKER_ID),
        })
    }

    fn identity(&self) -> v1::DispatchIdentity {
        identity(self.dispatch_id, self.attempt, self.assigned)
    }

    /// The active attempt: the event's own dispatch when it names the active attempt,
    /// else another dispatch (every attempt has a fresh dispatch id).
    fn active_identity(&self) -> v1::DispatchIdentity {
        if self.attempt == self.active {
            identity(self.dispatch_id, self.active, WORKER_ID)
        } else {
            let id = format!("{}-attempt{}", self.dispatch_id, self.active);
            identity(&id, self.active, WORKER_ID)
        }
    }
}

/// A worker-owned retries case.
pub async fn worker(params: Params<'_>) -> Result<Outcome, CaseError> {
    let ev = Event::of(params)?;
    let kind = params.required("event")?;
    let expect = params.required("expect")?;
    let mut v = Verdict::new();
    v.observe("active", show(&Some(ev.active_identity())))
        .observe("event", format!("{kind} {}", show(&Some(ev.identity()))));
    match (kind, expect) {
        ("dispatch", "invoke") => new_attempt(&ev, &mut v).await?,
        ("dispatch", "reject") => {
            rejected_while_running(&ev, &mut v).await?;
            rejected_after_retryable_end(&ev, &mut v).await?;
        }
        ("cancel", "cancel") => cancel(&ev, true, &mut v).await?,
        ("cancel", "reject") => cancel(&ev, false, &mut v).await?,
        _ => {
            return Err(CaseError::param(format!(
                "no worker driver for event {kind:?} expecting {expect:?}"
            )));
        }
    }
    let summary = match (kind, expect) {
        ("dispatch", "invoke") => format!("attempt {} runs the handler once", ev.attempt),
        ("dispatch", _) => format!(
            "the dispatch of attempt {} for {} is rejected",
            ev.attempt, ev.assigned
        ),
        ("cancel", "cancel") => "a cancel of the active attempt stops it".to_owned(),
        _ => format!(
            "a cancel of attempt {} for {} leaves the active attempt running",
            ev.attempt, ev.assigned
        ),
    };
    Ok(v.finish(&summary))
}

/// A dispatch of the next attempt after the active one failed retryably: run once.
async fn new_attempt(ev: &Event<'_>, v: &mut Verdict) -> Result<(), CaseError> {
    let bed = Bed::start(Some(cap_bus::memory::DEFAULT_MAX_PAYLOAD)).await?;
    let job = "tck-retry";
    bed.probe
        .plan(&[Step::Fail(JobState::FailedRetryable), Step::Succeed]);
    bed.deliver(bed.request(job, Some(ev.active_identity())).await?)
        .await?;
    let ended = bed.wait_for(WAIT, |b| !b.results(job).is_empty()).await;
    bed.deliver(bed.request(job, Some(ev.identity())).await?)
        .await?;
    let ran = bed.wait_for(WAIT, |b| b.results(job).len() >= 2).await;
    bed.settle().await;
    let seen = bed.probe.identities();
    v.observe("handlerInvocations", bed.probe.invocations())
        .observe("handlerSaw", joined(seen.iter().map(show)))
        .observe("results", joined(bed.result_states(job)));
    v.check(ended, "the active attempt ended (FAILED_RETRYABLE)")
        .check(ran, format!("the new attempt's result within {WAIT:?}"))
        .check(
            bed.probe.invocations() == 2 && seen.get(1) == Some(&Some(ev.identity())),
            "the new attempt runs the handler exactly once",
        );
    bed.stop().await;
    Ok(())
}

/// The event's dispatch arrives while the active attempt runs: no call, and the active
/// attempt finishes as it would have.
async fn rejected_while_running(ev: &Event<'_>, v: &mut Verdict) -> Result<(), CaseError> {
    let bed = Bed::start(Some(cap_bus::memory::DEFAULT_MAX_PAYLOAD)).await?;
    let job = "tck-retry-running";
    bed.probe.plan(&[Step::Hold]);
    bed.probe.otherwise(Step::Succeed);
    bed.deliver(bed.request(job, Some(ev.active_identity())).await?)
        .await?;
    let running = bed.wait_for(WAIT, |b| b.probe.invocations() == 1).await;
    bed.deliver(bed.request(job, Some(ev.identity())).await?)
        .await?;
    bed.settle().await;
    let calls = bed.probe.invocations();
    // An answer to the event's own dispatch (carrying its identity) is not about the
    // active attempt; anything else is.
    let event = ev.identity();
    let early = bed.result_states_except(job, &event);
    bed.release(1);
    let finished = bed
        .wait_for(WAIT, |b| !b.result_states_except(job, &event).is_empty())
        .await;
    bed.settle().await;
    let results = bed.result_states_except(job, &event);
    v.observe("whileRunning.handlerInvocations", calls)
        .observe("whileRunning.resultsBeforeRelease", joined(&early))
        .observe("whileRunning.results", joined(&results));
    v.check(running, "the active attempt is running")
        .check(
            calls == 1,
            "while it runs, the event's dispatch does not run the handler",
        )
        .check(
            early.is_empty(),
            "while it runs, the active attempt is not ended by the event",
        )
        .check(
            finished
                && results.first().map(String::as_str) == Some("SUCCEEDED")
                && bed.probe.completed() == 1,
            "the active attempt then completes (SUCCEEDED)",
        );
    bed.stop().await;
    Ok(())
}

/// The event's dispatch arrives after the active attempt failed retryably: no call.
async fn rejected_after_retryable_end(ev: &Event<'_>, v: &mut Verdict) -> Result<(), CaseError> {
    let bed = Bed::start(Some(cap_bus::memory::DEFAULT_MAX_PAYLOAD)).await?;
    let job = "tck-retry-ended";
    bed.probe.plan(&[Step::Fail(JobState::FailedRetryable)]);
    bed.probe.otherwise(Step::Succeed);
    bed.deliver(bed.request(job, Some(ev.active_identity())).await?)
        .await?;
    let ended = bed.wait_for(WAIT, |b| !b.results(job).is_empty()).await;
    bed.deliver(bed.request(job, Some(ev.identity())).await?)
        .await?;
    // Whatever the delivery sets off (a call, an answer) shows within the settle time.
    bed.wait_for(SETTLE, |b| b.results(job).len() >= 2).await;
    bed.settle().await;
    let calls = bed.probe.invocations();
    let seen = bed.probe.identities();
    v.observe("afterEnd.handlerInvocations", calls)
        .observe("afterEnd.handlerSaw", joined(seen.iter().map(show)))
        .observe("afterEnd.results", joined(bed.result_states(job)));
    v.check(ended, "the active attempt ended (FAILED_RETRYABLE)")
        .check(
            calls == 1,
            "after it ended, the event's dispatch does not run the handler",
        );
    bed.stop().await;
    Ok(())
}

/// A cancel carrying the event's identity reaches the running active attempt.
async fn cancel(ev: &Event<'_>, honoured: bool, v: &mut Verdict) -> Result<(), CaseError> {
    let bed = Bed::start(Some(cap_bus::memory::DEFAULT_MAX_PAYLOAD)).await?;
    let job = "tck-retry-cancel";
    bed.probe.plan(&[Step::Hold]);
    bed.deliver(bed.request(job, Some(ev.active_identity())).await?)
        .await?;
    let running = bed.wait_for(WAIT, |b| b.probe.invocations() == 1).await;
    bed.cancel(job, Some(ev.identity())).await?;
    // Honoured: the CANCELLED result comes (allow for a slow machine); refused: nothing
    // comes within a second.
    let within = if honoured {
        WAIT
    } else {
        std::time::Duration::from_secs(1)
    };
    let ended = bed.wait_for(within, |b| !b.results(job).is_empty()).await;
    let after_cancel = bed.result_states(job);
    if !ended {
        bed.release(1);
        bed.wait_for(WAIT, |b| !b.results(job).is_empty()).await;
    }
    bed.settle().await;
    let results = bed.result_states(job);
    v.observe("resultsAfterCancel", joined(&after_cancel))
        .observe("results", joined(&results))
        .observe("handlerCompleted", bed.probe.completed());
    v.check(running, "the active attempt is running");
    if honoured {
        v.check(
            after_cancel == ["CANCELLED"] && bed.probe.completed() == 0,
            "the active attempt stops: CANCELLED",
        );
    } else {
        v.check(
            after_cancel.is_empty(),
            "the cancel does not stop the active attempt",
        )
        .check(
            results == ["SUCCEEDED"] && bed.probe.completed() == 1,
            "the active attempt completes (SUCCEEDED)",
        );
    }
    bed.stop().await;
    Ok(())
}

/// Drives `job` on `p` until attempt `n` is in flight (each earlier attempt failing
/// retryably from [`CP_WORKER`]).
pub fn to_attempt(p: &mut Plane, job: &str, n: u64) -> Result<(), CaseError> {
    p.submit(job, plane::TOPIC, None);
    p.decide(job, v1::DecisionType::Allow);
    for _ in 1..n {
        let id = p.attempt(job);
        p.result(job, JobState::FailedRetryable, CP_WORKER, id);
        let Some(Hold::Retry { at }) = p.core().job(job).and_then(|j| j.hold.clone()) else {
            return Err(CaseError::harness("the scheduler did not plan a retry"));
        };
        let wait = at.saturating_sub(p.now);
        p.advance(wait);
    }
    match p.attempt(job) {
        Some(a) if a.attempt == n => Ok(()),
        other => Err(CaseError::harness(format!(
            "attempt {n} is not in flight ({})",
            show(&other)
        ))),
    }
}

/// The dispatch ids that make attempt `attempt` carry `dispatch_id`.
pub fn ids_for(attempt: u64, dispatch_id: &str) -> Vec<Option<String>> {
    let n = usize::try_from(attempt).unwrap_or(0);
    (1..=n)
        .map(|i| (i == n).then(|| dispatch_id.to_owned()))
        .collect()
}

/// A control-plane retries case: a report of an attempt other than the active one.
pub fn control_plane(params: Params<'_>) -> Result<Outcome, CaseError> {
    let dispatch_id = params.required("dispatchId")?;
    let attempt = params.number("attempt")?;
    let active = params.number("activeAttempt")?;
    let kind = params.required("event")?;
    if params.expect() != Some("ignore") {
        return Err(CaseError::param(
            "control-plane retries cases expect `ignore`",
        ));
    }
    if attempt == 0 || active == 0 || active > 50 {
        return Err(CaseError::param("attempts are 1..=50"));
    }
    let mut p =
        Plane::with_dispatch_ids(plane::config(), ids_for(attempt.min(active), dispatch_id));
    let job = "tck-retries";
    to_attempt(&mut p, job, active)?;
    let before = p.state(job);
    let active_id = p.attempt(job);
    let report = v1::DispatchIdentity {
        dispatch_id: dispatch_id.into(),
        attempt,
        assigned_worker_id: active_id
            .as_ref()
            .map(|a| a.assigned_worker_id.clone())
            .unwrap_or_default(),
    };
    let mark = p.log.len();
    let what = match kind {
        "result" => {
            p.result(job, JobState::Succeeded, CP_WORKER, Some(report.clone()));
            "result"
        }
        "progress" => {
            p.progress(job, CP_WORKER, Some(report.clone()));
            "progress"
        }
        "cancel" => {
            p.cancel(job, Some(report.clone()));
            "cancel"
        }
        other => return Err(CaseError::param(format!("unknown event {other:?}"))),
    };
    let after = p.log[mark..].to_vec();
    let fenced = plane::fenced(&after, job);
    let expected = if attempt < active {
        Fence::Stale
    } else if attempt > active {
        Fence::Future
    } else {
        Fence::Foreign
    };
    let mut v = Verdict::new();
    v.observe("active", show(&active_id))
        .observe("report", show(&Some(report)))
        .observe("actions", plane::labels(&after))
        .observe(
            "stateBefore",
            before.map(|s| s.to_string()).unwrap_or_default(),
        )
        .observe(
            "stateAfter",
            p.state(job).map(|s| s.to_string()).unwrap_or_default(),
        );
    v.check(
        fenced == [(what, expected)],
        format!("the {what} is fenced as {expected}"),
    )
    .check(p.state(job) == before, "the job's state is unchanged")
    .check(
        p.attempt(job) == active_id,
        "the active attempt is unchanged",
    )
    .check(
        plane::transitions(&after, job).is_empty(),
        "no state change",
    )
    .check(
        plane::published(&after, job).is_empty(),
        "no result published",
    )
    .check(
        plane::dispatches(&after, job).is_empty(),
        "nothing dispatched",
    );
    Ok(v.finish(&format!(
        "{what} of attempt {attempt} ignored while {active} is active"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stale_attempt_gets_its_id() {
        assert_eq!(ids_for(1, "d"), [Some("d".to_string())]);
        assert_eq!(ids_for(3, "d"), [None, None, Some("d".to_string())]);
        let mut p = Plane::with_dispatch_ids(plane::config(), ids_for(1, "dsp-x"));
        to_attempt(&mut p, "j", 3).unwrap();
        let a = p.attempt("j").unwrap();
        assert_eq!((a.attempt, a.dispatch_id.as_str()), (3, "dsp-3"));
        let first = plane::dispatches(&p.log, "j");
        assert_eq!(first[0].1.as_ref().unwrap().dispatch_id, "dsp-x");
    }
}
