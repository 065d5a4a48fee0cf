//! [`JobRecord`]: everything the scheduler knows about one job.

use cap_proto::state::JobState;
use cap_proto::v1;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Milliseconds on the scheduler's clock (wall-clock milliseconds since the Unix epoch in
/// the async shell, a virtual clock in tests).
pub type Millis = u64;

/// Why a scheduled job is not dispatched yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hold {
    /// Waiting for the safety decision asked for at `asked`. If none is recorded by
    /// [`SAFETY_STALL_MS`](super::timers::SAFETY_STALL_MS) later (the instance that asked
    /// died, or the answer was lost), the job asks again.
    Safety {
        /// When the kernel was asked.
        asked: Millis,
    },
    /// The kernel said REQUIRE_HUMAN: waiting for approve/reject.
    Approval {
        /// Reference to approve (the job id).
        approval_ref: String,
    },
    /// The kernel said THROTTLE or was unreachable: re-check at `at`.
    Recheck {
        /// When to ask again.
        at: Millis,
    },
    /// Allowed, but no worker with the required capabilities yet (since `since`).
    Worker {
        /// When the wait started.
        since: Millis,
    },
    /// A retry is due at `at`.
    Retry {
        /// When to dispatch again.
        at: Millis,
    },
    /// Submitted with the idempotency key of `leader`, which is still running: this job
    /// gets the leader's outcome when it ends.
    Follow {
        /// The job that runs for both.
        leader: String,
    },
}

/// One physical dispatch of a job (CAP-PRODUCTION fencing): persisted before the
/// dispatch is published, compared with every result, progress report and cancel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Unpredictable id of this dispatch.
    pub dispatch_id: String,
    /// 1 for the first dispatch, previous + 1 after that.
    pub attempt: u64,
    /// The worker it was sent to directly; empty for a pool dispatch (any worker of
    /// the pool may take it).
    pub assigned: String,
    /// The worker that reported on this attempt first (for a pool dispatch, the one that
    /// took it); later reports from another worker are foreign.
    pub runner: String,
}

impl Attempt {
    /// The wire form carried by the JobRequest.
    pub fn identity(&self) -> v1::DispatchIdentity {
        v1::DispatchIdentity {
            dispatch_id: self.dispatch_id.clone(),
            attempt: self.attempt,
            assigned_worker_id: self.assigned.clone(),
        }
    }
}

/// A decision taken about a job: the safety kernel's answer, or a human's approval or
/// rejection of a held job. Kept in the record so that the job can be inspected later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// When it was taken.
    pub at: Millis,
    /// `ALLOW`, `ALLOW_WITH_CONSTRAINTS`, `DENY`, `REQUIRE_APPROVAL`, `THROTTLE`,
    /// `REDACT`, `QUARANTINE` (the kernel), `APPROVED`, `REJECTED` (a human).
    pub action: String,
    /// Why, as the kernel or the human said.
    pub reason: String,
    /// The policy rule that matched (kernel decisions).
    #[serde(default)]
    pub rule_id: String,
}

/// The W3C trace context a job was submitted with: the `traceparent` and `tracestate`
/// headers of its submit packet, opaque to the core (the shell checks them before it
/// hands them in). Kept with the job, so that every hop of it the scheduler makes (policy
/// check, dispatch, its own results), in any instance and after any restart, continues
/// the submitter's trace and keeps its sampling decision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceParent {
    /// The `traceparent` header value.
    pub traceparent: String,
    /// The `tracestate` header value ("" when none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tracestate: String,
}

/// One job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The request as submitted (canonical protobuf bytes).
    #[serde(with = "proto_bytes")]
    pub request: v1::JobRequest,
    /// `trace_id` of the submitting packet.
    pub trace_id: String,
    /// `sender_id` of the submitting packet.
    pub submitter: String,
    /// Current state.
    #[serde(with = "state_name")]
    pub state: JobState,
    /// Why it waits, when it is SCHEDULED (or FAILED_RETRYABLE).
    pub hold: Option<Hold>,
    /// The state changes so far, with times.
    pub history: Vec<(Millis, String)>,
    /// Dispatch attempts so far.
    pub attempts: u32,
    /// Safety checks that failed because the kernel was unreachable, in a row.
    pub safety_failures: u32,
    /// Retries allowed (from policy constraints, else the config).
    pub max_retries: u32,
    /// Run deadline from policy constraints or budget, in ms (0: the config default).
    pub max_runtime_ms: u64,
    /// Context pointer to dispatch with (the redacted one when the kernel gave one).
    pub dispatch_context_ptr: String,
    /// Subject of the last dispatch.
    pub dispatched_to: String,
    /// Worker that reported on the job.
    pub worker_id: String,
    /// When the state last changed.
    pub since: Millis,
    /// The final result, once terminal.
    #[serde(with = "opt_proto_bytes")]
    pub result: Option<v1::JobResult>,
    /// The attempt in flight, while DISPATCHED or RUNNING. Any other time it is `None`:
    /// the last attempt is fenced, and nothing it reports is applied.
    #[serde(default)]
    pub dispatch: Option<Attempt>,
    /// The envelope identity (BusPacket.identity) the job was submitted with; relayed on
    /// every dispatch.
    #[serde(default, with = "opt_proto_bytes")]
    pub identity: Option<v1::IdentityBinding>,
    /// Workflow compensations still to run after this one (compensation jobs only),
    /// most recent step first.
    #[serde(default, with = "requests")]
    pub chain: Vec<v1::JobRequest>,
    /// Once terminal: whether what the end of the job sets off for other jobs (a
    /// compensation, children's cancels) is known to be under way. An unsettled
    /// terminal job is looked at again shortly after, and repeats that work (every part
    /// of it is idempotent), so a scheduler that dies between the two loses nothing.
    #[serde(default)]
    pub settled: bool,
    /// Safety and approval decisions so far, oldest first.
    #[serde(default)]
    pub decisions: Vec<Decision>,
    /// The trace context the job was submitted with, when its packet carried one
    /// (shared: a record is cloned at every step, this is not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<Arc<TraceParent>>,
}

impl JobRecord {
    /// A new PENDING record.
    pub fn new(request: v1::JobRequest, trace_id: String, submitter: String, now: Millis) -> Self {
        JobRecord {
            dispatch_context_ptr: request.context_ptr.clone(),
            request,
            trace_id,
            submitter,
            state: JobState::Pending,
            hold: None,
            history: vec![(now, JobState::Pending.to_string())],
            attempts: 0,
            safety_failures: 0,
            max_retries: 0,
            max_runtime_ms: 0,
            dispatched_to: String::new(),
            worker_id: String::new(),
            since: now,
            result: None,
            dispatch: None,
            identity: None,
            chain: Vec::new(),
            settled: false,
            decisions: Vec::new(),
            trace_parent: None,
        }
    }

    /// The job id.
    pub fn id(&self) -> &str {
        &self.request.job_id
    }

    /// The idempotency key, if any.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.request
            .meta
            .as_ref()
            .map(|m| m.idempotency_key.as_str())
            .filter(|k| !k.is_empty())
    }

    /// The tenant the job runs for: the request's `tenant_id`, else its metadata's,
    /// else the envelope identity's (empty when none names one).
    pub fn tenant(&self) -> &str {
        let meta = self.request.meta.as_ref().map(|m| m.tenant_id.as_str());
        let bound = self.identity.as_ref().map(|i| i.tenant_id.as_str());
        [Some(self.request.tenant_id.as_str()), meta, bound]
            .into_iter()
            .flatten()
            .find(|t| !t.is_empty())
            .unwrap_or("")
    }

    /// When the job was first recorded.
    pub fn created(&self) -> Millis {
        self.history
            .first()
            .map(|(at, _)| *at)
            .unwrap_or(self.since)
    }

    /// The workflow parent, if any.
    pub fn parent(&self) -> Option<&str> {
        Some(self.request.parent_job_id.as_str()).filter(|p| !p.is_empty())
    }

    /// How long the step that a move to `to` at `now` ends took, read from the history:
    /// for DISPATCHED, the wait for a worker since the job became ready (it was
    /// submitted, or its last attempt failed and may be retried), on the first dispatch
    /// since then; for a terminal state, the run since the last dispatch, when there was
    /// one after the job last became ready. `None` otherwise.
    pub fn latency_to(&self, to: JobState, now: Millis) -> Option<Millis> {
        let ready = [JobState::Pending, JobState::FailedRetryable];
        let (at, from) = self.history.iter().rev().find_map(|(at, entry)| {
            ready
                .iter()
                .chain(&[JobState::Dispatched])
                .find(|s| s.name() == entry)
                .map(|s| (*at, *s))
        })?;
        let measured = match to {
            JobState::Dispatched => ready.contains(&from),
            t if t.is_terminal() => from == JobState::Dispatched,
            _ => false,
        };
        measured.then(|| now.saturating_sub(at))
    }

    /// Records a state change (the caller has checked it is legal).
    pub(crate) fn set_state(&mut self, state: JobState, now: Millis) {
        if self.state != state {
            self.state = state;
            self.since = now;
            self.history.push((now, state.name().to_owned()));
        }
    }
}

mod proto_bytes {
    use prost::Message;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        m: &cap_proto::v1::JobRequest,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex(&cap_proto::canonical::to_bytes(m)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<cap_proto::v1::JobRequest, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = unhex(&text).map_err(serde::de::Error::custom)?;
        cap_proto::v1::JobRequest::decode(bytes.as_slice()).map_err(serde::de::Error::custom)
    }

    pub(super) fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    pub(super) fn unhex(s: &str) -> Result<Vec<u8>, String> {
        if !s.len().is_multiple_of(2) {
            return Err("odd hex length".into());
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| "bad hex".to_string())
            })
            .collect()
    }
}

/// An optional message as hex of its canonical bytes.
mod opt_proto_bytes {
    use cap_proto::CapMessage;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, M: CapMessage>(m: &Option<M>, s: S) -> Result<S::Ok, S::Error> {
        match m {
            Some(r) => {
                s.serialize_some(&super::proto_bytes::hex(&cap_proto::canonical::to_bytes(r)))
            }
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, M: CapMessage>(
        d: D,
    ) -> Result<Option<M>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| {
            let bytes = super::proto_bytes::unhex(&t).map_err(serde::de::Error::custom)?;
            M::decode(bytes.as_slice()).map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

mod requests {
    use prost::Message;
    use serde::{Deserialize, Deserializer, Serializer, ser::SerializeSeq};

    pub fn serialize<S: Serializer>(
        m: &[cap_proto::v1::JobRequest],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(m.len()))?;
        for r in m {
            seq.serialize_element(&super::proto_bytes::hex(&cap_proto::canonical::to_bytes(r)))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<cap_proto::v1::JobRequest>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts
            .iter()
            .map(|t| {
                let bytes = super::proto_bytes::unhex(t).map_err(serde::de::Error::custom)?;
                cap_proto::v1::JobRequest::decode(bytes.as_slice())
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

mod state_name {
    use cap_proto::state::JobState;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: &JobState, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_i32(s.status() as i32)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<JobState, D::Error> {
        let n = i32::deserialize(d)?;
        JobState::from_i32(n).ok_or_else(|| serde::de::Error::custom(format!("bad job state {n}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_latencies_come_from_the_history() {
        let mut r = JobRecord::new(v1::JobRequest::default(), "t".into(), "c".into(), 1_000);
        r.set_state(JobState::Scheduled, 1_002);
        assert_eq!(r.latency_to(JobState::Dispatched, 1_005), Some(5));
        r.set_state(JobState::Dispatched, 1_005);
        r.set_state(JobState::Running, 1_006);
        // A retry: the wait for the next dispatch starts at the failure.
        assert_eq!(r.latency_to(JobState::FailedRetryable, 1_010), None);
        r.set_state(JobState::FailedRetryable, 1_010);
        r.set_state(JobState::Scheduled, 1_011);
        assert_eq!(r.latency_to(JobState::Dispatched, 1_020), Some(10));
        r.set_state(JobState::Dispatched, 1_020);
        // A second dispatch without a failure between is not a new wait.
        assert_eq!(r.latency_to(JobState::Dispatched, 1_030), None);
        // The run is measured from the last dispatch.
        assert_eq!(r.latency_to(JobState::Succeeded, 1_070), Some(50));
        // A job that ends without running has no run time.
        let mut d = JobRecord::new(v1::JobRequest::default(), "t".into(), "c".into(), 0);
        d.set_state(JobState::Scheduled, 1);
        assert_eq!(d.latency_to(JobState::Denied, 2), None);
    }

    #[test]
    fn records_survive_a_json_round_trip() {
        let req = v1::JobRequest {
            job_id: "j".into(),
            topic: "job.x".into(),
            labels: [("k".to_string(), String::new())].into(),
            ..Default::default()
        };
        let mut r = JobRecord::new(req, "t".into(), "c".into(), 5);
        r.set_state(JobState::Scheduled, 6);
        r.hold = Some(Hold::Approval {
            approval_ref: "j".into(),
        });
        r.result = Some(v1::JobResult {
            job_id: "j".into(),
            status: 5,
            ..Default::default()
        });
        r.dispatch = Some(Attempt {
            dispatch_id: "d1".into(),
            attempt: 2,
            assigned: "w1".into(),
            runner: "w1".into(),
        });
        r.identity = Some(v1::IdentityBinding {
            tenant_id: "acme".into(),
            ..Default::default()
        });
        r.chain = vec![v1::JobRequest {
            job_id: "c".into(),
            ..Default::default()
        }];
        r.trace_parent = Some(Arc::new(TraceParent {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: String::new(),
        }));
        let text = serde_json::to_string(&r).unwrap();
        let back: JobRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        assert!(
            serde_json::from_str::<JobRecord>(&text.replace("\"state\":2", "\"state\":99"))
                .is_err()
        );
    }
}
