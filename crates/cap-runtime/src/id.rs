//! Fresh identifiers: random (v4) UUIDs, collision-free for all practical purposes. They
//! come from a thread-local CSPRNG seeded by the OS (uuid's `fast-rng`), not one system
//! call per id.

/// A new job id (`<uuid>`).
pub fn new_job_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A new trace id (32 hex digits, the W3C trace-id form).
pub fn new_trace_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A new component id with `prefix` (`worker-<12 hex digits>`), one subject token.
pub fn new_component_id(prefix: &str) -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &u[..12])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_distinct_and_well_formed() {
        let ids: HashSet<String> = (0..10_000).map(|_| new_job_id()).collect();
        assert_eq!(ids.len(), 10_000);
        let t = new_trace_id();
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        let w = new_component_id("worker");
        assert!(w.starts_with("worker-") && !w.contains('.'));
        cap_proto::subject::worker_jobs(&w).unwrap();
    }
}
