//! Live job events over Server-Sent Events.
//!
//! The scheduler announces every state change on `cap.sched.events.<tenant>`; the
//! gateway turns each announcement into a [`Notice`] for its open streams, and each
//! stream re-reads the job's record and sends the state changes of its `history` it
//! has not sent yet. So what a stream sends is always what the store holds, and a
//! stream can resume: every state event's id is `<at ms>.<index in history>.<job id>`,
//! and a client reconnecting with `Last-Event-ID` gets every change after that one
//! (for the tenant stream: of its 1000 most recent jobs). Progress reports
//! (`sys.job.progress`) go out as `progress` events without an id.

use crate::api::job_of;
use crate::{ApiError, Caller, Gateway, Notice};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use cap_blob::BlobStore;
use cap_bus::Bus;
use cap_proto::subject;
use cap_proto::v1::bus_packet::Payload;
use cap_scheduler::JobStore;
use cap_scheduler::core::{JobRecord, Millis};
use cap_scheduler::shell::{EVENTS_PREFIX, JobStateEvent, now_ms};
use futures_util::{Stream, StreamExt};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Most records read to replay a tenant stream from a `Last-Event-ID`.
const REPLAY_SCAN: usize = 1000;

/// Where a stream is: (time, job id, index in the job's history).
type Key = (Millis, String, usize);

fn key_text(k: &Key) -> String {
    format!("{}.{}.{}", k.0, k.2, k.1)
}

fn parse_key(s: &str) -> Option<Key> {
    let mut it = s.trim().splitn(3, '.');
    let at = it.next()?.parse().ok()?;
    let idx = it.next()?.parse().ok()?;
    let job = it.next()?.to_owned();
    Some((at, job, idx))
}

/// Subscribes to the scheduler's events and the progress reports; feeds `notices`.
pub(crate) async fn follow<B: Bus, S: JobStore, O: BlobStore + 'static>(
    gw: Arc<Gateway<B, S, O>>,
    shutdown: CancellationToken,
) -> Result<(), cap_bus::Error> {
    let bus = gw.packets.bus();
    let mut events = bus.subscribe(&format!("{EVENTS_PREFIX}.>")).await?;
    let mut progress = bus.subscribe(subject::PROGRESS).await?;
    let g = gw.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                m = events.next() => {
                    let Some(m) = m else { break };
                    match serde_json::from_slice::<JobStateEvent>(m.payload()) {
                        Ok(ev) => {
                            if let Some(waiter) = g.recorded.lock().unwrap_or_else(|p| p.into_inner()).remove(&ev.job_id) {
                                let _ = waiter.send(());
                            }
                            let _ = g.notices.send(Notice { job_id: ev.job_id, tenant: ev.tenant, progress: None });
                        }
                        Err(e) => tracing::debug!(error = %e, "unreadable job event"),
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                m = progress.next() => {
                    let Some(m) = m else { break };
                    if gw.notices.receiver_count() == 0 {
                        continue;
                    }
                    let Some(packet) = gw.packets.receive(&m).await else { continue };
                    let Some(Payload::JobProgress(p)) = packet.payload else { continue };
                    let tenant = match gw.jobs.load(std::slice::from_ref(&p.job_id)).await {
                        Ok(mut r) => match r.pop().flatten() {
                            Some(s) => s.record.tenant().to_owned(),
                            None => continue,
                        },
                        Err(_) => continue,
                    };
                    let _ = gw.notices.send(Notice {
                        job_id: p.job_id,
                        tenant,
                        progress: Some((p.percent, p.message)),
                    });
                }
            }
        }
    });
    Ok(())
}

/// The state event of `record`'s history entry `idx`.
fn state_event(record: &JobRecord, idx: usize) -> Option<(Key, Event)> {
    let (at, state) = record.history.get(idx)?;
    let key = (*at, record.id().to_owned(), idx);
    let data = serde_json::json!({
        "job_id": record.id(),
        "tenant": record.tenant(),
        "topic": record.request.topic,
        "state": state,
        "at": crate::views::rfc3339(*at),
        "seq": idx,
        "current": record.state.to_string(),
        "waiting_for": crate::views::waiting_for(record),
    });
    let event = Event::default()
        .event("state")
        .id(key_text(&key))
        .json_data(data)
        .ok()?;
    Some((key, event))
}

/// What one stream has sent.
struct Sent {
    /// Entries at or before this were sent (or are not wanted).
    floor: Key,
    /// Per job: the index in its history to send next.
    next: HashMap<String, usize>,
}

impl Sent {
    /// The events of `record` not sent yet, in order; marks them sent.
    fn take(&mut self, record: &JobRecord) -> Vec<(Key, Event)> {
        let from = match self.next.get(record.id()) {
            Some(i) => *i,
            None => (0..record.history.len())
                .find(|i| {
                    let (at, _) = &record.history[*i];
                    (*at, record.id().to_owned(), *i) > self.floor
                })
                .unwrap_or(record.history.len()),
        };
        if self.next.len() > 10_000 {
            self.next.clear();
        }
        self.next
            .insert(record.id().to_owned(), record.history.len());
        (from..record.history.len())
            .filter_map(|i| state_event(record, i))
            .collect()
    }
}

fn sse(rx: mpsc::Receiver<Event>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn last_event_id(headers: &HeaderMap) -> Option<Key> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_key)
}

async fn load<B: Bus, S: JobStore, O: BlobStore + 'static>(
    gw: &Gateway<B, S, O>,
    id: &str,
) -> Option<JobRecord> {
    gw.jobs
        .load(&[id.to_owned()])
        .await
        .ok()?
        .pop()
        .flatten()
        .map(|s| s.record)
}

fn progress_event(job_id: &str, percent: i32, message: &str) -> Option<Event> {
    Event::default()
        .event("progress")
        .json_data(serde_json::json!({"job_id": job_id, "percent": percent, "message": message}))
        .ok()
}

/// `GET /api/v1/jobs/{id}/events`: the job's state changes (all of them, or those after
/// `Last-Event-ID`) and progress; ends when the job has ended.
pub(crate) async fn job_stream<B: Bus, S: JobStore, O: BlobStore + 'static>(
    State(gw): State<Arc<Gateway<B, S, O>>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let mut notices = gw.notices.subscribe();
    let record = job_of(&gw, &caller, &id).await?;
    let floor = last_event_id(&headers)
        .filter(|k| k.1 == id)
        .unwrap_or((0, String::new(), 0));
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut sent = Sent {
            floor,
            next: HashMap::new(),
        };
        let mut record = record;
        loop {
            for (_, e) in sent.take(&record) {
                if tx.send(e).await.is_err() {
                    return;
                }
            }
            if record.state.is_terminal() {
                return;
            }
            // Wait for news of the job (or look again now and then: announcements
            // are not durable).
            let wake = tokio::time::sleep(Duration::from_secs(5));
            tokio::pin!(wake);
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = &mut wake => break,
                    n = notices.recv() => match n {
                        Ok(n) if n.job_id == id => match n.progress {
                            None => break,
                            Some((percent, message)) => {
                                if let Some(e) = progress_event(&id, percent, &message)
                                    && tx.send(e).await.is_err()
                                {
                                    return;
                                }
                            }
                        },
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
            match load(&gw, &id).await {
                Some(r) => record = r,
                None => return,
            }
        }
    });
    Ok(sse(rx))
}

/// `GET /api/v1/events`: every job of the tenant, live (and, with `Last-Event-ID`,
/// what happened since).
pub(crate) async fn tenant_stream<B: Bus, S: JobStore, O: BlobStore + 'static>(
    State(gw): State<Arc<Gateway<B, S, O>>>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let mut notices = gw.notices.subscribe();
    let resume = last_event_id(&headers);
    // Live only: changes from a little before now (the scheduler's clock may lag).
    let floor = resume
        .clone()
        .unwrap_or((now_ms().saturating_sub(5_000), String::new(), 0));
    let (tx, rx) = mpsc::channel(256);
    let tenant = gw.store_tenant(&caller.tenant).to_owned();
    tokio::spawn(async move {
        let mut sent = Sent {
            floor,
            next: HashMap::new(),
        };
        let mut replay = resume.is_some();
        loop {
            if replay {
                replay = false;
                let Ok(records) = gw.jobs.tenant_jobs(&tenant, None, REPLAY_SCAN).await else {
                    return;
                };
                let mut events: Vec<(Key, Event)> =
                    records.iter().flat_map(|r| sent.take(r)).collect();
                events.sort_by(|a, b| a.0.cmp(&b.0));
                for (_, e) in events {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
            }
            let n = tokio::select! {
                _ = tx.closed() => return,
                n = notices.recv() => n,
            };
            match n {
                Ok(n) if n.tenant == tenant => match n.progress {
                    None => {
                        if let Some(r) = load(&gw, &n.job_id).await
                            && r.tenant() == tenant
                        {
                            for (_, e) in sent.take(&r) {
                                if tx.send(e).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    Some((percent, message)) => {
                        if let Some(e) = progress_event(&n.job_id, percent, &message)
                            && tx.send(e).await.is_err()
                        {
                            return;
                        }
                    }
                },
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => replay = true,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(sse(rx))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn event_ids_round_trip() {
        let k: Key = (17, "job.with.dots".into(), 3);
        assert_eq!(key_text(&k), "17.3.job.with.dots");
        assert_eq!(parse_key(&key_text(&k)), Some(k));
        assert_eq!(parse_key("x.1.j"), None);
    }
}
