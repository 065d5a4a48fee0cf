//! `cancellation/*`: the control-plane cases are lifecycle moves to CANCELLED (see
//! [`lifecycle::control_plane`](super::lifecycle::control_plane)); the worker case runs
//! a job on the real worker and sends it a `JobCancel` while it runs.

use super::outcome::{CaseError, Outcome, Params, Verdict, joined};
use super::worker_bed::{Bed, Step, WAIT};
use cap_proto::JobState;

/// A worker-owned cancellation case: RUNNING → CANCELLED on a `JobCancel`.
pub async fn worker(params: Params<'_>) -> Result<Outcome, CaseError> {
    let from = params.state("from")?;
    let to = params.state("to")?;
    if from != JobState::Running || to != JobState::Cancelled {
        return Err(CaseError::param(format!(
            "a worker cancel goes RUNNING → CANCELLED, not {from} → {to}"
        )));
    }
    let bed = Bed::start(Some(cap_bus::memory::DEFAULT_MAX_PAYLOAD)).await?;
    let out = honours_cancel(&bed).await;
    bed.stop().await;
    out
}

async fn honours_cancel(bed: &Bed) -> Result<Outcome, CaseError> {
    let job = "tck-cancel";
    bed.probe.plan(&[Step::Hold]);
    bed.deliver(bed.request(job, None).await?).await?;
    let running = bed
        .wait_for(WAIT, |b| {
            b.probe.invocations() == 1
                && b.reported_states(job).first().map(String::as_str) == Some("RUNNING")
        })
        .await;
    bed.cancel(job, None).await?;
    let ended = bed.wait_for(WAIT, |b| !b.results(job).is_empty()).await;
    bed.settle().await;
    let states = bed.reported_states(job);
    let mut v = Verdict::new();
    v.observe("states", joined(&states))
        .observe("handlerInvocations", bed.probe.invocations())
        .observe("handlerCompleted", bed.probe.completed());
    v.check(running, "the job is RUNNING before the cancel")
        .check(ended, format!("a result within {WAIT:?} of the cancel"))
        .check(
            states == ["RUNNING", "CANCELLED"],
            "RUNNING, then CANCELLED",
        )
        .check(
            bed.probe.completed() == 0,
            "the handler was stopped, not left to finish",
        );
    Ok(v.finish("the running attempt stopped on JobCancel"))
}
