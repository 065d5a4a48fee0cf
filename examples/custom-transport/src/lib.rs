//! # custom-transport
//!
//! How to plug your own transport into CAP: implement [`cap_bus::Bus`] and prove it
//! with the conformance kit (`cap_bus::conformance`, see `tests/conformance.rs`).
//!
//! [`BroadcastBus`] moves messages over one `tokio::sync::broadcast` channel. Every
//! subscription receives every envelope and keeps those meant for it:
//! - plain subscriptions keep what matches their pattern (fan-out);
//! - queue groups are resolved by the publisher: it picks one member per matching group
//!   (round-robin) and names the chosen members in the envelope;
//! - request/reply uses a private inbox subscription;
//! - `close` drops the only sender, so every stream ends after what it buffered.
//!
//! Full-buffer policy: a subscription that falls more than `capacity` envelopes behind
//! loses the oldest ones (the broadcast channel's "lagged" behaviour); the loss is
//! counted in [`BroadcastBus::lagged`].
//!
//! ```
//! use cap_bus::Bus;
//! use custom_transport::BroadcastBus;
//! use futures_util::StreamExt;
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let bus = BroadcastBus::new(1024);
//! let mut sub = bus.subscribe("demo.*").await.unwrap();
//! bus.publish("demo.hello", "hi".into()).await.unwrap();
//! assert_eq!(sub.next().await.unwrap().payload(), "hi");
//! # });
//! ```

use bytes::Bytes;
use cap_bus::{Bus, Error, ErrorKind, Headers, Message, check};
use futures_core::Stream;
use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::sync::broadcast;

/// Largest message this transport carries (payload plus header wire size).
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// What travels on the channel: the message and the queue members chosen for it.
#[derive(Clone)]
struct Envelope {
    msg: Message,
    chosen: Arc<[u64]>,
}

struct Sub {
    id: u64,
    pattern: String,
    queue: Option<String>,
}

#[derive(Default)]
struct Registry {
    subs: Vec<Sub>,
    round_robin: u64,
}

struct Inner {
    /// `None` once closed: dropping the sender ends every receiver.
    tx: Mutex<Option<broadcast::Sender<Envelope>>>,
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    lagged: AtomicU64,
}

/// A [`Bus`] over a tokio broadcast channel. Cheap to clone; clones share the channel.
#[derive(Clone)]
pub struct BroadcastBus {
    inner: Arc<Inner>,
}

impl BroadcastBus {
    /// A bus whose subscriptions may fall `capacity` envelopes behind.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        BroadcastBus {
            inner: Arc::new(Inner {
                tx: Mutex::new(Some(tx)),
                registry: Mutex::new(Registry::default()),
                next_id: AtomicU64::new(1),
                lagged: AtomicU64::new(0),
            }),
        }
    }

    /// Envelopes lost by subscriptions that fell too far behind.
    pub fn lagged(&self) -> u64 {
        self.inner.lagged.load(Ordering::Relaxed)
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn sender(&self) -> std::sync::MutexGuard<'_, Option<broadcast::Sender<Envelope>>> {
        self.inner.tx.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, pattern: &str, queue: Option<&str>) -> Result<BroadcastSubscription, Error> {
        let rx = match &*self.sender() {
            Some(tx) => tx.subscribe(),
            None => return Err(Error::closed()),
        };
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.registry().subs.push(Sub {
            id,
            pattern: pattern.to_owned(),
            queue: queue.map(str::to_owned),
        });
        let pattern = pattern.to_owned();
        let queued = queue.is_some();
        let inner = self.inner.clone();
        let stream = futures_util::stream::unfold(rx, move |mut rx| {
            let pattern = pattern.clone();
            let inner = inner.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok(env) => {
                            let mine = if queued {
                                env.chosen.contains(&id)
                            } else {
                                cap_proto::subject::matches(&pattern, env.msg.subject())
                            };
                            if mine {
                                return Some((env.msg, rx));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            inner.lagged.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(BroadcastSubscription {
            id,
            stream: Box::pin(stream),
            bus: Arc::downgrade(&self.inner),
        })
    }

    /// Sends one message; returns how many subscriptions it was meant for.
    fn send(
        &self,
        subject: &str,
        reply: Option<&str>,
        headers: Headers,
        payload: Bytes,
    ) -> Result<usize, Error> {
        check::subject(subject)?;
        check::size(&headers, payload.len(), Some(MAX_PAYLOAD))?;
        let mut msg = Message::new(subject, payload).with_headers(headers);
        if let Some(r) = reply {
            msg = msg.with_reply(r);
        }
        // Holding the sender lock while choosing and sending keeps the channel order
        // equal to the order in which queue members were chosen.
        let tx_guard = self.sender();
        let Some(tx) = tx_guard.as_ref() else {
            return Err(Error::closed());
        };
        let mut reg = self.registry();
        let mut matched = 0;
        let mut chosen = Vec::new();
        let mut groups: Vec<(&str, &str)> = Vec::new();
        for s in &reg.subs {
            if !cap_proto::subject::matches(&s.pattern, subject) {
                continue;
            }
            match &s.queue {
                None => matched += 1,
                Some(q) if !groups.contains(&(s.pattern.as_str(), q.as_str())) => {
                    groups.push((s.pattern.as_str(), q.as_str()))
                }
                Some(_) => {}
            }
        }
        let rr = reg.round_robin;
        for (pattern, queue) in &groups {
            let members: Vec<u64> = reg
                .subs
                .iter()
                .filter(|s| s.pattern == *pattern && s.queue.as_deref() == Some(*queue))
                .map(|s| s.id)
                .collect();
            chosen.push(members[(rr as usize) % members.len()]);
            matched += 1;
        }
        reg.round_robin = rr.wrapping_add(1);
        drop(reg);
        // An error only means that nobody listens right now.
        let _ = tx.send(Envelope {
            msg,
            chosen: chosen.into(),
        });
        Ok(matched)
    }
}

/// A subscription on a [`BroadcastBus`]; dropping it unsubscribes.
pub struct BroadcastSubscription {
    id: u64,
    stream: Pin<Box<dyn Stream<Item = Message> + Send>>,
    bus: std::sync::Weak<Inner>,
}

impl Stream for BroadcastSubscription {
    type Item = Message;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.stream.as_mut().poll_next(cx)
    }
}

impl Drop for BroadcastSubscription {
    fn drop(&mut self) {
        if let Some(inner) = self.bus.upgrade() {
            let mut reg = inner.registry.lock().unwrap_or_else(|e| e.into_inner());
            reg.subs.retain(|s| s.id != self.id);
        }
    }
}

impl Bus for BroadcastBus {
    type Subscription = BroadcastSubscription;

    async fn publish_with_headers(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), Error> {
        self.send(subject, None, headers, payload).map(|_| ())
    }

    async fn subscribe(&self, pattern: &str) -> Result<BroadcastSubscription, Error> {
        if self.is_closed() {
            return Err(Error::closed());
        }
        check::pattern(pattern)?;
        self.add(pattern, None)
    }

    async fn queue_subscribe(
        &self,
        pattern: &str,
        queue: &str,
    ) -> Result<BroadcastSubscription, Error> {
        if self.is_closed() {
            return Err(Error::closed());
        }
        check::pattern(pattern)?;
        check::queue(queue)?;
        self.add(pattern, Some(queue))
    }

    async fn request_with_headers(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, Error> {
        use futures_util::StreamExt;
        if self.is_closed() {
            return Err(Error::closed());
        }
        check::subject(subject)?;
        let inbox = format!(
            "_INBOX.bcast.{}",
            self.inner.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let mut replies = self.add(&inbox, None)?;
        if self.send(subject, Some(&inbox), headers, payload)? == 0 {
            return Err(Error::new(ErrorKind::NoResponders, subject.to_owned()));
        }
        match tokio::time::timeout(timeout, replies.next()).await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(Error::closed()),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("no reply on {subject}"),
            )),
        }
    }

    async fn flush(&self) -> Result<(), Error> {
        if self.is_closed() {
            Err(Error::closed())
        } else {
            Ok(())
        }
    }

    async fn close(&self) -> Result<(), Error> {
        self.sender().take();
        self.registry().subs.clear();
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.sender().is_none()
    }

    fn max_payload(&self) -> Option<usize> {
        Some(MAX_PAYLOAD)
    }
}
