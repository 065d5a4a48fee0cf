//! [`WorkerTrustConfig`]: the worker's trust mode, its proof key and the scheduler it
//! trusts; [`WorkerTrustMode`]: `off | warn | enforce`.

use super::error::{TrustError, TrustErrorKind};
use cap_proto::trust::{self as rules, is_canonical_text};
use cap_sign::{PublicKey, Signer};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Default time allowed for one request to the trust service.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default attempts of one exchange when the trust service is unreachable.
pub const DEFAULT_RETRIES: u32 = 3;
/// Most attempts allowed.
pub const MAX_RETRIES: u32 = 10;
/// Default shortest wait between renewals.
pub const DEFAULT_RENEW_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// The tenant of a worker that names none.
pub const DEFAULT_TENANT: &str = "default";
/// The environment variable the reference peer reads its mode from.
pub const ENV_MODE: &str = "CORDUM_SDK_HANDSHAKE";

/// What the worker does about the trust handshake (the reference peer's modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WorkerTrustMode {
    /// No handshake; packets are handled as without trust (today's behaviour).
    #[default]
    Off,
    /// Handshake and attach the session token; when the trust service cannot be
    /// reached, carry on without a session. Only packets signed by the expected
    /// scheduler are accepted.
    Warn,
    /// No session, no jobs and no packets out: the worker starts only once
    /// authenticated, and stops admitting when its session is lost. Only packets
    /// signed by the expected scheduler are accepted.
    Enforce,
}

impl WorkerTrustMode {
    /// The mode's name (`off`, `warn`, `enforce`).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerTrustMode::Off => "off",
            WorkerTrustMode::Warn => "warn",
            WorkerTrustMode::Enforce => "enforce",
        }
    }
}

impl fmt::Display for WorkerTrustMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkerTrustMode {
    type Err = TrustError;

    /// Only the explicit names, ignoring case and surrounding spaces.
    fn from_str(s: &str) -> Result<Self, TrustError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(WorkerTrustMode::Off),
            "warn" => Ok(WorkerTrustMode::Warn),
            "enforce" => Ok(WorkerTrustMode::Enforce),
            _ => Err(TrustError::new(
                TrustErrorKind::Config,
                "mode must be off, warn or enforce",
            )),
        }
    }
}

/// The worker's side of the trust handshake: its mode, its proof key, the identities
/// the scheduler binds to that key, and the scheduler it trusts.
///
/// ```
/// use cap_runtime::trust::{WorkerTrustConfig, WorkerTrustMode};
/// use cap_sign::PrivateKey;
/// use std::sync::Arc;
///
/// let proof = PrivateKey::generate();
/// let scheduler = PrivateKey::generate();
/// let config = WorkerTrustConfig::new(WorkerTrustMode::Enforce, "w-1", Arc::new(proof), "cap-scheduler")
///     .scheduler_key("sched-1", scheduler.public_key());
/// let resolved = config.resolve("w-1").unwrap();
/// assert_eq!(resolved.agent_id, "w-1");
/// assert_eq!(resolved.tenant_id, "default");
/// assert!(config.resolve("bad id").is_err());
/// ```
#[derive(Clone)]
pub struct WorkerTrustConfig {
    /// The mode.
    pub mode: WorkerTrustMode,
    /// The id of the proof key, as registered with the scheduler.
    pub proof_key_id: String,
    /// Signs the worker's challenge requests and authenticates.
    pub proof_key: Arc<dyn Signer>,
    /// The scheduler's sender id: only its packets are accepted.
    pub scheduler_id: String,
    /// The scheduler's keys by `server_key_id`.
    pub scheduler_keys: BTreeMap<String, PublicKey>,
    /// The agent id the scheduler binds to the key (default: the worker id).
    pub agent_id: Option<String>,
    /// The tenant the scheduler binds to the key (default `default`).
    pub tenant_id: String,
    /// The trust service's audience (default `cordum-scheduler`).
    pub audience: String,
    /// The SDK version declared (default this crate's).
    pub sdk_version: String,
    /// Time allowed for one request (default 10 s, at most 60 s).
    pub timeout: Duration,
    /// Attempts per exchange when the service is unreachable (default 3, 1-10).
    pub retries: u32,
    /// Shortest wait between renewals (default 30 s, at most 60 s).
    pub renew_min_interval: Duration,
}

impl WorkerTrustConfig {
    /// A configuration with the defaults; add the scheduler's keys with
    /// [`scheduler_key`](Self::scheduler_key).
    pub fn new(
        mode: WorkerTrustMode,
        proof_key_id: impl Into<String>,
        proof_key: Arc<dyn Signer>,
        scheduler_id: impl Into<String>,
    ) -> Self {
        WorkerTrustConfig {
            mode,
            proof_key_id: proof_key_id.into(),
            proof_key,
            scheduler_id: scheduler_id.into(),
            scheduler_keys: BTreeMap::new(),
            agent_id: None,
            tenant_id: DEFAULT_TENANT.to_owned(),
            audience: rules::AUDIENCE.to_owned(),
            sdk_version: crate::worker::SDK_VERSION.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            renew_min_interval: DEFAULT_RENEW_MIN_INTERVAL,
        }
    }

    /// Trusts `key` as the scheduler's key `key_id` (its `server_key_id`).
    pub fn scheduler_key(mut self, key_id: impl Into<String>, key: PublicKey) -> Self {
        self.scheduler_keys.insert(key_id.into(), key);
        self
    }

    /// Sets the agent id.
    pub fn agent_id(mut self, id: impl Into<String>) -> Self {
        self.agent_id = Some(id.into());
        self
    }

    /// Sets the tenant.
    pub fn tenant_id(mut self, id: impl Into<String>) -> Self {
        self.tenant_id = id.into();
        self
    }

    /// Sets the audience.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = audience.into();
        self
    }

    /// Sets the request timeout.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Sets the attempts per exchange.
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// Sets the shortest wait between renewals.
    pub fn renew_min_interval(mut self, d: Duration) -> Self {
        self.renew_min_interval = d;
        self
    }

    /// Checks the configuration for the worker `worker_id` and fills in the defaults:
    /// every identity canonical (printable ASCII, 1-256 bytes), at least one scheduler
    /// key, bounded timeout, retries and renewal interval.
    pub fn resolve(&self, worker_id: &str) -> Result<ResolvedTrust, TrustError> {
        let agent_id = self
            .agent_id
            .clone()
            .unwrap_or_else(|| worker_id.to_owned());
        let identities = [
            worker_id,
            &agent_id,
            &self.tenant_id,
            &self.audience,
            &self.proof_key_id,
            &self.scheduler_id,
            &self.sdk_version,
        ];
        if !identities.iter().all(|v| is_canonical_text(v)) {
            return Err(config_error("worker trust identity is invalid"));
        }
        if self.scheduler_keys.is_empty() {
            return Err(config_error("scheduler trust keys are required"));
        }
        if !self.scheduler_keys.keys().all(|k| is_canonical_text(k)) {
            return Err(config_error("scheduler key id is invalid"));
        }
        let limit = Duration::from_secs(rules::MAX_LIFETIME_SECS.unsigned_abs());
        if self.timeout.is_zero() || self.timeout > limit {
            return Err(config_error("timeout must be within (0, 60 s]"));
        }
        if !(1..=MAX_RETRIES).contains(&self.retries) {
            return Err(config_error("retries must be within 1-10"));
        }
        if self.renew_min_interval.is_zero() || self.renew_min_interval > limit {
            return Err(config_error("renew interval must be within (0, 60 s]"));
        }
        Ok(ResolvedTrust {
            mode: self.mode,
            worker_id: worker_id.to_owned(),
            agent_id,
            tenant_id: self.tenant_id.clone(),
            audience: self.audience.clone(),
            proof_key_id: self.proof_key_id.clone(),
            proof_key: self.proof_key.clone(),
            scheduler_id: self.scheduler_id.clone(),
            scheduler_keys: self.scheduler_keys.clone(),
            sdk_version: self.sdk_version.clone(),
            timeout: self.timeout,
            retries: self.retries,
            renew_min_interval: self.renew_min_interval,
        })
    }
}

fn config_error(detail: &'static str) -> TrustError {
    TrustError::new(TrustErrorKind::Config, detail)
}

impl fmt::Debug for WorkerTrustConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerTrustConfig")
            .field("mode", &self.mode)
            .field("proof_key_id", &self.proof_key_id)
            .field("scheduler_id", &self.scheduler_id)
            .field("scheduler_keys", &self.scheduler_keys.keys())
            .field("agent_id", &self.agent_id)
            .field("tenant_id", &self.tenant_id)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// A checked configuration for one worker (see [`WorkerTrustConfig::resolve`]).
#[derive(Clone)]
#[non_exhaustive]
pub struct ResolvedTrust {
    /// The mode.
    pub mode: WorkerTrustMode,
    /// The worker id (the packets' sender id).
    pub worker_id: String,
    /// The agent id the scheduler must bind.
    pub agent_id: String,
    /// The tenant the scheduler must bind.
    pub tenant_id: String,
    /// The audience.
    pub audience: String,
    /// The proof key's id.
    pub proof_key_id: String,
    /// The proof key.
    pub proof_key: Arc<dyn Signer>,
    /// The scheduler's sender id.
    pub scheduler_id: String,
    /// The scheduler's keys by `server_key_id`.
    pub scheduler_keys: BTreeMap<String, PublicKey>,
    /// The SDK version declared.
    pub sdk_version: String,
    /// Time allowed for one request.
    pub timeout: Duration,
    /// Attempts per exchange.
    pub retries: u32,
    /// Shortest wait between renewals.
    pub renew_min_interval: Duration,
}

impl ResolvedTrust {
    /// The legacy-signature trust policy of a worker in `warn` or `enforce` mode: every
    /// packet must be signed by the scheduler id with one of its keys.
    pub fn inbound_policy(&self) -> cap_sign::TrustPolicy {
        let mut ring = cap_sign::KeyRing::new();
        for key in self.scheduler_keys.values() {
            ring.add(self.scheduler_id.clone(), key.clone());
        }
        cap_sign::TrustPolicy::new(cap_sign::TrustMode::Require, ring)
    }
}

impl fmt::Debug for ResolvedTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedTrust")
            .field("mode", &self.mode)
            .field("worker_id", &self.worker_id)
            .field("proof_key_id", &self.proof_key_id)
            .field("scheduler_id", &self.scheduler_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_sign::PrivateKey;

    fn config() -> WorkerTrustConfig {
        WorkerTrustConfig::new(
            WorkerTrustMode::Warn,
            "k1",
            Arc::new(PrivateKey::generate()),
            "sched",
        )
        .scheduler_key("s1", PrivateKey::generate().public_key())
    }

    #[test]
    fn modes_parse_strictly() {
        assert_eq!(
            " Enforce ".parse::<WorkerTrustMode>().unwrap(),
            WorkerTrustMode::Enforce
        );
        assert_eq!(
            "off".parse::<WorkerTrustMode>().unwrap(),
            WorkerTrustMode::Off
        );
        assert_eq!(
            "warn".parse::<WorkerTrustMode>().unwrap().to_string(),
            "warn"
        );
        assert!("".parse::<WorkerTrustMode>().is_err());
        assert!("on".parse::<WorkerTrustMode>().is_err());
    }

    #[test]
    fn resolution_checks_every_bound() {
        let r = config()
            .agent_id("agent")
            .tenant_id("t")
            .resolve("w")
            .unwrap();
        assert_eq!((r.agent_id.as_str(), r.tenant_id.as_str()), ("agent", "t"));
        assert_eq!(r.audience, "cordum-scheduler");
        assert!(config().resolve("w w").is_err());
        let mut no_keys = config();
        no_keys.scheduler_keys.clear();
        assert_eq!(
            no_keys.resolve("w").unwrap_err().kind(),
            TrustErrorKind::Config
        );
        assert!(
            config()
                .scheduler_key("bad id", PrivateKey::generate().public_key())
                .resolve("w")
                .is_err()
        );
        assert!(config().timeout(Duration::ZERO).resolve("w").is_err());
        assert!(
            config()
                .timeout(Duration::from_secs(61))
                .resolve("w")
                .is_err()
        );
        assert!(config().retries(0).resolve("w").is_err());
        assert!(config().retries(11).resolve("w").is_err());
        assert!(
            config()
                .renew_min_interval(Duration::from_secs(61))
                .resolve("w")
                .is_err()
        );
        assert!(config().tenant_id("").resolve("w").is_err());
    }

    #[test]
    fn inbound_policy_pins_the_scheduler() {
        let key = PrivateKey::generate();
        let r = config()
            .scheduler_key("s2", key.public_key())
            .resolve("w")
            .unwrap();
        let policy = r.inbound_policy();
        assert_eq!(policy.mode(), cap_sign::TrustMode::Require);
        assert_eq!(policy.keys().keys("sched").len(), 2);
        assert!(!policy.keys().contains("w"));
    }
}
