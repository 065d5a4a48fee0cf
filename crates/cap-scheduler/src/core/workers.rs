//! The worker side of the scheduler's view: handshakes (with protocol version
//! negotiation) and heartbeats feed the [`Registry`]; workers that stop beating are lost.

use super::config::Config;
use super::event::Action;
use super::job::Millis;
use super::messages::alert;
use super::registry::Registry;
use super::timers::ms;
use cap_proto::{ErrorCode, v1};

/// Records a worker's handshake with the version negotiated (the highest both sides
/// support), if there is one; otherwise the worker is refused — not registered, not
/// even by its later heartbeats, and no job is routed to it or to a pool on its behalf
/// (see [`Registry::refuse`]) — and an alert says why.
pub fn handshake(
    registry: &mut Registry,
    config: &Config,
    scheduler_id: &str,
    hs: &v1::Handshake,
    now: Millis,
) -> Vec<Action> {
    if hs.role != v1::ComponentRole::Worker as i32 {
        return Vec::new();
    }
    let Ok(version) =
        cap_proto::negotiate::version(&config.supported_versions, &hs.supported_versions)
    else {
        registry.refuse(hs, now);
        return vec![Action::Alert {
            alert: alert(
                v1::AlertSeverity::Error,
                ErrorCode::PROTOCOL_VERSION_MISMATCH,
                scheduler_id,
                &format!(
                    "worker {} shares no protocol version with this scheduler",
                    hs.component_id
                ),
                "",
            ),
        }];
    };
    registry.accept(hs, version, now);
    Vec::new()
}

/// Removes the workers that missed three heartbeat intervals; returns their ids and an
/// alert for each.
pub fn expire(
    registry: &mut Registry,
    config: &Config,
    scheduler_id: &str,
    now: Millis,
) -> (Vec<String>, Vec<Action>) {
    let deadline = now.saturating_sub(3 * ms(config.heartbeat_interval));
    let mut lost = Vec::new();
    let mut actions = Vec::new();
    for w in registry.expire(deadline) {
        actions.push(Action::Alert {
            alert: alert(
                v1::AlertSeverity::Warning,
                ErrorCode::JOB_WORKER_UNAVAILABLE,
                scheduler_id,
                &format!(
                    "worker {} lost (no heartbeat for three intervals)",
                    w.worker_id
                ),
                "",
            ),
        });
        lost.push(w.worker_id);
    }
    (lost, actions)
}
