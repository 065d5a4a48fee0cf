//! [`Gate`]: worker trust enforcement on inbound packets, before they become scheduler
//! events.
//!
//! Handshakes, heartbeats, results and progress come from workers. With `warn` or
//! `enforce`, each must carry in `auth_token` a live session of its sender, and the
//! worker it names (heartbeat `worker_id`, handshake `component_id`, result
//! `worker_id`) must be that sender. Packets from the scheduler's own ids ([`Gate::peer`]:
//! its results, for example, come back on `sys.job.result`) pass when their legacy
//! signature verifies with the peer's key. Job requests and cancels come from clients
//! and are not gated.
//!
//! `off`: everything passes. `warn`: violations are logged and counted, packets pass.
//! `enforce`: violations are dropped, counted, and alerted on `sys.alert` naming the
//! sender (at most one alert per sender every ten seconds). A sender that never
//! authenticated therefore never registers, gets no job routed to it, and cannot end
//! jobs.
//!
//! Session lookups are cached for [`DEFAULT_CACHE_TTL`] (a revoked session is refused
//! at most that long after revocation).

use super::server::TrustServer;
use super::session::token_id;
use cap_bus::Bus;
use cap_proto::v1::{self, BusPacket, bus_packet::Payload};
use cap_proto::{ErrorCode, subject};
use cap_runtime::packets::Packets;
use cap_runtime::packets::inbound::sanitize;
use cap_runtime::trust::WorkerTrustMode;
use cap_sign::{KeyRing, PublicKey};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Default lifetime of a cached session lookup.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(1);
/// Shortest time between two alerts about one sender.
pub const ALERT_INTERVAL: Duration = Duration::from_secs(10);
const MAX_TRACKED: usize = 10_000;

/// Why a packet broke the trust rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Violation {
    /// No `auth_token`.
    MissingSession,
    /// The token is not a live session.
    UnknownSession,
    /// The session belongs to another worker.
    SenderMismatch,
    /// The payload names another worker than the sender.
    IdentityMismatch,
    /// The store could not be asked (counted as a violation in `enforce`: fail closed).
    StoreUnavailable,
    /// A packet claiming a scheduler id whose legacy signature does not verify.
    PeerSignature,
}

impl Violation {
    /// A short name for logs, alerts and counters.
    pub fn name(self) -> &'static str {
        match self {
            Violation::MissingSession => "missing_session",
            Violation::UnknownSession => "unknown_session",
            Violation::SenderMismatch => "sender_mismatch",
            Violation::IdentityMismatch => "identity_mismatch",
            Violation::StoreUnavailable => "store_unavailable",
            Violation::PeerSignature => "peer_signature",
        }
    }

    const ALL: [Violation; 6] = [
        Violation::MissingSession,
        Violation::UnknownSession,
        Violation::SenderMismatch,
        Violation::IdentityMismatch,
        Violation::StoreUnavailable,
        Violation::PeerSignature,
    ];
}

/// What to do with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not subject to the rules, or within them.
    Accept,
    /// Broke a rule; `warn` mode lets it through.
    Warn(Violation),
    /// Broke a rule; `enforce` mode drops it.
    Reject(Violation),
}

/// Counters of a gate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GateStats {
    /// Packets checked and within the rules.
    pub accepted: u64,
    /// Violations let through (`warn`).
    pub warned: u64,
    /// Violations dropped (`enforce`).
    pub rejected: u64,
    /// Violations by kind.
    pub by_violation: Vec<(&'static str, u64)>,
    /// Alerts published.
    pub alerts: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    warned: AtomicU64,
    rejected: AtomicU64,
    by: [AtomicU64; 6],
    alerts: AtomicU64,
}

/// The enforcement point. Cheap to share (`Arc`).
pub struct Gate {
    mode: WorkerTrustMode,
    server: Arc<TrustServer>,
    peers: KeyRing,
    cache_ttl: Duration,
    cache: Mutex<HashMap<String, (String, u64, Instant)>>,
    alerted: Mutex<HashMap<String, Instant>>,
    counters: Counters,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("mode", &self.mode)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The worker a packet speaks for, for the payloads that are gated.
fn gated(p: &BusPacket) -> Option<Option<&str>> {
    match &p.payload {
        Some(Payload::Heartbeat(h)) => Some(Some(&h.worker_id)),
        Some(Payload::Handshake(h)) => Some(Some(&h.component_id)),
        Some(Payload::JobResult(r)) => Some(Some(&r.worker_id)),
        Some(Payload::JobProgress(_)) => Some(None),
        _ => None,
    }
}

impl Gate {
    /// A gate in `mode` looking sessions up in `server`'s store.
    pub fn new(mode: WorkerTrustMode, server: Arc<TrustServer>) -> Self {
        Gate {
            mode,
            server,
            peers: KeyRing::new(),
            cache_ttl: DEFAULT_CACHE_TTL,
            cache: Mutex::new(HashMap::new()),
            alerted: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        }
    }

    /// Lets packets from `sender_id` (a scheduler instance) through without a session
    /// when their legacy signature verifies with `key`.
    pub fn peer(mut self, sender_id: impl Into<String>, key: PublicKey) -> Self {
        self.peers.add(sender_id, key);
        self
    }

    /// How long a session lookup is reused (default 1 s; zero: never).
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// The mode.
    pub fn mode(&self) -> WorkerTrustMode {
        self.mode
    }

    /// The trust server whose sessions are checked.
    pub fn server(&self) -> &Arc<TrustServer> {
        &self.server
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> GateStats {
        let c = &self.counters;
        GateStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            warned: c.warned.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            by_violation: Violation::ALL
                .iter()
                .zip(&c.by)
                .map(|(v, n)| (v.name(), n.load(Ordering::Relaxed)))
                .collect(),
            alerts: c.alerts.load(Ordering::Relaxed),
        }
    }

    /// Decides about one packet (`raw`: its bytes as received, for peers' signatures).
    pub async fn check(&self, raw: &[u8], packet: &BusPacket, now: SystemTime) -> Decision {
        if self.mode == WorkerTrustMode::Off {
            return Decision::Accept;
        }
        let Some(named) = gated(packet) else {
            return Decision::Accept;
        };
        let verdict = self.violation(raw, packet, named, now).await;
        let decision = match (verdict, self.mode) {
            (None, _) => Decision::Accept,
            (Some(v), WorkerTrustMode::Enforce) => Decision::Reject(v),
            (Some(v), _) => Decision::Warn(v),
        };
        let c = &self.counters;
        match decision {
            Decision::Accept => c.accepted.fetch_add(1, Ordering::Relaxed),
            Decision::Warn(v) => {
                c.by[v as usize].fetch_add(1, Ordering::Relaxed);
                c.warned.fetch_add(1, Ordering::Relaxed)
            }
            Decision::Reject(v) => {
                c.by[v as usize].fetch_add(1, Ordering::Relaxed);
                c.rejected.fetch_add(1, Ordering::Relaxed)
            }
        };
        decision
    }

    async fn violation(
        &self,
        raw: &[u8],
        p: &BusPacket,
        named: Option<&str>,
        now: SystemTime,
    ) -> Option<Violation> {
        if self.peers.contains(&p.sender_id) {
            let ok = cap_proto::canonical::signing_bytes(raw)
                .ok()
                .is_some_and(|bytes| {
                    self.peers
                        .verify(&p.sender_id, &bytes, &p.signature)
                        .is_ok()
                });
            return (!ok).then_some(Violation::PeerSignature);
        }
        if named.is_some_and(|w| w != p.sender_id) {
            return Some(Violation::IdentityMismatch);
        }
        if p.auth_token.is_empty() {
            return Some(Violation::MissingSession);
        }
        // Cached by the token itself: a hit costs no hashing.
        let token = p.auth_token.as_str();
        let now_ms = unix_ms(now);
        let cached = if self.cache_ttl.is_zero() {
            None
        } else {
            self.cache
                .lock()
                .ok()
                .and_then(|c| c.get(token).cloned())
                .filter(|(_, _, at)| at.elapsed() < self.cache_ttl)
        };
        let (worker, expires) = match cached {
            Some((w, e, _)) => (w, e),
            None => match self.server.store().session(&token_id(token), now_ms).await {
                Ok(Some(r)) => {
                    if let Ok(mut c) = self.cache.lock() {
                        if c.len() >= MAX_TRACKED {
                            c.clear();
                        }
                        c.insert(
                            token.to_owned(),
                            (r.worker_id.clone(), r.expires_at_ms, Instant::now()),
                        );
                    }
                    (r.worker_id, r.expires_at_ms)
                }
                Ok(None) => return Some(Violation::UnknownSession),
                Err(e) => {
                    tracing::warn!(error = %e, "trust store unavailable for a session lookup");
                    return Some(Violation::StoreUnavailable);
                }
            },
        };
        if now_ms >= expires {
            return Some(Violation::UnknownSession);
        }
        (worker != p.sender_id).then_some(Violation::SenderMismatch)
    }

    /// Forgets cached lookups (after revoking sessions, to apply it at once here).
    pub fn clear_cache(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    /// The call site of the scheduler: decides, logs, counts and, for a dropped
    /// packet, alerts on `sys.alert` (rate-limited per sender). `true`: hand the packet
    /// to the scheduler.
    pub async fn admit<B: Bus>(
        &self,
        packets: &Packets<B>,
        raw: &[u8],
        packet: &BusPacket,
    ) -> bool {
        let decision = self.check(raw, packet, SystemTime::now()).await;
        let (violation, enforced) = match decision {
            Decision::Accept => return true,
            Decision::Warn(v) => (v, false),
            Decision::Reject(v) => (v, true),
        };
        let sender = sanitize(&packet.sender_id);
        let kind = packet.kind().map(|k| k.name()).unwrap_or("none");
        tracing::warn!(
            sender_id = %sender,
            payload = kind,
            violation = violation.name(),
            enforced,
            "packet without a valid worker trust session"
        );
        if enforced && self.should_alert(&sender) {
            let alert = alert(packets.sender_id(), &sender, kind, violation);
            let trace = cap_runtime::id::new_trace_id();
            match packets
                .publish(subject::ALERT, packets.envelope(&trace, alert))
                .await
            {
                Ok(_) => {
                    self.counters.alerts.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, "trust alert publish failed"),
            }
        }
        !enforced
    }

    fn should_alert(&self, sender: &str) -> bool {
        let Ok(mut seen) = self.alerted.lock() else {
            return false;
        };
        let now = Instant::now();
        match seen.get(sender) {
            Some(at) if now.duration_since(*at) < ALERT_INTERVAL => false,
            _ => {
                if seen.len() >= MAX_TRACKED {
                    seen.clear();
                }
                seen.insert(sender.to_owned(), now);
                true
            }
        }
    }
}

/// The alert about a dropped packet: CRITICAL, 103, naming the (sanitised) sender.
pub fn alert(scheduler_id: &str, sender: &str, payload: &str, v: Violation) -> v1::SystemAlert {
    let code = ErrorCode::PROTOCOL_SIGNATURE_INVALID;
    v1::SystemAlert {
        level: "CRITICAL".into(),
        message: format!(
            "worker trust: dropped {payload} from sender {sender} ({})",
            v.name()
        ),
        component: scheduler_id.to_owned(),
        code: code.to_string(),
        severity: v1::AlertSeverity::Critical as i32,
        error_code_enum: code.as_i32(),
        source_component: scheduler_id.to_owned(),
        details: [
            ("sender_id".to_string(), sender.to_owned()),
            ("violation".to_string(), v.name().to_owned()),
            ("payload".to_string(), payload.to_owned()),
        ]
        .into(),
        ..Default::default()
    }
}
