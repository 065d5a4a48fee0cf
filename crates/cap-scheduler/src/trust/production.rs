//! The scheduler's CAP-PRODUCTION profile: who may send it what, and how its own
//! packets are sealed.
//!
//! - Results, progress, heartbeats and handshakes a worker seals are admitted when
//!   their metadata names a registered proof key ([`WorkerKeys`](super::WorkerKeys)):
//!   the sender must be the key's worker and the tenant its tenant
//!   ([`SchedulerAuthority`]).
//! - Packets the scheduler sealed itself (its results coming back on `sys.job.result`,
//!   its forwarded cancels on `sys.job.cancel`) are admitted with its own key, in the
//!   tenant they carry (the scheduler speaks for every tenant).
//! - Legacy packets are taken only where legacy peers still talk to it:
//!   `sys.job.submit` and `sys.job.cancel` (clients), `sys.heartbeat` and
//!   `sys.handshake` (2.17 Agents announce themselves with legacy packets; the worker
//!   trust gate checks their sessions). A legacy result or progress report is refused.
//! - The scheduler seals with the trust service's key under its `server_key_id` — the
//!   key its workers already trust for the handshake — in its tenant for packets that
//!   carry no identity. A dispatch carries the job's identity both in the envelope and
//!   in `JobRequest.identity` (the identity the peer echoes on its results), derived
//!   from the job's tenant and principal when the submitter sent none
//!   ([`dispatch_identity`]).

use super::WorkerTrust;
use super::server::TrustServer;
use cap_proto::subject;
use cap_proto::v1::{BusPacket, IdentityBinding, JobRequest};
use cap_runtime::packets::production::{Authority, DEFAULT_CLOCK_SKEW};
use cap_runtime::packets::{PacketConfig, ProductionConfig};
use cap_sign::production::{DynReplayStore, ProductionError, ProductionTrust};
use std::sync::Arc;
use std::time::Duration;

/// Subjects on which a production scheduler still takes legacy packets.
pub const LEGACY_SUBJECTS: [&str; 4] = [
    subject::SUBMIT,
    subject::CANCEL,
    subject::HEARTBEAT,
    subject::HANDSHAKE,
];

/// The authority of a production scheduler: its workers' registered proof keys, and its
/// own key for the packets it sealed itself.
#[derive(Clone, Debug)]
pub struct SchedulerAuthority {
    server: Arc<TrustServer>,
    clock_skew: Duration,
}

impl SchedulerAuthority {
    /// Keys from `server` (looked up at each packet, so [`TrustServer::set_keys`] applies
    /// at once), with [`DEFAULT_CLOCK_SKEW`].
    pub fn new(server: Arc<TrustServer>) -> Self {
        SchedulerAuthority {
            server,
            clock_skew: DEFAULT_CLOCK_SKEW,
        }
    }

    /// Tolerates `skew` (at most 1 min).
    pub fn clock_skew(mut self, skew: Duration) -> Result<Self, ProductionError> {
        if skew > cap_sign::production::MAX_CLOCK_SKEW {
            return Err(ProductionError::Config("clock skew must not exceed 1 min"));
        }
        self.clock_skew = skew;
        Ok(self)
    }
}

impl Authority for SchedulerAuthority {
    fn trust_for(
        &self,
        audience: &str,
        packet: &BusPacket,
    ) -> Result<ProductionTrust, ProductionError> {
        let key_id = packet
            .signature_metadata
            .as_ref()
            .map(|m| m.key_id.as_str())
            .unwrap_or_default();
        let config = self.server.config();
        let trust = if packet.sender_id == config.scheduler_id {
            let tenant = packet
                .identity
                .as_ref()
                .map(|i| i.tenant_id.as_str())
                .unwrap_or_default();
            if tenant.trim().is_empty() || tenant.trim() != tenant {
                return Err(ProductionError::TenantMismatch {
                    expected: "a tenant".into(),
                    got: tenant.to_owned(),
                });
            }
            let trust = ProductionTrust::new(audience, tenant, &config.scheduler_id)?;
            match config.signer.public_key() {
                Some(key) => trust.with_key(config.server_key_id.clone(), key),
                None => trust,
            }
        } else {
            let key = self
                .server
                .key(key_id)
                .ok_or_else(|| ProductionError::UnknownKeyId {
                    key_id: key_id.to_owned(),
                })?;
            ProductionTrust::new(audience, &key.tenant_id, &key.worker_id)?
                .with_key(key.proof_key_id, key.key)
        };
        trust.with_clock_skew(self.clock_skew)
    }
}

/// `base` (whose sender id must be the trust service's scheduler id) switched to the
/// production profile: sealed with the trust service's key under its `server_key_id`,
/// in `tenant`; admitting what [`SchedulerAuthority`] allows, once, through `replay`
/// (shared by the instances of one scheduler); legacy packets only on
/// [`LEGACY_SUBJECTS`].
///
/// ```
/// use cap_runtime::packets::{PacketConfig, Profile};
/// use cap_scheduler::trust::{MemoryTrustStore, TrustServer, TrustServerConfig, WorkerKeys, WorkerTrust};
/// use cap_scheduler::trust::production::production_packets;
/// use cap_sign::PrivateKey;
/// use cap_sign::production::MemoryReplayStore;
/// use std::sync::Arc;
///
/// let config = TrustServerConfig::new("sched", "sched-key", Arc::new(PrivateKey::generate()), WorkerKeys::new());
/// let trust = WorkerTrust::new(
///     cap_scheduler::trust::WorkerTrustMode::Enforce,
///     TrustServer::new(config, Arc::new(MemoryTrustStore::new())).unwrap(),
/// );
/// let packets = production_packets(PacketConfig::new("sched"), &trust, Arc::new(MemoryReplayStore::default()), "default").unwrap();
/// assert_eq!(packets.profile(), Profile::Production);
/// assert!(production_packets(PacketConfig::new("other"), &trust, Arc::new(MemoryReplayStore::default()), "default").is_err());
/// ```
pub fn production_packets(
    base: PacketConfig,
    trust: &WorkerTrust,
    replay: Arc<dyn DynReplayStore>,
    tenant: &str,
) -> Result<PacketConfig, ProductionError> {
    let server = trust.server.clone();
    let config = server.config();
    if base.sender_id != config.scheduler_id {
        return Err(ProductionError::Config(
            "the scheduler's sender id must be the trust service's scheduler id",
        ));
    }
    let production = ProductionConfig::new(
        config.signer.clone(),
        &config.server_key_id,
        tenant,
        Arc::new(SchedulerAuthority::new(server.clone())),
        replay,
    )?
    .accept_legacy_on(LEGACY_SUBJECTS);
    Ok(base.production(production))
}

/// The identity a production dispatch of `request` carries (in the envelope and in
/// `JobRequest.identity`): the submitter's envelope identity, else the request's own,
/// else one made of the job's tenant (`tenant_id`, else `meta.tenant_id`, else
/// `default_tenant`), principal and actor, so that it agrees with every identity mirror
/// of the request the worker checks.
pub fn dispatch_identity(
    request: &JobRequest,
    envelope: Option<&IdentityBinding>,
    default_tenant: &str,
) -> IdentityBinding {
    let has_tenant = |i: &&IdentityBinding| !i.tenant_id.is_empty();
    if let Some(i) = envelope.filter(has_tenant) {
        return i.clone();
    }
    if let Some(i) = request.identity.as_ref().filter(has_tenant) {
        return i.clone();
    }
    let meta = request.meta.as_ref();
    let tenant = [
        request.tenant_id.as_str(),
        meta.map(|m| m.tenant_id.as_str()).unwrap_or_default(),
        default_tenant,
    ]
    .into_iter()
    .find(|t| !t.is_empty())
    .unwrap_or_default();
    IdentityBinding {
        tenant_id: tenant.to_owned(),
        principal_id: request.principal_id.clone(),
        actor_id: meta.map(|m| m.actor_id.clone()).unwrap_or_default(),
        delegation_id: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_proto::v1::JobMetadata;

    #[test]
    fn dispatch_identities_agree_with_the_request() {
        let env = IdentityBinding {
            tenant_id: "acme".into(),
            ..Default::default()
        };
        let req = JobRequest {
            tenant_id: "t1".into(),
            principal_id: "alice".into(),
            meta: Some(JobMetadata {
                actor_id: "svc".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(dispatch_identity(&req, Some(&env), "d"), env);
        let derived = dispatch_identity(&req, None, "d");
        assert_eq!(
            (
                derived.tenant_id.as_str(),
                derived.principal_id.as_str(),
                derived.actor_id.as_str()
            ),
            ("t1", "alice", "svc")
        );
        cap_sign::production::validate_identity_binding(&req, &derived).unwrap();
        let bare = dispatch_identity(&JobRequest::default(), None, "default");
        assert_eq!(bare.tenant_id, "default");
        let own = JobRequest {
            identity: Some(env.clone()),
            ..Default::default()
        };
        assert_eq!(
            dispatch_identity(&own, Some(&IdentityBinding::default()), "d"),
            env
        );
    }
}
