//! [`NatsBus`]: the bus on a NATS server, with JetStream for the durable CAP subjects.
//!
//! Core NATS carries everything except the durable subjects, which JetStream stores
//! (see [`jetstream`] for the design: stream, retention, consumers, acks). The client
//! reconnects by itself with exponential backoff and re-establishes every core
//! subscription; durable consumers live on the server, so nothing stored is lost
//! across a server restart (with file storage).
//!
//! ```no_run
//! use cap_bus::{Bus, NatsBus, NatsOptions};
//! # async fn run() -> Result<(), cap_bus::Error> {
//! let bus = NatsBus::connect(NatsOptions::from_env()?).await?;
//! bus.publish("sys.job.submit", "…".into()).await?; // stored by JetStream before Ok
//! # Ok(()) }
//! ```

mod convert;
pub mod jetstream;
mod options;
mod subscription;

pub use jetstream::{DEFAULT_ACK_WAIT, JetStreamOptions, Retention, Storage, durable_name};
pub use options::{Auth, DEFAULT_URL, NatsOptions, ReconnectOptions, TlsOptions};
pub use subscription::NatsSubscription;

use crate::{Bus, Error, ErrorKind, Headers, Message, Receipt, check};
use async_nats::jetstream as js;
use bytes::Bytes;
use options::config;
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use subscription::Source;
use tokio_util::sync::CancellationToken;

/// Header JetStream uses to discard duplicate publishes.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// Connection counters of a [`NatsBus`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsStats {
    /// Times the connection was (re)established.
    pub connects: u64,
    /// Times the connection was lost.
    pub disconnects: u64,
    /// Slow-consumer events: a core subscription's client buffer
    /// ([`NatsOptions::subscription_capacity`]) was full and the client dropped
    /// messages for it.
    pub slow_consumers: u64,
}

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    disconnects: AtomicU64,
    slow_consumers: AtomicU64,
}

/// A [`Bus`] on NATS. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct NatsBus {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    js: Option<JetStream>,
    closed: CancellationToken,
    msg_id_prefix: String,
    next_msg_id: AtomicU64,
    counters: Arc<Counters>,
}

struct JetStream {
    ctx: js::Context,
    opts: JetStreamOptions,
}

impl Inner {
    fn ensure_open(&self) -> Result<(), Error> {
        if self.closed.is_cancelled() {
            Err(Error::closed())
        } else {
            Ok(())
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// The JetStream settings when `pred` says the subject or pattern is durable.
    fn durable(&self, pred: impl Fn(&JetStreamOptions) -> bool) -> Option<&JetStream> {
        self.js.as_ref().filter(|j| pred(&j.opts))
    }
}

impl NatsBus {
    /// Connects with `opts`; with JetStream configured, creates or checks the stream.
    pub async fn connect(opts: NatsOptions) -> Result<Self, Error> {
        opts.validate()?;
        let counters = Arc::new(Counters::default());
        let mut co = async_nats::ConnectOptions::new();
        co = match &opts.auth {
            options::Auth::None => co,
            options::Auth::Token(t) => co.token(t.clone()),
            options::Auth::UserPassword { user, password } => {
                co.user_and_password(user.clone(), password.clone())
            }
            options::Auth::NKey(seed) => co.nkey(seed.clone()),
            options::Auth::CredsFile(path) => co.credentials_file(path).await.map_err(|e| {
                Error::with_source(ErrorKind::Config, format!("credentials file {path:?}"), e)
            })?,
        };
        if let Some(name) = &opts.name {
            co = co.name(name);
        }
        if let Some(ca) = &opts.tls.ca {
            co = co.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&opts.tls.cert, &opts.tls.key) {
            co = co.add_client_certificate(cert.clone(), key.clone());
        }
        if opts.tls.required {
            co = co.require_tls(true);
        }
        if opts.retry_on_initial_connect {
            co = co.retry_on_initial_connect();
        }
        let backoff = opts.reconnect.clone();
        let events = counters.clone();
        co = co
            .reconnect_delay_callback(move |attempt| backoff.delay(attempt))
            .max_reconnects(opts.reconnect.max_attempts)
            .connection_timeout(opts.connect_timeout)
            .subscription_capacity(opts.subscription_capacity)
            .event_callback(move |event| {
                let c = events.clone();
                async move {
                    match &event {
                        async_nats::Event::Connected => {
                            c.connects.fetch_add(1, Ordering::Relaxed);
                            tracing::info!("NATS connected");
                        }
                        async_nats::Event::Disconnected => {
                            c.disconnects.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!("NATS disconnected; reconnecting");
                        }
                        async_nats::Event::SlowConsumer(sid) => {
                            c.slow_consumers.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(sid, "NATS slow consumer: messages dropped");
                        }
                        other => tracing::info!(event = %other, "NATS event"),
                    }
                }
            });
        let mut addrs = Vec::with_capacity(opts.servers.len());
        for s in &opts.servers {
            let addr: async_nats::ServerAddr = s.parse().map_err(|e| {
                Error::with_source(ErrorKind::Config, format!("server URL {s:?}"), e)
            })?;
            addrs.push(addr);
        }
        let client = co.connect(addrs).await.map_err(|e| {
            use async_nats::ConnectErrorKind as K;
            let kind = match e.kind() {
                K::ServerParse | K::Tls => ErrorKind::Config,
                _ => ErrorKind::ConnectionLost,
            };
            Error::with_source(kind, format!("connect to {}", opts.servers.join(",")), e)
        })?;
        if !opts.retry_on_initial_connect {
            // The Connected event may race the first publish; count the first connection here.
            counters.connects.fetch_max(1, Ordering::Relaxed);
        }
        Self::with_client(client, opts.jetstream, counters).await
    }

    /// Connects with [`NatsOptions::from_env`].
    pub async fn from_env() -> Result<Self, Error> {
        Self::connect(NatsOptions::from_env()?).await
    }

    /// Wraps an existing client (core NATS only when `jetstream` is `None`).
    pub async fn from_client(
        client: async_nats::Client,
        jetstream: Option<JetStreamOptions>,
    ) -> Result<Self, Error> {
        Self::with_client(client, jetstream, Arc::new(Counters::default())).await
    }

    async fn with_client(
        client: async_nats::Client,
        jetstream: Option<JetStreamOptions>,
        counters: Arc<Counters>,
    ) -> Result<Self, Error> {
        let js = match jetstream {
            None => None,
            Some(opts) => {
                opts.validate()?;
                let ctx = js::ContextBuilder::new()
                    .timeout(opts.api_timeout)
                    .build(client.clone());
                jetstream::ensure_stream(&ctx, &opts).await?;
                Some(JetStream { ctx, opts })
            }
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Ok(NatsBus {
            inner: Arc::new(Inner {
                client,
                js,
                closed: CancellationToken::new(),
                msg_id_prefix: format!("{nanos:x}-{:x}", std::process::id()),
                next_msg_id: AtomicU64::new(1),
                counters,
            }),
        })
    }

    /// The underlying async-nats client (for what this crate does not wrap).
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// The JetStream settings, when JetStream is on.
    pub fn jetstream(&self) -> Option<&JetStreamOptions> {
        self.inner.js.as_ref().map(|j| &j.opts)
    }

    /// Connection counters.
    pub fn stats(&self) -> NatsStats {
        let c = &self.inner.counters;
        NatsStats {
            connects: c.connects.load(Ordering::Relaxed),
            disconnects: c.disconnects.load(Ordering::Relaxed),
            slow_consumers: c.slow_consumers.load(Ordering::Relaxed),
        }
    }

    /// Deletes the durable consumer of queue group `queue` (administration and tests).
    pub async fn delete_consumer(&self, queue: &str) -> Result<(), Error> {
        let j = self.js_or_config()?;
        let stream = j
            .ctx
            .get_stream(&j.opts.stream)
            .await
            .map_err(|e| Error::with_source(ErrorKind::Config, "get stream", e))?;
        stream
            .delete_consumer(&durable_name(queue))
            .await
            .map(|_| ())
            .map_err(|e| Error::with_source(ErrorKind::Config, "delete consumer", e))
    }

    /// Deletes the JetStream stream and its consumers (administration and tests).
    pub async fn delete_stream(&self) -> Result<(), Error> {
        let j = self.js_or_config()?;
        j.ctx
            .delete_stream(&j.opts.stream)
            .await
            .map(|_| ())
            .map_err(|e| Error::with_source(ErrorKind::Config, "delete stream", e))
    }

    fn js_or_config(&self) -> Result<&JetStream, Error> {
        self.inner
            .js
            .as_ref()
            .ok_or_else(|| config("JetStream is not configured"))
    }

    fn subscription(&self, source: Source) -> NatsSubscription {
        NatsSubscription {
            source,
            closed: Box::pin(self.inner.closed.clone().cancelled_owned()),
            done: false,
        }
    }

    fn next_msg_id(&self) -> String {
        let n = self.inner.next_msg_id.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.inner.msg_id_prefix)
    }

    async fn publish_durable(
        &self,
        j: &JetStream,
        subject: &str,
        mut headers: Headers,
        payload: Bytes,
    ) -> Result<Receipt, Error> {
        if headers.get(MSG_ID_HEADER).is_none() {
            headers.insert(MSG_ID_HEADER, self.next_msg_id())?;
        }
        let map = convert::header_map(&headers).unwrap_or_default();
        let deadline = Instant::now() + j.opts.publish_retry;
        let mut delay = Duration::from_millis(50);
        loop {
            let attempt = async {
                let ack = j
                    .ctx
                    .publish_with_headers(subject.to_owned(), map.clone(), payload.clone())
                    .await
                    .map_err(convert::js_publish_error)?;
                ack.await.map_err(convert::js_publish_error)
            }
            .await;
            match attempt {
                Ok(ack) => return Ok(Receipt::new(ack.stream, ack.sequence)),
                Err((e, retry)) => {
                    if !retry || self.inner.is_closed() || Instant::now() + delay > deadline {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, "durable publish not confirmed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    async fn durable_subscribe(
        &self,
        j: &JetStream,
        pattern: &str,
        queue: &str,
    ) -> Result<NatsSubscription, Error> {
        let name = durable_name(queue);
        let sub_err = |what: &str, e: &dyn std::fmt::Display| {
            Error::new(
                ErrorKind::Subscribe,
                format!("durable consumer {name}: {what}: {e}"),
            )
        };
        let stream = j
            .ctx
            .get_stream(&j.opts.stream)
            .await
            .map_err(|e| sub_err("get stream", &e))?;
        let consumer = jetstream::ensure_consumer(&stream, &j.opts, &name, pattern).await?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(j.opts.batch)
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| sub_err("pull", &e))?;
        Ok(self.subscription(Source::Durable(Box::pin(messages))))
    }
}

impl Bus for NatsBus {
    type Subscription = NatsSubscription;

    async fn publish_with_headers(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), Error> {
        let inner = &*self.inner;
        inner.ensure_open()?;
        check::subject(subject)?;
        check::size(&headers, payload.len(), Some(inner.client.max_payload()))?;
        if let Some(j) = inner.durable(|o| o.is_durable_subject(subject)) {
            // Boxed: the JetStream path (publish, then wait for the server's ack) is
            // several times the size of a core publish, and would grow every publish.
            return Box::pin(self.publish_durable(j, subject, headers, payload))
                .await
                .map(|_| ());
        }
        let res = match convert::header_map(&headers) {
            None => {
                inner
                    .client
                    .publish(async_nats::Subject::from(subject), payload)
                    .await
            }
            Some(map) => {
                inner
                    .client
                    .publish_with_headers(async_nats::Subject::from(subject), map, payload)
                    .await
            }
        };
        res.map_err(|e| convert::publish_error(e, inner.is_closed()))
    }

    async fn publish_receipted(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<Option<Receipt>, Error> {
        let inner = &*self.inner;
        inner.ensure_open()?;
        check::subject(subject)?;
        check::size(&headers, payload.len(), Some(inner.client.max_payload()))?;
        match inner.durable(|o| o.is_durable_subject(subject)) {
            Some(j) => Box::pin(self.publish_durable(j, subject, headers, payload))
                .await
                .map(Some),
            None => self
                .publish_with_headers(subject, headers, payload)
                .await
                .map(|()| None),
        }
    }

    async fn withdraw(&self, receipt: &Receipt) -> Result<bool, Error> {
        let inner = &*self.inner;
        inner.ensure_open()?;
        let Some(j) = inner.js.as_ref() else {
            return Ok(false);
        };
        let stream = j
            .ctx
            .get_stream(receipt.stream())
            .await
            .map_err(|e| Error::with_source(ErrorKind::Config, "get stream", e))?;
        match stream.delete_message(receipt.sequence()).await {
            Ok(_) => Ok(true),
            // Already consumed (work-queue retention removes acknowledged messages),
            // expired, or deleted before.
            Err(e)
                if e.to_string()
                    .to_ascii_lowercase()
                    .contains("no message found") =>
            {
                Ok(false)
            }
            Err(e) => Err(Error::with_source(ErrorKind::Publish, "withdraw", e)),
        }
    }

    fn is_connected(&self) -> bool {
        !self.inner.is_closed()
            && self.inner.client.connection_state() == async_nats::connection::State::Connected
    }

    async fn subscribe(&self, pattern: &str) -> Result<NatsSubscription, Error> {
        let inner = &*self.inner;
        inner.ensure_open()?;
        check::pattern(pattern)?;
        let sub = inner
            .client
            .subscribe(pattern.to_owned())
            .await
            .map_err(|e| convert::subscribe_error(e, inner.is_closed()))?;
        Ok(self.subscription(Source::Core(sub)))
    }

    async fn queue_subscribe(&self, pattern: &str, queue: &str) -> Result<NatsSubscription, Error> {
        let inner = &*self.inner;
        inner.ensure_open()?;
        check::pattern(pattern)?;
        check::queue(queue)?;
        if let Some(j) = inner.durable(|o| o.is_durable_pattern(pattern)) {
            return self.durable_subscribe(j, pattern, queue).await;
        }
        let sub = inner
            .client
            .queue_subscribe(pattern.to_owned(), queue.to_owned())
            .await
            .map_err(|e| convert::subscribe_error(e, inner.is_closed()))?;
        Ok(self.subscription(Source::Core(sub)))
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
        check::size(&headers, payload.len(), Some(inner.client.max_payload()))?;
        let mut req = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        if let Some(map) = convert::header_map(&headers) {
            req = req.headers(map);
        }
        inner
            .client
            .send_request(async_nats::Subject::from(subject), req)
            .await
            .map(convert::message)
            .map_err(|e| convert::request_error(e, subject, inner.is_closed()))
    }

    async fn flush(&self) -> Result<(), Error> {
        let inner = &*self.inner;
        inner.ensure_open()?;
        inner.client.flush().await.map_err(|e| {
            let kind = if inner.is_closed() {
                ErrorKind::Closed
            } else {
                ErrorKind::ConnectionLost
            };
            Error::with_source(kind, "flush", e)
        })
    }

    async fn close(&self) -> Result<(), Error> {
        let inner = &*self.inner;
        if inner.is_closed() {
            return Ok(());
        }
        // Flush what was accepted, then drain: core subscriptions deliver what they
        // hold and end; durable ones end at once (unacknowledged messages are
        // redelivered by the server).
        let _ = tokio::time::timeout(Duration::from_secs(5), inner.client.flush()).await;
        inner.closed.cancel();
        if let Err(e) = inner.client.drain().await {
            tracing::debug!(error = %e, "drain after close");
        }
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn max_payload(&self) -> Option<usize> {
        Some(self.inner.client.max_payload())
    }
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("state", &self.inner.client.connection_state())
            .field("jetstream", &self.jetstream().map(|j| &j.stream))
            .field("closed", &self.is_closed())
            .finish()
    }
}
