//! [`MemoryBus`]: the embedded, in-process bus — the default for examples, tests and
//! single-process deployments.
//!
//! # Semantics
//! Exactly the [`Bus`] contract: NATS wildcards, fan-out to plain subscriptions, one
//! member per queue group (round-robin, skipping members whose buffer is full),
//! request/reply with no-responders detection, a maximum message size (1 MiB by default,
//! like a NATS server), and a `close` that ends every stream.
//!
//! # Bounded buffers
//! Every subscription has a bounded buffer ([`MemoryOptions::buffer`], 8192 messages by
//! default). When it is full, [`OverflowPolicy`] decides:
//! - [`Backpressure`](OverflowPolicy::Backpressure) (default): the publisher waits for
//!   room. Nothing is lost; a subscriber that never reads stalls publishers of its
//!   subjects (as a full TCP window would). `close` releases waiting publishers.
//! - [`DropNewest`](OverflowPolicy::DropNewest): the message is not delivered to that
//!   subscription and the loss is counted, per subscription
//!   ([`MemorySubscription::dropped`]) and bus-wide ([`MemoryStats::dropped`]) — the
//!   "slow consumer" behaviour of a NATS server.
//!
//! Memory is therefore bounded by `buffer × subscriptions` messages.

mod router;
mod subscription;

pub use subscription::MemorySubscription;

use crate::{Bus, Error, ErrorKind, Headers, Message, check};
use bytes::Bytes;
use router::{Entry, Outcome, Router, SubCounters, try_deliver};
use std::sync::{
    Arc, RwLock,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a publish does when a subscription's buffer is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Wait for room (lossless; the default).
    #[default]
    Backpressure,
    /// Skip that subscription and count the loss.
    DropNewest,
}

/// Settings of a [`MemoryBus`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MemoryOptions {
    /// Messages each subscription buffers (at least 1). Default 8192.
    pub buffer: usize,
    /// What happens when a buffer is full. Default [`OverflowPolicy::Backpressure`].
    pub overflow: OverflowPolicy,
    /// Largest message (payload plus header wire size), `None` for no limit.
    /// Default 1 MiB, like a NATS server.
    pub max_payload: Option<usize>,
}

/// Default [`MemoryOptions::max_payload`]: 1 MiB, a NATS server's default.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions {
            buffer: 8192,
            overflow: OverflowPolicy::Backpressure,
            max_payload: Some(DEFAULT_MAX_PAYLOAD),
        }
    }
}

impl MemoryOptions {
    /// Sets [`buffer`](MemoryOptions::buffer).
    pub fn buffer(mut self, messages: usize) -> Self {
        self.buffer = messages.max(1);
        self
    }

    /// Sets [`overflow`](MemoryOptions::overflow).
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = policy;
        self
    }

    /// Sets [`max_payload`](MemoryOptions::max_payload).
    pub fn max_payload(mut self, max: Option<usize>) -> Self {
        self.max_payload = max;
        self
    }
}

/// Counters of a [`MemoryBus`] (shared by all its clones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryStats {
    /// Messages accepted by `publish` (and requests).
    pub published: u64,
    /// Copies handed to subscription buffers.
    pub delivered: u64,
    /// Copies lost to full buffers ([`OverflowPolicy::DropNewest`] only).
    pub dropped: u64,
    /// Live subscriptions.
    pub subscriptions: usize,
}

/// The in-process bus. Cheap to clone; clones share subscriptions.
///
/// ```
/// use cap_bus::{Bus, MemoryBus};
/// use futures_util::StreamExt;
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let bus = MemoryBus::new();
/// let mut all = bus.subscribe("job.>").await.unwrap();
/// let mut w1 = bus.queue_subscribe("job.echo", "job.echo").await.unwrap();
/// bus.publish("job.echo", "hi".into()).await.unwrap();
/// assert_eq!(all.next().await.unwrap().payload(), "hi");
/// assert_eq!(w1.next().await.unwrap().payload(), "hi");
/// assert_eq!(bus.stats().delivered, 2);
/// # });
/// ```
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    id: u64,
    opts: MemoryOptions,
    router: RwLock<Router>,
    closed: AtomicBool,
    close_token: CancellationToken,
    next_id: AtomicU64,
    published: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
}

static NEXT_BUS_ID: AtomicU64 = AtomicU64::new(1);

impl Inner {
    fn router_read(&self) -> std::sync::RwLockReadGuard<'_, Router> {
        self.router.read().unwrap_or_else(|e| e.into_inner())
    }

    fn router_write(&self) -> std::sync::RwLockWriteGuard<'_, Router> {
        self.router.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn unsubscribe(&self, id: u64) {
        self.router_write().remove(id);
    }

    fn ensure_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::closed())
        } else {
            Ok(())
        }
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBus {
    /// A bus with [`MemoryOptions::default`].
    pub fn new() -> Self {
        Self::with_options(MemoryOptions::default())
    }

    /// A bus with the given options.
    pub fn with_options(opts: MemoryOptions) -> Self {
        let opts = MemoryOptions {
            buffer: opts.buffer.max(1),
            ..opts
        };
        MemoryBus {
            inner: Arc::new(Inner {
                id: NEXT_BUS_ID.fetch_add(1, Ordering::Relaxed),
                opts,
                router: RwLock::new(Router::default()),
                closed: AtomicBool::new(false),
                close_token: CancellationToken::new(),
                next_id: AtomicU64::new(1),
                published: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// The options this bus was made with.
    pub fn options(&self) -> &MemoryOptions {
        &self.inner.opts
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MemoryStats {
        let i = &self.inner;
        MemoryStats {
            published: i.published.load(Ordering::Relaxed),
            delivered: i.delivered.load(Ordering::Relaxed),
            dropped: i.dropped.load(Ordering::Relaxed),
            subscriptions: i.router_read().len(),
        }
    }

    fn add_subscription(
        &self,
        pattern: &str,
        queue: Option<&str>,
        buffer: usize,
    ) -> Result<MemorySubscription, Error> {
        let inner = &self.inner;
        let (tx, rx) = mpsc::channel(buffer);
        let counters = Arc::new(SubCounters::default());
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut router = inner.router_write();
            // Checked under the lock: `close` clears the router under the same lock, so
            // no subscription can be added after it.
            inner.ensure_open()?;
            router.add(
                pattern,
                queue,
                Entry {
                    id,
                    tx,
                    counters: counters.clone(),
                },
            );
        }
        Ok(MemorySubscription {
            id,
            rx,
            counters,
            bus: Arc::downgrade(&self.inner),
        })
    }

    /// Routes one message; returns how many subscriptions matched.
    ///
    /// Delivery to subscriptions with room happens at once; only deliveries that must
    /// wait for room (backpressure) go through a boxed slow path, which keeps this
    /// future small for the common case.
    async fn send(
        &self,
        subject: &str,
        reply: Option<Arc<str>>,
        headers: Headers,
        payload: Bytes,
    ) -> Result<usize, Error> {
        let (matched, delivered, waits) = self.route_now(subject, reply, headers, payload)?;
        let delivered = if waits.is_empty() {
            delivered
        } else {
            Box::pin(self.wait_for_room(waits, delivered)).await?
        };
        if delivered > 0 {
            self.inner.delivered.fetch_add(delivered, Ordering::Relaxed);
        }
        Ok(matched)
    }

    /// Delivers to every matching subscription that has room; returns the match count,
    /// the deliveries made and the ones that must wait for room.
    #[allow(clippy::type_complexity)]
    fn route_now(
        &self,
        subject: &str,
        reply: Option<Arc<str>>,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(usize, u64, Vec<(mpsc::Sender<Message>, Message)>), Error> {
        let inner = &*self.inner;
        inner.ensure_open()?;
        check::subject(subject)?;
        check::size(&headers, payload.len(), inner.opts.max_payload)?;
        let msg = Message::new(subject, payload)
            .with_reply_opt(reply)
            .with_headers(headers);
        let wait = inner.opts.overflow == OverflowPolicy::Backpressure;
        let mut waits = Vec::new();
        let (mut delivered, mut dropped) = (0u64, 0u64);
        let matched = {
            let router = inner.router_read();
            router.route(&msg, |entry, m| match try_deliver(entry, m, wait) {
                Outcome::Delivered => delivered += 1,
                Outcome::Dropped => dropped += 1,
                Outcome::Gone => {}
                Outcome::Wait(tx, m) => waits.push((tx, m)),
            })
        };
        inner.published.fetch_add(1, Ordering::Relaxed);
        if dropped > 0 {
            inner.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        Ok((matched, delivered, waits))
    }

    /// Waits for room in full subscriptions (backpressure); returns the deliveries made
    /// in all (the bus closing ends the wait with an error).
    async fn wait_for_room(
        &self,
        waits: Vec<(mpsc::Sender<Message>, Message)>,
        mut delivered: u64,
    ) -> Result<u64, Error> {
        let inner = &*self.inner;
        for (tx, m) in waits {
            tokio::select! {
                biased;
                res = tx.send(m) => if res.is_ok() { delivered += 1 },
                () = inner.close_token.cancelled() => {
                    inner.delivered.fetch_add(delivered, Ordering::Relaxed);
                    return Err(Error::closed());
                }
            }
        }
        Ok(delivered)
    }
}

impl Bus for MemoryBus {
    type Subscription = MemorySubscription;

    async fn publish_with_headers(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), Error> {
        self.send(subject, None, headers, payload).await.map(|_| ())
    }

    async fn subscribe(&self, pattern: &str) -> Result<MemorySubscription, Error> {
        self.inner.ensure_open()?;
        check::pattern(pattern)?;
        self.add_subscription(pattern, None, self.inner.opts.buffer)
    }

    async fn queue_subscribe(
        &self,
        pattern: &str,
        queue: &str,
    ) -> Result<MemorySubscription, Error> {
        self.inner.ensure_open()?;
        check::pattern(pattern)?;
        check::queue(queue)?;
        self.add_subscription(pattern, Some(queue), self.inner.opts.buffer)
    }

    async fn request_with_headers(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, Error> {
        let inner = &*self.inner;
        inner.ensure_open()?;
        check::subject(subject)?;
        let n = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let inbox: Arc<str> = format!("_INBOX.mem{}.{n}", inner.id).into();
        // One slot: only the first reply counts; later ones find the buffer full or
        // the subscription gone.
        let mut sub = self.add_subscription(&inbox, None, 1)?;
        let matched = self.send(subject, Some(inbox), headers, payload).await?;
        if matched == 0 {
            return Err(Error::new(ErrorKind::NoResponders, subject.to_owned()));
        }
        match tokio::time::timeout(timeout, sub.rx.recv()).await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(Error::closed()),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("no reply on {subject} within {timeout:?}"),
            )),
        }
    }

    async fn flush(&self) -> Result<(), Error> {
        // Publishes are handed to buffers before `publish` returns: nothing to flush.
        self.inner.ensure_open()
    }

    async fn close(&self) -> Result<(), Error> {
        let inner = &*self.inner;
        let mut router = inner.router_write();
        inner.closed.store(true, Ordering::Release);
        inner.close_token.cancel();
        // Dropping every sender ends every stream once its buffer is read.
        router.clear();
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    fn max_payload(&self) -> Option<usize> {
        self.inner.opts.max_payload
    }
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus")
            .field("id", &self.inner.id)
            .field("options", &self.inner.opts)
            .field("stats", &self.stats())
            .finish()
    }
}
