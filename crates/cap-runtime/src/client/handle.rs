//! [`JobHandle`]: a submitted job — await its result, read its output, follow its
//! progress, cancel it.

use super::Client;
use crate::{Error, ErrorKind};
use cap_blob::BlobStore;
use cap_bus::Bus;
use cap_proto::v1;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A submitted job. Dropping it stops waiting (the job itself goes on).
pub struct JobHandle<B: Bus, S: BlobStore + 'static> {
    pub(super) client: Client<B, S>,
    pub(super) job_id: String,
    pub(super) trace_id: String,
    pub(super) result_rx: Option<oneshot::Receiver<(v1::JobResult, String)>>,
    pub(super) result: Option<v1::JobResult>,
    pub(super) progress_rx: mpsc::Receiver<v1::JobProgress>,
    /// The request as submitted through a scheduler, to ask again (see
    /// [`ClientConfig::reask`](super::ClientConfig::reask)); `None` for a direct
    /// submission.
    pub(super) resend: Option<Box<v1::JobRequest>>,
}

impl<B: Bus, S: BlobStore + 'static> JobHandle<B, S> {
    /// The job id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The trace id carried by every packet about the job.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// Waits for the job's result, up to the client's default timeout.
    pub async fn result(&mut self) -> Result<&v1::JobResult, Error> {
        let t = self.client.inner.config.result_timeout;
        self.result_within(t).await
    }

    /// Waits for the job's result, up to `timeout`. Any status is returned as is; see
    /// [`output`](Self::output) for the success path.
    pub async fn result_within(&mut self, timeout: Duration) -> Result<&v1::JobResult, Error> {
        if self.result.is_none() {
            let rx = self
                .result_rx
                .as_mut()
                .ok_or_else(|| Error::closed("the result was already consumed"))?;
            let deadline = tokio::time::Instant::now() + timeout;
            let reask = self
                .client
                .inner
                .config
                .reask
                .filter(|_| self.resend.is_some());
            let (result, trace) = loop {
                let now = tokio::time::Instant::now();
                let slice = match reask {
                    Some(every) => every.min(deadline.saturating_duration_since(now)),
                    None => deadline.saturating_duration_since(now),
                };
                match tokio::time::timeout(slice, &mut *rx).await {
                    Ok(Ok(r)) => break r,
                    Ok(Err(_)) => return Err(Error::closed("the client stopped")),
                    Err(_) if tokio::time::Instant::now() >= deadline => {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!("no result for job {} within {timeout:?}", self.job_id),
                        ));
                    }
                    Err(_) => {
                        // The answer may have been published while our connection was
                        // down (results are not stored for clients): submit again.
                        // Submission is idempotent by job id, and a scheduler answers a
                        // repeated submission of a finished job with its outcome.
                        if let Some(request) = &self.resend {
                            self.client.resubmit(&self.trace_id, request).await;
                        }
                    }
                }
            };
            if trace != self.trace_id {
                tracing::debug!(job_id = %self.job_id, "result carries another trace id");
            }
            self.result_rx = None;
            self.result = Some(result);
        }
        self.result
            .as_ref()
            .ok_or_else(|| Error::closed("no result"))
    }

    /// Waits for a SUCCEEDED result and decodes the JSON output it points to. Any other
    /// status is an [`ErrorKind::JobFailed`] error carrying the result.
    pub async fn output<O: DeserializeOwned>(&mut self) -> Result<O, Error> {
        let bytes = self.output_bytes().await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::with_source(ErrorKind::Json, "job output", e))
    }

    /// Like [`output`](Self::output), returning the raw bytes.
    pub async fn output_bytes(&mut self) -> Result<bytes::Bytes, Error> {
        let t = self.client.inner.config.result_timeout;
        self.output_bytes_within(t).await
    }

    /// [`output_bytes`](Self::output_bytes) waiting up to `timeout` for the result.
    pub async fn output_bytes_within(&mut self, timeout: Duration) -> Result<bytes::Bytes, Error> {
        let result = self.result_within(timeout).await?.clone();
        if result.status != v1::JobStatus::Succeeded as i32 {
            return Err(Error::job_failed(result));
        }
        if result.result_ptr.is_empty() {
            return Ok(bytes::Bytes::from_static(b"null"));
        }
        let ptr = cap_proto::Pointer::parse(&result.result_ptr)
            .map_err(|e| Error::with_source(ErrorKind::Blob, "result_ptr", e))?;
        Ok(self.client.inner.store.get_ptr(&ptr).await?)
    }

    /// The next progress report (`None` once the job has a result and no report is
    /// left). Reports are buffered ([`PROGRESS_BUFFER`](super::PROGRESS_BUFFER)).
    pub async fn next_progress(&mut self) -> Option<v1::JobProgress> {
        if let Ok(p) = self.progress_rx.try_recv() {
            return Some(p);
        }
        if self.result.is_some() {
            return None;
        }
        let rx = self.result_rx.as_mut()?;
        tokio::select! {
            p = self.progress_rx.recv() => p,
            r = rx => {
                self.result_rx = None;
                if let Ok((r, _)) = r {
                    self.result = Some(r);
                }
                self.progress_rx.try_recv().ok()
            }
        }
    }

    /// Asks the worker running the job to cancel it.
    pub async fn cancel(&self, reason: &str) -> Result<(), Error> {
        self.client
            .cancel_job(&self.job_id, &self.trace_id, reason)
            .await
    }
}

impl<B: Bus, S: BlobStore + 'static> Drop for JobHandle<B, S> {
    fn drop(&mut self) {
        self.client.inner.pending.remove(&self.job_id);
    }
}

impl<B: Bus, S: BlobStore + 'static> std::fmt::Debug for JobHandle<B, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle")
            .field("job_id", &self.job_id)
            .field("trace_id", &self.trace_id)
            .field("done", &self.result.is_some())
            .finish()
    }
}
