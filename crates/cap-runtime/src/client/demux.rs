//! One shared subscription to `sys.job.result` (and one to `sys.job.progress`)
//! demultiplexed by job id to the handles waiting for them.

use crate::packets::Packets;
use cap_bus::Bus;
use cap_proto::v1::{self, bus_packet::Payload};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Progress reports buffered per job; more are dropped (and counted) until read.
pub const PROGRESS_BUFFER: usize = 64;

pub(crate) struct Waiter {
    pub result: oneshot::Sender<(v1::JobResult, String)>,
    pub progress: mpsc::Sender<v1::JobProgress>,
    /// Whether a FAILED_RETRYABLE result ends the wait. Through a scheduler it does not
    /// (the scheduler retries and a later result follows); sent directly to a pool,
    /// nobody retries, so it is final.
    pub retryable_is_final: bool,
}

/// Whether `status` ends a wait.
fn ends_wait(status: i32, retryable_is_final: bool) -> bool {
    match cap_proto::JobState::from_i32(status) {
        Some(cap_proto::JobState::FailedRetryable) => retryable_is_final,
        Some(s) => s.is_terminal(),
        // Unknown statuses end the wait rather than leave the caller hanging.
        None => true,
    }
}

/// The jobs waiting for results.
#[derive(Default)]
pub(crate) struct Pending {
    map: Mutex<HashMap<String, Waiter>>,
    pub(crate) progress_dropped: std::sync::atomic::AtomicU64,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiter>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, job_id: String, waiter: Waiter) {
        self.lock().insert(job_id, waiter);
    }

    pub fn remove(&self, job_id: &str) {
        self.lock().remove(job_id);
    }

    pub fn contains(&self, job_id: &str) -> bool {
        self.lock().contains_key(job_id)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Drops every waiter: their handles see the client stop.
    fn clear(&self) {
        self.lock().clear();
    }

    fn complete(&self, result: v1::JobResult, trace_id: String) {
        let mut map = self.lock();
        let done = map
            .get(&result.job_id)
            .is_some_and(|w| ends_wait(result.status, w.retryable_is_final));
        if done && let Some(w) = map.remove(&result.job_id) {
            let _ = w.result.send((result, trace_id));
        }
    }

    fn progress(&self, p: v1::JobProgress) {
        let map = self.lock();
        if let Some(w) = map.get(&p.job_id)
            && w.progress.try_send(p).is_err()
        {
            self.progress_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Runs until `stop`: every packet on the subscriptions is decoded; only those about
/// pending jobs are verified, validated and delivered (others are someone else's).
pub(crate) async fn run<B: Bus>(
    packets: Packets<B>,
    pending: Arc<Pending>,
    mut results: B::Subscription,
    mut progress: B::Subscription,
    stop: CancellationToken,
) {
    let wanted = |p: &v1::BusPacket| p.job_id().is_some_and(|id| pending.contains(id));
    run_loop(
        &packets,
        &pending,
        &mut results,
        &mut progress,
        &stop,
        wanted,
    )
    .await;
    pending.clear();
}

async fn run_loop<B: Bus>(
    packets: &Packets<B>,
    pending: &Pending,
    results: &mut B::Subscription,
    progress: &mut B::Subscription,
    stop: &CancellationToken,
    wanted: impl Fn(&v1::BusPacket) -> bool,
) {
    loop {
        // Progress first: a job's reports were published before its result, and must
        // reach the handle before the result completes it.
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            m = progress.next() => {
                let Some(msg) = m else { return };
                if let Some(packet) = packets.receive_if(&msg, &wanted).await
                    && let Some(Payload::JobProgress(p)) = packet.payload
                {
                    pending.progress(p);
                }
            }
            m = results.next() => {
                let Some(msg) = m else { return };
                if let Some(packet) = packets.receive_if(&msg, &wanted).await {
                    if let Some(Payload::JobResult(r)) = packet.payload {
                        crate::trace_context::result_hop(msg.headers(), &packet.trace_id, &r);
                        pending.complete(r, packet.trace_id);
                    }
                    let _ = msg.ack().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod wait_tests {
    use super::ends_wait;

    #[test]
    fn only_final_results_end_a_wait() {
        assert!(ends_wait(5, false));
        assert!(ends_wait(8, false));
        assert!(
            !ends_wait(10, false),
            "a scheduler retries FAILED_RETRYABLE"
        );
        assert!(ends_wait(10, true), "nobody retries a direct submission");
        assert!(!ends_wait(4, true));
        assert!(ends_wait(99, false));
    }
}
