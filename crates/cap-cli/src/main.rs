//! `cap`: the cap-rs command line.
//!
//! Exit status: 0 success; 1 bad input or a failed check (one line on stderr saying what
//! and where); 2 usage errors (and, for `cap verify`, input that is not a packet or an
//! unreadable key).

mod cmd;

/// mimalloc: under the scheduler path, glibc malloc (arena lock contention, free-list
/// consolidation) took a quarter of the CPU; see the closing note of the session that
/// measured it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cap",
    version,
    about = "CAP (Cordum Agent Protocol) tools",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Binary BusPacket (or another message) → canonical JSON.
    Decode(cmd::codec::DecodeArgs),
    /// JSON → canonical binary.
    Encode(cmd::codec::EncodeArgs),
    /// JSON Schema of a message (or of all messages).
    Schema(cmd::codec::SchemaArgs),
    /// Check a binary BusPacket against the protocol rules.
    Validate(cmd::codec::ValidateArgs),
    /// Generate a P-256 key pair.
    Keygen(cmd::keys::KeygenArgs),
    /// Sign a binary BusPacket.
    Sign(cmd::keys::SignArgs),
    /// Verify the signature of a binary BusPacket.
    Verify(cmd::keys::VerifyArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(cmd::bench_e2e::BenchCommands),
    /// Run a worker against NATS and Redis.
    #[command(subcommand)]
    Worker(cmd::worker::WorkerCommand),
    /// Submit a job (and wait for its result).
    Submit(cmd::submit::SubmitArgs),
    /// The whole CAP flow in one process: every job path, live, then a summary.
    Demo(cmd::demo::DemoArgs),
    /// Run the scheduler (control plane) against NATS and Redis.
    Scheduler(cmd::scheduler::SchedulerArgs),
    /// The HTTP API gateway and its dashboard, on NATS and Redis.
    Gateway(cmd::gateway::GatewayArgs),
    /// Look at jobs: get, list, watch, result, cancel (over the gateway or the store).
    #[command(subcommand)]
    Job(cmd::job::JobCommand),
    /// Jobs held for a human decision: list, approve, reject.
    #[command(subcommand)]
    Approvals(cmd::job::ApprovalsCommand),
    /// Approve a job held for a human decision.
    Approve(cmd::scheduler::ApprovalArgs),
    /// Reject a job held for a human decision.
    Reject(cmd::scheduler::ApprovalArgs),
    /// Print live bus traffic as decoded one-line JSON.
    Tail(cmd::scheduler::TailArgs),
    /// The Safety Kernel: serve, check, schema.
    #[command(subcommand)]
    Safety(cmd::safety::SafetyCommand),
    /// The adapter of the CAP conformance kit (adapter-v1 JSON Lines on stdin/stdout).
    TckAdapter(cmd::tck::TckAdapterArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Decode(a) => cmd::codec::decode(a),
        Command::Encode(a) => cmd::codec::encode(a),
        Command::Schema(a) => cmd::codec::schema(a),
        Command::Validate(a) => cmd::codec::validate(a),
        Command::Keygen(a) => cmd::keys::keygen(a),
        Command::Sign(a) => cmd::keys::sign(a),
        Command::Verify(a) => cmd::keys::verify(a),
        Command::Bench(c) => cmd::bench_e2e::run(c),
        Command::Worker(c) => cmd::worker::run(c),
        Command::Submit(a) => cmd::submit::submit(a),
        Command::Demo(a) => cmd::demo::run(a),
        Command::Scheduler(a) => cmd::scheduler::scheduler(a),
        Command::Gateway(a) => cmd::gateway::gateway(a),
        Command::Job(c) => cmd::job::job(c),
        Command::Approvals(c) => cmd::job::approvals(c),
        Command::Approve(a) => cmd::scheduler::approval(a, true),
        Command::Reject(a) => cmd::scheduler::approval(a, false),
        Command::Tail(a) => cmd::scheduler::tail(a),
        Command::Safety(c) => {
            cmd::worker::runtime().and_then(|rt| rt.block_on(cmd::safety::run(c)))
        }
        Command::TckAdapter(a) => cmd::tck::run(a),
    };
    cmd::telemetry::shutdown();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cap: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string().replace('\n', " "))
        .collect::<Vec<_>>()
        .join(": ")
}
