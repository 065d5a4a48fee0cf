//! Developer tasks for cap-rs. Run with `cargo xtask <task>`.
//!
//! - `codegen [--check]`: regenerate the committed protobuf code from `proto/` with a
//!   pure-Rust compiler (protox), or fail when the committed code is out of date.
//! - `interop`: build the venvs of the Python reference peers (cap-sdk-python 2.10.0 and
//!   2.17.0) and run the cross-SDK tests.
//! - `bench sign`: our sign/verify rates next to the peer's, in one run.
//! - `bench scale [--jobs N --rounds R --schedulers 1,3 --rss-jobs M]`: the full path on
//!   private NATS + Redis with one and three schedulers side by side, and scheduler RSS.
//! - `chaos --minutes N`: the kill -9 chaos run of the control plane, for N minutes.
//! - `tck [--require core[,cap-production]]`: the CAP conformance kit against
//!   `cap tck-adapter`, both roles (exit 0 only if every required profile is
//!   conformant).

mod bench;
mod bench_scale;
mod canonical_gen;
mod chaos;
mod codegen;
mod interop;
mod tck;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "xtask", about = "cap-rs developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Regenerate `crates/cap-proto/src/gen` from `proto/`.
    Codegen {
        /// Do not write; fail if the committed code differs from what would be generated.
        #[arg(long)]
        check: bool,
    },
    /// Install cap-sdk-python 2.10.0 and 2.17.0 (and cordum-sdk 0.1.0, the gateway's
    /// peer) into throwaway venvs and run the interop tests against both.
    Interop {
        /// Where the 2.10.0 venv lives (created when missing).
        #[arg(long, default_value = ".venv-interop")]
        venv: PathBuf,
        /// Where the 2.17.0 venv lives (created when missing).
        #[arg(long, default_value = ".venv-interop-217")]
        venv_217: PathBuf,
        /// Where the cordum-sdk 0.1.0 venv lives (created when missing).
        #[arg(long, default_value = ".venv-cordum")]
        venv_cordum: PathBuf,
        /// Only prepare the venvs and print `CAP_INTEROP_PYTHON=…`,
        /// `CAP_INTEROP_PYTHON_217=…` and `CAP_CORDUM_PYTHON=…`, one per line.
        #[arg(long)]
        setup_only: bool,
    },
    /// The chaos run: 3 schedulers, 2 workers, steady load; one scheduler and one NATS
    /// node killed mid-run and restarted. Prints submitted / terminal / lost / rewritten /
    /// duplicated counts; fails on any lost, rewritten or duplicated job.
    Chaos {
        /// Minutes of load per topology.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Which servers.
        #[arg(long, value_enum, default_value = "cluster")]
        topology: chaos::Topology,
    },
    /// Benchmarks that compare cap-rs with the reference peer in one run.
    Bench {
        /// Which benchmark: `sign` (ours vs the peer's sign/verify) or `scale` (the full
        /// path on private NATS + Redis with 1 and 3 schedulers, and scheduler RSS).
        what: String,
        /// `sign`: seconds per figure.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// `sign`: where the peer's venv lives (created when missing).
        #[arg(long, default_value = ".venv-interop")]
        venv: PathBuf,
        /// `scale`: jobs per measurement.
        #[arg(long, default_value_t = 20_000)]
        jobs: u64,
        /// `scale`: alternating rounds of each configuration.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// `scale`: scheduler counts to compare (the first is the ratios' baseline).
        #[arg(long, value_delimiter = ',', default_value = "1,3")]
        schedulers: Vec<usize>,
        /// `scale`: then push this many jobs through one scheduler, printing its RSS
        /// after each tenth (0: skip).
        #[arg(long, default_value_t = 0)]
        rss_jobs: u64,
    },
    /// Run the CAP conformance kit (adapter-v1) against `cap tck-adapter`, both roles:
    /// a table per role and profile; exit 0 only if the required profiles conform.
    Tck {
        /// Profiles that must be conformant, comma-separated (every profile is run
        /// and printed).
        #[arg(long, default_value = "core", value_delimiter = ',')]
        require: Vec<String>,
        /// The scenario suites.
        #[arg(long, default_value = "tck/scenarios")]
        scenarios: PathBuf,
        /// A `cap` binary to use instead of building one.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// Only this role.
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
        /// Write one report per role and profile (report.schema.json) into this directory.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Build `cap` with these cargo features.
        #[arg(long)]
        features: Option<String>,
    },
}

/// `--role` of `tck`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum RoleArg {
    /// `cap tck-adapter --role worker`.
    Worker,
    /// `cap tck-adapter --role control-plane`.
    ControlPlane,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.task {
        Task::Codegen { check } => codegen::run(&root, check),
        Task::Interop {
            venv,
            venv_217,
            venv_cordum,
            setup_only,
        } => interop::run(
            &root,
            &root.join(venv),
            &root.join(venv_217),
            &root.join(venv_cordum),
            setup_only,
        ),
        Task::Chaos { minutes, topology } => chaos::run(&root, minutes, topology),
        Task::Bench {
            what,
            seconds,
            venv,
            jobs,
            rounds,
            schedulers,
            rss_jobs,
        } => match what.as_str() {
            "sign" => bench::sign(&root, &root.join(venv), seconds),
            "scale" => bench_scale::run(
                &root,
                &bench_scale::Options {
                    jobs,
                    rounds,
                    schedulers,
                    rss_jobs,
                },
            ),
            other => anyhow::bail!("unknown benchmark `{other}` (sign, scale)"),
        },
        Task::Tck {
            require,
            scenarios,
            adapter,
            role,
            json,
            features,
        } => {
            let roles = match role {
                Some(RoleArg::Worker) => vec![tck::runner::Role::Worker],
                Some(RoleArg::ControlPlane) => vec![tck::runner::Role::ControlPlane],
                None => vec![tck::runner::Role::Worker, tck::runner::Role::ControlPlane],
            };
            let opts = tck::Options {
                require: require.into_iter().filter(|p| !p.is_empty()).collect(),
                scenarios: root.join(scenarios),
                adapter,
                roles,
                json: json.map(|j| root.join(j)),
                features,
            };
            tck::run(&root, &opts)
        }
    }
}

/// The workspace root: xtask lives one level below it.
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
