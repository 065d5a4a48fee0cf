//! `cargo xtask interop`: the cross-SDK tests against cap-sdk-python 2.10.0.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The reference peer, pinned.
pub const PEER: &str = "cap-sdk-python==2.10.0";

pub fn run(root: &Path, venv: &Path, setup_only: bool) -> Result<()> {
    let python = ensure_venv(venv)?;
    if setup_only {
        println!("{}", python.display());
        return Ok(());
    }
    let status = Command::new("cargo")
        .current_dir(root)
        .env("CAP_INTEROP_PYTHON", &python)
        .args([
            "test",
            "--workspace",
            "--test",
            "interop",
            "--",
            "--include-ignored",
        ])
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("interop tests failed");
    }
    Ok(())
}

/// Create the venv (when missing) and install the pinned peer into it.
pub fn ensure_venv(venv: &Path) -> Result<PathBuf> {
    let venv = std::path::absolute(venv)?;
    let python = venv.join("bin/python");
    let marker = venv.join(".cap-peer-installed");
    if marker.exists() && python.exists() {
        return Ok(python);
    }
    let base = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    // Progress goes to stderr: with --setup-only, stdout is only the interpreter path.
    run_cmd(
        Command::new(&base)
            .args(["-m", "venv"])
            .arg(&venv)
            .stdout(std::process::Stdio::null()),
    )?;
    run_cmd(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                PEER,
            ])
            .stdout(std::process::Stdio::null()),
    )?;
    std::fs::write(&marker, PEER)?;
    eprintln!("interop: {PEER} installed in {}", venv.display());
    Ok(python)
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
