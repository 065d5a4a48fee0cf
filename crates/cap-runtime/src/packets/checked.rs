//! [`Packets::receive_checked`]: receiving in either profile, telling the caller whether
//! a production packet was a redelivery of one already admitted.

use super::inbound::{self, RejectReason, Rejection};
use super::stats::bump;
use super::{Packets, ack};
use cap_bus::{Bus, Message};
use cap_proto::v1::{BusPacket, bus_packet::Payload};
use cap_proto::{ErrorCode, validate};
use cap_sign::production::{self, ProductionError, ReplayOutcome};
use std::time::{Duration, SystemTime};

/// How long a packet refused because the replay store could not answer waits before it
/// is delivered again (durable buses only).
const STORE_RETRY: Duration = Duration::from_millis(500);

/// A packet accepted by [`Packets::receive_checked`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Inbound {
    /// The packet (verified: legacy trust policy or CAP-PRODUCTION admission).
    pub packet: BusPacket,
    /// CAP-PRODUCTION: the same message (tenant, audience, sender, message id, body) was
    /// admitted before — a redelivery. The caller's idempotence decides (re-answer it,
    /// drop it); it must not act twice.
    pub duplicate: bool,
    /// Admitted by the CAP-PRODUCTION profile (not a legacy packet on a subject that
    /// accepts them).
    pub production: bool,
}

impl<B: Bus> Packets<B> {
    /// Receives `msg` in the configured profile. Packets `wanted` says no to are
    /// acknowledged and give `None` (neither counted nor reported). Accepted packets are
    /// counted and returned; the caller acknowledges `msg` once it handled them.
    /// Rejected ones are reported ([`report`](Self::report)) and acknowledged — except
    /// when the replay store could not answer: then `msg` is given back for redelivery.
    ///
    /// In the production profile the exact bytes are admitted
    /// ([`cap_sign::production::admit`], audience = the subject `msg` arrived on) before
    /// anything else; legacy packets are refused unless the subject accepts them
    /// ([`ProductionConfig::accept_legacy_on`](super::ProductionConfig::accept_legacy_on)).
    pub async fn receive_checked(
        &self,
        msg: &Message,
        wanted: impl FnOnce(&BusPacket) -> bool,
    ) -> Option<Inbound> {
        // Decided before any await, so neither `wanted` nor the decoded packet is part
        // of this future (it stays small: workers spawn one per job); the production
        // admission, which awaits the replay store, is boxed.
        let next: Result<Box<BusPacket>, Option<Box<Rejection>>> =
            match self.first_step(msg, wanted) {
                Step::Accept(inbound) => {
                    bump(&self.shared.counters.accepted);
                    return Some(inbound);
                }
                Step::Admit(packet) => Ok(packet),
                Step::Skip => Err(None),
                Step::Reject(rejection) => Err(Some(rejection)),
            };
        match next {
            Ok(packet) => Box::pin(self.admit_production(msg, packet)).await,
            Err(rejection) => {
                if let Some(rejection) = rejection {
                    Box::pin(self.report(&rejection, msg.subject())).await;
                }
                ack(msg).await;
                None
            }
        }
    }

    /// Decoding, the filter, the legacy check; production packets are handed on.
    fn first_step(&self, msg: &Message, wanted: impl FnOnce(&BusPacket) -> bool) -> Step {
        let c = &self.shared.config;
        let raw = msg.payload();
        let packet = match inbound::decode_with(raw, c.max_packet_bytes, &c.trust) {
            Ok(p) if wanted(&p) => p,
            Ok(_) => return Step::Skip,
            Err(rejection) => return Step::Reject(rejection),
        };
        match &c.production {
            Some(_) if packet.signature_metadata.is_some() => Step::Admit(Box::new(packet)),
            Some(p) if !p.accepts_legacy(msg.subject()) => Step::Reject(Box::new(rejection(
                &packet,
                RejectReason::LegacyRefused,
                None,
            ))),
            // The legacy profile, or a legacy packet where the profile takes one.
            _ => match inbound::check(raw, &packet, &c.trust) {
                Ok(()) => Step::Accept(Inbound {
                    packet,
                    duplicate: false,
                    production: false,
                }),
                Err(rejection) => Step::Reject(rejection),
            },
        }
    }

    /// CAP-PRODUCTION admission of a decoded packet: `cap_sign::production::admit`, step
    /// by step, with the store's boxed future (its generic one is not `Send` for every
    /// lifetime the callers need), then envelope validation.
    async fn admit_production(&self, msg: &Message, packet: Box<BusPacket>) -> Option<Inbound> {
        let production = self.shared.config.production.as_ref()?;
        let raw = msg.payload();
        let now = SystemTime::now();
        let checked = production
            .authority()
            .trust_for(msg.subject(), &packet)
            .and_then(|trust| {
                let verified = production::verify(raw, &trust, now)?;
                if let (Some(Payload::JobRequest(request)), Some(identity)) =
                    (&verified.packet().payload, &verified.packet().identity)
                {
                    production::validate_identity_binding(request, identity)?;
                }
                let entry = verified.replay_entry(trust.clock_skew());
                Ok((verified, entry))
            });
        let admitted = match checked {
            Ok((verified, entry)) => match production.replay().admit_boxed(&entry, now).await {
                Ok(ReplayOutcome::First) => Ok((verified, false)),
                Ok(ReplayOutcome::Duplicate) => Ok((verified, true)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let (verified, duplicate) = match admitted {
            Ok(v) => v,
            Err(e) => {
                let store_failure = e.is_store_failure();
                let rejection = rejection(&packet, RejectReason::Production(e), None);
                self.report(&rejection, msg.subject()).await;
                if store_failure {
                    if let Err(e) = msg.nak(Some(STORE_RETRY)).await {
                        tracing::debug!(error = %e, "nak failed");
                    }
                } else {
                    ack(msg).await;
                }
                return None;
            }
        };
        let packet = verified.into_packet();
        if let Err(v) = validate::packet(&packet) {
            let fields: Vec<String> = v.iter().map(|x| x.field.clone()).collect();
            let rej = rejection(&packet, RejectReason::Invalid(fields), Some(v.code()));
            self.report(&rej, msg.subject()).await;
            ack(msg).await;
            return None;
        }
        if duplicate {
            bump(&self.shared.counters.duplicates);
        } else {
            bump(&self.shared.counters.accepted);
        }
        Some(Inbound {
            packet,
            duplicate,
            production: true,
        })
    }
}

/// The first, synchronous step of a receive. Returned by value once and taken apart at
/// once (never held across an await): boxing the large variant would cost an allocation
/// per packet for nothing.
#[allow(clippy::large_enum_variant)]
enum Step {
    /// Accepted as it is (the legacy checks passed).
    Accept(Inbound),
    /// Filtered out.
    Skip,
    /// Refused.
    Reject(Box<Rejection>),
    /// A production packet, to be admitted.
    Admit(Box<BusPacket>),
}

/// A rejection of a decoded packet: the code of `reason` (or `code`), the ids to report.
fn rejection(packet: &BusPacket, reason: RejectReason, code: Option<ErrorCode>) -> Rejection {
    let code = code.unwrap_or(match &reason {
        RejectReason::Production(e) => production_code(e),
        RejectReason::LegacyRefused => ErrorCode::PROTOCOL_SIGNATURE_MISSING,
        _ => ErrorCode::PROTOCOL_MALFORMED_PACKET,
    });
    inbound::rejection_of(packet, code, reason)
}

/// The code of a production failure; configuration, signer and store failures (0 in
/// [`ProductionError::code`]) are reported as signature failures: the packet was not
/// admitted.
fn production_code(e: &ProductionError) -> ErrorCode {
    match e.code() {
        ErrorCode::UNSPECIFIED => ErrorCode::PROTOCOL_SIGNATURE_INVALID,
        c => c,
    }
}
