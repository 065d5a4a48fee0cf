//! Getting a batch's packets, then its acknowledgements, out without holding up the event
//! loop.
//!
//! Each send is polled once as it is made: the in-memory bus and core NATS take a packet
//! at once, and such a batch is done before the loop moves on. Sends that wait for the
//! server (a JetStream publish acknowledgement), and the acknowledgements that must follow
//! them, go to a sending task, so the loop applies the next events meanwhile. Sends start
//! in order, batch after batch, so the order of the actions is kept on the wire; a batch's
//! consumed messages are acknowledged only after all its sends have finished.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use cap_bus::{AckHandle, Bus};
use cap_runtime::packets::Packets;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;

pub(crate) type Pending = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Keeps the receipt of a durable dispatch: (job id, dispatch id, receipt).
pub(crate) type ReceiptSink =
    std::sync::Arc<dyn Fn(String, String, cap_bus::Receipt) -> Pending + Send + Sync>;

/// A sealed packet to send.
pub(crate) struct Outgoing {
    /// Where.
    pub subject: String,
    /// The wire bytes.
    pub bytes: Bytes,
    /// The trace context headers.
    pub headers: cap_bus::Headers,
    /// For a dispatch: (job id, dispatch id), whose receipt is kept to withdraw it later.
    pub receipt_for: Option<(String, String)>,
}

/// How long a message given back waits before it is delivered again.
const REDELIVER_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// The part of a batch still waiting for the server.
pub(crate) struct Unfinished {
    sends: Vec<Pending>,
    /// Not started before `sends` are done.
    acks: Vec<AckHandle>,
    /// Given back (negative acknowledgement), after `sends`.
    naks: Vec<AckHandle>,
    started_acks: Vec<Pending>,
}

/// Polls `fut` once; gives it back if it has not finished.
async fn poll_once(mut fut: Pending) -> Option<Pending> {
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    first.is_pending().then_some(fut)
}

/// Starts the acknowledgements of `acks` and the negative ones of `naks`, in order;
/// returns those still waiting.
async fn start_acks(acks: Vec<AckHandle>, naks: Vec<AckHandle>) -> Vec<Pending> {
    let mut waiting = Vec::new();
    for handle in acks {
        let ack: Pending = Box::pin(async move {
            if let Err(e) = handle.ack().await {
                tracing::warn!(error = %e, "ack failed; the message will be redelivered");
            }
        });
        waiting.extend(poll_once(ack).await);
    }
    for handle in naks {
        let nak: Pending = Box::pin(async move {
            if let Err(e) = handle.nak(Some(REDELIVER_AFTER)).await {
                tracing::warn!(error = %e, "nak failed; the message is redelivered after the ack wait");
            }
        });
        waiting.extend(poll_once(nak).await);
    }
    waiting
}

/// Waits for all of `pending`, concurrently.
async fn wait_all(pending: Vec<Pending>) {
    if !pending.is_empty() {
        let mut all: FuturesUnordered<Pending> = pending.into_iter().collect();
        while all.next().await.is_some() {}
    }
}

/// Starts every send of `sealed`, in order, and, when they all finished at once, the
/// acknowledgements of `acks` (no-op handles finish at once; the loop leaves them out).
/// Returns what is still waiting, if anything. A batch that finishes at once allocates
/// nothing here beyond the sends themselves.
pub(crate) async fn start<B: Bus>(
    packets: &Packets<B>,
    sealed: Vec<Outgoing>,
    acks: Vec<AckHandle>,
    naks: Vec<AckHandle>,
    receipts: &ReceiptSink,
) -> Option<Unfinished> {
    let mut sends = Vec::new();
    for Outgoing {
        subject,
        bytes,
        headers,
        receipt_for,
    } in sealed
    {
        let packets = packets.clone();
        let send: Pending = match receipt_for {
            None => Box::pin(async move {
                if let Err(e) = packets.publish_bytes_with(&subject, headers, bytes).await {
                    tracing::error!(subject = %subject, error = %e, "publish failed");
                }
            }),
            Some((job_id, dispatch_id)) => {
                let receipts = receipts.clone();
                Box::pin(async move {
                    match packets
                        .publish_bytes_receipted(&subject, headers, bytes)
                        .await
                    {
                        Ok(Some(receipt)) => receipts(job_id, dispatch_id, receipt).await,
                        Ok(None) => {}
                        Err(e) => tracing::error!(subject = %subject, error = %e, "publish failed"),
                    }
                })
            }
        };
        sends.extend(poll_once(send).await);
    }
    if !sends.is_empty() {
        return Some(Unfinished {
            sends,
            acks,
            naks,
            started_acks: Vec::new(),
        });
    }
    let started_acks = start_acks(acks, naks).await;
    (!started_acks.is_empty()).then(|| Unfinished {
        sends: Vec::new(),
        acks: Vec::new(),
        naks: Vec::new(),
        started_acks,
    })
}

impl Unfinished {
    /// Waits for the sends, then acknowledges.
    async fn finish(self) {
        wait_all(self.sends).await;
        let mut acks = self.started_acks;
        acks.extend(start_acks(self.acks, self.naks).await);
        wait_all(acks).await;
    }
}

/// The sending task: finishes batches one after the other until the loop closes the
/// channel.
pub(crate) async fn run(mut rx: mpsc::Receiver<Unfinished>) {
    while let Some(batch) = rx.recv().await {
        batch.finish().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use cap_bus::{Acknowledge, Error, Headers, MemoryBus, Message};
    use cap_runtime::packets::PacketConfig;
    use futures_util::future::BoxFuture;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::sync::Semaphore;

    type Log = Arc<Mutex<Vec<String>>>;

    /// The in-memory bus, except that publishes to `slow.*` wait for a permit (like a
    /// JetStream publish waiting for its acknowledgement). Logs when sends start and end.
    #[derive(Clone)]
    struct GatedBus {
        inner: MemoryBus,
        gate: Arc<Semaphore>,
        log: Log,
    }

    impl Bus for GatedBus {
        type Subscription = <MemoryBus as Bus>::Subscription;

        async fn publish_with_headers(
            &self,
            subject: &str,
            headers: Headers,
            payload: Bytes,
        ) -> Result<(), Error> {
            self.log.lock().unwrap().push(format!("start {subject}"));
            if subject.starts_with("slow.") {
                let _permit = self.gate.acquire().await;
                tokio::task::yield_now().await;
            }
            self.inner
                .publish_with_headers(subject, headers, payload)
                .await?;
            self.log.lock().unwrap().push(format!("sent {subject}"));
            Ok(())
        }
        async fn subscribe(&self, pattern: &str) -> Result<Self::Subscription, Error> {
            self.inner.subscribe(pattern).await
        }
        async fn queue_subscribe(
            &self,
            pattern: &str,
            queue: &str,
        ) -> Result<Self::Subscription, Error> {
            self.inner.queue_subscribe(pattern, queue).await
        }
        async fn request_with_headers(
            &self,
            subject: &str,
            headers: Headers,
            payload: Bytes,
            timeout: Duration,
        ) -> Result<Message, Error> {
            self.inner
                .request_with_headers(subject, headers, payload, timeout)
                .await
        }
        async fn flush(&self) -> Result<(), Error> {
            self.inner.flush().await
        }
        async fn close(&self) -> Result<(), Error> {
            self.inner.close().await
        }
        fn is_closed(&self) -> bool {
            self.inner.is_closed()
        }
        fn max_payload(&self) -> Option<usize> {
            self.inner.max_payload()
        }
    }

    /// A durable acknowledgement that logs.
    struct LoggedAck(Log);

    impl Acknowledge for LoggedAck {
        fn ack(&self) -> BoxFuture<'_, Result<(), Error>> {
            Box::pin(async move {
                self.0.lock().unwrap().push("ack".into());
                Ok(())
            })
        }
        fn nak(&self, _delay: Option<Duration>) -> BoxFuture<'_, Result<(), Error>> {
            Box::pin(async { Ok(()) })
        }
        fn in_progress(&self) -> BoxFuture<'_, Result<(), Error>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn setup() -> (Packets<GatedBus>, Arc<Semaphore>, Log) {
        let log: Log = Arc::default();
        let gate = Arc::new(Semaphore::new(0));
        let bus = GatedBus {
            inner: MemoryBus::new(),
            gate: gate.clone(),
            log: log.clone(),
        };
        (Packets::new(bus, PacketConfig::new("s")), gate, log)
    }

    fn packets(subjects: &[&str]) -> Vec<Outgoing> {
        subjects
            .iter()
            .map(|s| Outgoing {
                subject: s.to_string(),
                bytes: Bytes::from_static(b"x"),
                headers: cap_bus::Headers::new(),
                receipt_for: None,
            })
            .collect()
    }

    fn no_receipts() -> ReceiptSink {
        Arc::new(|_, _, _| Box::pin(async {}))
    }

    #[tokio::test]
    async fn a_batch_the_bus_takes_at_once_is_done_in_place() {
        let (p, _gate, log) = setup();
        let mut sub = p.bus().subscribe("fast.>").await.unwrap();
        let ack = AckHandle::new(Arc::new(LoggedAck(log.clone())));
        let rest = start(
            &p,
            packets(&["fast.a", "fast.b"]),
            vec![AckHandle::noop(), ack],
            Vec::new(),
            &no_receipts(),
        )
        .await;
        assert!(rest.is_none(), "nothing should be left over");
        assert_eq!(
            *log.lock().unwrap(),
            [
                "start fast.a",
                "sent fast.a",
                "start fast.b",
                "sent fast.b",
                "ack"
            ]
        );
        assert_eq!(sub.next().await.unwrap().subject(), "fast.a");
        assert_eq!(sub.next().await.unwrap().subject(), "fast.b");
    }

    #[tokio::test]
    async fn waiting_sends_are_finished_later_and_acknowledged_after_them() {
        let (p, gate, log) = setup();
        let ack = AckHandle::new(Arc::new(LoggedAck(log.clone())));
        let rest = start(
            &p,
            packets(&["slow.a", "fast.b"]),
            vec![ack],
            Vec::new(),
            &no_receipts(),
        )
        .await
        .expect("slow.a waits");
        // Both sends started, in order; the fast one is out; nothing acknowledged yet.
        assert_eq!(
            *log.lock().unwrap(),
            ["start slow.a", "start fast.b", "sent fast.b"]
        );
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(run(rx));
        tx.send(rest).await.unwrap();
        tokio::task::yield_now().await;
        assert!(!log.lock().unwrap().contains(&"ack".to_string()));
        gate.add_permits(1);
        drop(tx);
        task.await.unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            [
                "start slow.a",
                "start fast.b",
                "sent fast.b",
                "sent slow.a",
                "ack"
            ]
        );
    }

    #[tokio::test]
    async fn without_durable_messages_nothing_is_left_to_acknowledge() {
        let (p, _gate, _log) = setup();
        assert!(
            start(
                &p,
                Vec::new(),
                vec![AckHandle::noop()],
                Vec::new(),
                &no_receipts()
            )
            .await
            .is_none()
        );
    }
}
