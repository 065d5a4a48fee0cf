//! `cargo xtask tck`: the CAP conformance kit against `cap tck-adapter`, both roles.
//!
//! Builds `cap` (unless `--adapter` names a binary), runs our adapter-v1 runner
//! ([`runner`]) over the vendored suites (`tck/scenarios`) once per role, prints a table
//! per role and profile, optionally writes one report per role and profile (the shape
//! of `tck/schema/report.schema.json`), and fails unless every profile named by
//! `--require` is conformant for both roles. Every profile of the suites is run and
//! printed, required or not.

pub mod runner;
#[cfg(test)]
mod runner_tests;

use anyhow::{Context, Result, bail};
use runner::{Role, Run, Status};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What `cargo xtask tck` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Profiles that must be conformant (the others are printed only).
    pub require: Vec<String>,
    /// The suites' directory.
    pub scenarios: PathBuf,
    /// The `cap` binary to use instead of building one.
    pub adapter: Option<PathBuf>,
    /// The roles to run.
    pub roles: Vec<Role>,
    /// Where to write the JSON reports.
    pub json: Option<PathBuf>,
    /// Cargo features to build `cap` with (for example a `tck-break-*` build).
    pub features: Option<String>,
}

/// Runs the kit.
pub fn run(root: &Path, opts: &Options) -> Result<()> {
    let scenarios = runner::load_dir(&opts.scenarios).map_err(anyhow::Error::msg)?;
    let mut profiles: Vec<String> = scenarios.iter().map(|s| s.profile.clone()).collect();
    profiles.sort();
    profiles.dedup();
    for p in &opts.require {
        if !profiles.contains(p) {
            bail!(
                "--require {p}: no scenario has that profile ({})",
                profiles.join(", ")
            );
        }
    }
    let cap = match &opts.adapter {
        Some(p) => p.clone(),
        None => build_cap(root, opts.features.as_deref())?,
    };
    let mut failures = Vec::new();
    for role in &opts.roles {
        let argv = vec![
            cap.display().to_string(),
            "tck-adapter".to_owned(),
            "--role".to_owned(),
            role.as_str().to_owned(),
        ];
        let run = runner::run_adapter(&argv, &scenarios, &profiles)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("running {}", argv.join(" ")))?;
        if run.handshake.role != *role {
            bail!(
                "`--role {role}` answered the handshake as {}",
                run.handshake.role
            );
        }
        for profile in &profiles {
            print_table(&run, profile);
            if let Some(dir) = &opts.json {
                write_report(dir, &run, profile)?;
            }
            if opts.require.contains(profile) && !runner::summarize(&run, profile).conformant {
                failures.push(format!("{role}/{profile}"));
            }
        }
        if !run.violations.is_empty() {
            println!("protocol violations by the {role} adapter:");
            for v in &run.violations {
                println!("  - {v}");
            }
        }
        if !run.stderr.trim().is_empty() {
            println!("stderr of the {role} adapter:\n{}", run.stderr.trim_end());
        }
    }
    if !failures.is_empty() {
        bail!(
            "not conformant: {} (required: {})",
            failures.join(", "),
            opts.require.join(",")
        );
    }
    println!(
        "\nconformant in every required profile ({}) for {}",
        opts.require.join(","),
        opts.roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(" and ")
    );
    Ok(())
}

/// Builds `cap` and returns the path of the binary cargo made.
fn build_cap(root: &Path, features: Option<&str>) -> Result<PathBuf> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root).args([
        "build",
        "-p",
        "cap-cli",
        "--bin",
        "cap",
        "--message-format=json-render-diagnostics",
    ]);
    if let Some(f) = features {
        cmd.args(["--features", f]);
    }
    // What `cargo run` set for this process is not the build's business: build scripts
    // that watch these variables (ring's watches CARGO_MANIFEST_DIR) would rebuild.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || matches!(
                &*k,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_BIN_NAME"
            )
        {
            cmd.env_remove(&*k);
        }
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !out.status.success() {
        bail!("cargo build -p cap-cli failed");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "cap")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo built no `cap` executable")
}

fn print_table(run: &Run, profile: &str) {
    let s = runner::summarize(run, profile);
    let verdict = if s.conformant {
        "CONFORMANT"
    } else {
        "NOT CONFORMANT"
    };
    let applicable = s.total - s.na;
    println!(
        "\n== {} · {profile}: {verdict} — {applicable} applicable: {} PASS, {} FAIL, {} ERROR, {} UNSUPPORTED ({} {}, {})",
        run.handshake.role,
        s.pass,
        s.fail,
        s.error,
        s.unsupported,
        run.handshake.sdk,
        run.handshake.transport,
        run.handshake.profiles.join("+"),
    );
    let width = run.cases.iter().map(|c| c.id.len()).max().unwrap_or(0);
    let mut other_role = 0;
    for c in run.cases.iter().filter(|c| c.profile == profile) {
        if !c.applicable {
            other_role += 1;
            continue;
        }
        println!(
            "  {:<11} {:<width$} {:>5} ms  {}",
            c.status.as_str(),
            c.id,
            c.duration_ms,
            c.detail
        );
        if c.status != Status::Pass {
            let evidence: Vec<String> =
                c.evidence.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("  {:<11} evidence: {}", "", evidence.join("  "));
        }
    }
    if other_role > 0 {
        println!("  ({other_role} cases of the other role: N/A, not sent)");
    }
}

fn write_report(dir: &Path, run: &Run, profile: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = format!("cap-rs-{}", run.handshake.role);
    let report = runner::report(
        run,
        &name,
        profile,
        concat!("cap-rs xtask ", env!("CARGO_PKG_VERSION")),
    );
    let path = dir.join(format!("{}-{profile}.json", run.handshake.role));
    let mut text = serde_json::to_string_pretty(&report)?;
    text.push('\n');
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    println!("  report: {}", path.display());
    Ok(())
}
