//! One job request off the bus: admitted by the packet layer (either profile), then by
//! the dispatch fence ([`DispatchFence`](super::fence::DispatchFence)) when it carries
//! a `DispatchIdentity`, or by the job-id dedupe ([`RecentJobs`](super::RecentJobs))
//! when it does not (peers older than 2.17); run; its result sealed, recorded for
//! redeliveries and published, echoing the request's dispatch identity (and, in the
//! production profile, its admitted identity).

use super::claim::{self, RunClaim, Taken};
use super::execute::execute;
use super::fence::{DispatchDecision, FenceReason};
use super::recent::Admission;
use super::run::{Route, Shared};
use crate::Error;
use crate::job::{JobError, ProgressSink};
use crate::packets::Packets;
use bytes::Bytes;
use cap_blob::BlobStore;
use cap_bus::{Bus, Message};
use cap_proto::v1::{self, bus_packet::Payload};
use cap_proto::{ErrorCode, subject};
use futures_core::future::BoxFuture;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What a job's reports carry back: the request's dispatch identity, and in the
/// production profile the identity it was admitted with (the peer's
/// `bind_production_event`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Echo {
    pub dispatch: Option<v1::DispatchIdentity>,
    pub identity: Option<v1::IdentityBinding>,
}

impl Echo {
    /// What a request's reports echo; `None` when nothing (a request without a dispatch
    /// identity in the legacy profile), so such jobs allocate nothing for it.
    fn of(
        dispatch: Option<&v1::DispatchIdentity>,
        identity: Option<v1::IdentityBinding>,
    ) -> Option<Arc<Echo>> {
        (dispatch.is_some() || identity.is_some()).then(|| {
            Arc::new(Echo {
                dispatch: dispatch.cloned(),
                identity,
            })
        })
    }

    fn result(&self, r: &mut v1::JobResult) {
        if r.dispatch.is_none() {
            r.dispatch.clone_from(&self.dispatch);
        }
        if r.identity.is_none() {
            r.identity.clone_from(&self.identity);
        }
    }
}

/// The progress reports of one job that carries an [`Echo`].
struct EchoSink<B: Bus> {
    packets: Packets<B>,
    echo: Arc<Echo>,
}

impl<B: Bus> ProgressSink for EchoSink<B> {
    fn progress(
        &self,
        mut report: v1::JobProgress,
        trace_id: &str,
    ) -> BoxFuture<'static, Result<(), Error>> {
        if report.dispatch.is_none() {
            report.dispatch.clone_from(&self.echo.dispatch);
        }
        if report.identity.is_none() {
            report.identity.clone_from(&self.echo.identity);
        }
        let packets = self.packets.clone();
        let mut packet = packets.envelope(trace_id, report);
        packet.identity.clone_from(&self.echo.identity);
        Box::pin(async move { packets.publish(subject::PROGRESS, packet).await.map(|_| ()) })
    }
}

/// A job request taken off the bus, with the big request boxed: the per-job future
/// stays small (spawning moves it around, and its size is copied each time).
struct Incoming {
    trace_id: String,
    sender_id: String,
    identity: Option<v1::IdentityBinding>,
    request: Box<v1::JobRequest>,
}

impl Incoming {
    fn from_packet(packet: v1::BusPacket, production: bool) -> Option<Self> {
        match packet.payload {
            Some(Payload::JobRequest(request)) => Some(Incoming {
                trace_id: packet.trace_id,
                sender_id: packet.sender_id,
                identity: if production { packet.identity } else { None },
                request: Box::new(request),
            }),
            _ => None,
        }
    }
}

/// How long a delivery whose run claim could not be taken (store out of reach) waits
/// before it comes again.
const CLAIM_RETRY: Duration = Duration::from_secs(1);

/// Undoes the admission of a request that is not run here after all (another worker
/// holds it, or the claim could not be taken): its next delivery is judged afresh.
fn unadmit<B: Bus, S: BlobStore>(shared: &Shared<B, S>, request: &v1::JobRequest) {
    match &request.dispatch {
        Some(d) => shared.state.fence.forget(&request.job_id, d),
        None => shared.state.recent.forget(&request.job_id),
    }
}

/// Which record a result goes into, for redeliveries.
enum Record<'a> {
    /// None (a job this worker has no handler for).
    Nothing,
    /// The job-id dedupe (a request without a dispatch identity).
    Legacy(&'a str),
    /// The dispatch fence.
    Fenced(&'a str, &'a v1::DispatchIdentity),
}

pub(super) async fn process<B: Bus, S: BlobStore + 'static>(
    shared: &Arc<Shared<B, S>>,
    msg: &Message,
    route: Route,
) {
    if let Some(trust) = &shared.trust
        && !trust.admits()
    {
        // No session (enforce) or trust failed: no jobs; the delivery goes back.
        tracing::debug!(
            subject = msg.subject(),
            "job not admitted: no worker trust session"
        );
        let _ = msg.nak(None).await;
        return;
    }
    let Some(inbound) = shared.packets.receive_checked(msg, |_| true).await else {
        return;
    };
    let duplicate = inbound.duplicate;
    let Some(Incoming {
        trace_id,
        sender_id,
        identity,
        request,
    }) = Incoming::from_packet(inbound.packet, inbound.production)
    else {
        tracing::debug!(
            subject = msg.subject(),
            "ignoring a packet that is not a job request"
        );
        let _ = msg.ack().await;
        return;
    };
    let echo = Echo::of(request.dispatch.as_ref(), identity);
    let topic: Arc<str> = match route {
        Route::Topic(t) => t,
        Route::Direct => Arc::from(request.topic.as_str()),
    };
    {
        let span = tracing::Span::current();
        span.record("job_id", request.job_id.as_str());
        span.record("trace_id", trace_id.as_str());
        span.record("topic", &*topic);
    }
    let Some(entry) = shared.handlers.get(&*topic) else {
        let mut result = base_result(&request.job_id, &shared.state.config.worker_id, 0);
        JobError::retryable(
            ErrorCode::JOB_WORKER_UNAVAILABLE,
            "this worker has no handler for the job's topic",
        )
        .apply_to(&mut result);
        Box::pin(publish_result(
            shared,
            &trace_id,
            result,
            echo.as_deref(),
            msg,
            Record::Nothing,
            None,
        ))
        .await;
        return;
    };
    let state = &shared.state;
    // A duplicate (the production replay store saw these signed bytes before) is a
    // redelivery only where the transport redelivers; a durable one this worker does not
    // know (restarted, forgotten, or handed back) is admitted again and left to the run
    // claim, which knows whether it ran.
    let durable = msg.ack_handle().is_durable();
    let decision = match &request.dispatch {
        Some(d) if duplicate => match state.fence.redelivered(&request.job_id, d) {
            None if durable => Some(state.fence.admit(&request.job_id, d, &state.jobs_root)),
            known => known,
        },
        Some(d) => Some(state.fence.admit(&request.job_id, d, &state.jobs_root)),
        None if duplicate && !durable => None,
        None => Some(
            match state.recent.admit(&request.job_id, &state.jobs_root) {
                Admission::Run(token) => DispatchDecision::Run(token),
                Admission::Running => DispatchDecision::Running,
                Admission::Finished(bytes) => DispatchDecision::Replay(bytes),
            },
        ),
    };
    let token = match decision {
        Some(DispatchDecision::Run(token)) => token,
        Some(DispatchDecision::Running) => {
            tracing::info!(job_id = %request.job_id, "duplicate delivery of a running job dropped");
            let _ = msg.ack().await;
            return;
        }
        Some(DispatchDecision::Replay(bytes)) => {
            tracing::info!(job_id = %request.job_id, "duplicate delivery: re-publishing the recorded result");
            Box::pin(republish(shared, bytes, msg, &trace_id)).await;
            return;
        }
        Some(DispatchDecision::Reject(reason)) => {
            let d = request.dispatch.clone().unwrap_or_default();
            Box::pin(refuse(shared, &request.job_id, &d, reason, &trace_id)).await;
            let _ = msg.ack().await;
            return;
        }
        None => {
            // A production redelivery of a message admitted before that this worker
            // no longer knows (restarted, or forgotten): it may have run; not again.
            tracing::info!(job_id = %request.job_id, "replayed dispatch unknown here dropped");
            let _ = msg.ack().await;
            return;
        }
    };
    // A durable delivery may come again, to any worker of the pool, even while this
    // one runs it: the claim in the store lets one worker run it (see `claim`).
    let claim = if durable {
        let dispatch_id = request
            .dispatch
            .as_ref()
            .map_or("", |d| d.dispatch_id.as_str());
        let lease = state.config.run_lease;
        let taken = claim::take(
            &shared.store,
            &request.job_id,
            dispatch_id,
            &state.config.worker_id,
            lease,
        )
        .await;
        match taken {
            Taken::Ours(c) => Some(c),
            Taken::Held => {
                tracing::info!(job_id = %request.job_id, "job held by another worker: delivery handed back for later");
                unadmit(shared, &request);
                let _ = msg.nak(Some(lease / 4)).await;
                return;
            }
            Taken::Finished(bytes) => {
                tracing::info!(job_id = %request.job_id, "job already ran: re-publishing its recorded result");
                match &request.dispatch {
                    Some(d) => state.fence.finish(&request.job_id, d, bytes.clone()),
                    None => state.recent.finish(&request.job_id, bytes.clone()),
                }
                Box::pin(republish(shared, bytes, msg, &trace_id)).await;
                return;
            }
            Taken::Unavailable(e) => {
                tracing::warn!(job_id = %request.job_id, error = %e, "run claim not taken (store unreachable): delivery handed back");
                unadmit(shared, &request);
                let _ = msg.nak(Some(CLAIM_RETRY)).await;
                return;
            }
        }
    } else {
        None
    };
    state.active.fetch_add(1, Ordering::Relaxed);
    shared.metrics.job_received(&request.job_id, &topic);
    let started = Instant::now();
    let job_id = request.job_id.clone();
    let sink: Arc<dyn ProgressSink> = match &echo {
        None => shared.sink.clone(),
        Some(echo) => Arc::new(EchoSink {
            packets: shared.packets.clone(),
            echo: echo.clone(),
        }),
    };
    let run = execute(
        shared,
        entry,
        request,
        &trace_id,
        sender_id,
        topic.clone(),
        token,
        sink,
    );
    let outcome = match &claim {
        Some(c) => c.hold_while(&shared.store, run).await,
        None => run.await,
    };
    let elapsed = started.elapsed();
    let mut result = base_result(
        &job_id,
        &state.config.worker_id,
        i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
    );
    match &outcome {
        Ok(ptr) => {
            result.status = v1::JobStatus::Succeeded as i32;
            result.result_ptr = ptr.to_string();
            shared.metrics.job_completed(&job_id, &topic, elapsed);
        }
        Err(e) => {
            e.apply_to(&mut result);
            shared
                .metrics
                .job_failed(&job_id, &topic, e.kind().status(), elapsed);
        }
    }
    drop(outcome);
    let record = match echo.as_ref().and_then(|e| e.dispatch.as_ref()) {
        Some(d) => Record::Fenced(&job_id, d),
        None => Record::Legacy(&job_id),
    };
    publish_result(
        shared,
        &trace_id,
        result,
        echo.as_deref(),
        msg,
        record,
        claim.as_ref(),
    )
    .await;
    state.active.fetch_sub(1, Ordering::Relaxed);
    state.completed.fetch_add(1, Ordering::Relaxed);
}

/// A dispatch the fence refused: logged, counted (by the fence) and alerted (within the
/// packet layer's alert rate limit). It is acknowledged and never run.
async fn refuse<B: Bus, S: BlobStore>(
    shared: &Shared<B, S>,
    job_id: &str,
    d: &v1::DispatchIdentity,
    reason: FenceReason,
    trace_id: &str,
) {
    let job = crate::packets::inbound::sanitize(job_id);
    let dispatch_id = crate::packets::inbound::sanitize(&d.dispatch_id);
    tracing::warn!(
        job_id = %job,
        dispatch_id = %dispatch_id,
        attempt = d.attempt,
        reason = %reason,
        "dispatch refused by the fence"
    );
    let code = ErrorCode::JOB_DUPLICATE;
    let worker = shared.packets.sender_id().to_owned();
    let alert = v1::SystemAlert {
        level: "WARNING".into(),
        message: format!(
            "dispatch of job {job} (attempt {}) refused: {reason}",
            d.attempt
        ),
        component: worker.clone(),
        code: code.to_string(),
        severity: v1::AlertSeverity::Warning as i32,
        error_code_enum: code.as_i32(),
        source_component: worker,
        trace_id: crate::packets::inbound::sanitize(trace_id),
        details: [
            ("job_id".to_string(), job),
            ("dispatch_id".to_string(), dispatch_id),
            ("attempt".to_string(), d.attempt.to_string()),
            ("reason".to_string(), reason.as_str().to_owned()),
        ]
        .into(),
    };
    shared.packets.alert_limited(alert).await;
}

/// Publishes the recorded result of a finished job again (a duplicate delivery).
async fn republish<B: Bus, S: BlobStore>(
    shared: &Shared<B, S>,
    bytes: Bytes,
    msg: &Message,
    trace_id: &str,
) {
    let headers = shared
        .packets
        .trace_headers(trace_id, &tracing::Span::current());
    match shared
        .packets
        .publish_bytes_with(subject::RESULT, headers, bytes)
        .await
    {
        Ok(()) => {
            let _ = msg.ack().await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "re-publishing a result failed");
            let _ = msg.nak(None).await;
        }
    }
}

fn base_result(job_id: &str, worker_id: &str, execution_ms: i64) -> v1::JobResult {
    v1::JobResult {
        job_id: job_id.to_owned(),
        worker_id: worker_id.to_owned(),
        execution_ms,
        ..Default::default()
    }
}

/// Seals the result (echoing `echo`), records it so a re-delivery gets the same bytes,
/// publishes it and acknowledges `msg` (or asks for redelivery when the publish failed,
/// so the recorded result goes out then).
async fn publish_result<B: Bus, S: BlobStore>(
    shared: &Shared<B, S>,
    trace_id: &str,
    mut result: v1::JobResult,
    echo: Option<&Echo>,
    msg: &Message,
    record: Record<'_>,
    claim: Option<&RunClaim>,
) {
    if let Some(echo) = echo {
        echo.result(&mut result);
    }
    // Legacy dedupe: a retryable failure is not remembered as finished, the next
    // delivery of this job id is a retry and must run the handler again. A fenced retry
    // is another dispatch, so the fence records every outcome.
    let retryable = result.status == v1::JobStatus::FailedRetryable as i32;
    // Sealed before any await, so the packet is not part of this future.
    let sealed = {
        let mut packet = shared.packets.envelope(trace_id, result);
        packet.identity = echo.and_then(|e| e.identity.clone());
        shared.packets.seal_for(subject::RESULT, &mut packet)
    };
    let recent = &shared.state.recent;
    let fence = &shared.state.fence;
    let bytes = match sealed {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "result could not be sealed");
            if let Some(c) = claim {
                c.release(&shared.store).await;
            }
            match record {
                Record::Legacy(id) => recent.forget(id),
                Record::Fenced(id, d) => fence.forget(id, d),
                Record::Nothing => {}
            }
            let _ = msg.nak(None).await;
            return;
        }
    };
    // The claim holds what went out, for a delivery that comes again (anywhere); a
    // legacy retryable failure gives it up, as the dedupe does.
    if let Some(c) = claim {
        match record {
            Record::Legacy(_) if retryable => c.release(&shared.store).await,
            _ => c.finish(&shared.store, &bytes, shared.result_ttl).await,
        }
    }
    match record {
        Record::Legacy(id) if retryable => recent.forget(id),
        Record::Legacy(id) => recent.finish(id, bytes.clone()),
        Record::Fenced(id, d) => fence.finish(id, d, bytes.clone()),
        Record::Nothing => {}
    }
    let headers = shared
        .packets
        .trace_headers(trace_id, &tracing::Span::current());
    match shared
        .packets
        .publish_bytes_with(subject::RESULT, headers, bytes)
        .await
    {
        Ok(()) => {
            if let Err(e) = msg.ack().await {
                tracing::debug!(error = %e, "ack failed");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "result publish failed; asking for redelivery");
            let _ = msg.nak(None).await;
        }
    }
}
