//! [`TrustServer`]: the scheduler's side of the worker trust handshake, as a function of
//! (received bytes, now, store) → signed reply bytes.
//!
//! A challenge request is checked (size, strict decoding, no unknown fields, the 2.17
//! structural rules, audience, the registered proof key and its identity, the signature
//! in strict DER, the clock, a request id not seen before) and answered with a signed
//! challenge carrying a 32-byte server nonce, remembered in the store. An authenticate
//! is checked the same way, its challenge must be one this service issued (same digest),
//! unexpired and not used before (consumed atomically in the store), and a renewal must
//! carry the live session of the same worker; the answer is a signed result with a new
//! session token in `BusPacket.auth_token`. Every refusal is a signed result with the
//! protocol's reason:
//!
//! | reason | when |
//! |---|---|
//! | `INVALID_REQUEST` | undecodable, oversized, unknown fields, wrong phase, broken structure |
//! | `AUTHENTICATION_FAILED` | bad signature, unknown key, audience, identity, challenge not issued here or altered (nonce) |
//! | `REPLAY_DETECTED` | a request id or challenge used before |
//! | `CLOCK_SKEW` | `created_at` more than a minute off |
//! | `CHALLENGE_EXPIRED` | the challenge's lifetime is over |
//! | `SESSION_REQUIRED` | a renewal without a session token |
//! | `SESSION_INVALID` | a renewal with a token that is not a live session of this worker |
//! | `UNSUPPORTED_VERSION` | `protocol_version` other than 1 (envelope or payload) |
//! | `INTERNAL_ERROR` | the store failed |

use super::error::{Error, ErrorKind};
use super::keys::{WorkerKey, WorkerKeys};
use super::refusal::{Echo, Reject, decode, reject, structure};
use super::session::{self, SessionRecord, hex, random_bytes, token_id};
use super::store::{Consumed, TrustStore};
use bytes::Bytes;
use cap_proto::trust as rules;
use cap_proto::v1::{
    self, BusPacket, WorkerHandshakeRejectionReason as Reason, bus_packet::Payload,
};
use cap_proto::{PayloadKind, Timestamp, canonical};
use cap_sign::{Signer, Verifier};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default challenge lifetime.
pub const DEFAULT_CHALLENGE_LIFETIME: Duration = Duration::from_secs(30);
/// Default session lifetime.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(15 * 60);
/// Default time a renewed token stays valid (for packets already on their way).
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(10);

const MAX_SKEW: Duration = Duration::from_secs(rules::MAX_SKEW_SECS.unsigned_abs());

/// Settings of a trust server.
#[derive(Clone)]
pub struct TrustServerConfig {
    /// The scheduler's sender id (workers expect it).
    pub scheduler_id: String,
    /// The id of the scheduler's key (`server_key_id`; workers look the key up by it).
    pub server_key_id: String,
    /// The scheduler's key.
    pub signer: Arc<dyn Signer>,
    /// The registered worker keys.
    pub keys: WorkerKeys,
    /// The audience (default `cordum-scheduler`).
    pub audience: String,
    /// Challenge lifetime (default 30 s, at most 60 s).
    pub challenge_lifetime: Duration,
    /// Session lifetime (default 15 min).
    pub session_ttl: Duration,
    /// How long a renewed token stays valid (default 10 s).
    pub rotation_grace: Duration,
}

impl TrustServerConfig {
    /// Settings with the defaults.
    pub fn new(
        scheduler_id: impl Into<String>,
        server_key_id: impl Into<String>,
        signer: Arc<dyn Signer>,
        keys: WorkerKeys,
    ) -> Self {
        TrustServerConfig {
            scheduler_id: scheduler_id.into(),
            server_key_id: server_key_id.into(),
            signer,
            keys,
            audience: rules::AUDIENCE.to_owned(),
            challenge_lifetime: DEFAULT_CHALLENGE_LIFETIME,
            session_ttl: DEFAULT_SESSION_TTL,
            rotation_grace: DEFAULT_ROTATION_GRACE,
        }
    }

    fn check(&self) -> Result<(), Error> {
        let ids = [&self.scheduler_id, &self.server_key_id, &self.audience];
        if !ids.iter().all(|v| rules::is_canonical_text(v)) {
            return Err(Error::new(
                ErrorKind::Config,
                "scheduler id, key id and audience must be printable ASCII without spaces",
            ));
        }
        if self.challenge_lifetime.is_zero() || self.challenge_lifetime > MAX_SKEW {
            return Err(Error::new(
                ErrorKind::Config,
                "challenge lifetime must be within (0, 60 s]",
            ));
        }
        if self.session_ttl < Duration::from_secs(1) {
            return Err(Error::new(
                ErrorKind::Config,
                "session lifetime must be at least 1 s",
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for TrustServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustServerConfig")
            .field("scheduler_id", &self.scheduler_id)
            .field("server_key_id", &self.server_key_id)
            .field("keys", &self.keys.len())
            .field("audience", &self.audience)
            .field("challenge_lifetime", &self.challenge_lifetime)
            .field("session_ttl", &self.session_ttl)
            .finish_non_exhaustive()
    }
}

/// What a request led to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A challenge was issued to the worker.
    Challenged {
        /// The worker.
        worker_id: String,
    },
    /// A session was issued (or renewed).
    Accepted {
        /// The worker.
        worker_id: String,
        /// Whether it renewed a session.
        renewal: bool,
    },
    /// The request was refused with this reason.
    Rejected(Reason),
}

/// A signed reply and what it says.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The reply's wire bytes.
    pub bytes: Bytes,
    /// The outcome.
    pub outcome: Outcome,
}

/// Counters of a trust server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustStats {
    /// Challenges issued.
    pub challenges: u64,
    /// Sessions issued (not counting renewals).
    pub sessions: u64,
    /// Sessions renewed.
    pub renewals: u64,
    /// Refusals by reason number (index 1-9).
    pub rejected: [u64; 10],
}

#[derive(Default)]
struct Counters {
    challenges: AtomicU64,
    sessions: AtomicU64,
    renewals: AtomicU64,
    rejected: [AtomicU64; 10],
}

fn ts(t: SystemTime) -> Timestamp {
    cap_proto::packet::timestamp(t)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn skewed(t: Option<&Timestamp>, now: SystemTime) -> bool {
    let Some(t) = t else { return true };
    let delta = rules::nanos_of(t) - rules::nanos_of(&ts(now));
    delta.abs() > i128::from(rules::MAX_SKEW_SECS) * 1_000_000_000
}

/// The scheduler's trust service.
pub struct TrustServer {
    config: TrustServerConfig,
    keys: std::sync::RwLock<WorkerKeys>,
    store: Arc<dyn TrustStore>,
    counters: Counters,
}

impl std::fmt::Debug for TrustServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustServer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TrustServer {
    /// A server on `store`.
    pub fn new(config: TrustServerConfig, store: Arc<dyn TrustStore>) -> Result<Self, Error> {
        config.check()?;
        Ok(TrustServer {
            keys: std::sync::RwLock::new(config.keys.clone()),
            config,
            store,
            counters: Counters::default(),
        })
    }

    /// The settings (with the keys registered at start; see [`keys`](Self::keys)).
    pub fn config(&self) -> &TrustServerConfig {
        &self.config
    }

    /// The worker keys registered now.
    pub fn keys(&self) -> WorkerKeys {
        self.keys.read().map(|k| k.clone()).unwrap_or_default()
    }

    /// Replaces the registered worker keys (a removed key can no longer authenticate or
    /// renew; revoke its sessions with [`revoke_worker`](Self::revoke_worker) to end
    /// them at once).
    pub fn set_keys(&self, keys: WorkerKeys) {
        match self.keys.write() {
            Ok(mut k) => *k = keys,
            Err(p) => *p.into_inner() = keys,
        }
    }

    pub(super) fn key(&self, id: &str) -> Option<WorkerKey> {
        self.keys.read().ok().and_then(|k| k.get(id).cloned())
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn TrustStore> {
        &self.store
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TrustStats {
        let mut rejected = [0; 10];
        for (out, c) in rejected.iter_mut().zip(&self.counters.rejected) {
            *out = c.load(Ordering::Relaxed);
        }
        TrustStats {
            challenges: self.counters.challenges.load(Ordering::Relaxed),
            sessions: self.counters.sessions.load(Ordering::Relaxed),
            renewals: self.counters.renewals.load(Ordering::Relaxed),
            rejected,
        }
    }

    /// The live session of `token`, if any.
    pub async fn session(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<Option<SessionRecord>, Error> {
        self.store.session(&token_id(token), unix_ms(now)).await
    }

    /// Ends the session of `token`; `true` if it existed.
    pub async fn revoke_token(&self, token: &str) -> Result<bool, Error> {
        self.store.revoke_session(&token_id(token)).await
    }

    /// Ends every session of `worker_id`; how many there were.
    pub async fn revoke_worker(&self, worker_id: &str) -> Result<usize, Error> {
        self.store.revoke_worker(worker_id).await
    }

    /// Answers a request on `subject` (one of the two handshake subjects).
    pub async fn handle(&self, subject: &str, raw: &[u8], now: SystemTime) -> Result<Reply, Error> {
        if subject == cap_proto::subject::WORKER_HANDSHAKE_AUTHENTICATE {
            self.authenticate(raw, now).await
        } else {
            self.challenge(raw, now).await
        }
    }

    /// Answers a challenge request: a signed challenge, or a signed refusal.
    pub async fn challenge(&self, raw: &[u8], now: SystemTime) -> Result<Reply, Error> {
        let packet = match decode(raw) {
            Ok(p) => p,
            Err(e) => {
                let (r, p) = *e;
                return self.refuse(p.as_ref(), r, now);
            }
        };
        match self.issue(&packet.0, &packet.1, now).await {
            Ok(reply) => Ok(reply),
            Err(r) => self.refuse(Some(&packet.0), r, now),
        }
    }

    /// Answers an authenticate: a signed result with a session, or a signed refusal.
    pub async fn authenticate(&self, raw: &[u8], now: SystemTime) -> Result<Reply, Error> {
        let packet = match decode(raw) {
            Ok(p) => p,
            Err(e) => {
                let (r, p) = *e;
                return self.refuse(p.as_ref(), r, now);
            }
        };
        match self.accept(&packet.0, &packet.1, now).await {
            Ok(reply) => Ok(reply),
            Err(r) => self.refuse(Some(&packet.0), r, now),
        }
    }

    async fn issue(
        &self,
        p: &BusPacket,
        transcript: &[u8],
        now: SystemTime,
    ) -> Result<Reply, Reject> {
        structure(p, PayloadKind::WorkerHandshakeChallengeRequest)?;
        let Some(Payload::WorkerHandshakeChallengeRequest(r)) = &p.payload else {
            return Err(reject(Reason::InvalidRequest, "not a challenge request"));
        };
        if r.audience != self.config.audience {
            return Err(reject(Reason::AuthenticationFailed, "wrong audience"));
        }
        let key = self.verified(&r.proof_key_id, transcript, &p.signature)?;
        if r.worker_id != key.worker_id {
            return Err(reject(
                Reason::AuthenticationFailed,
                "worker is not bound to the key",
            ));
        }
        if skewed(p.created_at.as_ref(), now) {
            return Err(reject(
                Reason::ClockSkew,
                "created_at more than a minute off",
            ));
        }
        let now_ms = unix_ms(now);
        let seen = hex(&Sha256::digest(format!(
            "{}\0{}",
            r.proof_key_id, r.request_id
        )));
        match self.store.remember(&seen, MAX_SKEW * 2, now_ms).await {
            Ok(true) => {}
            Ok(false) => return Err(reject(Reason::ReplayDetected, "request id seen before")),
            Err(e) => return Err(self.store_failed(e)),
        }
        let internal = |_| reject(Reason::InternalError, "RNG failed");
        let challenge = v1::WorkerHandshakeChallenge {
            request_id: r.request_id.clone(),
            challenge_id: hex(&random_bytes(16).map_err(internal)?),
            trace_id: r.trace_id.clone(),
            worker_id: r.worker_id.clone(),
            agent_id: key.agent_id.clone(),
            tenant_id: key.tenant_id.clone(),
            proof_key_id: r.proof_key_id.clone(),
            proof_algorithm: rules::PROOF_ALGORITHM_P256,
            server_key_id: self.config.server_key_id.clone(),
            audience: r.audience.clone(),
            purpose: r.purpose,
            client_nonce: r.client_nonce.clone(),
            server_nonce: random_bytes(rules::NONCE_SIZE).map_err(internal)?,
            protocol_version: rules::PROTOCOL_VERSION,
            sdk_version: r.sdk_version.clone(),
            issued_at: Some(ts(now)),
            expires_at: Some(ts(now + self.config.challenge_lifetime)),
        };
        let digest: [u8; 32] = Sha256::digest(canonical::to_bytes(&challenge)).into();
        let ttl = self.config.challenge_lifetime + MAX_SKEW;
        if let Err(e) = self
            .store
            .put_challenge(&challenge.challenge_id, digest, ttl, now_ms)
            .await
        {
            return Err(self.store_failed(e));
        }
        let worker_id = challenge.worker_id.clone();
        let packet = BusPacket::new(
            r.trace_id.clone(),
            self.config.scheduler_id.clone(),
            ts(now),
            challenge,
        );
        let bytes = self
            .seal(packet)
            .map_err(|_| reject(Reason::InternalError, "signing failed"))?;
        self.counters.challenges.fetch_add(1, Ordering::Relaxed);
        Ok(Reply {
            bytes,
            outcome: Outcome::Challenged { worker_id },
        })
    }

    async fn accept(
        &self,
        p: &BusPacket,
        transcript: &[u8],
        now: SystemTime,
    ) -> Result<Reply, Reject> {
        structure(p, PayloadKind::WorkerHandshakeAuthenticate)?;
        let Some(Payload::WorkerHandshakeAuthenticate(v1::WorkerHandshakeAuthenticate {
            challenge: Some(c),
            ..
        })) = &p.payload
        else {
            return Err(reject(Reason::InvalidRequest, "not an authenticate"));
        };
        if c.audience != self.config.audience {
            return Err(reject(Reason::AuthenticationFailed, "wrong audience"));
        }
        if c.server_key_id != self.config.server_key_id {
            return Err(reject(Reason::AuthenticationFailed, "not our server key"));
        }
        let key = self.verified(&c.proof_key_id, transcript, &p.signature)?;
        if c.worker_id != key.worker_id
            || c.agent_id != key.agent_id
            || c.tenant_id != key.tenant_id
        {
            return Err(reject(
                Reason::AuthenticationFailed,
                "identity is not bound to the key",
            ));
        }
        if skewed(p.created_at.as_ref(), now) {
            return Err(reject(
                Reason::ClockSkew,
                "created_at more than a minute off",
            ));
        }
        let expires = c.expires_at.as_ref().map(rules::nanos_of).unwrap_or(0);
        let now_n = rules::nanos_of(&ts(now));
        if now_n >= expires {
            return Err(reject(Reason::ChallengeExpired, "challenge lifetime over"));
        }
        let now_ms = unix_ms(now);
        let digest: [u8; 32] = Sha256::digest(canonical::to_bytes(c)).into();
        let left = Duration::from_nanos(u64::try_from(expires - now_n).unwrap_or(u64::MAX));
        match self
            .store
            .consume_challenge(&c.challenge_id, digest, left + MAX_SKEW, now_ms)
            .await
        {
            Ok(Consumed::Fresh) => {}
            Ok(Consumed::Replayed) => {
                return Err(reject(Reason::ReplayDetected, "challenge used before"));
            }
            Ok(Consumed::Unknown) => {
                return Err(reject(
                    Reason::AuthenticationFailed,
                    "challenge not issued here",
                ));
            }
            Ok(Consumed::Mismatch) => {
                return Err(reject(
                    Reason::AuthenticationFailed,
                    "challenge altered (nonce)",
                ));
            }
            Err(e) => return Err(self.store_failed(e)),
        }
        let token =
            session::new_token().map_err(|_| reject(Reason::InternalError, "RNG failed"))?;
        let expires_at = now + self.config.session_ttl;
        let record = SessionRecord {
            worker_id: c.worker_id.clone(),
            agent_id: c.agent_id.clone(),
            tenant_id: c.tenant_id.clone(),
            proof_key_id: c.proof_key_id.clone(),
            issued_at_ms: now_ms,
            expires_at_ms: unix_ms(expires_at),
        };
        let renewal = c.purpose == rules::PURPOSE_RENEW;
        let stored = if renewal {
            let old_id = token_id(&p.auth_token);
            let old = match self.store.session(&old_id, now_ms).await {
                Ok(Some(old)) => old,
                Ok(None) => {
                    return Err(reject(
                        Reason::SessionInvalid,
                        "no live session for the token",
                    ));
                }
                Err(e) => return Err(self.store_failed(e)),
            };
            if old.worker_id != record.worker_id
                || old.proof_key_id != record.proof_key_id
                || old.tenant_id != record.tenant_id
            {
                return Err(reject(
                    Reason::SessionInvalid,
                    "the session belongs to someone else",
                ));
            }
            let grace = now_ms.saturating_add(
                u64::try_from(self.config.rotation_grace.as_millis()).unwrap_or(u64::MAX),
            );
            let short = SessionRecord {
                expires_at_ms: old.expires_at_ms.min(grace),
                ..old
            };
            self.store
                .rotate_session(&old_id, &short, &token_id(&token), &record, now_ms)
                .await
        } else {
            self.store
                .put_session(&token_id(&token), &record, now_ms)
                .await
        };
        if let Err(e) = stored {
            return Err(self.store_failed(e));
        }
        let result = v1::WorkerHandshakeResult {
            challenge: Some(c.clone()),
            accepted: true,
            rejection_reason: Reason::Unspecified as i32,
            token_expires_at: Some(ts(expires_at)),
            issued_at: Some(ts(now)),
        };
        let mut packet = BusPacket::new(
            c.trace_id.clone(),
            self.config.scheduler_id.clone(),
            ts(now),
            result,
        );
        packet.auth_token = token;
        let bytes = self
            .seal(packet)
            .map_err(|_| reject(Reason::InternalError, "signing failed"))?;
        let counter = if renewal {
            &self.counters.renewals
        } else {
            &self.counters.sessions
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::info!(worker_id = %record.worker_id, renewal, "worker session issued");
        Ok(Reply {
            bytes,
            outcome: Outcome::Accepted {
                worker_id: record.worker_id,
                renewal,
            },
        })
    }

    /// The registered key `id` after checking `signature` (strict DER) over `transcript`.
    fn verified(&self, id: &str, transcript: &[u8], signature: &[u8]) -> Result<WorkerKey, Reject> {
        let key = self
            .key(id)
            .ok_or_else(|| reject(Reason::AuthenticationFailed, "unknown proof key"))?;
        if !rules::is_strict_der(signature) {
            return Err(reject(
                Reason::AuthenticationFailed,
                "signature is not strict DER",
            ));
        }
        key.key
            .verify(transcript, signature)
            .map_err(|_| reject(Reason::AuthenticationFailed, "signature does not verify"))?;
        Ok(key)
    }

    fn store_failed(&self, e: Error) -> Reject {
        tracing::error!(error = %e, "trust store failed");
        reject(Reason::InternalError, "store unavailable")
    }

    fn seal(&self, mut packet: BusPacket) -> Result<Bytes, Error> {
        cap_sign::transcript::sign_handshake(&mut packet, self.config.signer.as_ref())
            .map_err(|e| Error::new(ErrorKind::Sign, e.to_string()))?;
        Ok(cap_proto::packet::encode(&packet).into())
    }

    /// A signed refusal. Its challenge is the received one when that is well formed,
    /// else one made up from what was received (identities only when they are canonical
    /// text), so the requester can read the reason.
    fn refuse(&self, p: Option<&BusPacket>, r: Reject, now: SystemTime) -> Result<Reply, Error> {
        self.counters.rejected[r.reason as usize].fetch_add(1, Ordering::Relaxed);
        let worker = p.map(|p| cap_runtime::packets::inbound::sanitize(&p.sender_id));
        tracing::info!(
            reason = reason_name(r.reason),
            why = r.why,
            sender_id = worker.as_deref().unwrap_or(""),
            "worker handshake refused"
        );
        let received = p.and_then(|p| match &p.payload {
            Some(Payload::WorkerHandshakeAuthenticate(v1::WorkerHandshakeAuthenticate {
                challenge: Some(c),
                ..
            })) if rules::challenge(p, c, false).is_ok() => Some(c.clone()),
            _ => None,
        });
        let challenge = match received {
            Some(c) => c,
            None => self.synthetic_for(p.map(Echo::of).unwrap_or_default(), now)?,
        };
        let result = v1::WorkerHandshakeResult {
            challenge: Some(challenge.clone()),
            accepted: false,
            rejection_reason: r.reason as i32,
            token_expires_at: None,
            issued_at: Some(ts(now)),
        };
        let packet = BusPacket::new(
            challenge.trace_id,
            self.config.scheduler_id.clone(),
            ts(now),
            result,
        );
        Ok(Reply {
            bytes: self.seal(packet)?,
            outcome: Outcome::Rejected(r.reason),
        })
    }
}

/// The protocol name of a reason (`AUTHENTICATION_FAILED`).
pub fn reason_name(r: Reason) -> &'static str {
    cap_runtime::trust::reason_name(r as i32)
}
