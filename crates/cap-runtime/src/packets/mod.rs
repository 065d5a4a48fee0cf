//! The packet layer: `BusPacket`s over any [`Bus`].
//!
//! Outgoing packets are encoded canonically ([`cap_proto::packet::encode`]) and signed
//! when a [`Signer`] is configured. Incoming bytes are decoded with a size limit,
//! checked by the [`TrustPolicy`] against the **raw received bytes** (so packets from
//! newer peers with fields this version does not model still verify), then validated
//! ([`cap_proto::validate::packet`]).
//!
//! Invalid packets are never dropped silently. Each one is
//! - counted by error code ([`PacketStats::rejected`]),
//! - logged (`tracing` warn) with its sanitised trace id and sender id, never payload text,
//! - reported as a `SystemAlert` on `sys.alert` with the severity of CAP-NOTES §4 (100 and
//!   101 ERROR, 102 WARNING, 103 and 104 CRITICAL), rate-limited by [`AlertRate`]
//!   (default 10/s, bursts of 20; suppressed alerts are counted),
//! - and, for a job request whose signature was fine and whose job id is usable, answered
//!   with a FAILED `JobResult` carrying the violation's code, so the submitter learns.
//!
//! Durable (JetStream) messages are acknowledged by [`Packets::receive`] after a rejection
//! was reported, so they do not come back; accepted ones are acknowledged by the caller
//! once handled.
//!
//! ```
//! use cap_bus::{Bus, MemoryBus};
//! use cap_proto::{subject, v1};
//! use cap_runtime::packets::{PacketConfig, Packets};
//! use futures_util::StreamExt;
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let bus = MemoryBus::new();
//! let packets = Packets::new(bus.clone(), PacketConfig::new("worker-1"));
//! let mut alerts = bus.subscribe(subject::ALERT).await.unwrap();
//! let mut jobs = bus.subscribe("job.echo").await.unwrap();
//!
//! // A good packet comes out as a packet...
//! let cancel = v1::JobCancel { job_id: "j1".into(), requested_by: "worker-1".into(), ..Default::default() };
//! let pkt = packets.envelope("trace-1", cancel);
//! packets.publish("job.echo", pkt).await.unwrap();
//! let msg = jobs.next().await.unwrap();
//! assert!(packets.receive(&msg).await.is_some());
//!
//! // ...garbage is counted and alerted.
//! bus.publish("job.echo", "garbage".into()).await.unwrap();
//! let msg = jobs.next().await.unwrap();
//! assert!(packets.receive(&msg).await.is_none());
//! assert_eq!(packets.stats().rejected_total(), 1);
//! assert!(alerts.next().await.is_some());
//! # });
//! ```

pub mod alert;
mod checked;
pub mod inbound;
pub mod production;
pub mod salvage;
mod stats;

pub use alert::AlertRate;
pub use checked::Inbound;
pub use inbound::{Answer, RejectReason, Rejection};
pub use production::{Authority, FixedAuthority, ProductionConfig, Profile};
pub use stats::PacketStats;

use crate::{Error, ErrorKind};
use alert::TokenBucket;
use bytes::Bytes;
use cap_bus::{Bus, Headers, Message};
use cap_proto::v1::{self, BusPacket, bus_packet::Payload};
use cap_proto::{ErrorCode, subject};
use cap_sign::{Signer, TrustPolicy};
use stats::{Counters, bump};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// Settings of a packet layer.
#[derive(Clone)]
#[non_exhaustive]
pub struct PacketConfig {
    /// Our `sender_id` (a worker id, a client id).
    pub sender_id: String,
    /// Signs every outgoing packet when set.
    pub signer: Option<Arc<dyn Signer>>,
    /// How incoming signatures are checked (default: verify if signed, no keys).
    pub trust: TrustPolicy,
    /// Largest packet accepted (default [`cap_proto::packet::DEFAULT_MAX_PACKET_BYTES`]).
    pub max_packet_bytes: usize,
    /// Alert rate limit.
    pub alert_rate: AlertRate,
    /// Where outgoing packets get their `auth_token` (field 18) from, when set: the
    /// worker trust session (see [`crate::trust`]).
    pub auth_token: Option<Arc<dyn AuthTokenSource>>,
    /// The CAP-PRODUCTION profile, when set (default: the legacy profile). See
    /// [`production`].
    pub production: Option<ProductionConfig>,
    /// Whether published packets carry W3C `traceparent`/`tracestate` headers (default
    /// true; see [`crate::trace_context`]).
    pub trace_headers: bool,
}

/// The session token of outgoing packets (the hook of the worker trust handshake).
pub trait AuthTokenSource: Send + Sync + 'static {
    /// `Ok(Some(token))`: set `auth_token`; `Ok(None)`: send without one; `Err`: the
    /// packet must not be sent (no session in `enforce` mode).
    fn auth_token(&self) -> Result<Option<Arc<str>>, Error>;
}

impl PacketConfig {
    /// Defaults for `sender_id`: unsigned, trust mode verify-if-signed with no keys.
    pub fn new(sender_id: impl Into<String>) -> Self {
        PacketConfig {
            sender_id: sender_id.into(),
            signer: None,
            trust: TrustPolicy::default(),
            max_packet_bytes: cap_proto::packet::DEFAULT_MAX_PACKET_BYTES,
            alert_rate: AlertRate::default(),
            auth_token: None,
            production: None,
            trace_headers: true,
        }
    }

    /// Sets whether published packets carry trace context headers.
    pub fn trace_headers(mut self, on: bool) -> Self {
        self.trace_headers = on;
        self
    }

    /// Switches to the CAP-PRODUCTION profile with `config`.
    pub fn production(mut self, config: ProductionConfig) -> Self {
        self.production = Some(config);
        self
    }

    /// The signature profile.
    pub fn profile(&self) -> Profile {
        if self.production.is_some() {
            Profile::Production
        } else {
            Profile::Legacy
        }
    }

    /// Takes the `auth_token` of outgoing packets from `source`.
    pub fn auth_token(mut self, source: Arc<dyn AuthTokenSource>) -> Self {
        self.auth_token = Some(source);
        self
    }

    /// Signs outgoing packets with `signer`.
    pub fn signer(mut self, signer: Arc<dyn Signer>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Sets the trust policy for incoming packets.
    pub fn trust(mut self, trust: TrustPolicy) -> Self {
        self.trust = trust;
        self
    }

    /// Sets the alert rate limit.
    pub fn alert_rate(mut self, rate: AlertRate) -> Self {
        self.alert_rate = rate;
        self
    }

    /// Sets the largest packet accepted.
    pub fn max_packet_bytes(mut self, n: usize) -> Self {
        self.max_packet_bytes = n;
        self
    }
}

impl fmt::Debug for PacketConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketConfig")
            .field("sender_id", &self.sender_id)
            .field("signed", &self.signer.is_some())
            .field("trust", &self.trust.mode())
            .field("max_packet_bytes", &self.max_packet_bytes)
            .field("alert_rate", &self.alert_rate)
            .field("auth_token", &self.auth_token.is_some())
            .field("profile", &self.profile())
            .finish()
    }
}

/// Publishes and receives `BusPacket`s on a bus. Cheap to clone; clones share counters
/// and the alert limiter.
pub struct Packets<B: Bus> {
    bus: B,
    shared: Arc<Shared>,
}

impl<B: Bus> Clone for Packets<B> {
    fn clone(&self) -> Self {
        Packets {
            bus: self.bus.clone(),
            shared: self.shared.clone(),
        }
    }
}

struct Shared {
    config: PacketConfig,
    counters: Counters,
    limiter: Mutex<TokenBucket>,
}

/// The current time as a protobuf timestamp.
pub fn now() -> cap_proto::Timestamp {
    cap_proto::packet::timestamp(SystemTime::now())
}

impl<B: Bus> Packets<B> {
    /// A packet layer on `bus`.
    pub fn new(bus: B, config: PacketConfig) -> Self {
        let limiter = Mutex::new(TokenBucket::new(config.alert_rate, Instant::now()));
        Packets {
            bus,
            shared: Arc::new(Shared {
                config,
                counters: Counters::default(),
                limiter,
            }),
        }
    }

    /// The bus.
    pub fn bus(&self) -> &B {
        &self.bus
    }

    /// The configuration.
    pub fn config(&self) -> &PacketConfig {
        &self.shared.config
    }

    /// Our sender id.
    pub fn sender_id(&self) -> &str {
        &self.shared.config.sender_id
    }

    /// Whether outgoing packets are signed.
    pub fn is_signing(&self) -> bool {
        self.shared.config.signer.is_some()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PacketStats {
        self.shared.counters.snapshot()
    }

    /// A version-1 packet from us, created now, around `payload`.
    pub fn envelope(&self, trace_id: &str, payload: impl Into<Payload>) -> BusPacket {
        BusPacket::new(trace_id, self.sender_id(), now(), payload)
    }

    /// The signature profile.
    pub fn profile(&self) -> Profile {
        self.shared.config.profile()
    }

    fn stamp_token(&self, packet: &mut BusPacket) -> Result<(), Error> {
        if let Some(source) = &self.shared.config.auth_token {
            match source.auth_token()? {
                Some(token) => token.as_ref().clone_into(&mut packet.auth_token),
                None => packet.auth_token.clear(),
            }
        }
        Ok(())
    }

    /// The wire bytes of `packet` in the legacy profile: its `auth_token` from the
    /// configured [`AuthTokenSource`] (an error when it refuses), canonical encoding,
    /// signed when a signer is set (the signature is also stored in `packet`). In the
    /// production profile a seal is bound to the subject: use [`seal_for`](Self::seal_for)
    /// (this is an [`ErrorKind::Config`] error there).
    pub fn seal(&self, packet: &mut BusPacket) -> Result<Bytes, Error> {
        if self.shared.config.production.is_some() {
            return Err(Error::new(
                ErrorKind::Config,
                "a production seal needs the subject: use seal_for",
            ));
        }
        self.stamp_token(packet)?;
        match &self.shared.config.signer {
            Some(signer) => Ok(cap_sign::packet::sign_to_bytes(packet, signer.as_ref())?.into()),
            None => Ok(cap_proto::packet::encode(packet).into()),
        }
    }

    /// The wire bytes of `packet` for publishing on `subject`: in the legacy profile
    /// [`seal`](Self::seal); in the production profile the `auth_token`, the component's
    /// identity when the packet has none, and a CAP-PRODUCTION seal whose audience is
    /// `subject`.
    pub fn seal_for(&self, subject: &str, packet: &mut BusPacket) -> Result<Bytes, Error> {
        let Some(production) = &self.shared.config.production else {
            return self.seal(packet);
        };
        self.stamp_token(packet)?;
        production
            .seal(packet, subject, SystemTime::now())
            .map(Bytes::from)
            .map_err(|e| Error::with_source(ErrorKind::Sign, "production seal", e))
    }

    /// The trace context headers of a packet of `trace_id` sent from `span` (see
    /// [`trace_context::outgoing`](crate::trace_context::outgoing)); empty when
    /// [`PacketConfig::trace_headers`] is off.
    pub fn trace_headers(&self, trace_id: &str, span: &tracing::Span) -> Headers {
        self.trace_headers_after(trace_id, span, None)
    }

    /// [`trace_headers`](Self::trace_headers) for a hop that received `parent`: without
    /// a span of its own, the packet keeps the parent's sampling decision (see
    /// [`trace_context::outgoing_after`](crate::trace_context::outgoing_after)).
    pub fn trace_headers_after(
        &self,
        trace_id: &str,
        span: &tracing::Span,
        parent: Option<&crate::trace_context::TraceContext>,
    ) -> Headers {
        if self.shared.config.trace_headers && crate::trace_context::enabled() {
            crate::trace_context::outgoing_after(trace_id, span, parent).to_headers()
        } else {
            Headers::new()
        }
    }

    /// Seals and publishes `packet` to `subject` with the trace context of the current
    /// span; returns the bytes sent.
    pub async fn publish(&self, subject: &str, mut packet: BusPacket) -> Result<Bytes, Error> {
        let headers = self.trace_headers(&packet.trace_id, &tracing::Span::current());
        let bytes = self.seal_for(subject, &mut packet)?;
        self.publish_bytes_with(subject, headers, bytes.clone())
            .await?;
        Ok(bytes)
    }

    /// Publishes already sealed bytes (for example a recorded result, re-published),
    /// without headers.
    pub async fn publish_bytes(&self, subject: &str, bytes: Bytes) -> Result<(), Error> {
        self.publish_bytes_with(subject, Headers::new(), bytes)
            .await
    }

    /// Publishes already sealed bytes with `headers` (trace context, see
    /// [`trace_headers`](Self::trace_headers)).
    pub async fn publish_bytes_with(
        &self,
        subject: &str,
        headers: Headers,
        bytes: Bytes,
    ) -> Result<(), Error> {
        if headers.is_empty() {
            self.bus.publish(subject, bytes).await?;
        } else {
            self.bus
                .publish_with_headers(subject, headers, bytes)
                .await?;
        }
        bump(&self.shared.counters.published);
        Ok(())
    }

    /// Publishes already sealed bytes with `headers` and returns where a durable bus
    /// stored them (see [`Bus::publish_receipted`]), so that the publisher can withdraw
    /// them later.
    pub async fn publish_bytes_receipted(
        &self,
        subject: &str,
        headers: Headers,
        bytes: Bytes,
    ) -> Result<Option<cap_bus::Receipt>, Error> {
        let receipt = self.bus.publish_receipted(subject, headers, bytes).await?;
        bump(&self.shared.counters.published);
        Ok(receipt)
    }

    /// Decodes, trust-checks and validates `raw` (no IO, nothing reported) with the
    /// legacy trust policy (production admission needs the subject and the replay store:
    /// see [`receive_checked`](Self::receive_checked)).
    pub fn open(&self, raw: &[u8]) -> Result<BusPacket, Box<Rejection>> {
        let c = &self.shared.config;
        inbound::open(raw, c.max_packet_bytes, &c.trust)
    }

    /// Like [`open`](Self::open), but only packets for which `wanted` returns true are
    /// trust-checked and validated; others give `Ok(None)` and are neither counted nor
    /// reported (for shared subjects where most traffic is someone else's, such as
    /// results of other clients' jobs). Bytes that do not decode are rejected.
    pub fn open_if(
        &self,
        raw: &[u8],
        wanted: impl FnOnce(&BusPacket) -> bool,
    ) -> Result<Option<BusPacket>, Box<Rejection>> {
        let c = &self.shared.config;
        let packet = inbound::decode_with(raw, c.max_packet_bytes, &c.trust)?;
        if !wanted(&packet) {
            return Ok(None);
        }
        inbound::check(raw, &packet, &c.trust)?;
        Ok(Some(packet))
    }

    /// Opens the payload of `msg`. Accepted packets are counted and returned (the caller
    /// acknowledges `msg` once it has handled it); rejected ones are reported
    /// ([`report`](Self::report)), `msg` is acknowledged, and `None` is returned.
    pub async fn receive(&self, msg: &Message) -> Option<BusPacket> {
        self.receive_if(msg, |_| true).await
    }

    /// [`receive`](Self::receive) with the filter of [`open_if`](Self::open_if). Packets
    /// filtered out are acknowledged and give `None`. In the production profile this is
    /// [`receive_checked`](Self::receive_checked), with redeliveries of packets already
    /// admitted acknowledged and dropped.
    pub async fn receive_if(
        &self,
        msg: &Message,
        wanted: impl FnOnce(&BusPacket) -> bool,
    ) -> Option<BusPacket> {
        if self.shared.config.production.is_some() {
            let inbound = Box::pin(self.receive_checked(msg, wanted)).await?;
            if inbound.duplicate {
                ack(msg).await;
                return None;
            }
            return Some(inbound.packet);
        }
        // Decided before any await, so the decoded packet is not part of this future.
        let rejection = match self.open_if(msg.payload(), wanted) {
            Ok(Some(p)) => {
                bump(&self.shared.counters.accepted);
                return Some(p);
            }
            Ok(None) => None,
            Err(rejection) => Some(rejection),
        };
        if let Some(rejection) = rejection {
            // Boxed: the rare rejection path must not grow every receive future.
            Box::pin(self.report(&rejection, msg.subject())).await;
        }
        ack(msg).await;
        None
    }

    /// Reports a rejection: counts it, logs it, publishes a rate-limited alert, and
    /// answers a rejected job request with a FAILED result.
    pub async fn report(&self, rejection: &Rejection, subject: &str) {
        let counters = &self.shared.counters;
        counters.reject(rejection.code);
        tracing::warn!(
            code = %rejection.code,
            reason = %rejection.reason.describe(),
            trace_id = rejection.trace_id.as_deref().unwrap_or(""),
            sender_id = rejection.sender_id.as_deref().unwrap_or(""),
            subject = %inbound::sanitize(subject),
            "rejected packet"
        );
        if self.may_alert() {
            let alert = alert::for_rejection(rejection, subject, self.sender_id());
            let trace = alert.trace_id.clone();
            let trace = if trace.is_empty() {
                crate::id::new_trace_id()
            } else {
                trace
            };
            match self
                .publish(subject::ALERT, self.envelope(&trace, alert))
                .await
            {
                Ok(_) => bump(&counters.alerts_published),
                Err(e) => {
                    bump(&counters.alerts_failed);
                    tracing::warn!(error = %e, "alert publish failed");
                }
            }
        } else {
            bump(&counters.alerts_suppressed);
        }
        if let Some(answer) = &rejection.answer {
            let mut result = v1::JobResult {
                job_id: answer.job_id.clone(),
                status: v1::JobStatus::Failed as i32,
                worker_id: self.sender_id().to_owned(),
                error_message: format!("rejected: {}", rejection.reason.describe()),
                ..Default::default()
            };
            rejection.code.apply_to(&mut result);
            let trace = if answer.trace_id.is_empty() {
                crate::id::new_trace_id()
            } else {
                answer.trace_id.clone()
            };
            match self
                .publish(subject::RESULT, self.envelope(&trace, result))
                .await
            {
                Ok(_) => bump(&counters.failed_results),
                Err(e) => tracing::warn!(error = %e, "FAILED result publish failed"),
            }
        }
    }

    /// Takes a token of the alert rate limit.
    fn may_alert(&self) -> bool {
        self.shared
            .limiter
            .lock()
            .map(|mut b| b.try_take(Instant::now()))
            .unwrap_or(false)
    }

    /// Publishes `alert` on `sys.alert` within the alert rate limit (counted like the
    /// alerts about rejected packets); `true` when it went out.
    pub async fn alert_limited(&self, alert: v1::SystemAlert) -> bool {
        let counters = &self.shared.counters;
        if !self.may_alert() {
            bump(&counters.alerts_suppressed);
            return false;
        }
        let trace = if alert.trace_id.is_empty() {
            crate::id::new_trace_id()
        } else {
            alert.trace_id.clone()
        };
        match self
            .publish(subject::ALERT, self.envelope(&trace, alert))
            .await
        {
            Ok(_) => {
                bump(&counters.alerts_published);
                true
            }
            Err(e) => {
                bump(&counters.alerts_failed);
                tracing::warn!(error = %e, "alert publish failed");
                false
            }
        }
    }

    /// Publishes an alert of our own (not about a received packet). With a known error
    /// code it has the structured shape (severity, code, `source_component` = our sender
    /// id); without one ([`ErrorCode::UNSPECIFIED`] or an unknown number) the legacy
    /// shape (level, component and code strings), the two shapes CAP receivers accept.
    pub async fn alert(
        &self,
        code: ErrorCode,
        severity: v1::AlertSeverity,
        message: impl Into<String>,
        trace_id: &str,
    ) -> Result<(), Error> {
        let structured = code != ErrorCode::UNSPECIFIED && code.is_known();
        let alert = v1::SystemAlert {
            level: format!("{severity:?}").to_uppercase(),
            message: message.into(),
            component: self.sender_id().to_owned(),
            code: code.to_string(),
            severity: if structured { severity as i32 } else { 0 },
            error_code_enum: if structured { code.as_i32() } else { 0 },
            source_component: if structured {
                self.sender_id().to_owned()
            } else {
                String::new()
            },
            trace_id: trace_id.to_owned(),
            ..Default::default()
        };
        self.publish(subject::ALERT, self.envelope(trace_id, alert))
            .await
            .map(|_| ())
    }
}

pub(crate) async fn ack(msg: &Message) {
    if let Err(e) = msg.ack().await {
        tracing::debug!(error = %e, "ack failed");
    }
}

/// Checks that `id` can be a sender id (non-empty, one subject token, bounded).
pub(crate) fn check_sender_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > cap_proto::validate::MAX_ID_LEN {
        return Err(Error::new(
            ErrorKind::Config,
            "sender id must be 1-512 bytes",
        ));
    }
    cap_proto::subject::worker_jobs(id)
        .map(|_| ())
        .map_err(|e| {
            Error::with_source(ErrorKind::Config, "sender id must be one subject token", e)
        })
}

impl<B: Bus> fmt::Debug for Packets<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packets")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}
