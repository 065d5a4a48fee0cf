//! `negotiation/*`: worker handshakes (versions, capabilities, ready topics) and
//! heartbeats are fed to the real scheduler core, then jobs; where each job is
//! dispatched (or why not) shows what the scheduler made of the handshake. Every
//! rejection is paired with a control that is dispatched, so a scheduler that
//! dispatches nothing cannot pass.

use super::outcome::{CaseError, Outcome, Params, Verdict, code_name, joined};
use super::plane::{self, Plane, TOPIC};
use cap_proto::{ErrorCode, JobState, PROTOCOL_VERSION, v1};
use cap_scheduler::core::{Config, Hold};

/// The worker whose handshake is under test.
const PEER: &str = "wrk-neg";
/// A capability only that worker has.
const CAP: &str = "x-tck-neg";

fn worker_subject(id: &str) -> String {
    format!("worker.{id}.jobs")
}

fn requiring(cap: &str) -> Option<v1::JobMetadata> {
    Some(v1::JobMetadata {
        requires: vec![cap.to_owned()],
        ..Default::default()
    })
}

/// Submits `job` (allowed by safety) and returns where it was dispatched.
fn run(p: &mut Plane, job: &str, topic: &str, meta: Option<v1::JobMetadata>) -> Vec<String> {
    p.submit(job, topic, meta);
    p.decide(job, v1::DecisionType::Allow);
    plane::dispatches(&p.log, job)
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

/// A control-plane negotiation case.
pub fn control_plane(case: &str, params: Params<'_>) -> Result<Outcome, CaseError> {
    if params.get("cpVersions").is_some() || params.get("workerVersions").is_some() {
        let cp = params.versions("cpVersions")?;
        let worker = params.versions("workerVersions")?;
        return match params.expect() {
            Some("reject") => Ok(no_common_version(cp, worker, params.err()?)),
            Some(v) => {
                let want: i32 = v
                    .parse()
                    .map_err(|_| CaseError::param(format!("`expect` {v:?} is not a version")))?;
                Ok(highest_common(cp, worker, want))
            }
            None => Err(CaseError::param("`expect` is required")),
        };
    }
    if let Some(cap) = params.get("requiredCapability") {
        return Ok(capability_filter(cap, &params.list("workerCapabilities")));
    }
    if let Some(topic) = params.get("jobTopic") {
        return match params.get("readyTopics") {
            Some(_) => Ok(ready_topic_filter(topic, &params.list("readyTopics"))),
            None => Ok(no_ready_topics(topic)),
        };
    }
    Err(CaseError::param(format!(
        "no negotiation driver for the parameters of {case}"
    )))
}

fn plane_with(versions: Vec<i32>) -> Plane {
    Plane::new(Config {
        supported_versions: versions,
        ..plane::config()
    })
}

/// The version recorded for a worker, if it is registered.
fn registered(p: &Plane, id: &str) -> Option<i32> {
    p.core().registry().get(id).map(|w| w.version)
}

fn highest_common(cp: Vec<i32>, worker: Vec<i32>, want: i32) -> Outcome {
    let mut p = plane_with(cp.clone());
    let hs = p.handshake(PEER, worker.clone(), vec![TOPIC.into()], &[]);
    let alerts = plane::alert_codes(&hs);
    let version = registered(&p, PEER);
    let dispatched = run(&mut p, "tck-neg-job", TOPIC, None);
    let mut v = Verdict::new();
    v.observe("cpVersions", joined(&cp))
        .observe("workerVersions", joined(&worker))
        .observe(
            "negotiated",
            version.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
        )
        .observe("handshakeAlerts", joined(&alerts))
        .observe("dispatchedTo", joined(&dispatched));
    v.check(alerts.is_empty(), "the handshake is accepted (no alert)")
        .check(version == Some(want), format!("version {want} is selected"))
        .check(
            dispatched == [worker_subject(PEER)],
            "a job on its ready topic goes to that worker",
        );
    v.finish(&format!("version {want} selected"))
}

fn no_common_version(cp: Vec<i32>, worker: Vec<i32>, code: Option<ErrorCode>) -> Outcome {
    let code = code.unwrap_or(ErrorCode::PROTOCOL_VERSION_MISMATCH);
    let mut p = plane_with(cp.clone());
    let caps = [CAP.to_owned()];
    let hs = p.handshake(PEER, worker.clone(), vec![TOPIC.into()], &caps);
    let alerts = plane::alert_codes(&hs);
    let after_handshake = registered(&p, PEER).is_some();
    // It keeps beating, naming its pool and capability.
    p.heartbeat(PEER, "tck", &caps);
    let after_heartbeat = registered(&p, PEER).is_some();
    // A job only it could run, and a job on the topic only it advertised.
    run(&mut p, "tck-neg-cap", TOPIC, requiring(CAP));
    let by_topic = run(&mut p, "tck-neg-topic", TOPIC, None);
    let wait = u64::try_from(plane::config().worker_wait_timeout.as_millis()).unwrap_or(0);
    for _ in 0..4 {
        p.advance(wait / 2 + 1);
    }
    // Including what the ticks (the wait for a capable worker) dispatched.
    let by_cap: Vec<String> = plane::dispatches(&p.log, "tck-neg-cap")
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let topic_end = p.core().job("tck-neg-topic").map(|j| {
        (
            j.state,
            j.result
                .as_ref()
                .map(ErrorCode::of_result)
                .unwrap_or_default(),
        )
    });
    let cap_end = p.core().job("tck-neg-cap").map(|j| j.state);
    let to_peer = plane::dispatch_subjects(&p.log)
        .iter()
        .filter(|s| **s == worker_subject(PEER))
        .count();
    // The control: a worker that shares a version gets the same kind of job.
    p.handshake("wrk-ok", cp.clone(), vec![TOPIC.into()], &[]);
    let control = run(&mut p, "tck-neg-control", TOPIC, None);

    let mut v = Verdict::new();
    v.observe("cpVersions", joined(&cp))
        .observe("workerVersions", joined(&worker))
        .observe("handshakeAlerts", joined(&alerts))
        .observe("registeredAfterHandshake", after_handshake)
        .observe("registeredAfterHeartbeat", after_heartbeat)
        .observe("dispatchesToWorker", to_peer)
        .observe("capabilityJobDispatches", joined(&by_cap))
        .observe(
            "capabilityJobEnd",
            cap_end.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
        )
        .observe("topicJobDispatches", joined(&by_topic))
        .observe(
            "topicJobEnd",
            topic_end
                .map(|(s, c)| format!("{s}:{}", code_name(c)))
                .unwrap_or_else(|| "-".into()),
        )
        .observe("controlDispatchedTo", joined(&control));
    v.check(
        alerts.contains(&code),
        format!("the handshake is refused with {}", code_name(code)),
    )
    .check(!after_handshake, "the worker is not registered")
    .check(!after_heartbeat, "its heartbeats do not register it")
    .check(to_peer == 0, "no job is dispatched to it directly")
    .check(
        by_cap.is_empty(),
        "a job only it could serve is not dispatched",
    )
    .check(
        by_topic.is_empty(),
        "a job on its topic is not dispatched to the pool on its behalf",
    )
    .check(
        topic_end == Some((JobState::Failed, code)),
        format!("that job is rejected: FAILED with {}", code_name(code)),
    )
    .check(
        control == [worker_subject("wrk-ok")],
        "a worker sharing a version gets such a job (control)",
    );
    v.finish("no common version: nothing dispatched for that worker")
}

fn capability_filter(cap: &str, has: &[String]) -> Outcome {
    let mut p = Plane::new(plane::config());
    p.handshake(PEER, vec![PROTOCOL_VERSION], vec![TOPIC.into()], has);
    let dispatched = run(&mut p, "tck-cap", TOPIC, requiring(cap));
    let hold = p.core().job("tck-cap").and_then(|j| j.hold.clone());
    let wait = u64::try_from(plane::config().worker_wait_timeout.as_millis()).unwrap_or(0);
    p.advance(wait + 1);
    p.advance(1);
    let end = p.core().job("tck-cap").map(|j| {
        (
            j.state,
            j.result
                .as_ref()
                .map(ErrorCode::of_result)
                .unwrap_or_default(),
        )
    });
    let all = plane::dispatches(&p.log, "tck-cap");
    // The control: a capability it has.
    let control = has
        .first()
        .map(|c| run(&mut p, "tck-cap-control", TOPIC, requiring(c)))
        .unwrap_or_default();
    let mut v = Verdict::new();
    v.observe("required", cap)
        .observe("workerCapabilities", joined(has))
        .observe("dispatches", joined(all.iter().map(|(s, _)| s)))
        .observe("holdAfterAllow", format!("{hold:?}"))
        .observe(
            "end",
            end.map(|(s, c)| format!("{s}:{}", code_name(c)))
                .unwrap_or_else(|| "-".into()),
        )
        .observe("controlDispatchedTo", joined(&control));
    v.check(
        dispatched.is_empty() && all.is_empty(),
        "the job is not dispatched (to that worker or its pool)",
    )
    .check(
        matches!(hold, Some(Hold::Worker { .. })),
        "the job waits for a capable worker",
    )
    .check(
        end == Some((JobState::Failed, ErrorCode::JOB_WORKER_UNAVAILABLE)),
        "none comes: FAILED with ERROR_CODE_JOB_WORKER_UNAVAILABLE",
    )
    .check(
        control == [worker_subject(PEER)],
        "a job requiring a capability it has goes to it (control)",
    );
    v.finish(&format!(
        "`{cap}` required: not routed to a worker without it"
    ))
}

fn ready_topic_filter(topic: &str, ready: &[String]) -> Outcome {
    let mut p = Plane::new(plane::config());
    p.handshake(PEER, vec![PROTOCOL_VERSION], ready.to_vec(), &[]);
    let dispatched = run(&mut p, "tck-topic", topic, None);
    let control = ready
        .first()
        .map(|t| run(&mut p, "tck-topic-control", t, None))
        .unwrap_or_default();
    let mut v = Verdict::new();
    v.observe("jobTopic", topic)
        .observe("readyTopics", joined(ready))
        .observe("dispatchedTo", joined(&dispatched))
        .observe("controlDispatchedTo", joined(&control));
    v.check(
        !dispatched.contains(&worker_subject(PEER)),
        "the job is not routed to the worker (its topic is not advertised)",
    )
    .check(
        dispatched.len() == 1,
        "the job goes to its own pool subject",
    )
    .check(
        control == [worker_subject(PEER)],
        "a job on an advertised topic is routed to it (control)",
    );
    v.finish("dispatch restricted to advertised ready topics")
}

fn no_ready_topics(topic: &str) -> Outcome {
    let mut p = Plane::new(plane::config());
    let caps = [CAP.to_owned()];
    let hs = p.handshake(PEER, vec![PROTOCOL_VERSION], Vec::new(), &caps);
    let alerts = plane::alert_codes(&hs);
    let known = p.core().registry().get(PEER).cloned();
    let dispatched = run(&mut p, "tck-unspecified", topic, None);
    // Unspecified readiness does not exclude it from routing either.
    let direct = run(&mut p, "tck-unspecified-cap", topic, requiring(CAP));
    let mut v = Verdict::new();
    v.observe("handshakeAlerts", joined(&alerts))
        .observe(
            "registeredReadyTopics",
            known
                .as_ref()
                .map(|w| joined(&w.ready_topics))
                .unwrap_or_else(|| "not registered".into()),
        )
        .observe("dispatchedTo", joined(&dispatched))
        .observe("capabilityJobDispatchedTo", joined(&direct));
    v.check(alerts.is_empty(), "the handshake is accepted (no error)")
        .check(known.is_some(), "the worker is registered")
        .check(dispatched.len() == 1, "the job is dispatched")
        .check(
            direct == [worker_subject(PEER)],
            "the worker can still be picked for a job",
        );
    v.finish("omitted ready_topics: unspecified, not an error")
}
