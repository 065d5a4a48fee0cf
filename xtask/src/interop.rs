//! `cargo xtask interop`: the cross-SDK tests against the reference peers,
//! cap-sdk-python 2.10.0 and 2.17.0, each in its own throwaway venv.
//!
//! The tests find the interpreters in `CAP_INTEROP_PYTHON` (2.10.0) and
//! `CAP_INTEROP_PYTHON_217` (2.17.0) and fail when either is missing; the gateway's
//! test finds cordum-sdk 0.1.0 in `CAP_CORDUM_PYTHON`. `--setup-only`
//! prints one `NAME=/path/to/python` line per peer, for a shell to export:
//!
//! ```text
//! while IFS='=' read -r name path; do export "$name=$path"; done \
//!     < <(cargo xtask interop --setup-only)
//! ```

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A pinned reference peer and the variable that names its interpreter.
pub struct Peer {
    /// What pip installs.
    pub requirement: &'static str,
    /// The environment variable the tests read.
    pub env: &'static str,
}

/// cap-sdk-python 2.10.0, the floor cap-rs was built against.
pub const PEER_210: Peer = Peer {
    requirement: "cap-sdk-python==2.10.0",
    env: "CAP_INTEROP_PYTHON",
};

/// cap-sdk-python 2.17.0, the current release.
pub const PEER_217: Peer = Peer {
    requirement: "cap-sdk-python==2.17.0",
    env: "CAP_INTEROP_PYTHON_217",
};

/// cordum-sdk 0.1.0, the Cordum control plane's HTTP client (the gateway's peer).
/// Its wheel imports `dateutil` without declaring it, so python-dateutil goes with it.
pub const PEER_CORDUM: Peer = Peer {
    requirement: "cordum-sdk==0.1.0 python-dateutil>=2.8",
    env: "CAP_CORDUM_PYTHON",
};

/// Makes the venvs; with `setup_only` prints their interpreters, else runs every
/// `interop` test target with the variables set.
pub fn run(
    root: &Path,
    venv_210: &Path,
    venv_217: &Path,
    venv_cordum: &Path,
    setup_only: bool,
) -> Result<()> {
    let pythons = [
        (&PEER_210, ensure_venv_for(venv_210, &PEER_210)?),
        (&PEER_217, ensure_venv_for(venv_217, &PEER_217)?),
        (&PEER_CORDUM, ensure_venv_for(venv_cordum, &PEER_CORDUM)?),
    ];
    if setup_only {
        for (peer, python) in &pythons {
            println!("{}={}", peer.env, python.display());
        }
        return Ok(());
    }
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root).args([
        "test",
        "--workspace",
        "--test",
        "interop",
        "--",
        "--include-ignored",
    ]);
    for (peer, python) in &pythons {
        cmd.env(peer.env, python);
    }
    let status = cmd.status().context("running cargo test")?;
    if !status.success() {
        bail!("interop tests failed");
    }
    Ok(())
}

/// The 2.10.0 venv (used by `cargo xtask bench sign`).
pub fn ensure_venv(venv: &Path) -> Result<PathBuf> {
    ensure_venv_for(venv, &PEER_210)
}

/// Creates the venv (when missing, or holding another release) and installs `peer`.
pub fn ensure_venv_for(venv: &Path, peer: &Peer) -> Result<PathBuf> {
    let venv = std::path::absolute(venv)?;
    let python = venv.join("bin/python");
    let marker = venv.join(".cap-peer-installed");
    let installed = std::fs::read_to_string(&marker).unwrap_or_default();
    if installed.trim() == peer.requirement && python.exists() {
        return Ok(python);
    }
    let base = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    // Progress goes to stderr: with --setup-only, stdout is only the interpreter paths.
    run_cmd(
        Command::new(&base)
            .args(["-m", "venv", "--clear"])
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
            ])
            .args(peer.requirement.split_whitespace())
            .stdout(std::process::Stdio::null()),
    )?;
    std::fs::write(&marker, peer.requirement)?;
    eprintln!(
        "interop: {} installed in {}",
        peer.requirement,
        venv.display()
    );
    Ok(python)
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
