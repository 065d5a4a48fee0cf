//! [`Message`]: what a subscription yields, and [`AckHandle`]: how a consumer confirms
//! that it has finished with a durably delivered message.

use crate::{Error, Headers};
use bytes::Bytes;
use futures_core::future::BoxFuture;
use std::{fmt, sync::Arc, time::Duration};

/// A message received from a bus.
///
/// Cloning is cheap (reference counts only, plus the headers when there are any).
///
/// Every message carries an acknowledgement handle. For core (fire-and-forget) delivery
/// and for the in-memory bus it does nothing; for JetStream delivery it confirms
/// processing to the server, and a message that is never acknowledged is delivered again
/// after the consumer's ack wait. Acknowledge only after the handler has finished.
///
/// ```
/// use cap_bus::Message;
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let msg = Message::new("job.echo", "hi");
/// assert_eq!(msg.subject(), "job.echo");
/// assert_eq!(&msg.payload()[..], b"hi");
/// assert_eq!(msg.reply(), None);
/// assert!(!msg.ack_handle().is_durable());
/// msg.ack().await.unwrap(); // a no-op for core delivery
/// # });
/// ```
#[derive(Clone)]
pub struct Message {
    subject: Arc<str>,
    reply: Option<Arc<str>>,
    headers: Headers,
    payload: Bytes,
    ack: AckHandle,
    delivery_count: u64,
}

impl Message {
    /// A message on `subject` with `payload`, no reply subject, no headers and a no-op
    /// acknowledgement. Transports build what they deliver from this.
    pub fn new(subject: impl Into<Arc<str>>, payload: impl Into<Bytes>) -> Self {
        Message {
            subject: subject.into(),
            reply: None,
            headers: Headers::new(),
            payload: payload.into(),
            ack: AckHandle::noop(),
            delivery_count: 1,
        }
    }

    /// Sets the reply subject.
    pub fn with_reply(mut self, reply: impl Into<Arc<str>>) -> Self {
        self.reply = Some(reply.into());
        self
    }

    /// Sets the reply subject, or clears it with `None`.
    pub fn with_reply_opt(mut self, reply: Option<Arc<str>>) -> Self {
        self.reply = reply;
        self
    }

    /// Sets the headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the acknowledgement handle (for transports with durable delivery).
    pub fn with_ack(mut self, ack: AckHandle) -> Self {
        self.ack = ack;
        self
    }

    /// Sets how many times this message has been delivered (1 = first delivery).
    pub fn with_delivery_count(mut self, count: u64) -> Self {
        self.delivery_count = count.max(1);
        self
    }

    /// The subject the message was published to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The subject, as a shared string.
    pub fn subject_arc(&self) -> &Arc<str> {
        &self.subject
    }

    /// Where a reply should be published, when the sender asked for one.
    pub fn reply(&self) -> Option<&str> {
        self.reply.as_deref()
    }

    /// The headers (empty when the sender set none).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The payload bytes.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Takes the payload, dropping the rest.
    pub fn into_payload(self) -> Bytes {
        self.payload
    }

    /// How many times the transport has delivered this message (1 the first time; more
    /// after a redelivery of an unacknowledged durable message).
    pub fn delivery_count(&self) -> u64 {
        self.delivery_count
    }

    /// A clone of the acknowledgement handle, so the message itself can be moved into a
    /// handler and acknowledged once the handler has finished.
    pub fn ack_handle(&self) -> AckHandle {
        self.ack.clone()
    }

    /// Confirms that processing finished (no-op for non-durable delivery).
    pub async fn ack(&self) -> Result<(), Error> {
        self.ack.ack().await
    }

    /// Asks for redelivery, after `delay` when given (no-op for non-durable delivery).
    pub async fn nak(&self, delay: Option<Duration>) -> Result<(), Error> {
        self.ack.nak(delay).await
    }

    /// Says that work is still going on, extending the ack deadline (no-op for
    /// non-durable delivery).
    pub async fn in_progress(&self) -> Result<(), Error> {
        self.ack.in_progress().await
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("subject", &self.subject)
            .field("reply", &self.reply)
            .field("headers", &self.headers.len())
            .field("payload_len", &self.payload.len())
            .field("durable", &self.ack.is_durable())
            .field("delivery_count", &self.delivery_count)
            .finish()
    }
}

/// The transport side of an acknowledgement: implemented by transports with durable
/// delivery (JetStream, or a custom one). Object-safe.
pub trait Acknowledge: Send + Sync + 'static {
    /// Processing finished: do not deliver again.
    fn ack(&self) -> BoxFuture<'_, Result<(), Error>>;
    /// Processing failed: deliver again, after `delay` when given.
    fn nak(&self, delay: Option<Duration>) -> BoxFuture<'_, Result<(), Error>>;
    /// Processing goes on: extend the deadline before redelivery.
    fn in_progress(&self) -> BoxFuture<'_, Result<(), Error>>;
}

/// A cheap, cloneable handle that acknowledges one message. The no-op handle (core
/// delivery) does nothing and never allocates.
#[derive(Clone, Default)]
pub struct AckHandle(Option<Arc<dyn Acknowledge>>);

impl AckHandle {
    /// A handle that does nothing (core and in-memory delivery).
    pub const fn noop() -> Self {
        AckHandle(None)
    }

    /// A handle backed by a transport's acknowledgement.
    pub fn new(ack: Arc<dyn Acknowledge>) -> Self {
        AckHandle(Some(ack))
    }

    /// Whether acknowledging does anything (the message came from a durable consumer).
    pub fn is_durable(&self) -> bool {
        self.0.is_some()
    }

    /// See [`Message::ack`].
    pub async fn ack(&self) -> Result<(), Error> {
        match &self.0 {
            Some(a) => a.ack().await,
            None => Ok(()),
        }
    }

    /// See [`Message::nak`].
    pub async fn nak(&self, delay: Option<Duration>) -> Result<(), Error> {
        match &self.0 {
            Some(a) => a.nak(delay).await,
            None => Ok(()),
        }
    }

    /// See [`Message::in_progress`].
    pub async fn in_progress(&self) -> Result<(), Error> {
        match &self.0 {
            Some(a) => a.in_progress().await,
            None => Ok(()),
        }
    }
}

impl fmt::Debug for AckHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AckHandle")
            .field(&if self.is_durable() { "durable" } else { "noop" })
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Acknowledge for Recorder {
        fn ack(&self) -> BoxFuture<'_, Result<(), Error>> {
            Box::pin(async move {
                self.0.lock().unwrap().push("ack".into());
                Ok(())
            })
        }
        fn nak(&self, delay: Option<Duration>) -> BoxFuture<'_, Result<(), Error>> {
            Box::pin(async move {
                self.0.lock().unwrap().push(format!("nak {delay:?}"));
                Ok(())
            })
        }
        fn in_progress(&self) -> BoxFuture<'_, Result<(), Error>> {
            Box::pin(async move {
                self.0.lock().unwrap().push("progress".into());
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn a_durable_handle_reaches_the_transport() {
        let rec = Arc::new(Recorder::default());
        let msg = Message::new("a", "x")
            .with_ack(AckHandle::new(rec.clone()))
            .with_delivery_count(3);
        assert_eq!(msg.delivery_count(), 3);
        let handle = msg.ack_handle();
        assert!(handle.is_durable());
        msg.in_progress().await.unwrap();
        msg.nak(Some(Duration::from_secs(1))).await.unwrap();
        drop(msg);
        handle.ack().await.unwrap();
        assert_eq!(*rec.0.lock().unwrap(), ["progress", "nak Some(1s)", "ack"]);
    }

    #[test]
    fn builders_and_debug() {
        let h = Headers::new().with("k", "v").unwrap();
        let m = Message::new("a.b", Bytes::from_static(b"p"))
            .with_reply("r")
            .with_headers(h.clone())
            .with_delivery_count(0);
        assert_eq!(m.reply(), Some("r"));
        assert_eq!(m.headers(), &h);
        assert_eq!(m.delivery_count(), 1);
        let dbg = format!("{m:?}");
        assert!(dbg.contains("a.b") && !dbg.contains("\"p\""), "{dbg}");
        assert_eq!(m.with_reply_opt(None).reply(), None);
    }
}
