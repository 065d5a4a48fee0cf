//! Running one job: its context through the pointer, the handler's service under the
//! job's token and deadline (panics become FAILED results), the output stored at
//! `res:<job_id>`.

use super::HandlerEntry;
use super::run::Shared;
use crate::job::{Context, ContextParts, Job, JobError, JobErrorKind, ProgressSink};
use bytes::Bytes;
use cap_blob::{BlobStore, PointerScope};
use cap_bus::Bus;
use cap_proto::{ErrorCode, Pointer, v1};
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

#[allow(clippy::too_many_arguments)]
pub(super) async fn execute<B: Bus, S: BlobStore + 'static>(
    shared: &Shared<B, S>,
    entry: &HandlerEntry,
    request: Box<v1::JobRequest>,
    trace_id: &str,
    sender_id: String,
    topic: Arc<str>,
    token: CancellationToken,
    sink: Arc<dyn ProgressSink>,
) -> Result<Pointer, JobError> {
    let input = fetch_context(
        &shared.store,
        &shared.scope,
        &request.job_id,
        &request.context_ptr,
    )
    .await?;
    let deadline = request.budget.as_ref().and_then(|b| {
        deadline_from_budget(b.deadline_ms, unix_ms(SystemTime::now()), Instant::now())
    });
    let job_id = request.job_id.clone();
    let ctx = Context::new(ContextParts {
        request,
        trace_id: trace_id.to_owned(),
        sender_id,
        worker_id: shared.worker_id.clone(),
        topic,
        cancel: token.clone(),
        deadline,
        retry: entry.options.retry,
        timeout: entry.options.timeout,
        sink: sink.clone(),
    });
    // Announce the start (status RUNNING, 0 %): the scheduler moves the job from
    // DISPATCHED to RUNNING, so its dispatch timeout stops applying.
    let started = v1::JobProgress {
        job_id: job_id.clone(),
        status: v1::JobStatus::Running as i32,
        message: "started".into(),
        ..Default::default()
    };
    if let Err(e) = sink.progress(started, trace_id).await {
        tracing::warn!(job_id = %job_id, error = %e, "start report failed");
    }
    let call = AssertUnwindSafe(entry.service.clone().oneshot(Job { ctx, input })).catch_unwind();
    let output = tokio::select! {
        biased;
        _ = token.cancelled() => Err(JobError::cancelled(if shared.state.jobs_root.is_cancelled() {
            "cancelled: the worker is shutting down"
        } else {
            "cancelled by a JobCancel request"
        })),
        r = call => match r {
            Ok(r) => r,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".into());
                tracing::error!(job_id = %job_id, panic = %what, "handler panicked");
                Err(JobError::panicked(format!("handler panicked: {what}")))
            }
        },
    };
    let output = output?;
    shared
        .store
        .put_result_with_ttl(&job_id, output, shared.result_ttl)
        .await
        .map_err(|e| store_error("result write", e))
}

/// Reads the job's context through its pointer, if `scope` lets job `job_id` read it.
pub(crate) async fn fetch_context<S: BlobStore>(
    store: &S,
    scope: &PointerScope,
    job_id: &str,
    ptr: &str,
) -> Result<Bytes, JobError> {
    if ptr.is_empty() {
        return Err(JobError::not_found("the job has no context_ptr"));
    }
    let pointer =
        Pointer::parse(ptr).map_err(|e| JobError::invalid_input(format!("context_ptr: {e}")))?;
    let bytes = store
        .get_scoped(&pointer, &scope.for_job(job_id))
        .await
        .map_err(|e| store_error("context read", e))?;
    let max = store.limits().max_blob_bytes;
    if bytes.len() > max {
        return Err(JobError::invalid_input(format!(
            "context of {} bytes exceeds the limit of {max} bytes",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// The job's view of a store failure. What the submitter sees is fixed text by kind (a
/// refused pointer names the rule); the store's own words (its address, a server's
/// error text) only go to this worker's log.
fn store_error(what: &str, e: cap_blob::Error) -> JobError {
    use cap_blob::ErrorKind as K;
    let kind = e.kind();
    let message = match &e {
        cap_blob::Error::OutOfScope { rule } => format!("{what}: pointer refused: {rule}"),
        cap_blob::Error::TooLarge { size, limit } => {
            format!("{what}: blob of {size} bytes exceeds the limit of {limit} bytes")
        }
        _ => format!("{what}: {}", kind.public_message()),
    };
    if matches!(kind, K::Unavailable | K::Backend | K::InvalidConfig) {
        tracing::warn!(error = %e, "{what} failed");
    } else {
        tracing::debug!(error = %e, "{what} failed");
    }
    match kind {
        K::NotFound => JobError::not_found(message),
        K::OutOfScope => JobError::new(
            JobErrorKind::Failed,
            ErrorCode::JOB_PERMISSION_DENIED,
            message,
        ),
        K::InvalidPointer | K::UnregisteredScheme | K::InvalidKey => {
            JobError::invalid_input(message)
        }
        K::TooLarge => JobError::fatal(ErrorCode::JOB_RESOURCE_EXHAUSTED, message),
        K::Unavailable => JobError::retryable(ErrorCode::TRANSPORT_CONNECTION_LOST, message),
        _ => JobError::failed(message),
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Values of `Budget.deadline_ms` at or above this are absolute Unix times in
/// milliseconds (after September 2001); smaller ones are a time budget in milliseconds
/// from when the worker received the job.
pub const ABSOLUTE_DEADLINE_THRESHOLD_MS: i64 = 1_000_000_000_000;

/// The instant a job must end, from `Budget.deadline_ms` (0: none).
pub fn deadline_from_budget(deadline_ms: i64, now_unix_ms: i64, now: Instant) -> Option<Instant> {
    if deadline_ms <= 0 {
        return None;
    }
    let remaining = if deadline_ms >= ABSOLUTE_DEADLINE_THRESHOLD_MS {
        deadline_ms.saturating_sub(now_unix_ms).max(0)
    } else {
        deadline_ms
    };
    now.checked_add(Duration::from_millis(u64::try_from(remaining).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_relative_and_absolute() {
        let now = Instant::now();
        let now_ms = 1_700_000_000_000;
        assert_eq!(deadline_from_budget(0, now_ms, now), None);
        assert_eq!(deadline_from_budget(-5, now_ms, now), None);
        assert_eq!(
            deadline_from_budget(1500, now_ms, now),
            Some(now + Duration::from_millis(1500))
        );
        assert_eq!(
            deadline_from_budget(now_ms + 2000, now_ms, now),
            Some(now + Duration::from_millis(2000))
        );
        assert_eq!(deadline_from_budget(now_ms - 10, now_ms, now), Some(now));
    }
}
