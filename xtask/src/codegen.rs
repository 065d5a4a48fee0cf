//! `cargo xtask codegen`: proto/ → crates/cap-proto/src/gen (prost types + descriptor set)
//! and crates/cap-safety/src/gen (tonic stubs of `SafetyKernel` that reuse cap-proto's
//! message types through `extern_path`, so there is one copy of every message).

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
    "cordum/agent/v1/policy.proto",
];

/// Generated files, relative to the output directory.
const OUTPUTS: &[&str] = &[
    "cordum.agent.v1.rs",
    "descriptor.bin",
    "canonical_encode.rs",
];

/// The proto file defining `SafetyKernel`, and the committed stub files it generates
/// (relative to the workspace root; the file name is the name prost-build writes).
const SAFETY_PROTO: &str = "cordum/agent/v1/safety.proto";
const SAFETY_OUTPUTS: &[&str] = &["crates/cap-safety/src/gen/cordum.agent.v1.rs"];

pub fn run(root: &Path, check: bool) -> Result<()> {
    let committed = root.join("crates/cap-proto/src/gen");
    let tmp = std::env::temp_dir().join(format!("cap-codegen-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    generate(root, &tmp)?;
    let tmp_safety = tmp.join("safety");
    fs::create_dir_all(&tmp_safety)?;
    generate_safety_stubs(root, &tmp_safety)?;

    if check {
        let mut stale = Vec::new();
        for name in OUTPUTS {
            let new = fs::read(tmp.join(name))?;
            let old = fs::read(committed.join(name)).unwrap_or_default();
            if new != old {
                stale.push(*name);
            }
        }
        for path in SAFETY_OUTPUTS {
            let new = fs::read(tmp_safety.join(file_name(path)))?;
            let old = fs::read(root.join(path)).unwrap_or_default();
            if new != old {
                stale.push(*path);
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
    for path in SAFETY_OUTPUTS {
        let dest = root.join(path);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::copy(tmp_safety.join(file_name(path)), &dest)
            .with_context(|| format!("writing {path}"))?;
        println!("codegen: wrote {}", dest.display());
    }
    fs::remove_dir_all(&tmp).ok();
    println!("codegen: wrote {}", committed.display());
    Ok(())
}

/// The last component of a `/`-separated path.
fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The tonic client and server stubs of `SafetyKernel` (pure Rust: protox feeds
/// tonic-prost-build's descriptor path, no system protoc). Every message of the package
/// resolves to `::cap_proto::v1`, so the output holds only service code.
fn generate_safety_stubs(root: &Path, out: &Path) -> Result<()> {
    let proto_root = root.join("proto");
    let fds = protox::compile([SAFETY_PROTO], [&proto_root]).context("compiling proto/")?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .out_dir(out)
        .extern_path(".cordum.agent.v1", "::cap_proto::v1")
        .compile_fds_with_config(fds, prost_build::Config::new())
        .context("generating SafetyKernel stubs")?;
    Ok(())
}

fn generate(root: &Path, out: &Path) -> Result<()> {
    let proto_root = root.join("proto");
    let fds = protox::compile(PROTO_FILES, [&proto_root]).context("compiling proto/")?;
    fs::write(out.join("descriptor.bin"), fds.encode_to_vec())?;
    // Single-pass canonical encoders (lead-owned generator; keep this line).
    fs::write(
        out.join("canonical_encode.rs"),
        crate::canonical_gen::generate(&fds)?,
    )?;

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
