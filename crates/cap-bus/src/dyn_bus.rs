//! [`DynBus`]: the object-safe companion of [`Bus`], for applications that hold
//! `Arc<dyn DynBus>`.

use crate::{Bus, Error, Headers, Message, Receipt};
use bytes::Bytes;
use futures_core::{Stream, future::BoxFuture};
use std::{pin::Pin, sync::Arc, time::Duration};

/// A type-erased subscription.
pub type BoxSubscription = Pin<Box<dyn Stream<Item = Message> + Send + 'static>>;

/// A shared, type-erased bus. It implements [`Bus`] itself, so generic code runs on it.
pub type SharedBus = Arc<dyn DynBus>;

/// The object-safe form of [`Bus`]: the same operations with boxed futures and boxed
/// subscriptions. Every `Bus` implements it (blanket impl), and `Arc<dyn DynBus>`
/// implements `Bus`, so the two convert freely:
///
/// ```
/// use cap_bus::{Bus, DynBus, MemoryBus, SharedBus};
/// use futures_util::StreamExt;
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let bus: SharedBus = std::sync::Arc::new(MemoryBus::new());
/// let mut sub = bus.subscribe("greet.*").await.unwrap(); // Bus methods on Arc<dyn DynBus>
/// bus.publish("greet.world", "hello".into()).await.unwrap();
/// assert_eq!(sub.next().await.unwrap().subject(), "greet.world");
/// # });
/// ```
///
/// The methods carry a `dyn_` prefix so that they never clash with [`Bus`]'s when both
/// traits are in scope.
pub trait DynBus: Send + Sync + 'static {
    /// [`Bus::publish_with_headers`].
    fn dyn_publish<'a>(
        &'a self,
        subject: &'a str,
        headers: Headers,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// [`Bus::subscribe`].
    fn dyn_subscribe<'a>(
        &'a self,
        pattern: &'a str,
    ) -> BoxFuture<'a, Result<BoxSubscription, Error>>;

    /// [`Bus::queue_subscribe`].
    fn dyn_queue_subscribe<'a>(
        &'a self,
        pattern: &'a str,
        queue: &'a str,
    ) -> BoxFuture<'a, Result<BoxSubscription, Error>>;

    /// [`Bus::request_with_headers`].
    fn dyn_request<'a>(
        &'a self,
        subject: &'a str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Message, Error>>;

    /// [`Bus::publish_receipted`].
    fn dyn_publish_receipted<'a>(
        &'a self,
        subject: &'a str,
        headers: Headers,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<Option<Receipt>, Error>>;

    /// [`Bus::withdraw`].
    fn dyn_withdraw<'a>(&'a self, receipt: &'a Receipt) -> BoxFuture<'a, Result<bool, Error>>;

    /// [`Bus::is_connected`].
    fn dyn_is_connected(&self) -> bool;

    /// [`Bus::flush`].
    fn dyn_flush(&self) -> BoxFuture<'_, Result<(), Error>>;

    /// [`Bus::close`].
    fn dyn_close(&self) -> BoxFuture<'_, Result<(), Error>>;

    /// [`Bus::is_closed`].
    fn dyn_is_closed(&self) -> bool;

    /// [`Bus::max_payload`].
    fn dyn_max_payload(&self) -> Option<usize>;
}

impl<B: Bus> DynBus for B {
    fn dyn_publish<'a>(
        &'a self,
        subject: &'a str,
        headers: Headers,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.publish_with_headers(subject, headers, payload))
    }

    fn dyn_subscribe<'a>(
        &'a self,
        pattern: &'a str,
    ) -> BoxFuture<'a, Result<BoxSubscription, Error>> {
        Box::pin(async move {
            let sub = self.subscribe(pattern).await?;
            Ok(Box::pin(sub) as BoxSubscription)
        })
    }

    fn dyn_queue_subscribe<'a>(
        &'a self,
        pattern: &'a str,
        queue: &'a str,
    ) -> BoxFuture<'a, Result<BoxSubscription, Error>> {
        Box::pin(async move {
            let sub = self.queue_subscribe(pattern, queue).await?;
            Ok(Box::pin(sub) as BoxSubscription)
        })
    }

    fn dyn_request<'a>(
        &'a self,
        subject: &'a str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Message, Error>> {
        Box::pin(self.request_with_headers(subject, headers, payload, timeout))
    }

    fn dyn_publish_receipted<'a>(
        &'a self,
        subject: &'a str,
        headers: Headers,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<Option<Receipt>, Error>> {
        Box::pin(self.publish_receipted(subject, headers, payload))
    }

    fn dyn_withdraw<'a>(&'a self, receipt: &'a Receipt) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(self.withdraw(receipt))
    }

    fn dyn_is_connected(&self) -> bool {
        self.is_connected()
    }

    fn dyn_flush(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.flush())
    }

    fn dyn_close(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.close())
    }

    fn dyn_is_closed(&self) -> bool {
        self.is_closed()
    }

    fn dyn_max_payload(&self) -> Option<usize> {
        self.max_payload()
    }
}

impl Bus for Arc<dyn DynBus> {
    type Subscription = BoxSubscription;

    async fn publish_with_headers(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), Error> {
        (**self).dyn_publish(subject, headers, payload).await
    }

    async fn subscribe(&self, pattern: &str) -> Result<BoxSubscription, Error> {
        (**self).dyn_subscribe(pattern).await
    }

    async fn queue_subscribe(&self, pattern: &str, queue: &str) -> Result<BoxSubscription, Error> {
        (**self).dyn_queue_subscribe(pattern, queue).await
    }

    async fn request_with_headers(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, Error> {
        (**self)
            .dyn_request(subject, headers, payload, timeout)
            .await
    }

    async fn publish_receipted(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<Option<Receipt>, Error> {
        (**self)
            .dyn_publish_receipted(subject, headers, payload)
            .await
    }

    async fn withdraw(&self, receipt: &Receipt) -> Result<bool, Error> {
        (**self).dyn_withdraw(receipt).await
    }

    fn is_connected(&self) -> bool {
        (**self).dyn_is_connected()
    }

    async fn flush(&self) -> Result<(), Error> {
        (**self).dyn_flush().await
    }

    async fn close(&self) -> Result<(), Error> {
        (**self).dyn_close().await
    }

    fn is_closed(&self) -> bool {
        (**self).dyn_is_closed()
    }

    fn max_payload(&self) -> Option<usize> {
        (**self).dyn_max_payload()
    }
}

/// Compile-time proof that [`DynBus`] stays object-safe: this stops compiling if a
/// method is added that cannot be called through `dyn DynBus`.
#[allow(dead_code)]
fn _assert_object_safe(bus: &dyn DynBus) -> &dyn DynBus {
    bus
}
