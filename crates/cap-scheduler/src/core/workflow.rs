//! What the end of a job sets off for others: a fatal workflow step compensates its
//! succeeded siblings, most recent step first, one after the other (the rest of the chain
//! travels in each compensation job's record).

use super::event::FollowUp;
use super::job::JobRecord;
use super::machine::Work;
use super::messages::compensation_request;
use cap_proto::JobState;

impl Work<'_, '_> {
    /// The job just became terminal: start what it sets off. The record stays unsettled
    /// while there is such work, so that it is repeated if the scheduler dies before it
    /// is under way (every part of it is idempotent).
    pub(crate) fn after_terminal(&mut self) {
        let Some(job) = self.job.as_deref() else {
            return;
        };
        let mut follow_ups = Vec::new();
        if job.state == JobState::FailedFatal
            && let Some(parent) = job.parent()
        {
            let (failed, parent, trace) =
                (job.id().to_owned(), parent.to_owned(), job.trace_id.clone());
            // Compensations run for whom the workflow ran: the failed step's identity.
            let identity = job.identity.clone();
            if let Some(f) = self.compensation_of_siblings(&failed, &parent, &trace, identity) {
                follow_ups.push(f);
            }
        }
        if let Some(job) = self.job.as_deref()
            && let Some((next, rest)) = job.chain.split_first()
        {
            follow_ups.push(FollowUp::Submit {
                request: next.clone(),
                trace_id: job.trace_id.clone(),
                identity: job.identity.clone(),
                chain: rest.to_vec(),
            });
        }
        let settled = follow_ups.is_empty();
        self.follow_ups.extend(follow_ups);
        if let Some(job) = self.job_mut() {
            job.settled = settled;
        }
    }

    /// The compensation chain of a failed step's succeeded siblings: the first one to
    /// submit, carrying the rest.
    fn compensation_of_siblings(
        &mut self,
        failed: &str,
        parent: &str,
        trace: &str,
        identity: Option<cap_proto::v1::IdentityBinding>,
    ) -> Option<FollowUp> {
        let children = self.env.children_of(parent);
        let mut done: Vec<JobRecord> = children
            .iter()
            .filter(|c| c.as_str() != failed)
            .filter_map(|c| self.env.other(c))
            .filter(|c| c.state == JobState::Succeeded && c.request.compensation.is_some())
            .collect();
        if !self.env.missing.is_empty() {
            return None;
        }
        done.sort_by(|a, b| {
            b.request
                .step_index
                .cmp(&a.request.step_index)
                .then_with(|| b.since.cmp(&a.since))
        });
        let mut chain: Vec<_> = done.iter().filter_map(compensation_request).collect();
        if chain.is_empty() {
            return None;
        }
        let first = chain.remove(0);
        Some(FollowUp::Submit {
            request: first,
            trace_id: trace.to_owned(),
            identity,
            chain,
        })
    }

    /// An unsettled terminal job is looked at again: repeat what it sets off.
    pub(crate) fn settle(&mut self) {
        let Some(job) = self.job.as_deref() else {
            return;
        };
        if job.state == JobState::Cancelled {
            let id = job.id().to_owned();
            let requested_by = self.env.id.to_owned();
            for child in self.env.children_of(&id) {
                self.follow_ups
                    .push(FollowUp::Cancel(cap_proto::v1::JobCancel {
                        job_id: child,
                        reason: format!("parent {id} cancelled"),
                        requested_by: requested_by.clone(),
                        ..Default::default()
                    }));
            }
        }
        self.after_terminal();
        if self.env.missing.is_empty()
            && let Some(job) = self.job_mut()
        {
            job.settled = true;
        }
    }
}
