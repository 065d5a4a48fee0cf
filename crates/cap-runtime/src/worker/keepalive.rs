//! Keeping a durable delivery alive while the worker holds it.
//!
//! A JetStream delivery that is not acknowledged within the consumer's ack wait goes to
//! another member of the queue group. That is what moves the jobs of a killed worker to
//! a live one, and the shorter the ack wait, the sooner. A live worker holding a job
//! longer than that (waiting for a free slot, or running a long job) tells the bus it is
//! still at it with an in-progress acknowledgement every [`DEFAULT_KEEPALIVE`] (or what
//! [`WorkerBuilder::keepalive`](super::WorkerBuilder::keepalive) sets), so the ack wait
//! can be short without live jobs being redelivered. Deliveries that need no
//! acknowledgement (core NATS, the in-memory bus) are left alone.

use cap_bus::Message;
use std::future::Future;
use std::time::Duration;

/// Default interval of in-progress acknowledgements: a third of the default JetStream
/// ack wait of the CAP subjects (5 s), so two reports may be lost before a redelivery.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_millis(1500);

/// Runs `work` while reporting `msg` in progress every `every` (the first report after
/// one interval, so short work sends none).
pub(crate) async fn while_in_hand<F: Future>(msg: &Message, every: Duration, work: F) -> F::Output {
    if !msg.ack_handle().is_durable() {
        return work.await;
    }
    let mut work = std::pin::pin!(work);
    let start = tokio::time::Instant::now() + every;
    let mut tick = tokio::time::interval_at(start, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            out = &mut work => return out,
            _ = tick.tick() => {
                if let Err(e) = msg.in_progress().await {
                    tracing::debug!(subject = msg.subject(), error = %e, "in-progress ack failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_bus::{AckHandle, Acknowledge, Error};
    use futures_core::future::BoxFuture;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Acknowledge for Counting {
        fn ack(&self) -> BoxFuture<'_, Result<(), Error>> {
            Box::pin(async { Ok(()) })
        }
        fn nak(&self, _: Option<Duration>) -> BoxFuture<'_, Result<(), Error>> {
            Box::pin(async { Ok(()) })
        }
        fn in_progress(&self) -> BoxFuture<'_, Result<(), Error>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn long_work_is_reported_every_interval_short_work_never() {
        let acks = Arc::new(Counting::default());
        let msg = Message::new("job.x", "p").with_ack(AckHandle::new(acks.clone()));
        let every = Duration::from_secs(1);
        let out = while_in_hand(&msg, every, tokio::time::sleep(Duration::from_millis(3500))).await;
        assert_eq!(out, ());
        assert_eq!(acks.0.load(Ordering::SeqCst), 3, "at 1 s, 2 s and 3 s");
        while_in_hand(&msg, every, tokio::time::sleep(Duration::from_millis(900))).await;
        assert_eq!(acks.0.load(Ordering::SeqCst), 3, "nothing for short work");
    }

    #[tokio::test(start_paused = true)]
    async fn deliveries_without_acknowledgement_are_left_alone() {
        let msg = Message::new("job.x", "p");
        let v = while_in_hand(&msg, Duration::from_millis(10), async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            7
        })
        .await;
        assert_eq!(v, 7);
    }
}
