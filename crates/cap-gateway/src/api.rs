//! The routes and their handlers.

use crate::views::{self, JobDetail, Page};
use crate::{ApiError, Caller, DASHBOARD_HTML, Gateway};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use cap_blob::BlobStore;
use cap_bus::Bus;
use cap_proto::{Pointer, subject, v1};
use cap_scheduler::JobStore;
use cap_scheduler::core::{JobRecord, Millis};
use cap_scheduler::shell::APPROVAL_SUBJECT;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Gw<B, S, O> = State<Arc<Gateway<B, S, O>>>;

pub(crate) fn router<B: Bus, S: JobStore, O: BlobStore + 'static>(
    gw: Arc<Gateway<B, S, O>>,
) -> axum::Router {
    let limit = gw.config.max_body_bytes;
    let router = axum::Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/jobs", post(submit::<B, S, O>).get(list::<B, S, O>))
        .route("/api/v1/jobs/{id}", get(get_job::<B, S, O>))
        .route("/api/v1/jobs/{id}/cancel", post(cancel::<B, S, O>))
        .route("/api/v1/jobs/{id}/decisions", get(decisions::<B, S, O>))
        .route(
            "/api/v1/jobs/{id}/events",
            get(crate::events::job_stream::<B, S, O>),
        )
        .route(
            "/api/v1/events",
            get(crate::events::tenant_stream::<B, S, O>),
        )
        .route("/api/v1/approvals", get(approvals::<B, S, O>))
        .route("/api/v1/approvals/{id}/approve", post(approve::<B, S, O>))
        .route("/api/v1/approvals/{id}/reject", post(reject::<B, S, O>))
        .route("/api/v1/dlq", get(dlq_list::<B, S, O>))
        .route("/api/v1/dlq/page", get(dlq_page::<B, S, O>))
        .route(
            "/api/v1/dlq/{id}",
            axum::routing::delete(dlq_delete::<B, S, O>),
        )
        .route("/api/v1/dlq/{id}/retry", post(dlq_retry::<B, S, O>))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(limit));
    let router = match gw.config.metrics.clone() {
        Some(m) => router.layer(axum::middleware::from_fn_with_state(
            m,
            crate::metrics::track,
        )),
        None => router,
    };
    router.with_state(gw)
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD_HTML)
}

/// The body of a request, or 413 / 400.
fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "request body too large",
            )
        } else {
            ApiError::bad_request("bad_body", r.body_text())
        }
    })
}

/// A job of the caller's tenant, or 404 (also when another tenant's).
pub(crate) async fn job_of<B: Bus, S: JobStore, O: BlobStore + 'static>(
    gw: &Gateway<B, S, O>,
    caller: &Caller,
    id: &str,
) -> Result<JobRecord, ApiError> {
    let stored = gw
        .jobs
        .load(&[id.to_owned()])
        .await
        .map_err(|e| ApiError::unavailable("job store", e))?;
    match stored.into_iter().next().flatten() {
        Some(s) if s.record.tenant() == gw.store_tenant(&caller.tenant) => Ok(s.record),
        _ => Err(ApiError::no_job(id)),
    }
}

/// What `POST /api/v1/jobs` takes (cordum `SubmitJobRequest`; unknown fields are
/// ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SubmitBody {
    prompt: Option<serde_json::Value>,
    topic: Option<String>,
    context: Option<serde_json::Value>,
    adapter_id: String,
    priority: Option<String>,
    memory_id: String,
    tenant_id: Option<String>,
    principal_id: String,
    actor_id: String,
    idempotency_key: Option<String>,
    pack_id: String,
    capability: String,
    risk_tags: Vec<String>,
    requires: Vec<String>,
    labels: BTreeMap<String, String>,
}

fn priority(p: Option<&str>) -> Result<i32, ApiError> {
    Ok(match p.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("interactive") => v1::JobPriority::Interactive as i32,
        Some("batch") => v1::JobPriority::Batch as i32,
        Some("critical") => v1::JobPriority::Critical as i32,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "priority {other:?}: expected interactive, batch or critical"
            )));
        }
    })
}

/// The job id of an idempotent submission: the same tenant and key name the same job.
fn idempotent_id(tenant: &str, key: &str) -> String {
    let d = Sha256::digest(format!("{tenant}\0{key}").as_bytes());
    let hex: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("job-{hex}")
}

async fn submit<B: Bus, S: JobStore, O: BlobStore + 'static>(
    State(gw): Gw<B, S, O>,
    caller: Caller,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = body(raw)?;
    let b: SubmitBody = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::invalid(format!("body is not a job submission: {e}")))?;
    if let Some(t) = b.tenant_id.as_deref().filter(|t| !t.is_empty())
        && t != caller.tenant
    {
        return Err(ApiError::forbidden(format!(
            "tenant_id {t:?} is not the caller's tenant"
        )));
    }
    match &b.prompt {
        None | Some(serde_json::Value::String(_)) => {}
        Some(_) => return Err(ApiError::invalid("prompt must be a string")),
    }
    if b.prompt.is_none() && b.context.is_none() {
        return Err(ApiError::invalid("a job needs a prompt or a context"));
    }
    let topic = b.topic.clone().unwrap_or_else(|| "job.default".into());
    let priority = priority(b.priority.as_deref())?;
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("bad_header", "Idempotency-Key is not text"))?
                .trim()
                .to_owned(),
        ),
        None => b.idempotency_key.clone(),
    }
    .filter(|k| !k.is_empty());
    let job_id = match &key {
        Some(k) => idempotent_id(&caller.tenant, k),
        None => cap_runtime::id::new_job_id(),
    };
    if key.is_some()
        && let Ok(record) = job_of(&gw, &caller, &job_id).await
    {
        // Submitted before: the same job.
        return Ok(
            Json(serde_json::json!({"job_id": job_id, "trace_id": record.trace_id}))
                .into_response(),
        );
    }
    let mut input = serde_json::Map::new();
    if let Some(p) = &b.prompt {
        input.insert("prompt".into(), p.clone());
    }
    if let Some(c) = &b.context {
        input.insert("context".into(), c.clone());
    }
    let input = serde_json::to_vec(&input).map_err(|e| ApiError::invalid(e.to_string()))?;
    let ttl = gw.config.context_ttl.or(gw.blobs.limits().context_ttl);
    let ptr = gw
        .blobs
        .put_context_with_ttl(&job_id, input.into(), ttl)
        .await
        .map_err(|e| ApiError::unavailable("blob store", e))?;
    let tenant = gw.store_tenant(&caller.tenant).to_owned();
    let request = v1::JobRequest {
        job_id: job_id.clone(),
        topic,
        priority,
        context_ptr: ptr.to_string(),
        adapter_id: b.adapter_id,
        memory_id: b.memory_id,
        tenant_id: tenant.clone(),
        principal_id: b.principal_id,
        labels: b.labels.clone().into_iter().collect(),
        meta: Some(v1::JobMetadata {
            tenant_id: tenant.clone(),
            actor_id: b.actor_id,
            // Scoped to the tenant: two tenants' keys never collide.
            idempotency_key: key
                .as_ref()
                .map(|k| format!("{tenant}/{k}"))
                .unwrap_or_default(),
            capability: b.capability,
            risk_tags: b.risk_tags,
            requires: b.requires,
            pack_id: b.pack_id,
            ..Default::default()
        }),
        ..Default::default()
    };
    cap_proto::validate::job_request(&request)
        .map_err(|v| ApiError::invalid(format!("job request: {v}")))?;
    let trace_id = cap_runtime::id::new_trace_id();
    publish_recorded(&gw, &caller, request, &trace_id).await?;
    Ok(Json(serde_json::json!({"job_id": job_id, "trace_id": trace_id})).into_response())
}

/// Publishes a JobRequest on `sys.job.submit` and waits until the scheduler has recorded
/// the job (its first state event, or the record in the store; at most `submit_wait`),
/// so that the client finds it at once.
async fn publish_recorded<B: Bus, S: JobStore, O: BlobStore + 'static>(
    gw: &Gateway<B, S, O>,
    caller: &Caller,
    request: v1::JobRequest,
    trace_id: &str,
) -> Result<(), ApiError> {
    let job_id = request.job_id.clone();
    let packet = gw.packets.envelope(trace_id, request);
    let (tx, mut recorded) = tokio::sync::oneshot::channel();
    gw.recorded
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(job_id.clone(), tx);
    let published = gw.packets.publish(subject::SUBMIT, packet).await;
    if let Err(e) = published {
        gw.recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&job_id);
        return Err(ApiError::unavailable("bus", e));
    }
    let until = tokio::time::Instant::now() + gw.config.submit_wait;
    let mut look = Duration::from_millis(50);
    loop {
        let tick = tokio::time::sleep_until(until.min(tokio::time::Instant::now() + look));
        tokio::select! {
            _ = &mut recorded => break,
            _ = tick => {}
        }
        if tokio::time::Instant::now() >= until {
            tracing::warn!(job_id = %job_id, "the scheduler did not record the job in time");
            break;
        }
        if job_of(gw, caller, &job_id).await.is_ok() {
            break;
        }
        look = (look * 2).min(Duration::from_millis(400));
    }
    gw.recorded
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&job_id);
    Ok(())
}

/// The detail of a record, with its output read from the blob store when it has one.
pub(crate) async fn detail_of<B: Bus, S: JobStore, O: BlobStore + 'static>(
    gw: &Gateway<B, S, O>,
    record: &JobRecord,
) -> JobDetail {
    let result = match record.result.as_ref().map(|r| r.result_ptr.as_str()) {
        Some(ptr)
            if !ptr.is_empty()
                && record.result.as_ref().map(|r| r.status)
                    == Some(v1::JobStatus::Succeeded as i32) =>
        {
            match Pointer::parse(ptr) {
                Ok(p) => match gw.blobs.get_ptr(&p).await {
                    Ok(bytes) if bytes.len() <= gw.config.max_inline_result => {
                        Some(views::inline_result(&bytes))
                    }
                    Ok(_) => None,
                    Err(e) => {
                        tracing::debug!(job_id = %record.id(), error = %e, "result not readable");
                        None
                    }
                },
                Err(_) => None,
            }
        }
        _ => None,
    };
    views::detail(record, result)
}

async fn get_job<B: Bus, S: JobStore, O: BlobStore + 'static>(
    State(gw): Gw<B, S, O>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobDetail>, ApiError> {
    let record = job_of(&gw, &caller, &id).await?;
    Ok(Json(detail_of(&gw, &record).await))
}

async fn decisions<B: Bus, S: JobStore, O: BlobStore + 'static>(
    State(gw): Gw<B, S, O>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<views::SafetyDecision>>, ApiError> {
    let record = job_of(&gw, &caller, &id).await?;
    Ok(Json(views::decisions(&record)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    state: Option<String>,
    topic: Option<String>,
    tenant: Option<String>,
}

impl ListQuery {
    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(50),
            Some(n @ 1..=500) => Ok(n),
            Some(n) => Err(ApiError::invalid(format!("limit {n}: expected 1 to 500"))),
        }
    }

    fn cursor(&self) -> Result<Option<(Millis, String)>, ApiError> {
        match self.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => Ok(None),
            Some(c) => views::parse_cursor(c)
                .map(Some)
                .ok_or_else(|| ApiError::invalid(format!("cursor {c:?} is not one of ours"))),
        }
    }
}

/// Pages through the caller's jobs, keeping those `keep` maps to an item, until `limit`
/// items (or the scan limit, or the end).
async fn page_of<B, S, O, T>(
    gw: &Gateway<B, S, O>,
    caller: &Caller,
    q: &ListQuery,
    keep: impl Fn(&JobRecord) -> Option<T>,
) -> Result<Page<T>, ApiError>
where
    B: Bus,
    S: JobStore,
    O: BlobStore + 'static,
{
    if let Some(t) = q.tenant.as_deref().filter(|t| !t.is_empty())
        && t != caller.tenant
    {
        return Err(ApiError::forbidden(format!(
            "tenant {t:?} is not the caller's tenant"
        )));
    }
    let limit = q.limit()?;
    let mut cursor = q.cursor()?;
    let mut items: Vec<(T, String)> = Vec::new();
    let mut scanned = 0usize;
    let batch = (limit + 1).clamp(16, 500);
    loop {
        let records = gw
            .jobs
            .tenant_jobs(gw.store_tenant(&caller.tenant), cursor.clone(), batch)
            .await
            .map_err(|e| ApiError::unavailable("job store", e))?;
        let n = records.len();
        for r in &records {
            scanned += 1;
            cursor = Some((r.created(), r.id().to_owned()));
            if let Some(item) = keep(r) {
                items.push((item, views::cursor_of(r)));
                if items.len() > limit {
                    break;
                }
            }
        }
        if items.len() > limit || n < batch {
            break;
        }
        if scanned >= gw.config.max_scan {
            // Stop here; the client goes on from the last record read.
            let next = cursor.map(|(c, id)| format!("{c}:{id}"));
            return Ok(Page {
                items: items.into_iter().map(|(i, _)| i).collect(),
                next_cursor: next,
            });
        }
    }
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|(_, c)| c.clone())
    } else {
        None
    };
    Ok(Page {
        items: items.into_iter().map(|(i, _)| i).collect(),
        next_cursor,
    })
}

async fn list<B: Bus, S: JobStore, O: BlobStore + 'static>(
    State(gw): Gw<B, S, O>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<views::JobSummary>>, ApiError> {
    let state = q
        .state
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_uppercase);
    if let Some(s) = &state
        && !KNOWN_STATES.contains(&s.as_str())
    {
        return Err(ApiError::invalid(format!(
            "state {s:?}: expected one of {}",
            KNOWN_STATES.join(", ")
        )));
    }
    let topic = q.topic.clone().filter(|t| !t.is_empty());
    let page = page_of(&gw, &caller, &q, |r| {
        let s = r.state.to_string();
        let ok = state.as_deref().is_none_or(|want| want == s)
            && topic.as_deref().is_none_or(|t| t == r.request.topic);
        ok.then(|| views::summary(r))
    })
    .await?;
    Ok(Json(page))
}

/// The states a job can be in.
pub const KNOWN_STATES: [&str; 11] = [
    "PENDING",
    "SCHEDULED",
    "DISPATCHED",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "DENIED",
    "FAILED_RETRYABLE",
    "FAILED_FATAL",
];

async fn cancel<B: Bus, S: JobStore, O: BlobStore + 'static>(
    State(gw): Gw<B, S, O>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let record = job_of(&gw, &caller, &id).await?;
    if record.state.is_terminal() {
        return Err(ApiError::conflict(format!(
            "job {id} already ended: {}",
            record.state
        )));
    }
    let cancel = v1::JobCancel {
        job_id: id.clone(),
        reason: "cancelled through the gateway".into(),
        requested_by: gw.packets.sender_id().to_owned(),
        ..Default::default()
    };
    let trace = if record.trace_id.is_empty() {
        id.clone()
    } else {
        record.trace_id.clone()
    };
    let packet = gw.packets.envelope(&trace, cancel);
    gw.packets
        .publish(subject::CANCEL, packet)
        .await
        .map_err(|e| ApiError::unavailable("bus", e))?;
    // Answer with what the scheduler recorded, once it has.
    let until = Instant::now() + gw.config.cancel_wait;
    let mut state = record.state.to_string();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(r) = job_of(&gw, &caller, &id).await {
            state = r.state.to_string();
            if r.state.is_terminal() {
                break;
            }
        }
    }
    Ok(Json(serde_json::json!({"id": id, "state": state})))
}

async fn approvals<B: Bus, S: JobStore, O: BlobStore + 'static>(
    State(gw): Gw<B, S, O>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<views::ApprovalItem>>, ApiError> {
    Ok(Json(page_of(&gw, &caller, &q, views::approval).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DecisionBody {
    reason: String,
    note: String,
}

async fn decide<B: Bus, S: JobStore, O: BlobStore + 'static>(
    gw: &Gateway<B, S, O>,
    caller: &Caller,
    id: &str,
    approve: bool,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let raw = body(raw)?;
    let b: DecisionBody = if raw.iter().all(u8::is_ascii_whitespace) {
        DecisionBody::default()
    } else {
        serde_json::from_slice(&raw)
            .map_err(|e| ApiError::invalid(format!("body is not a decision: {e}")))?
    };
    let record = job_of(gw, caller, id).await?;
    if views::approval(&record).is_none() {
        return Err(ApiError::conflict(format!(
            "job {id} is not waiting for approval ({})",
            record.state
        )));
    }
    let reason = match (b.reason.trim(), b.note.trim()) {
        ("", "") => format!("by tenant {}", caller.tenant),
        (r, "") | ("", r) => r.to_owned(),
        (r, n) => format!("{r} ({n})"),
    };
    let command = serde_json::json!({"job_id": id, "approve": approve, "reason": reason});
    let reply = gw
        .packets
        .bus()
        .request(
            APPROVAL_SUBJECT,
            serde_json::to_vec(&command)
                .map_err(|e| ApiError::invalid(e.to_string()))?
                .into(),
            gw.config.approval_timeout,
        )
        .await
        .map_err(|e| ApiError::unavailable("scheduler approval service", e))?;
    let answer: serde_json::Value = serde_json::from_slice(reply.payload())
        .map_err(|e| ApiError::unavailable("scheduler approval service", e))?;
    if answer.get("ok").and_then(serde_json::Value::as_bool) == Some(true) {
        Ok(Json(
            serde_json::json!({"job_id": id, "trace_id": record.trace_id}),
        ))
    } else {
        let message = answer
            .get("message")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("the scheduler refused the decision");
        Err(ApiError::conflict(message.to_owned()))
    }
}

async fn approve<B: Bus, S: JobStore, O: BlobStore + 'static>(
    State(gw): Gw<B, S, O>,
    caller: Caller,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    decide(&gw, &caller, &id, true, raw).await
}

async fn reject<B: Bus, S: JobStore, O: BlobStore + 'static>(
    State(gw): Gw<B, S, O>,
    caller: Caller,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    decide(&gw, &caller, &id, false, raw).await
}

fn dismissed<B: Bus, S: JobStore, O: BlobStore + 'static>(gw: &Gateway<B, S, O>, id: &str) -> bool {
    gw.dismissed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(id)
}

async fn dlq_page<B: Bus, S: JobStore, O: BlobStore + 'static>(
    State(gw): Gw<B, S, O>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<views::DlqEntry>>, ApiError> {
    let page = page_of(&gw, &caller, &q, |r| {
        views::dead_letter(r).filter(|_| !dismissed(&gw, r.id()))
    })
    .await?;
    Ok(Json(page))
}

async fn dlq_list<B: Bus, S: JobStore, O: BlobStore + 'static>(
    State(gw): Gw<B, S, O>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<views::DlqEntry>>, ApiError> {
    let page = page_of(&gw, &caller, &q, |r| {
        views::dead_letter(r).filter(|_| !dismissed(&gw, r.id()))
    })
    .await?;
    Ok(Json(page.items))
}

async fn dead_letter_of<B: Bus, S: JobStore, O: BlobStore + 'static>(
    gw: &Gateway<B, S, O>,
    caller: &Caller,
    id: &str,
) -> Result<JobRecord, ApiError> {
    let record = job_of(gw, caller, id).await?;
    if views::dead_letter(&record).is_none() || dismissed(gw, id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("job {id} is not a dead letter"),
        ));
    }
    Ok(record)
}

async fn dlq_delete<B: Bus, S: JobStore, O: BlobStore + 'static>(
    State(gw): Gw<B, S, O>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    dead_letter_of(&gw, &caller, &id).await?;
    gw.dismissed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id);
    Ok(StatusCode::NO_CONTENT)
}

async fn dlq_retry<B: Bus, S: JobStore, O: BlobStore + 'static>(
    State(gw): Gw<B, S, O>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let record = dead_letter_of(&gw, &caller, &id).await?;
    // A new job with the same request and a copy of the input.
    let input = Pointer::parse(&record.request.context_ptr)
        .map_err(|e| ApiError::conflict(format!("job {id} has no input to retry with: {e}")))?;
    let input = gw
        .blobs
        .get_ptr(&input)
        .await
        .map_err(|e| ApiError::conflict(format!("the input of job {id} is gone: {e}")))?;
    let job_id = cap_runtime::id::new_job_id();
    let ttl = gw.config.context_ttl.or(gw.blobs.limits().context_ttl);
    let ptr = gw
        .blobs
        .put_context_with_ttl(&job_id, input, ttl)
        .await
        .map_err(|e| ApiError::unavailable("blob store", e))?;
    let mut request = record.request.clone();
    request.job_id = job_id.clone();
    request.context_ptr = ptr.to_string();
    request.dispatch = None;
    if let Some(m) = request.meta.as_mut() {
        m.idempotency_key.clear();
    }
    let trace_id = cap_runtime::id::new_trace_id();
    publish_recorded(&gw, &caller, request, &trace_id).await?;
    gw.dismissed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id);
    Ok(Json(
        serde_json::json!({"job_id": job_id, "trace_id": trace_id}),
    ))
}
