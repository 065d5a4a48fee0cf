//! The CAP-PRODUCTION signature profile of a packet layer ([`ProductionConfig`]).
//!
//! Outbound, every packet is sealed with [`cap_sign::production::seal`]: fresh metadata
//! (message id, expiry, key id) and an audience that is **the subject it is published
//! on**, so [`Packets::seal_for`](super::Packets::seal_for) takes the subject. A packet
//! without an `identity` gets the component's own ([`ProductionConfig::identity`]).
//!
//! Inbound, [`Packets::receive_checked`](super::Packets::receive_checked) runs
//! [`cap_sign::production::admit`] on the exact received bytes — signature, audience (the
//! subject it arrived on), expiry, tenant and sender bound by the [`Authority`], the
//! identity binding of a job request, then replay admission — before anything else
//! looks at the packet. A legacy packet (no signature metadata) is refused with
//! [`RejectReason::LegacyRefused`](super::RejectReason::LegacyRefused) and an alert,
//! except on the subjects the component still takes from legacy peers
//! ([`ProductionConfig::accept_legacy_on`]: a scheduler's `sys.job.submit` from
//! clients, for example). A redelivery of an admitted packet (same message id, same
//! body) is handed on marked [`Inbound::duplicate`](super::Inbound::duplicate), so the
//! component's own idempotence (dispatch fencing, the job state machine) answers it.

use cap_proto::v1::{BusPacket, IdentityBinding};
use cap_sign::Signer;
use cap_sign::production::{self, DynReplayStore, ProductionError, ProductionTrust, Seal};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The signature profile of a component: `legacy` (CAP-NOTES §3, the default) or
/// `production` (CAP-PRODUCTION).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Profile {
    /// The ordinary packet signature (optional), no replay protection.
    #[default]
    Legacy,
    /// Exact-wire signatures bound to an audience, an expiry and a message id, identity
    /// binding and replay admission; legacy packets refused.
    Production,
}

impl Profile {
    /// The profile's name (`legacy`, `production`).
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Legacy => "legacy",
            Profile::Production => "production",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Profile {
    type Err = crate::Error;

    /// `legacy` or `production`, ignoring case and surrounding spaces.
    fn from_str(s: &str) -> Result<Self, crate::Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "legacy" => Ok(Profile::Legacy),
            "production" => Ok(Profile::Production),
            _ => Err(crate::Error::new(
                crate::ErrorKind::Config,
                "profile must be legacy or production",
            )),
        }
    }
}

/// Who may send a production packet on a subject: the audience, tenant, sender and keys
/// a received packet is checked against.
pub trait Authority: Send + Sync + 'static {
    /// The trust for `packet` (decoded, not yet verified: use only its sender id and
    /// metadata key id to choose) received on `audience`. An error rejects the packet.
    fn trust_for(
        &self,
        audience: &str,
        packet: &BusPacket,
    ) -> Result<ProductionTrust, ProductionError>;
}

/// One sender, one tenant, its keys, on every subject: a worker trusting its scheduler.
///
/// ```
/// use cap_runtime::packets::production::{Authority, FixedAuthority};
/// use cap_sign::{PrivateKey, production::ProductionTrust};
///
/// let key = PrivateKey::generate();
/// let base = ProductionTrust::new("any", "acme", "cap-scheduler").unwrap().with_key("sched-1", key.public_key());
/// let authority = FixedAuthority::new(base);
/// let trust = authority.trust_for("job.echo", &Default::default()).unwrap();
/// assert_eq!((trust.audience(), trust.tenant(), trust.sender()), ("job.echo", "acme", "cap-scheduler"));
/// ```
#[derive(Clone, Debug)]
pub struct FixedAuthority {
    base: ProductionTrust,
}

impl FixedAuthority {
    /// Packets from `base`'s sender, in its tenant, signed with its keys, addressed to
    /// the subject they arrive on (`base`'s audience is replaced).
    pub fn new(base: ProductionTrust) -> Self {
        FixedAuthority { base }
    }
}

impl Authority for FixedAuthority {
    fn trust_for(&self, audience: &str, _: &BusPacket) -> Result<ProductionTrust, ProductionError> {
        self.base.with_audience(audience)
    }
}

/// Default lifetime of the signatures a component makes (the profile's maximum).
pub const DEFAULT_LIFETIME: Duration = production::MAX_LIFETIME;

/// Default clock skew receivers built here tolerate.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// The CAP-PRODUCTION settings of a packet layer: the sealing key and its id, the
/// component's identity, who may send it what, and the replay store.
///
/// ```
/// use cap_runtime::packets::production::{FixedAuthority, ProductionConfig};
/// use cap_sign::PrivateKey;
/// use cap_sign::production::{MemoryReplayStore, ProductionTrust};
/// use std::sync::Arc;
///
/// let scheduler = PrivateKey::generate();
/// let authority = FixedAuthority::new(
///     ProductionTrust::new("any", "acme", "cap-scheduler").unwrap().with_key("sched-1", scheduler.public_key()),
/// );
/// let config = ProductionConfig::new(
///     Arc::new(PrivateKey::generate()),
///     "worker-key-1",
///     "acme",
///     Arc::new(authority),
///     Arc::new(MemoryReplayStore::default()),
/// )
/// .unwrap()
/// .accept_legacy_on(["sys.heartbeat"]);
/// assert!(config.accepts_legacy("sys.heartbeat"));
/// assert!(!config.accepts_legacy("sys.job.result"));
/// ```
#[derive(Clone)]
pub struct ProductionConfig {
    signer: Arc<dyn Signer>,
    key_id: String,
    identity: IdentityBinding,
    authority: Arc<dyn Authority>,
    replay: Arc<dyn DynReplayStore>,
    lifetime: Duration,
    legacy_subjects: Arc<[String]>,
}

fn authority_text(s: &str) -> bool {
    !s.trim().is_empty() && s.trim() == s
}

impl ProductionConfig {
    /// Seals with `signer` under `key_id`, in tenant `tenant`; admits what `authority`
    /// allows, once, through `replay`.
    pub fn new(
        signer: Arc<dyn Signer>,
        key_id: &str,
        tenant: &str,
        authority: Arc<dyn Authority>,
        replay: Arc<dyn DynReplayStore>,
    ) -> Result<Self, ProductionError> {
        if !authority_text(key_id) || !authority_text(tenant) {
            return Err(ProductionError::Config(
                "key id and tenant must be non-empty without surrounding whitespace",
            ));
        }
        Ok(ProductionConfig {
            signer,
            key_id: key_id.to_owned(),
            identity: IdentityBinding {
                tenant_id: tenant.to_owned(),
                ..Default::default()
            },
            authority,
            replay,
            lifetime: DEFAULT_LIFETIME,
            legacy_subjects: Arc::from(Vec::new()),
        })
    }

    /// The identity stamped on outgoing packets that carry none (its tenant must be set).
    pub fn identity(mut self, identity: IdentityBinding) -> Result<Self, ProductionError> {
        if !authority_text(&identity.tenant_id) {
            return Err(ProductionError::Config("the identity needs a tenant"));
        }
        self.identity = identity;
        Ok(self)
    }

    /// The lifetime of outgoing signatures: (0, 5 min] (default 5 min).
    pub fn lifetime(mut self, lifetime: Duration) -> Result<Self, ProductionError> {
        if lifetime.is_zero() || lifetime > production::MAX_LIFETIME {
            return Err(ProductionError::Config("lifetime must lie in (0, 5 min]"));
        }
        self.lifetime = lifetime;
        Ok(self)
    }

    /// Also accepts legacy packets (checked by the packet layer's legacy trust policy)
    /// on these subjects: the ones legacy peers still send to this component.
    pub fn accept_legacy_on(
        mut self,
        subjects: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        let mut all: Vec<String> = self.legacy_subjects.to_vec();
        all.extend(subjects.into_iter().map(Into::into));
        self.legacy_subjects = Arc::from(all);
        self
    }

    /// Whether legacy packets are accepted on `subject`.
    pub fn accepts_legacy(&self, subject: &str) -> bool {
        self.legacy_subjects.iter().any(|s| s == subject)
    }

    /// The sealing key's id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The component's identity (its tenant).
    pub fn default_identity(&self) -> &IdentityBinding {
        &self.identity
    }

    /// The authority of received packets.
    pub fn authority(&self) -> &Arc<dyn Authority> {
        &self.authority
    }

    /// The replay store.
    pub fn replay(&self) -> &Arc<dyn DynReplayStore> {
        &self.replay
    }

    /// Seals `packet` for `subject` at `now`: the component's identity when it has none,
    /// then [`production::seal`].
    pub fn seal(
        &self,
        packet: &mut BusPacket,
        subject: &str,
        now: SystemTime,
    ) -> Result<Vec<u8>, ProductionError> {
        if packet.identity.is_none() {
            packet.identity = Some(self.identity.clone());
        }
        let seal = Seal::new(&self.key_id, subject, now)?.with_lifetime(self.lifetime)?;
        production::seal(packet, self.signer.as_ref(), &seal)
    }
}

impl fmt::Debug for ProductionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProductionConfig")
            .field("key_id", &self.key_id)
            .field("tenant", &self.identity.tenant_id)
            .field("lifetime", &self.lifetime)
            .field("legacy_subjects", &self.legacy_subjects)
            .finish_non_exhaustive()
    }
}

/// A short, fixed name for a production failure (logs, alerts, counters): never the
/// packet's own strings.
pub fn failure_name(e: &ProductionError) -> &'static str {
    use ProductionError as E;
    match e {
        E::TooLarge { .. } => "too large",
        E::Truncated => "truncated",
        E::OversizeVarint => "oversize varint",
        E::NonMinimalVarint => "non-minimal varint",
        E::UnknownField { .. } => "unknown field",
        E::WrongWireType { .. } => "wrong wire type",
        E::DuplicateField { .. } => "duplicate field",
        E::MultiplePayloads { .. } => "multiple payloads",
        E::ProtocolVersion => "protocol version wire",
        E::MissingSignature => "missing signature",
        E::MalformedSignature => "malformed signature",
        E::Malformed(_) => "malformed protobuf",
        E::UnknownNestedField => "unknown nested field",
        E::MissingMetadata => "missing signature metadata",
        E::UnsupportedProfile => "unsupported profile",
        E::InvalidMetadata(_) => "invalid metadata",
        E::AudienceMismatch { .. } => "audience mismatch",
        E::InvalidExpiry => "invalid expiry",
        E::Expired => "expired",
        E::LifetimeExceeded => "lifetime exceeds bound",
        E::TenantMismatch { .. } => "tenant mismatch",
        E::SenderMismatch { .. } => "sender mismatch",
        E::UnknownKeyId { .. } => "unknown key id",
        E::BadSignature => "bad signature",
        E::IdentityMismatch(_) => "identity mismatch",
        E::ReplayConflict => "replay conflict",
        E::ReplayUnavailable(_) => "replay store unavailable",
        E::ReplayFull { .. } => "replay store full",
        E::Config(_) => "configuration",
        E::Signer(_) => "signer",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_sign::PrivateKey;
    use cap_sign::production::MemoryReplayStore;

    fn config() -> ProductionConfig {
        let key = PrivateKey::generate();
        let trust = ProductionTrust::new("x", "acme", "sched")
            .unwrap()
            .with_key("k", key.public_key());
        ProductionConfig::new(
            Arc::new(PrivateKey::generate()),
            "w-key",
            "acme",
            Arc::new(FixedAuthority::new(trust)),
            Arc::new(MemoryReplayStore::default()),
        )
        .unwrap()
    }

    #[test]
    fn profiles_parse_strictly() {
        assert_eq!(
            " Production ".parse::<Profile>().unwrap(),
            Profile::Production
        );
        assert_eq!("legacy".parse::<Profile>().unwrap().to_string(), "legacy");
        assert!("prod".parse::<Profile>().is_err());
        assert_eq!(Profile::default(), Profile::Legacy);
    }

    #[test]
    fn configuration_bounds() {
        let c = config();
        assert!(c.clone().lifetime(Duration::ZERO).is_err());
        assert!(c.clone().lifetime(Duration::from_secs(301)).is_err());
        assert!(c.clone().identity(IdentityBinding::default()).is_err());
        assert!(
            ProductionConfig::new(
                Arc::new(PrivateKey::generate()),
                " k",
                "acme",
                c.authority().clone(),
                c.replay().clone()
            )
            .is_err()
        );
    }

    #[test]
    fn sealing_stamps_the_identity_and_binds_the_subject() {
        let c = config();
        let mut p = BusPacket::new(
            "t",
            "w-1",
            cap_proto::packet::timestamp(SystemTime::now()),
            cap_proto::v1::Heartbeat::default(),
        );
        let now = SystemTime::now();
        let raw = c.seal(&mut p, "sys.heartbeat", now).unwrap();
        assert_eq!(p.identity.as_ref().unwrap().tenant_id, "acme");
        let decoded = cap_proto::packet::decode(&raw, 1 << 20).unwrap();
        let meta = decoded.signature_metadata.unwrap();
        assert_eq!(
            (meta.audience.as_str(), meta.key_id.as_str()),
            ("sys.heartbeat", "w-key")
        );
        assert_eq!(failure_name(&ProductionError::Expired), "expired");
    }
}
