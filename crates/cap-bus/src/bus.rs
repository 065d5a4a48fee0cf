//! [`Bus`]: the transport contract — bytes moved by subject.

use crate::{Error, Headers, Message, Receipt};
use bytes::Bytes;
use futures_core::Stream;
use std::{future::Future, time::Duration};

/// A message bus that moves bytes by subject, with NATS subject semantics.
///
/// # Contract
///
/// Every implementation (the built-in ones and yours) must behave as follows; the
/// `conformance` kit (feature `conformance`) checks all of it.
///
/// - **Subjects** are dot-separated tokens ([`cap_proto::subject`]). Publishing to a
///   subject with wildcards, empty tokens or whitespace fails with
///   [`ErrorKind::InvalidSubject`](crate::ErrorKind::InvalidSubject).
/// - **Patterns**: in [`subscribe`](Bus::subscribe) and
///   [`queue_subscribe`](Bus::queue_subscribe) `*` matches exactly one token and `>` (last
///   token only) one or more tokens; an invalid pattern or queue name fails with
///   [`ErrorKind::InvalidPattern`](crate::ErrorKind::InvalidPattern).
/// - **Fan-out**: every plain subscription whose pattern matches receives its own copy.
/// - **Queue groups**: among the subscriptions of one queue group (same pattern, same
///   queue name) each message goes to exactly one member; different groups each get a
///   copy, as do plain subscribers.
/// - **Order**: messages from one publisher to one subscription arrive in publish order
///   (a redelivered durable message comes back out of order, by nature).
/// - **Headers** arrive as sent; a message without headers has empty
///   [`Headers`].
/// - **Request/reply**: [`request`](Bus::request) publishes with a fresh reply subject and
///   returns the first reply; it fails with [`ErrorKind::NoResponders`](crate::ErrorKind::NoResponders)
///   when nobody subscribes to the subject, with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout)
///   when nobody answers in time. A responder answers by publishing to
///   [`Message::reply`].
/// - **Size**: a message whose payload plus [`Headers::wire_len`] exceeds
///   [`max_payload`](Bus::max_payload) fails with
///   [`ErrorKind::PayloadTooLarge`](crate::ErrorKind::PayloadTooLarge) and is not sent.
/// - **Unsubscribe**: dropping a subscription stream unsubscribes it.
/// - **Close**: [`close`](Bus::close) drains the bus: publishes already accepted are
///   delivered, every subscription stream yields what it had already received and then
///   ends (`None`), and every later operation on this bus or any clone of it fails with
///   [`ErrorKind::Closed`](crate::ErrorKind::Closed).
/// - **Handles**: a bus is a cheap `Clone` handle; clones share one connection and one
///   set of subscriptions, and may be used from many tasks at once.
/// - **Acknowledgement**: messages yielded by subscriptions carry an
///   [`AckHandle`](crate::AckHandle); transports with durable delivery redeliver a
///   message that is not acknowledged in time. For core delivery it is a no-op.
///
/// The futures returned are `Send`, so generic code (`Worker<B: Bus>`) can spawn them.
/// Use [`DynBus`](crate::DynBus) (`Arc<dyn DynBus>` also implements `Bus`) when the
/// concrete type must be erased.
pub trait Bus: Clone + Send + Sync + 'static {
    /// A subscription: the stream of messages matching its pattern. Dropping it
    /// unsubscribes.
    type Subscription: Stream<Item = Message> + Send + Unpin + 'static;

    /// Publishes `payload` with `headers` to the concrete `subject`.
    fn publish_with_headers(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Publishes `payload` to the concrete `subject`, without headers.
    fn publish(
        &self,
        subject: &str,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        self.publish_with_headers(subject, Headers::new(), payload)
    }

    /// Subscribes to every subject matching `pattern`.
    fn subscribe(
        &self,
        pattern: &str,
    ) -> impl Future<Output = Result<Self::Subscription, Error>> + Send;

    /// Joins queue group `queue` on `pattern`: each matching message goes to exactly one
    /// member of the group.
    fn queue_subscribe(
        &self,
        pattern: &str,
        queue: &str,
    ) -> impl Future<Output = Result<Self::Subscription, Error>> + Send;

    /// Sends a request with headers and waits up to `timeout` for the first reply.
    fn request_with_headers(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> impl Future<Output = Result<Message, Error>> + Send;

    /// Sends a request and waits up to `timeout` for the first reply.
    fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> impl Future<Output = Result<Message, Error>> + Send {
        self.request_with_headers(subject, Headers::new(), payload, timeout)
    }

    /// Publishes like [`publish_with_headers`](Bus::publish_with_headers) and, when the
    /// bus stored the message durably, returns where ([`Receipt`]), so that it can be
    /// [withdrawn](Bus::withdraw) before anyone consumes it. Buses without durable
    /// storage return `None` (the default).
    fn publish_receipted(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> impl Future<Output = Result<Option<Receipt>, Error>> + Send {
        let publish = self.publish_with_headers(subject, headers, payload);
        async move { publish.await.map(|()| None) }
    }

    /// Removes a durably stored message that no consumer has taken yet. `Ok(true)`: it
    /// was removed; `Ok(false)`: it was already gone (consumed, expired) or this bus
    /// stores nothing (the default).
    fn withdraw(&self, receipt: &Receipt) -> impl Future<Output = Result<bool, Error>> + Send {
        let _ = receipt;
        async { Ok(false) }
    }

    /// Whether the bus is connected to its transport now (a network bus that lost its
    /// server and is reconnecting answers `false`). Components that judge by silence
    /// (a scheduler timing out jobs whose results it did not hear) hold their judgement
    /// while it is `false`. Default `true`.
    fn is_connected(&self) -> bool {
        true
    }

    /// Waits until everything published so far has been handed to the transport (for
    /// a network bus: written to and acknowledged by the server).
    fn flush(&self) -> impl Future<Output = Result<(), Error>> + Send;

    /// Drains and closes the bus (see the contract above). Closing twice is not an
    /// error.
    fn close(&self) -> impl Future<Output = Result<(), Error>> + Send;

    /// Whether [`close`](Bus::close) has been called on this bus or a clone of it.
    fn is_closed(&self) -> bool;

    /// The largest message (payload plus [`Headers::wire_len`]) this bus carries, when
    /// it has a limit.
    fn max_payload(&self) -> Option<usize>;
}
