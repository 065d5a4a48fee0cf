//! `cargo xtask bench sign`: our sign/verify rates next to the reference peer's, measured
//! in one run on the same packet.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

pub fn sign(root: &Path, venv: &Path, seconds: f64) -> Result<()> {
    let python = crate::interop::ensure_venv(venv)?;
    let status = Command::new("cargo")
        .current_dir(root)
        .args(["build", "--release", "--quiet", "-p", "cap-cli"])
        .status()
        .context("building cap")?;
    if !status.success() {
        bail!("building cap failed");
    }
    let secs = seconds.to_string();
    // Alternate rounds so that background load hits both sides alike; keep the best.
    let (mut ours, mut peer) = (serde_json::Value::Null, serde_json::Value::Null);
    for _ in 0..ROUNDS {
        let o = json_of(Command::new(root.join("target/release/cap")).args([
            "bench",
            "sign",
            "--json",
            "--seconds",
            &secs,
        ]))?;
        let hex = o["packet_hex"].as_str().context("packet_hex")?.to_owned();
        let p = json_of(
            Command::new(&python)
                .arg(root.join("crates/cap-sign/tests/peer/bench.py"))
                .args([hex.as_str(), secs.as_str()]),
        )?;
        ours = best(ours, o);
        peer = best(peer, p);
    }
    let row = |name: &str, key: &str| -> Result<()> {
        let a = ours[key].as_f64().context("rate")?;
        let b = peer[key].as_f64().context("rate")?;
        println!("{name:<8} {a:>12.0} {b:>14.0} {:>8.2}x", a / b);
        Ok(())
    };
    println!(
        "typical signed JobRequest ({} bytes), backend {}, best of {ROUNDS} alternating rounds of {seconds} s, one core each",
        ours["packet_bytes"], ours["backend"]
    );
    println!(
        "{:<8} {:>12} {:>14} {:>9}",
        "op/s", "cap-rs", "cap-sdk-python", "ratio"
    );
    row("sign", "sign_per_sec")?;
    row("verify", "verify_per_sec")?;
    Ok(())
}

const ROUNDS: usize = 3;

/// Per-key maximum of two result objects (keeps the other fields of the first).
fn best(acc: serde_json::Value, new: serde_json::Value) -> serde_json::Value {
    if acc.is_null() {
        return new;
    }
    let mut out = acc.clone();
    for key in ["sign_per_sec", "verify_per_sec"] {
        let a = acc[key].as_f64().unwrap_or(0.0);
        let b = new[key].as_f64().unwrap_or(0.0);
        out[key] = serde_json::json!(a.max(b));
    }
    out
}

fn json_of(cmd: &mut Command) -> Result<serde_json::Value> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}
