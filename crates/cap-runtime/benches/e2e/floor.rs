//! The wire floor: the NATS and Redis operations of one CAP job, done with the raw
//! async-nats and redis clients and no CAP logic at all (no encoding, validation, ids,
//! middleware, bookkeeping), 64 jobs in flight in one process.
//!
//! Per job, as our client and worker do: `SET ctx:<id>` with a TTL, a request published
//! to the pool subject (queue group), `GET ctx:<id>`, a progress report, `SET res:<id>`
//! with a TTL, a result published; every payload as large as the real packet. What this
//! reaches is the most any CAP implementation could reach on this machine with these
//! servers, since the servers' own work per job is the same.

use bytes::Bytes;
use cap_runtime::load::{self, LoadReport};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Payload sizes of the real packets of one job (request, progress, result).
#[derive(Clone, Copy)]
pub struct Sizes {
    pub request: usize,
    /// `None`: no progress report (the protocol does not require one).
    pub progress: Option<usize>,
    pub result: usize,
}

type Waiters = Arc<Mutex<HashMap<Bytes, oneshot::Sender<()>>>>;

/// A payload of `len` bytes starting with the 36-byte job id (the id is read back from
/// it, as a real receiver reads the job id from the packet).
fn payload(id: &[u8], len: usize) -> Bytes {
    let mut v = Vec::with_capacity(len.max(id.len()));
    v.extend_from_slice(id);
    v.resize(len.max(id.len()), b'x');
    v.into()
}

const ID_LEN: usize = 36;

/// The TTL of the floor's blobs, as the other rows' (10 minutes).
const BLOB_TTL_MS: u64 = 600_000;

fn key(prefix: &str, id: &[u8]) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    k.extend_from_slice(id);
    k
}

pub async fn run(
    nats_url: &str,
    redis_url: &str,
    jobs: u64,
    inflight: usize,
    sizes: Sizes,
) -> Result<LoadReport, String> {
    let nats = async_nats::connect(nats_url)
        .await
        .map_err(|e| format!("NATS: {e}"))?;
    let redis = redis::Client::open(redis_url)
        .map_err(|e| format!("Redis: {e}"))?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("Redis: {e}"))?;
    let tag = &cap_runtime::id::new_trace_id()[..8];
    let (pool, progress, result) = (
        format!("floor.{tag}.job"),
        format!("floor.{tag}.progress"),
        format!("floor.{tag}.result"),
    );

    // The worker: a queue-group subscription; each job runs in its own task.
    let mut jobs_sub = nats
        .queue_subscribe(pool.clone(), pool.clone())
        .await
        .map_err(|e| e.to_string())?;
    let worker = {
        let (nats, redis, progress, result) = (
            nats.clone(),
            redis.clone(),
            progress.clone(),
            result.clone(),
        );
        tokio::spawn(async move {
            while let Some(msg) = jobs_sub.next().await {
                let (nats, mut redis) = (nats.clone(), redis.clone());
                let (progress, result) = (progress.clone(), result.clone());
                tokio::spawn(async move {
                    // Any failure leaves the job without a result: the client times out
                    // and the run fails, so a broken floor cannot look fast.
                    if msg.payload.len() < ID_LEN {
                        return;
                    }
                    let id = msg.payload.slice(..ID_LEN);
                    let Ok(Some(input)) = redis::cmd("GET")
                        .arg(key("ctx:", &id))
                        .query_async::<Option<Vec<u8>>>(&mut redis)
                        .await
                    else {
                        return;
                    };
                    if let Some(len) = sizes.progress
                        && nats.publish(progress, payload(&id, len)).await.is_err()
                    {
                        return;
                    }
                    let stored: Result<(), _> = redis::cmd("SET")
                        .arg(key("res:", &id))
                        .arg(input)
                        .arg("PX")
                        .arg(BLOB_TTL_MS)
                        .query_async(&mut redis)
                        .await;
                    if stored.is_ok() {
                        let _ = nats.publish(result, payload(&id, sizes.result)).await;
                    }
                });
            }
        })
    };

    // The client: results and progress demultiplexed by job id.
    let waiters: Waiters = Arc::default();
    let mut results = nats
        .subscribe(result.clone())
        .await
        .map_err(|e| e.to_string())?;
    let mut progresses = nats.subscribe(progress).await.map_err(|e| e.to_string())?;
    let demux = {
        let waiters = waiters.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(p) = progresses.next() => {
                        // A real client looks the job up, as ours does.
                        let id = p.payload.get(..ID_LEN).unwrap_or_default();
                        let _known = waiters.lock().map(|w| w.contains_key(id)).unwrap_or(false);
                    }
                    Some(r) = results.next() => {
                        let id = r.payload.get(..ID_LEN).unwrap_or_default();
                        if let Some(tx) = waiters.lock().ok().and_then(|mut w| w.remove(id)) {
                            let _ = tx.send(());
                        }
                    }
                    else => return,
                }
            }
        })
    };
    let input = Bytes::from_static(br#"{"message":"hello","n":42}"#);
    let one = || {
        let (nats, mut redis, waiters, pool, input) = (
            nats.clone(),
            redis.clone(),
            waiters.clone(),
            pool.clone(),
            input.clone(),
        );
        async move {
            let started = Instant::now();
            let id = Bytes::from(uuid::Uuid::new_v4().to_string());
            redis::cmd("SET")
                .arg(key("ctx:", &id))
                .arg(input.as_ref())
                .arg("PX")
                .arg(BLOB_TTL_MS)
                .query_async::<()>(&mut redis)
                .await
                .map_err(|e| e.to_string())?;
            let (tx, rx) = oneshot::channel();
            waiters
                .lock()
                .map_err(|e| e.to_string())?
                .insert(id.clone(), tx);
            nats.publish(pool, payload(&id, sizes.request))
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::timeout(Duration::from_secs(30), rx)
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(started.elapsed())
        }
    };

    let report = load::run_with(jobs, inflight, one, |_| {}).await;
    worker.abort();
    demux.abort();
    let report = report?;
    if report.failed > 0 {
        return Err(format!("{} of {jobs} floor jobs failed", report.failed));
    }
    Ok(report)
}
