//! What a worker announces about itself: the `Handshake` and the `Heartbeat` payloads
//! (built here without IO; the worker publishes them).

use cap_proto::negotiate::capability;
use cap_proto::{PROTOCOL_VERSION, v1};
use std::collections::BTreeMap;

/// The SDK version string a worker advertises.
pub const SDK_VERSION: &str = concat!("cap-rs/", env!("CARGO_PKG_VERSION"));

/// The capability keys this worker really supports: progress, cancel, structured error
/// codes and heartbeats always; `signatures` only when it signs its packets.
pub fn capabilities(signing: bool) -> BTreeMap<String, bool> {
    let mut caps = BTreeMap::new();
    for key in [
        capability::PROGRESS,
        capability::CANCEL,
        capability::ERROR_CODES,
        capability::HEARTBEATS,
    ] {
        caps.insert(key.to_owned(), true);
    }
    if signing {
        caps.insert(capability::SIGNATURES.to_owned(), true);
    }
    caps
}

/// The worker's handshake: `component_id` = its id (the packet's sender), role WORKER,
/// version 1, its capabilities and its topics in sorted order.
pub fn handshake<'a>(
    worker_id: &str,
    topics: impl IntoIterator<Item = &'a str>,
    signing: bool,
) -> v1::Handshake {
    let mut ready_topics: Vec<String> = topics.into_iter().map(str::to_owned).collect();
    ready_topics.sort();
    ready_topics.dedup();
    v1::Handshake {
        component_id: worker_id.to_owned(),
        role: v1::ComponentRole::Worker as i32,
        supported_versions: vec![PROTOCOL_VERSION],
        capabilities: capabilities(signing),
        sdk_version: SDK_VERSION.to_owned(),
        ready_topics,
        ..Default::default()
    }
}

/// What a heartbeat reports.
#[derive(Clone, Debug, Default)]
pub struct HeartbeatInfo {
    /// The worker's id.
    pub worker_id: String,
    /// Its pool.
    pub pool: String,
    /// CPU load, percent.
    pub cpu_load: f32,
    /// Memory load, percent.
    pub memory_load: f32,
    /// Jobs running now.
    pub active_jobs: usize,
    /// The concurrency limit.
    pub max_parallel: usize,
    /// Topics served (reported as capabilities).
    pub topics: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// The heartbeat payload.
pub fn heartbeat(info: &HeartbeatInfo) -> v1::Heartbeat {
    let clamp = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    v1::Heartbeat {
        worker_id: info.worker_id.clone(),
        r#type: "worker".to_owned(),
        cpu_load: info.cpu_load.clamp(0.0, 100.0),
        memory_load: info.memory_load.clamp(0.0, 100.0),
        active_jobs: clamp(info.active_jobs),
        max_parallel_jobs: clamp(info.max_parallel),
        capabilities: info.topics.clone(),
        pool: info.pool.clone(),
        labels: info.labels.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_is_valid_and_sorted() {
        let h = handshake("w-1", ["job.b", "job.a", "job.b"], true);
        assert_eq!(h.ready_topics, ["job.a", "job.b"]);
        assert_eq!(h.supported_versions, [1]);
        assert_eq!(h.role, v1::ComponentRole::Worker as i32);
        assert!(h.capabilities.keys().all(|k| capability::is_valid(k)));
        assert_eq!(h.capabilities.get("signatures"), Some(&true));
        assert!(
            !handshake("w", [], false)
                .capabilities
                .contains_key("signatures")
        );
        cap_proto::validate::handshake(&h).unwrap();
    }

    #[test]
    fn heartbeat_is_valid() {
        let hb = heartbeat(&HeartbeatInfo {
            worker_id: "w".into(),
            cpu_load: 250.0,
            active_jobs: 3,
            max_parallel: 8,
            ..Default::default()
        });
        assert_eq!(hb.cpu_load, 100.0);
        assert_eq!(hb.max_parallel_jobs, 8);
        cap_proto::validate::heartbeat(&hb).unwrap();
    }
}
