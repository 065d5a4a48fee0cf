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
        let c = &self.shared.config;
        let raw = msg.payload();
        // Decided before any await, so `wanted` is not part of this future.
        let decoded = match inbound::decode_with(raw, c.max_packet_bytes, &c.trust) {
            Ok(p) => Ok(wanted(&p).then_some(p)),
            Err(rejection) => Err(rejection),
        };
        let packet = match decoded {
            Ok(Some(p)) => p,
            Ok(None) => {
                ack(msg).await;
                return None;
            }
            Err(rejection) => {
                Box::pin(self.report(&rejection, msg.subject())).await;
                ack(msg).await;
                return None;
            }
        };
        let production = match &c.production {
            Some(p) if packet.signature_metadata.is_some() => p,
            Some(p) if !p.accepts_legacy(msg.subject()) => {
                let rejection = rejection(&packet, RejectReason::LegacyRefused, None);
                Box::pin(self.report(&rejection, msg.subject())).await;
                ack(msg).await;
                return None;
            }
            _ => {
                // The legacy profile, or a legacy packet where the profile takes one.
                return match inbound::check(raw, &packet, &c.trust) {
                    Ok(()) => {
                        bump(&self.shared.counters.accepted);
                        Some(Inbound {
                            packet,
                            duplicate: false,
                            production: false,
                        })
                    }
                    Err(rejection) => {
                        Box::pin(self.report(&rejection, msg.subject())).await;
                        ack(msg).await;
                        None
                    }
                };
            }
        };
        // `cap_sign::production::admit`, step by step, with the store's boxed future
        // (its generic one is not `Send` for every lifetime the caller needs).
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
                Box::pin(self.report(&rejection, msg.subject())).await;
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
            let mut rej = rejection(&packet, RejectReason::Invalid(fields), Some(v.code()));
            rej.answer = None;
            Box::pin(self.report(&rej, msg.subject())).await;
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
