//! The control-plane harness: the real scheduler core ([`SchedulerCore`], sans IO) driven
//! event by event on a virtual clock, with every action it returns kept in order, and
//! the views of those actions the cases look at.

use cap_proto::{ErrorCode, JobState, v1};
use cap_scheduler::core::{Action, Config, Event, Fence, Millis, Pools, SchedulerCore};
use std::time::Duration;

/// The scheduler's sender id.
pub const SCHEDULER: &str = "tck-scheduler";
/// The submitting client.
pub const CLIENT: &str = "tck-client";
/// The default worker of the cases.
pub const WORKER: &str = "wrk-1";
/// The topic of the cases' jobs.
pub const TOPIC: &str = "job.tck";

/// The scheduler under test and what it did.
pub struct Plane {
    core: SchedulerCore,
    /// The virtual clock (ms).
    pub now: Millis,
    /// Every action, in order.
    pub log: Vec<Action>,
}

/// The settings the cases run with (short timeouts on the virtual clock).
pub fn config() -> Config {
    Config {
        dispatch_timeout: Duration::from_secs(5),
        run_timeout: Duration::from_secs(30),
        worker_wait_timeout: Duration::from_secs(2),
        max_retries: 10,
        ..Config::default()
    }
}

impl Plane {
    /// A scheduler with `config` and no pools file. Dispatch ids are `dsp-1`, `dsp-2`, …
    /// in dispatch order.
    pub fn new(config: Config) -> Self {
        Plane::with_dispatch_ids(config, Vec::new())
    }

    /// Like [`new`](Self::new), with the first dispatch ids given (`None`: `dsp-<n>`).
    pub fn with_dispatch_ids(config: Config, first: Vec<Option<String>>) -> Self {
        let mut n = 0usize;
        let core = SchedulerCore::new(SCHEDULER, config, Pools::default()).with_ids(move || {
            n += 1;
            first
                .get(n - 1)
                .cloned()
                .flatten()
                .unwrap_or_else(|| format!("dsp-{n}"))
        });
        Plane {
            core,
            now: 1_000,
            log: Vec::new(),
        }
    }

    /// The core (records, registry).
    pub fn core(&self) -> &SchedulerCore {
        &self.core
    }

    /// Feeds one event at the current time; returns (and logs) the actions.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let actions = self.core.handle(event, self.now);
        self.log.extend(actions.iter().cloned());
        actions
    }

    /// Moves the clock on by `ms` and ticks.
    pub fn advance(&mut self, ms: Millis) -> Vec<Action> {
        self.now += ms;
        self.handle(Event::Tick)
    }

    /// Submits job `id` on `topic`.
    pub fn submit(&mut self, id: &str, topic: &str, meta: Option<v1::JobMetadata>) -> Vec<Action> {
        self.handle(Event::Submitted {
            request: v1::JobRequest {
                job_id: id.into(),
                topic: topic.into(),
                context_ptr: format!("redis://ctx:{id}"),
                meta,
                ..Default::default()
            },
            trace_id: format!("trace-{id}"),
            sender: CLIENT.into(),
            identity: None,
        })
    }

    /// The safety kernel's decision for `id`.
    pub fn decide(&mut self, id: &str, decision: v1::DecisionType) -> Vec<Action> {
        self.handle(Event::SafetyDecided {
            job_id: id.into(),
            response: v1::PolicyCheckResponse {
                decision: decision as i32,
                reason: format!("tck decision {}", decision.as_str_name()),
                ..Default::default()
            },
        })
    }

    /// A worker handshake.
    pub fn handshake(
        &mut self,
        worker: &str,
        versions: Vec<i32>,
        ready_topics: Vec<String>,
        capabilities: &[String],
    ) -> Vec<Action> {
        self.handle(Event::Handshake {
            handshake: v1::Handshake {
                component_id: worker.into(),
                role: v1::ComponentRole::Worker as i32,
                supported_versions: versions,
                capabilities: capabilities.iter().map(|c| (c.clone(), true)).collect(),
                ready_topics,
                sdk_version: "tck".into(),
                ..Default::default()
            },
        })
    }

    /// A worker heartbeat.
    pub fn heartbeat(&mut self, worker: &str, pool: &str, capabilities: &[String]) -> Vec<Action> {
        self.handle(Event::Heartbeat {
            heartbeat: v1::Heartbeat {
                worker_id: worker.into(),
                pool: pool.into(),
                capabilities: capabilities.to_vec(),
                max_parallel_jobs: 4,
                ..Default::default()
            },
        })
    }

    /// A worker's JobResult.
    pub fn result(
        &mut self,
        id: &str,
        status: JobState,
        worker: &str,
        dispatch: Option<v1::DispatchIdentity>,
    ) -> Vec<Action> {
        self.handle(Event::Result {
            result: v1::JobResult {
                job_id: id.into(),
                status: status.status() as i32,
                worker_id: worker.into(),
                dispatch,
                ..Default::default()
            },
        })
    }

    /// A worker's JobProgress (status RUNNING).
    pub fn progress(
        &mut self,
        id: &str,
        worker: &str,
        dispatch: Option<v1::DispatchIdentity>,
    ) -> Vec<Action> {
        self.handle(Event::Progress {
            progress: v1::JobProgress {
                job_id: id.into(),
                percent: 10,
                message: "running".into(),
                status: JobState::Running.status() as i32,
                dispatch,
                ..Default::default()
            },
            sender: worker.into(),
        })
    }

    /// A client's JobCancel.
    pub fn cancel(&mut self, id: &str, dispatch: Option<v1::DispatchIdentity>) -> Vec<Action> {
        self.handle(Event::Cancel {
            cancel: v1::JobCancel {
                job_id: id.into(),
                reason: "tck cancel".into(),
                requested_by: CLIENT.into(),
                dispatch,
                ..Default::default()
            },
        })
    }

    /// A job's state.
    pub fn state(&self, id: &str) -> Option<JobState> {
        self.core.job(id).map(|j| j.state)
    }

    /// The identity of a job's attempt in flight.
    pub fn attempt(&self, id: &str) -> Option<v1::DispatchIdentity> {
        self.core
            .job(id)
            .and_then(|j| j.dispatch.as_ref())
            .map(|a| a.identity())
    }
}

/// The dispatches of job `id`: subject and identity.
pub fn dispatches(actions: &[Action], id: &str) -> Vec<(String, Option<v1::DispatchIdentity>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Dispatch {
                subject, request, ..
            } if request.job_id == id => Some((subject.clone(), request.dispatch.clone())),
            _ => None,
        })
        .collect()
}

/// Every dispatch subject (any job).
pub fn dispatch_subjects(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Dispatch { subject, .. } => Some(subject.clone()),
            _ => None,
        })
        .collect()
}

/// The state changes of job `id`.
pub fn transitions(actions: &[Action], id: &str) -> Vec<JobState> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Transition { job_id, state, .. } if job_id == id => Some(*state),
            _ => None,
        })
        .collect()
}

/// The results the scheduler published for job `id`.
pub fn published(actions: &[Action], id: &str) -> Vec<v1::JobResult> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::PublishResult { result, .. } if result.job_id == id => Some((**result).clone()),
            _ => None,
        })
        .collect()
}

/// The alerts' error codes.
pub fn alert_codes(actions: &[Action]) -> Vec<ErrorCode> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Alert { alert } => Some(ErrorCode::from_i32(alert.error_code_enum)),
            _ => None,
        })
        .collect()
}

/// Why events about job `id` were ignored.
pub fn ignored(actions: &[Action], id: &str) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Ignored { job_id, reason } if job_id == id => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

/// The fenced reports about job `id`: what and how.
pub fn fenced(actions: &[Action], id: &str) -> Vec<(&'static str, Fence)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Fenced {
                job_id,
                what,
                fence,
                ..
            } if job_id == id => Some((*what, *fence)),
            _ => None,
        })
        .collect()
}

/// A short name for an action, for evidence (`CheckSafety`, `Dispatch(job.x)`, …).
pub fn label(action: &Action) -> String {
    match action {
        Action::CheckSafety { .. } => "CheckSafety".into(),
        Action::Dispatch { subject, .. } => format!("Dispatch({subject})"),
        Action::PublishResult { result, .. } => {
            let status = JobState::from_i32(result.status)
                .map(|s| s.to_string())
                .unwrap_or_else(|| result.status.to_string());
            format!("PublishResult({status})")
        }
        Action::DeadLetter { .. } => "DeadLetter".into(),
        Action::ForwardCancel { .. } => "ForwardCancel".into(),
        Action::Withdraw { .. } => "Withdraw".into(),
        Action::Alert { alert } => format!("Alert({})", alert.error_code_enum),
        Action::LinkChild { .. } => "LinkChild".into(),
        Action::Fenced { what, fence, .. } => format!("Fenced({what},{fence})"),
        Action::Ignored { .. } => "Ignored".into(),
        Action::Evict { .. } => "Evict".into(),
        Action::Transition { state, .. } => format!("Transition({state})"),
    }
}

/// The labels of `actions`, joined.
pub fn labels(actions: &[Action]) -> String {
    super::outcome::joined(actions.iter().map(label))
}

/// A decision type by its short name (`ALLOW`, `REQUIRE_HUMAN`, …).
pub fn decision_named(name: &str) -> Option<v1::DecisionType> {
    v1::DecisionType::from_str_name(&format!("DECISION_TYPE_{}", name.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_goes_through_the_real_core() {
        let mut p = Plane::new(config());
        let a = p.submit("j", TOPIC, None);
        assert_eq!(
            transitions(&a, "j"),
            [JobState::Pending, JobState::Scheduled]
        );
        let a = p.decide("j", v1::DecisionType::Allow);
        let d = dispatches(&a, "j");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, TOPIC);
        assert_eq!(d[0].1.as_ref().unwrap().dispatch_id, "dsp-1");
        assert_eq!(p.attempt("j").unwrap().attempt, 1);
        assert_eq!(p.state("j"), Some(JobState::Dispatched));
        assert!(labels(&p.log).contains("CheckSafety"));
        assert_eq!(
            decision_named("REQUIRE_HUMAN"),
            Some(v1::DecisionType::RequireHuman)
        );
        assert_eq!(decision_named("MAYBE"), None);
    }
}
