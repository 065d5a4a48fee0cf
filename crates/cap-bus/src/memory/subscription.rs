//! [`MemorySubscription`]: the stream handed out by the in-memory bus.

use super::Inner;
use super::router::SubCounters;
use crate::Message;
use futures_core::Stream;
use std::{
    pin::Pin,
    sync::{Arc, Weak, atomic::Ordering},
    task::{Context, Poll},
};
use tokio::sync::mpsc;

/// A subscription on a [`MemoryBus`](super::MemoryBus). Dropping it unsubscribes.
///
/// Its buffer holds [`MemoryOptions::buffer`](super::MemoryOptions::buffer) messages;
/// what happens when it is full is set by
/// [`OverflowPolicy`](super::OverflowPolicy). [`dropped`](MemorySubscription::dropped)
/// counts what this subscription lost to a full buffer.
pub struct MemorySubscription {
    pub(super) id: u64,
    pub(super) rx: mpsc::Receiver<Message>,
    pub(super) counters: Arc<SubCounters>,
    pub(super) bus: Weak<Inner>,
}

impl MemorySubscription {
    /// Messages this subscription lost because its buffer was full (only with
    /// [`OverflowPolicy::DropNewest`](super::OverflowPolicy::DropNewest)).
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Messages waiting in the buffer.
    pub fn pending(&self) -> usize {
        self.rx.len()
    }
}

impl Stream for MemorySubscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.rx.len(), None)
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade() {
            bus.unsubscribe(self.id);
        }
    }
}

impl std::fmt::Debug for MemorySubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySubscription")
            .field("id", &self.id)
            .field("pending", &self.rx.len())
            .field("dropped", &self.dropped())
            .finish()
    }
}
