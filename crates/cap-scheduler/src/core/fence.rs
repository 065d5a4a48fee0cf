//! Dispatch fencing: does a result, progress report or cancel belong to the attempt in
//! flight? A pure comparison of the report's `DispatchIdentity` (and its sender) with
//! the job's recorded [`Attempt`]; the shell commits a step only if the record it read
//! is still the stored one, so the comparison and the move are atomic together.

use super::event::Fence;
use super::job::{Attempt, JobRecord};
use cap_proto::v1;

/// Who a report came from, for the worker checks.
#[derive(Clone, Copy, Debug)]
pub enum Reporter<'a> {
    /// A worker (results and progress): it must be the one the attempt belongs to.
    Worker(&'a str),
    /// Anyone (a cancel comes from a client): only the dispatch identity is compared.
    Anyone,
}

/// Checks a report against the job's attempt in flight.
///
/// - With a `DispatchIdentity` (a 2.17 peer, cap-rs): its attempt, dispatch id and
///   assigned worker must be those of the attempt in flight.
/// - Without one (a peer older than 2.17): accepted only while an attempt is in flight.
///
/// A worker's report must come from the worker a direct dispatch was sent to. For a
/// pool dispatch, a report carrying the attempt's identity may come from any worker: the
/// unpredictable dispatch id is known only to whoever received the dispatch (after its
/// first taker died, JetStream gives it to another member of the pool); a report
/// without one must come from the worker that reported on the attempt first.
pub fn check(
    job: &JobRecord,
    report: Option<&v1::DispatchIdentity>,
    from: Reporter<'_>,
) -> Result<(), Fence> {
    let Some(active) = job.dispatch.as_ref() else {
        return Err(match report {
            Some(d) if d.attempt < u64::from(job.attempts) => Fence::Stale,
            Some(d) if d.attempt > u64::from(job.attempts) => Fence::Future,
            _ => Fence::Inactive,
        });
    };
    if let Some(d) = report {
        if d.attempt < active.attempt {
            return Err(Fence::Stale);
        }
        if d.attempt > active.attempt {
            return Err(Fence::Future);
        }
        if d.dispatch_id != active.dispatch_id || d.assigned_worker_id != active.assigned {
            return Err(Fence::Foreign);
        }
    }
    if let Reporter::Worker(sender) = from
        && !belongs_to(active, sender, report.is_some())
    {
        return Err(Fence::Foreign);
    }
    Ok(())
}

fn belongs_to(active: &Attempt, sender: &str, identified: bool) -> bool {
    if !active.assigned.is_empty() {
        return active.assigned == sender;
    }
    identified || active.runner.is_empty() || active.runner == sender
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_proto::JobState;

    fn job(assigned: &str, runner: &str) -> JobRecord {
        let mut j = JobRecord::new(v1::JobRequest::default(), "t".into(), "c".into(), 0);
        j.state = JobState::Dispatched;
        j.attempts = 2;
        j.dispatch = Some(Attempt {
            dispatch_id: "d2".into(),
            attempt: 2,
            assigned: assigned.into(),
            runner: runner.into(),
        });
        j
    }

    fn id(d: &str, attempt: u64, worker: &str) -> v1::DispatchIdentity {
        v1::DispatchIdentity {
            dispatch_id: d.into(),
            attempt,
            assigned_worker_id: worker.into(),
        }
    }

    #[test]
    fn the_attempt_in_flight_and_nothing_else() {
        let j = job("w1", "w1");
        let w1 = Reporter::Worker("w1");
        assert_eq!(check(&j, Some(&id("d2", 2, "w1")), w1), Ok(()));
        assert_eq!(check(&j, Some(&id("d1", 1, "w1")), w1), Err(Fence::Stale));
        assert_eq!(check(&j, Some(&id("d9", 9, "w1")), w1), Err(Fence::Future));
        assert_eq!(check(&j, Some(&id("dX", 2, "w1")), w1), Err(Fence::Foreign));
        assert_eq!(check(&j, Some(&id("d2", 2, "w2")), w1), Err(Fence::Foreign));
        // The right identity from the wrong worker.
        let w2 = Reporter::Worker("w2");
        assert_eq!(check(&j, Some(&id("d2", 2, "w1")), w2), Err(Fence::Foreign));
        // A pool dispatch taken over by another worker (a redelivery after the first
        // taker died) is accepted when it shows the attempt's identity.
        let pool = job("", "w1");
        assert_eq!(check(&pool, Some(&id("d2", 2, "")), w2), Ok(()));
        assert_eq!(check(&pool, Some(&id("d1", 1, "")), w2), Err(Fence::Stale));
        // A cancel is compared by identity only.
        assert_eq!(
            check(&j, Some(&id("d2", 2, "w1")), Reporter::Anyone),
            Ok(())
        );
        assert_eq!(
            check(&j, Some(&id("d1", 1, "w1")), Reporter::Anyone),
            Err(Fence::Stale)
        );
    }

    #[test]
    fn legacy_reports_match_by_sender_while_an_attempt_is_in_flight() {
        // A pool dispatch already taken by w1.
        let j = job("", "w1");
        assert_eq!(check(&j, None, Reporter::Worker("w1")), Ok(()));
        assert_eq!(check(&j, None, Reporter::Worker("w2")), Err(Fence::Foreign));
        // Not taken yet: anyone of the pool.
        let j = job("", "");
        assert_eq!(check(&j, None, Reporter::Worker("w7")), Ok(()));
        // Nothing in flight.
        let mut done = job("w1", "w1");
        done.dispatch = None;
        assert_eq!(
            check(&done, None, Reporter::Worker("w1")),
            Err(Fence::Inactive)
        );
        assert_eq!(
            check(&done, Some(&id("d1", 1, "w1")), Reporter::Worker("w1")),
            Err(Fence::Stale)
        );
        assert_eq!(
            check(&done, Some(&id("d2", 2, "w1")), Reporter::Worker("w1")),
            Err(Fence::Inactive)
        );
    }
}
