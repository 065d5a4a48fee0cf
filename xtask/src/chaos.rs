//! `cargo xtask chaos --minutes N`: the chaos test (`crates/cap-cli/tests/chaos.rs`) run
//! for N minutes per topology (a 3-node NATS cluster with a 3+3 Redis Cluster, and single
//! servers), in release mode. It prints, per topology, the submitted / terminal / lost /
//! rewritten / duplicated counts, and fails when any job was lost, rewritten or ran twice.

use anyhow::{Result, bail};
use std::path::Path;
use std::process::Command;

/// Which topologies to run.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Topology {
    /// A 3-node NATS cluster (JetStream, 3 replicas) and a 3+3 Redis Cluster.
    Cluster,
    /// One nats-server and one redis-server.
    Single,
    /// Both, one after the other.
    Both,
}

pub fn run(root: &Path, minutes: f64, topology: Topology) -> Result<()> {
    if minutes <= 0.0 {
        bail!("--minutes must be positive");
    }
    let secs = (minutes * 60.0).round().max(10.0) as u64;
    let filters: &[&str] = match topology {
        Topology::Cluster => &["chaos_on_a_nats_cluster_and_a_redis_cluster"],
        Topology::Single => &["chaos_on_a_single_nats_and_redis"],
        Topology::Both => &[
            "chaos_on_a_nats_cluster_and_a_redis_cluster",
            "chaos_on_a_single_nats_and_redis",
        ],
    };
    for filter in filters {
        eprintln!("xtask chaos: {filter} for {secs} s");
        let status = Command::new(env!("CARGO"))
            .current_dir(root)
            .env("CAP_CHAOS_SECS", secs.to_string())
            .args([
                "test",
                "--release",
                "-p",
                "cap-cli",
                "--test",
                "chaos",
                "--",
                "--ignored",
                "--exact",
                "--nocapture",
                filter,
            ])
            .status()?;
        if !status.success() {
            bail!("{filter} failed");
        }
    }
    Ok(())
}
