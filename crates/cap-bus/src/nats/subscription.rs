//! [`NatsSubscription`]: core subscriptions and durable (JetStream) queue
//! subscriptions behind one stream type.

use super::convert;
use super::jetstream::JsAck;
use crate::{AckHandle, Message};
use async_nats::jetstream::consumer::pull;
use futures_core::Stream;
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio_util::sync::WaitForCancellationFutureOwned;

pub(super) enum Source {
    Core(async_nats::Subscriber),
    Durable(Pin<Box<pull::Stream>>),
}

/// A subscription on a [`NatsBus`](super::NatsBus). Dropping it unsubscribes (a
/// durable consumer stays on the server, so unacknowledged messages are redelivered to
/// the next member of its queue group).
pub struct NatsSubscription {
    pub(super) source: Source,
    pub(super) closed: Pin<Box<WaitForCancellationFutureOwned>>,
    pub(super) done: bool,
}

impl NatsSubscription {
    /// Whether this subscription is served by a durable JetStream consumer.
    pub fn is_durable(&self) -> bool {
        matches!(self.source, Source::Durable(_))
    }
}

impl Stream for NatsSubscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            let polled = match &mut this.source {
                Source::Core(sub) => Pin::new(sub)
                    .poll_next(cx)
                    .map(|m| m.map(|m| Ok(convert::message(m)))),
                Source::Durable(stream) => stream.as_mut().poll_next(cx).map(|m| {
                    m.map(|r| match r {
                        Ok(js) => Ok(durable_message(js)),
                        Err(e) => Err(e),
                    })
                }),
            };
            match polled {
                Poll::Ready(Some(Ok(msg))) => return Poll::Ready(Some(msg)),
                Poll::Ready(Some(Err(e))) => {
                    // Missed heartbeats and pull errors happen around reconnects; the
                    // consumer stream carries on by itself.
                    tracing::warn!(error = %e, "JetStream consumer stream error");
                    continue;
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => break,
            }
        }
        // Nothing buffered: end now if the bus was closed.
        if this.closed.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

fn durable_message(js: async_nats::jetstream::Message) -> Message {
    let delivered = js.info().map(|i| i.delivered.max(1) as u64).unwrap_or(1);
    let (msg, acker) = js.split();
    // A JetStream delivery's reply subject is the ack subject: not for the application.
    convert::message_parts(
        msg.subject.as_str(),
        None,
        msg.headers.as_ref(),
        msg.payload,
    )
    .with_ack(AckHandle::new(Arc::new(JsAck(acker))))
    .with_delivery_count(delivered)
}

impl std::fmt::Debug for NatsSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSubscription")
            .field("durable", &self.is_durable())
            .field("done", &self.done)
            .finish()
    }
}
