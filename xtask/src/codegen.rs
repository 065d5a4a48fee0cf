//! `cargo xtask codegen`: proto/ → crates/cap-proto/src/gen (prost types + descriptor set).

use anyhow::{Context, Result, bail};
use prost::Message;
use std::fs;
use std::path::Path;

const PROTO_FILES: &[&str] = &[
    "cordum/agent/v1/job.proto",
    "cordum/agent/v1/heartbeat.proto",
    "cordum/agent/v1/alert.proto",
    "cordum/agent/v1/handshake.proto",
    "cordum/agent/v1/buspacket.proto",
    "cordum/agent/v1/safety.proto",
];

/// Generated files, relative to the output directory.
const OUTPUTS: &[&str] = &["cordum.agent.v1.rs", "descriptor.bin"];

pub fn run(root: &Path, check: bool) -> Result<()> {
    let committed = root.join("crates/cap-proto/src/gen");
    let tmp = std::env::temp_dir().join(format!("cap-codegen-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    generate(root, &tmp)?;

    if check {
        let mut stale = Vec::new();
        for name in OUTPUTS {
            let new = fs::read(tmp.join(name))?;
            let old = fs::read(committed.join(name)).unwrap_or_default();
            if new != old {
                stale.push(*name);
            }
        }
        fs::remove_dir_all(&tmp).ok();
        if !stale.is_empty() {
            bail!(
                "generated code is out of date ({}): run `cargo xtask codegen` and commit",
                stale.join(", ")
            );
        }
        println!("codegen: up to date");
        return Ok(());
    }

    fs::create_dir_all(&committed)?;
    for name in OUTPUTS {
        fs::copy(tmp.join(name), committed.join(name))
            .with_context(|| format!("writing {name}"))?;
    }
    fs::remove_dir_all(&tmp).ok();
    println!("codegen: wrote {}", committed.display());
    Ok(())
}

fn generate(root: &Path, out: &Path) -> Result<()> {
    let proto_root = root.join("proto");
    let fds = protox::compile(PROTO_FILES, [&proto_root]).context("compiling proto/")?;
    fs::write(out.join("descriptor.bin"), fds.encode_to_vec())?;

    let mut config = prost_build::Config::new();
    config
        .out_dir(out)
        // Sorted maps: deterministic iteration, and the order canonical encoding needs.
        .btree_map(["."])
        .enable_type_names()
        .bytes([".cordum.agent.v1.BusPacket.signature"]);
    config.compile_fds(fds).context("generating Rust code")?;
    Ok(())
}
