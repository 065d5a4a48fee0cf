//! [`TrustState`] (the session every outgoing packet carries, and whether the worker
//! admits jobs) and [`TrustLifecycle`] (the exchanges over the bus: the handshake at
//! start, renewal before expiry, a new handshake after each reconnect).
//!
//! Failures follow the reference peer: in `warn` mode a trust service that cannot be
//! reached (no responders, timeout) lets the worker carry on without a session; any
//! other failure (a rejection, a bad answer) stops the worker from admitting jobs, as
//! does any failure in `enforce` mode. Two additions: a renewal rejected as
//! `SESSION_INVALID` or `SESSION_REQUIRED` (the scheduler lost the session) is followed
//! by one fresh `ISSUE`, and a worker that stopped admitting tries a fresh `ISSUE`
//! every renewal interval, so it comes back when the scheduler does.

use super::client::{self, RequestOptions, Session};
use super::config::{ResolvedTrust, WorkerTrustMode};
use super::error::{TrustError, TrustErrorKind};
use crate::packets::AuthTokenSource;
use crate::{Error, ErrorKind};
use cap_bus::Bus;
use cap_proto::subject;
use cap_proto::trust::{PURPOSE_ISSUE, PURPOSE_RENEW};
use cap_proto::v1::{self, BusPacket, WorkerHandshakeRejectionReason as Reason};
use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// The worker's trust state, shared by the lifecycle, the packet layer (it is the
/// [`AuthTokenSource`]) and the intake.
#[derive(Debug)]
pub struct TrustState {
    mode: WorkerTrustMode,
    session: Mutex<Option<Session>>,
    admitting: AtomicBool,
    sessions: AtomicU64,
}

impl TrustState {
    /// A state in `mode`, without a session, not admitting yet (except `off`).
    pub fn new(mode: WorkerTrustMode) -> Arc<Self> {
        Arc::new(TrustState {
            mode,
            session: Mutex::new(None),
            admitting: AtomicBool::new(mode == WorkerTrustMode::Off),
            sessions: AtomicU64::new(0),
        })
    }

    /// The mode.
    pub fn mode(&self) -> WorkerTrustMode {
        self.mode
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Session>> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session, if it is still live (an expired one is forgotten).
    pub fn session(&self) -> Option<Session> {
        let mut s = self.lock();
        if s.as_ref().is_some_and(|s| !s.is_live(SystemTime::now())) {
            *s = None;
        }
        s.clone()
    }

    /// The live session's token.
    pub fn token(&self) -> Option<Arc<str>> {
        self.session().map(|s| s.token)
    }

    /// Sessions obtained so far (issues and renewals).
    pub fn sessions_obtained(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Whether jobs are admitted now: always in `off`; in `warn` unless trust failed;
    /// in `enforce` only with a live session.
    pub fn admits(&self) -> bool {
        match self.mode {
            WorkerTrustMode::Off => true,
            WorkerTrustMode::Warn => self.admitting.load(Ordering::Acquire),
            WorkerTrustMode::Enforce => {
                self.admitting.load(Ordering::Acquire) && self.session().is_some()
            }
        }
    }

    pub(crate) fn set_session(&self, s: Session) {
        *self.lock() = Some(s);
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn clear_session(&self) {
        *self.lock() = None;
    }

    pub(crate) fn set_admitting(&self, on: bool) {
        self.admitting.store(on, Ordering::Release);
    }

    /// Ends the session (the worker stops admitting in `enforce` mode).
    pub fn revoke_locally(&self) {
        self.clear_session();
    }
}

impl AuthTokenSource for TrustState {
    fn auth_token(&self) -> Result<Option<Arc<str>>, Error> {
        let token = self.token();
        match self.mode {
            WorkerTrustMode::Off => Ok(None),
            WorkerTrustMode::Warn => Ok(token),
            WorkerTrustMode::Enforce => match token {
                Some(t) if self.admitting.load(Ordering::Acquire) => Ok(Some(t)),
                _ => Err(Error::new(
                    ErrorKind::Trust,
                    "no live session: nothing is sent in enforce mode",
                )),
            },
        }
    }
}

/// Runs the exchanges of one worker on `B`.
pub struct TrustLifecycle<B: Bus> {
    bus: B,
    config: ResolvedTrust,
    capability: v1::Handshake,
    state: Arc<TrustState>,
    exchange: tokio::sync::Mutex<()>,
}

/// Re-announces the worker (publishes its handshake) once trust is re-established.
pub type Announce = Arc<dyn Fn() -> BoxFuture<'static, Result<(), Error>> + Send + Sync>;

impl<B: Bus> TrustLifecycle<B> {
    /// A lifecycle declaring `capability` (the worker's handshake) in its authenticates.
    pub fn new(
        bus: B,
        config: ResolvedTrust,
        capability: v1::Handshake,
        state: Arc<TrustState>,
    ) -> Self {
        TrustLifecycle {
            bus,
            config,
            capability,
            state,
            exchange: tokio::sync::Mutex::new(()),
        }
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<TrustState> {
        &self.state
    }

    /// The first handshake (`ISSUE`). `Ok(true)` with a session; `Ok(false)` in `warn`
    /// mode when the service could not be reached (the worker admits without a
    /// session); an error otherwise (the worker must not start).
    pub async fn authenticate(&self) -> Result<bool, TrustError> {
        if self.config.mode == WorkerTrustMode::Off {
            return Ok(false);
        }
        let r = self.exchange(PURPOSE_ISSUE, None).await;
        self.settle(r, false)
    }

    /// A renewal with the live session's token (`RENEW`); one `ISSUE` when the
    /// scheduler no longer knows the session.
    pub async fn renew(&self) -> Result<bool, TrustError> {
        let Some(session) = self.state.session() else {
            let e = TrustError::new(TrustErrorKind::Expired, "renew requires a live session");
            return self.settle(Err(e), true);
        };
        let r = match self.exchange(PURPOSE_RENEW, Some(session.token)).await {
            Err(e)
                if matches!(
                    e.rejection(),
                    Some(Reason::SessionInvalid | Reason::SessionRequired)
                ) =>
            {
                tracing::warn!("session unknown to the scheduler; authenticating again");
                self.exchange(PURPOSE_ISSUE, None).await
            }
            other => other,
        };
        self.settle(r, true)
    }

    /// After a reconnect: renew a live session, else authenticate again.
    pub async fn reauthenticate(&self) -> Result<bool, TrustError> {
        if self.state.session().is_some() {
            self.renew().await
        } else {
            let r = self.exchange(PURPOSE_ISSUE, None).await;
            self.settle(r, false)
        }
    }

    /// Applies the outcome of an exchange (the peer's `_handle_failure`).
    fn settle(&self, r: Result<Session, TrustError>, renewal: bool) -> Result<bool, TrustError> {
        let e = match r {
            Ok(session) => {
                self.state.set_session(session);
                self.state.set_admitting(true);
                return Ok(true);
            }
            Err(e) => e,
        };
        let enforce = self.config.mode == WorkerTrustMode::Enforce;
        if !e.is_operational() || (renewal && enforce) {
            self.state.clear_session();
        }
        if enforce || !e.is_operational() {
            return Err(e);
        }
        tracing::warn!(error = %e, "worker trust failed; continuing without a new session (warn mode)");
        self.state.set_admitting(true);
        Ok(false)
    }

    async fn exchange(&self, purpose: i32, token: Option<Arc<str>>) -> Result<Session, TrustError> {
        let _one_at_a_time = self.exchange.lock().await;
        let mut last = TrustError::new(TrustErrorKind::Transport, "no attempt");
        for attempt in 0..self.config.retries {
            match self
                .exchange_once(purpose, token.as_deref().unwrap_or(""))
                .await
            {
                Ok(s) => return Ok(s),
                Err(e) if e.is_operational() => {
                    last = e;
                    if attempt + 1 < self.config.retries {
                        tokio::time::sleep(retry_delay(attempt)).await;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn exchange_once(&self, purpose: i32, token: &str) -> Result<Session, TrustError> {
        let c = &self.config;
        let options = RequestOptions::fresh(purpose, SystemTime::now())?;
        let request = client::build_challenge_request(c, &options)?;
        let reply = self
            .request(subject::WORKER_HANDSHAKE_CHALLENGE, &request)
            .await?;
        let verified = client::verify_challenge(c, &request, &reply, SystemTime::now())?;
        let auth =
            client::build_authenticate(c, &verified, &self.capability, token, SystemTime::now())?;
        let reply = self
            .request(subject::WORKER_HANDSHAKE_AUTHENTICATE, &auth)
            .await?;
        client::verify_result(c, &verified, &auth, &reply, SystemTime::now())
    }

    async fn request(&self, subject: &str, packet: &BusPacket) -> Result<bytes::Bytes, TrustError> {
        let bytes = client::encode(packet)?;
        let timeout = self.config.timeout;
        let sent = self.bus.request(subject, bytes.into(), timeout);
        match tokio::time::timeout(timeout + Duration::from_millis(100), sent).await {
            Ok(Ok(msg)) => Ok(msg.into_payload()),
            Ok(Err(e)) => {
                use cap_bus::ErrorKind as K;
                let kind = match e.kind() {
                    K::Closed => TrustErrorKind::Closed,
                    K::PayloadTooLarge | K::InvalidSubject | K::InvalidHeader => {
                        TrustErrorKind::Packet
                    }
                    _ => TrustErrorKind::Transport,
                };
                Err(TrustError::new(kind, e.kind().to_string()))
            }
            Err(_) => Err(TrustError::new(
                TrustErrorKind::Transport,
                "request timed out",
            )),
        }
    }

    /// How long to wait before renewing `session` (the peer's rule: half the remaining
    /// lifetime, or a minute before the end when that is earlier, but not sooner than the
    /// renewal interval, and always before 90 % of the lifetime has passed).
    pub fn renew_wait(&self, session: &Session, now: SystemTime) -> Duration {
        renew_wait(
            session.expires_at.duration_since(now).unwrap_or_default(),
            self.config.renew_min_interval,
        )
    }

    /// Keeps the session alive until `stop`: renews before expiry, re-authenticates each
    /// time `triggers` yields (a reconnect) and then calls `announce`; after a failure
    /// that stopped admissions it tries a fresh handshake every renewal interval.
    pub async fn run(
        self: Arc<Self>,
        triggers: Vec<BoxStream<'static, ()>>,
        announce: Announce,
        stop: CancellationToken,
    ) {
        if self.config.mode == WorkerTrustMode::Off {
            return;
        }
        let mut triggers =
            (!triggers.is_empty()).then(|| futures_util::stream::select_all(triggers));
        loop {
            let wait = match self.state.session() {
                Some(s) => self.renew_wait(&s, SystemTime::now()),
                None => self.config.renew_min_interval,
            };
            let reconnect = async {
                match triggers.as_mut() {
                    Some(t) => t.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {
                    let had = self.state.admits();
                    let r = if self.state.session().is_some() { self.renew().await } else { self.reauthenticate().await };
                    self.after(r, had, &announce).await;
                }
                next = reconnect => match next {
                    None => triggers = None,
                    Some(()) => {
                        tracing::info!("reconnected: authenticating again before re-announcing");
                        if self.config.mode == WorkerTrustMode::Enforce {
                            self.state.set_admitting(false);
                        }
                        let r = self.reauthenticate().await;
                        self.after(r, false, &announce).await;
                    }
                },
            }
        }
    }

    async fn after(&self, r: Result<bool, TrustError>, had: bool, announce: &Announce) {
        match r {
            Ok(_) => {
                // Admissions (re)started: tell the scheduler who we are again.
                if !had
                    && self.state.admits()
                    && let Err(e) = announce().await
                {
                    tracing::warn!(error = %e, "re-announcing failed");
                }
            }
            Err(e) => {
                self.state.set_admitting(false);
                tracing::error!(error = %e, "worker trust failed; admissions stopped");
            }
        }
    }
}

/// The renewal wait for a session with `lifetime` left (see
/// [`TrustLifecycle::renew_wait`]).
pub fn renew_wait(lifetime: Duration, min_interval: Duration) -> Duration {
    let target = (lifetime / 2).min(lifetime.saturating_sub(Duration::from_secs(60)));
    let target = target.max(min_interval);
    target.min(lifetime.mul_f64(0.9).max(Duration::from_millis(1)))
}

fn retry_delay(attempt: u32) -> Duration {
    Duration::from_secs_f64((0.1 * 3f64.powi(attempt.min(10) as i32)).min(5.0))
}

impl<B: Bus> std::fmt::Debug for TrustLifecycle<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustLifecycle")
            .field("config", &self.config)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_timing_follows_the_peer() {
        let s = Duration::from_secs;
        // 15 minutes: half of it.
        assert_eq!(renew_wait(s(900), s(30)), s(450));
        // 100 s: a minute before the end (40 s) is earlier than half (50 s).
        assert_eq!(renew_wait(s(100), s(30)), s(40));
        // 50 s: both rules say "now"; the interval wins, capped at 90 %.
        assert_eq!(renew_wait(s(50), s(30)), s(30));
        assert_eq!(renew_wait(s(10), s(30)), s(9));
        assert_eq!(renew_wait(Duration::ZERO, s(30)), Duration::from_millis(1));
        assert_eq!(retry_delay(0), Duration::from_millis(100));
        assert_eq!(retry_delay(9), s(5));
    }

    #[test]
    fn tokens_by_mode() {
        let session = Session {
            token: Arc::from("tok"),
            issued_at: SystemTime::now(),
            expires_at: SystemTime::now() + Duration::from_secs(60),
        };
        let off = TrustState::new(WorkerTrustMode::Off);
        assert!(off.admits());
        assert_eq!(off.auth_token().unwrap(), None);

        let warn = TrustState::new(WorkerTrustMode::Warn);
        assert!(!warn.admits());
        assert_eq!(warn.auth_token().unwrap(), None);
        warn.set_admitting(true);
        assert!(warn.admits());

        let enforce = TrustState::new(WorkerTrustMode::Enforce);
        assert_eq!(enforce.auth_token().unwrap_err().kind(), ErrorKind::Trust);
        enforce.set_session(session.clone());
        assert!(
            !enforce.admits(),
            "a session is not enough before admission starts"
        );
        enforce.set_admitting(true);
        assert!(enforce.admits());
        assert_eq!(enforce.auth_token().unwrap().as_deref(), Some("tok"));
        enforce.revoke_locally();
        assert!(!enforce.admits());
        let expired = Session {
            expires_at: SystemTime::now() - Duration::from_secs(1),
            ..session
        };
        enforce.set_session(expired);
        assert!(enforce.session().is_none() && !enforce.admits());
        assert_eq!(enforce.sessions_obtained(), 2);
    }
}
