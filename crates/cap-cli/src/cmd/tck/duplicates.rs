//! `duplicates/*` (CAP-PRODUCTION duplicate suppression).
//!
//! Worker: one dispatch identity (`dispatchId`, `attempt`, `assignedWorkerId`) is
//! delivered `deliveries` times — while the first delivery runs (`one-side-effect`), or
//! each after the previous result (`idempotent-replay`); for `invoke`, a dispatch of the
//! same job with another dispatch id finished first, and this one must still run.
//!
//! Control plane: the scheduler core dispatches the job with `dispatchId` as attempt
//! `attempt`, and the worker's result for that attempt arrives `deliveries` times.

use super::outcome::{CaseError, Outcome, Params, Verdict, joined};
use super::plane::{self, Plane, WORKER as CP_WORKER};
use super::retries::{ids_for, to_attempt};
use super::worker_bed::{Bed, Step, WAIT, WORKER_ID, identity, show};
use cap_proto::{JobState, v1};

/// A worker-owned duplicates case.
pub async fn worker(params: Params<'_>) -> Result<Outcome, CaseError> {
    let id = identity(
        params.required("dispatchId")?,
        params.number("attempt")?,
        params.get("assignedWorkerId").unwrap_or(WORKER_ID),
    );
    let deliveries = usize::try_from(params.number("deliveries")?)
        .ok()
        .filter(|n| (1..=20).contains(n))
        .ok_or_else(|| CaseError::param("deliveries are 1..=20"))?;
    let expect = params.required("expect")?;
    let bed = Bed::start(Some(cap_bus::memory::DEFAULT_MAX_PAYLOAD)).await?;
    let mut v = Verdict::new();
    v.observe("dispatch", show(&Some(id.clone())))
        .observe("deliveries", deliveries);
    let out = match expect {
        "one-side-effect" => while_running(&bed, &id, deliveries, &mut v).await,
        "idempotent-replay" => after_finish(&bed, &id, deliveries, &mut v).await,
        "invoke" => distinct(&bed, &id, deliveries, &mut v).await,
        other => Err(CaseError::param(format!("unknown expectation {other:?}"))),
    };
    bed.stop().await;
    out?;
    Ok(v.finish(match expect {
        "one-side-effect" => "copies delivered while it runs: one handler call",
        "idempotent-replay" => "copies delivered after the end: the recorded result replayed",
        _ => "a new dispatch id of the same job runs the handler",
    }))
}

/// Every copy arrives while the first runs: one call, one result.
async fn while_running(
    bed: &Bed,
    id: &v1::DispatchIdentity,
    deliveries: usize,
    v: &mut Verdict,
) -> Result<(), CaseError> {
    let job = "tck-dup-running";
    bed.probe.plan(&[Step::Hold]);
    bed.probe.otherwise(Step::Succeed);
    let bytes = bed.request(job, Some(id.clone())).await?;
    bed.deliver(bytes.clone()).await?;
    let running = bed.wait_for(WAIT, |b| b.probe.invocations() == 1).await;
    for _ in 1..deliveries {
        bed.deliver(bytes.clone()).await?;
    }
    bed.settle().await;
    bed.release(deliveries);
    let finished = bed.wait_for(WAIT, |b| !b.results(job).is_empty()).await;
    bed.settle().await;
    let results = bed.result_states(job);
    v.observe("handlerInvocations", bed.probe.invocations())
        .observe("results", joined(&results));
    v.check(running, "the first delivery runs")
        .check(finished, format!("a result within {WAIT:?}"))
        .check(
            bed.probe.invocations() == 1,
            "the handler runs exactly once",
        )
        .check(
            !results.is_empty() && results.iter().all(|s| s == "SUCCEEDED"),
            "only the one outcome (SUCCEEDED) is reported",
        );
    Ok(())
}

/// Each copy arrives after the previous result: one call, the recorded result replayed.
async fn after_finish(
    bed: &Bed,
    id: &v1::DispatchIdentity,
    deliveries: usize,
    v: &mut Verdict,
) -> Result<(), CaseError> {
    let job = "tck-dup-finished";
    let bytes = bed.request(job, Some(id.clone())).await?;
    for n in 1..=deliveries {
        bed.deliver(bytes.clone()).await?;
        bed.wait_for(WAIT, |b| b.results(job).len() >= n).await;
    }
    bed.settle().await;
    let results = bed.results(job);
    let identical = results.windows(2).all(|w| w[0].0 == w[1].0);
    v.observe("handlerInvocations", bed.probe.invocations())
        .observe("results", joined(bed.result_states(job)))
        .observe("identicalResultBytes", identical);
    v.check(
        bed.probe.invocations() == 1,
        "the handler runs exactly once",
    )
    .check(
        results.len() == deliveries,
        "every delivery is answered with a result",
    )
    .check(
        identical,
        "the answers replay the recorded result, byte for byte",
    )
    .check(
        results
            .first()
            .is_some_and(|(_, r)| r.status == JobState::Succeeded.status() as i32),
        "the recorded result is SUCCEEDED",
    );
    Ok(())
}

/// Another dispatch id of the same job finished first; this one still runs.
async fn distinct(
    bed: &Bed,
    id: &v1::DispatchIdentity,
    deliveries: usize,
    v: &mut Verdict,
) -> Result<(), CaseError> {
    let job = "tck-dup-distinct";
    let prior = v1::DispatchIdentity {
        dispatch_id: format!("{}-prior", id.dispatch_id),
        ..id.clone()
    };
    bed.deliver(bed.request(job, Some(prior.clone())).await?)
        .await?;
    let first = bed.wait_for(WAIT, |b| !b.results(job).is_empty()).await;
    for n in 1..=deliveries {
        bed.deliver(bed.request(job, Some(id.clone())).await?)
            .await?;
        bed.wait_for(WAIT, |b| {
            b.probe.invocations() > n && b.results(job).len() > n
        })
        .await;
    }
    bed.settle().await;
    let seen = bed.probe.identities();
    v.observe("prior", show(&Some(prior)))
        .observe("handlerInvocations", bed.probe.invocations())
        .observe("handlerSaw", joined(seen.iter().map(show)))
        .observe("results", joined(bed.result_states(job)));
    v.check(first, "the prior dispatch ran").check(
        bed.probe.invocations() == 1 + deliveries && seen.last() == Some(&Some(id.clone())),
        "the distinct dispatch runs the handler (not suppressed as a duplicate)",
    );
    Ok(())
}

/// A control-plane duplicates case: the same result, `deliveries` times.
pub fn control_plane(params: Params<'_>) -> Result<Outcome, CaseError> {
    let dispatch_id = params.required("dispatchId")?;
    let attempt = params.number("attempt")?;
    let deliveries = params.number("deliveries")?;
    if params.expect() != Some("one-side-effect") || !(1..=20).contains(&deliveries) {
        return Err(CaseError::param(
            "expect `one-side-effect`, deliveries 1..=20",
        ));
    }
    if !(1..=50).contains(&attempt) {
        return Err(CaseError::param("attempts are 1..=50"));
    }
    let mut p = Plane::with_dispatch_ids(plane::config(), ids_for(attempt, dispatch_id));
    let job = "tck-dup";
    to_attempt(&mut p, job, attempt)?;
    let active = p.attempt(job);
    let mark = p.log.len();
    let mut per_delivery = Vec::new();
    for _ in 0..deliveries {
        let a = p.result(job, JobState::Succeeded, CP_WORKER, active.clone());
        per_delivery.push(plane::labels(&a));
    }
    let after = p.log[mark..].to_vec();
    let done = plane::transitions(&after, job)
        .iter()
        .filter(|s| **s == JobState::Succeeded)
        .count();
    let recorded = p
        .core()
        .job(job)
        .and_then(|j| j.result.as_ref())
        .map(|r| r.status == JobState::Succeeded.status() as i32)
        .unwrap_or(false);
    let mut v = Verdict::new();
    v.observe("active", show(&active))
        .observe("perDelivery", per_delivery.join(" | "))
        .observe("succeededTransitions", done);
    v.check(
        active
            .as_ref()
            .is_some_and(|a| a.dispatch_id == dispatch_id && a.attempt == attempt),
        "the attempt in flight is the case's dispatch",
    )
    .check(done == 1, "the result is applied once")
    .check(recorded, "the job's recorded outcome is SUCCEEDED")
    .check(
        per_delivery
            .iter()
            .skip(1)
            .all(|l| !l.contains("Transition")),
        "later copies change nothing",
    );
    Ok(v.finish("a duplicate result applies once"))
}
