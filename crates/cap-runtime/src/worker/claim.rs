//! The claim to run one dispatch of a job, shared by every worker of a pool through the
//! blob store, so that a durable delivery is run by one worker only.
//!
//! JetStream delivers at least once: a delivery whose acknowledgement was lost (a NATS
//! server killed before it stored the ack, a worker cut off while it ran the job) comes
//! again, perhaps to another worker, perhaps while the first one is still running it, and
//! a server that restarted may even count it as a first delivery. The in-process fence
//! and dedupe cannot see other processes, so before a worker runs a durable delivery it
//! takes the claim [`key::run_claim`] with [`BlobStore::put_if_absent`]:
//!
//! - taken: it runs the job, renewing the claim's lease while it runs; when it ends, the
//!   claim holds the sealed result (the packet it publishes), kept as long as results
//!   are; a retryable failure releases it, so that the retry runs;
//! - held by a running worker: the delivery is handed back to the bus for later
//!   ([`Message::nak`] for a quarter of a lease), until the job has finished or its
//!   worker has died and the lease lapsed;
//! - finished: the recorded result is published again; the handler does not run.
//!
//! Deliveries that are never redelivered (core NATS, the in-memory bus) take no claim.
//! A worker that stalls longer than its lease (a frozen process, a store out of reach)
//! may lose its claim to another worker: the lease bounds how long a dead worker's job
//! waits, and how long a live one may go unheard.
//!
//! [`Message::nak`]: cap_bus::Message::nak

use bytes::{BufMut, Bytes, BytesMut};
use cap_blob::{BlobStore, ErrorKind, key};
use std::future::Future;
use std::time::Duration;

/// Default lease of the claim a worker takes before it runs a durable delivery, renewed
/// every third of it while the job runs. The claim (`cap:run:<job_id>[:<dispatch_id>]`
/// in the blob store) makes a redelivery of a job that ran on another worker republish
/// the recorded result, and one of a job running on another worker wait, so a job's
/// handler runs once across the pool; the job of a worker that died runs again once its
/// lease lapses.
pub const DEFAULT_RUN_LEASE: Duration = Duration::from_secs(6);

/// Marks a claim held by a running worker (followed by its id).
const RUNNING: u8 = b'R';
/// Marks a finished claim (followed by the sealed result packet).
const DONE: u8 = b'D';

/// What taking the claim found.
#[derive(Debug)]
pub(crate) enum Taken {
    /// The claim is ours: run the job.
    Ours(RunClaim),
    /// Another worker is running this dispatch now.
    Held,
    /// This dispatch already ran: its sealed result packet.
    Finished(Bytes),
    /// The store could not be asked.
    Unavailable(cap_blob::Error),
}

/// A claim this worker holds.
#[derive(Debug)]
pub(crate) struct RunClaim {
    key: String,
    running: Bytes,
    lease: Duration,
}

/// Takes the claim to run dispatch `dispatch_id` (empty without one) of `job_id`.
pub(crate) async fn take<S: BlobStore>(
    store: &S,
    job_id: &str,
    dispatch_id: &str,
    owner: &str,
    lease: Duration,
) -> Taken {
    let key = key::run_claim(job_id, dispatch_id);
    let mut running = BytesMut::with_capacity(owner.len() + 1);
    running.put_u8(RUNNING);
    running.put_slice(owner.as_bytes());
    let running = running.freeze();
    // A claim that lapses between the two calls is tried once more.
    for _ in 0..2 {
        match store
            .put_if_absent(&key, running.clone(), Some(lease))
            .await
        {
            Ok(true) => {
                return Taken::Ours(RunClaim {
                    key,
                    running,
                    lease,
                });
            }
            Ok(false) => {}
            Err(e) => return Taken::Unavailable(e),
        }
        match store.get(&key).await {
            Ok(v) if v.first() == Some(&DONE) => return Taken::Finished(v.slice(1..)),
            Ok(_) => return Taken::Held,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Taken::Unavailable(e),
        }
    }
    Taken::Held
}

impl RunClaim {
    /// Runs `work`, renewing the lease every third of it.
    pub(crate) async fn hold_while<S: BlobStore, F: Future>(
        &self,
        store: &S,
        work: F,
    ) -> F::Output {
        let every = self.lease / 3;
        let mut work = std::pin::pin!(work);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                out = &mut work => return out,
                _ = tick.tick() => {
                    let renewed = store.put(&self.key, self.running.clone(), Some(self.lease));
                    if let Err(e) = renewed.await {
                        tracing::warn!(claim = %self.key, error = %e, "run claim not renewed");
                    }
                }
            }
        }
    }

    /// Records the job's sealed result in the claim, kept for `ttl` (as long as the
    /// job's output), so that any later delivery republishes it.
    pub(crate) async fn finish<S: BlobStore>(
        &self,
        store: &S,
        sealed: &Bytes,
        ttl: Option<Duration>,
    ) {
        let mut done = BytesMut::with_capacity(sealed.len() + 1);
        done.put_u8(DONE);
        done.put_slice(sealed);
        if let Err(e) = store.put(&self.key, done.freeze(), ttl).await {
            tracing::warn!(claim = %self.key, error = %e, "finished run claim not recorded");
        }
    }

    /// Gives the claim up, so that the next delivery runs the job (after a retryable
    /// failure, or when the result could not be sealed).
    pub(crate) async fn release<S: BlobStore>(&self, store: &S) {
        if let Err(e) = store.delete(&self.key).await {
            tracing::warn!(claim = %self.key, error = %e, "run claim not released");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_blob::MemoryBlobStore;

    const LEASE: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn one_taker_then_held_then_finished_then_released() {
        let store = MemoryBlobStore::new();
        let Taken::Ours(claim) = take(&store, "j", "d1", "w1", LEASE).await else {
            panic!("a free claim is taken");
        };
        assert!(matches!(
            take(&store, "j", "d1", "w2", LEASE).await,
            Taken::Held
        ));
        // Another dispatch of the job is another claim.
        assert!(matches!(
            take(&store, "j", "d2", "w2", LEASE).await,
            Taken::Ours(_)
        ));
        claim
            .finish(&store, &Bytes::from_static(b"sealed"), None)
            .await;
        match take(&store, "j", "d1", "w2", LEASE).await {
            Taken::Finished(b) => assert_eq!(&b[..], b"sealed"),
            other => panic!("{other:?}"),
        }
        claim.release(&store).await;
        assert!(matches!(
            take(&store, "j", "d1", "w2", LEASE).await,
            Taken::Ours(_)
        ));
    }

    #[tokio::test]
    async fn a_lapsed_lease_is_taken_over() {
        let store = MemoryBlobStore::new();
        let short = Duration::from_millis(30);
        let Taken::Ours(_dead) = take(&store, "j", "", "w1", short).await else {
            panic!("a free claim is taken");
        };
        assert!(matches!(
            take(&store, "j", "", "w2", LEASE).await,
            Taken::Held
        ));
        tokio::time::sleep(short * 2).await;
        assert!(matches!(
            take(&store, "j", "", "w2", LEASE).await,
            Taken::Ours(_)
        ));
    }

    #[tokio::test]
    async fn a_running_claim_is_renewed_so_it_outlives_its_lease() {
        let store = MemoryBlobStore::new();
        let lease = Duration::from_millis(300);
        let Taken::Ours(claim) = take(&store, "j", "", "w1", lease).await else {
            panic!("a free claim is taken");
        };
        claim
            .hold_while(&store, tokio::time::sleep(lease * 3))
            .await;
        assert!(matches!(
            take(&store, "j", "", "w2", lease).await,
            Taken::Held
        ));
    }
}
