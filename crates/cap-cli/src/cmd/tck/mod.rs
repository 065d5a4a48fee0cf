//! `cap tck-adapter --role worker|control-plane`: the cap-rs adapter of the CAP
//! conformance kit (adapter-v1, see [`protocol`]).
//!
//! The runner starts the adapter, says `hello`, gets the handshake, then sends one `run`
//! per case and gets exactly one `result` per run. Each case is decided by driving the
//! real cap-rs components with the case's parameters — the worker (`cap_runtime::Worker`
//! on the in-memory bus and blob store) for worker cases, the scheduler core
//! (`cap_scheduler::core::SchedulerCore`) for control-plane cases, the worker's packet
//! layer for malformed bytes — and the result carries the evidence: observed states,
//! error codes, counts of dispatches, handler calls and alerts. One file per scenario
//! family; [`worker_bed`] and [`plane`] are the two harnesses.
//!
//! Exit status: 0 after `bye` or end of input; 1 when the runner breaks adapter-v1 in a
//! way that cannot be answered (a bad line that is not a readable `run`, a `run` before
//! `hello`, a second `hello`); 2 for usage errors.

mod cancellation;
mod duplicates;
mod lifecycle;
mod malformed;
mod negotiation;
mod outcome;
mod plane;
pub mod protocol;
mod retries;
mod safety;
mod worker_bed;

use anyhow::{Context, Result};
use outcome::{Outcome, Params};
use protocol::{Command, Handshake, Role, Run, Status};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

/// `cap tck-adapter` arguments.
#[derive(clap::Args, Debug)]
pub struct TckAdapterArgs {
    /// Which component boundary this adapter plays.
    #[arg(long, value_enum)]
    pub role: RoleArg,
}

/// `--role`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleArg {
    /// Worker-owned behaviour (cap_runtime::Worker).
    Worker,
    /// Scheduler-owned behaviour (cap_scheduler).
    ControlPlane,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Worker => Role::Worker,
            RoleArg::ControlPlane => Role::ControlPlane,
        }
    }
}

/// The conformance profiles this adapter implements.
pub const PROFILES: [&str; 2] = ["core", "cap-production"];

/// A case must answer well within the runner's 30 s.
const CASE_LIMIT: Duration = Duration::from_secs(25);

/// The scenario families with a driver for `role`.
pub fn features(role: Role) -> Vec<String> {
    let families: &[&str] = match role {
        Role::Worker => &[
            "lifecycle",
            "cancellation",
            "malformed",
            "duplicates",
            "retries",
        ],
        Role::ControlPlane => &[
            "lifecycle",
            "cancellation",
            "negotiation",
            "safety",
            "duplicates",
            "retries",
        ],
    };
    families.iter().map(|f| f.to_string()).collect()
}

/// Runs the adapter on stdin and stdout.
pub fn run(args: TckAdapterArgs) -> Result<ExitCode> {
    let role = Role::from(args.role);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    serve(role, &rt, &mut stdin.lock(), &mut stdout.lock())
}

/// The session: handshake after `hello`, one result per `run`, until `bye`.
pub fn serve(
    role: Role,
    rt: &tokio::runtime::Runtime,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> Result<ExitCode> {
    let mut greeted = false;
    while let Some(line) = protocol::read_line(input).context("reading stdin")? {
        let command = match line.and_then(|l| protocol::parse_command(&l)) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(v) => match (greeted, v.run_id.clone()) {
                (true, Some(id)) => {
                    eprintln!("tck-adapter: protocol violation in run {id:?}: {v}");
                    let detail = format!("protocol violation: {v}");
                    write_line(
                        output,
                        &protocol::encode_result(&id, Status::Error, &detail, &BTreeMap::new())?,
                    )?;
                    continue;
                }
                _ => {
                    eprintln!("tck-adapter: protocol violation: {v}");
                    return Ok(ExitCode::from(1));
                }
            },
        };
        match command {
            Command::Hello if !greeted => {
                greeted = true;
                let hs = Handshake::new(
                    role,
                    PROFILES.iter().map(|p| p.to_string()).collect(),
                    features(role),
                    cap_runtime::worker::SDK_VERSION,
                    "memory",
                );
                write_line(output, &protocol::encode_handshake(&hs)?)?;
            }
            Command::Hello => {
                eprintln!("tck-adapter: protocol violation: a second hello");
                return Ok(ExitCode::from(1));
            }
            Command::Run(_) | Command::Bye if !greeted => {
                eprintln!("tck-adapter: protocol violation: a command before hello");
                return Ok(ExitCode::from(1));
            }
            Command::Run(run) => {
                let outcome = execute(role, rt, &run);
                let line = protocol::encode_result(
                    &run.id,
                    outcome.status,
                    &outcome.detail,
                    &outcome.evidence,
                )?;
                write_line(output, &line)?;
            }
            Command::Bye => return Ok(ExitCode::SUCCESS),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_line(output: &mut impl Write, line: &str) -> Result<()> {
    output
        .write_all(line.as_bytes())
        .context("writing stdout")?;
    output.write_all(b"\n").context("writing stdout")?;
    output.flush().context("writing stdout")
}

/// Runs one case to its outcome (never longer than [`CASE_LIMIT`]).
pub fn execute(role: Role, rt: &tokio::runtime::Runtime, run: &Run) -> Outcome {
    let case = run.scenario.as_str();
    let params = Params(&run.params);
    let family = case.split('/').next().unwrap_or("");
    let is_worker_case = case.contains("/worker-") || matches!(family, "malformed");
    let is_cp_case = case.contains("/cp-") || matches!(family, "negotiation" | "safety");
    let mine = match role {
        Role::Worker => is_worker_case,
        Role::ControlPlane => is_cp_case,
    };
    if !mine {
        if is_worker_case || is_cp_case {
            return Outcome::not_applicable(format!(
                "{case} belongs to the other role (this adapter is {})",
                role.as_str()
            ));
        }
        return Outcome::unsupported(format!("no driver for case {case}"));
    }
    let result = match role {
        Role::ControlPlane => match family {
            "lifecycle" | "cancellation" => lifecycle::control_plane(params),
            "negotiation" => negotiation::control_plane(case, params),
            "safety" => safety::control_plane(params),
            "duplicates" => duplicates::control_plane(params),
            "retries" => retries::control_plane(params),
            _ => return Outcome::unsupported(format!("no driver for family {family:?}")),
        },
        Role::Worker => {
            let fut = async {
                match family {
                    "lifecycle" => Some(lifecycle::worker(params).await),
                    "cancellation" => Some(cancellation::worker(params).await),
                    "malformed" => Some(malformed::worker(case, params).await),
                    "duplicates" => Some(duplicates::worker(params).await),
                    "retries" => Some(retries::worker(params).await),
                    _ => None,
                }
            };
            match rt.block_on(async { tokio::time::timeout(CASE_LIMIT, fut).await }) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    return Outcome::unsupported(format!("no driver for family {family:?}"));
                }
                Err(_) => {
                    return Outcome {
                        status: Status::Error,
                        detail: format!("the case did not finish within {CASE_LIMIT:?}"),
                        evidence: BTreeMap::new(),
                    };
                }
            }
        }
    };
    result.unwrap_or_else(|e| Outcome {
        status: Status::Error,
        detail: e.to_string(),
        evidence: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn session(role: Role, input: &str) -> (ExitCode, Vec<Value>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut out = Vec::new();
        let code = serve(role, &rt, &mut input.as_bytes(), &mut out).unwrap();
        let lines = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (code, lines)
    }

    #[test]
    fn handshake_then_one_result_per_run() {
        let input = concat!(
            "{\"type\":\"hello\"}\n",
            "\n",
            "{\"type\":\"run\",\"id\":\"r1\",\"scenario\":\"safety/x\",\"params\":{\"decision\":\"DENY\",\"expect\":\"no-dispatch\"}}\n",
            "{\"type\":\"run\",\"id\":\"r2\",\"scenario\":\"safety/x\",\"bogus\":1}\n",
            "{\"type\":\"run\",\"id\":\"r3\",\"scenario\":\"malformed/truncated-wire\"}\n",
            "{\"type\":\"run\",\"id\":\"r4\",\"scenario\":\"teleport/cp-beam\"}\n",
            "{\"type\":\"bye\"}\n",
            "{\"type\":\"run\",\"id\":\"after-bye\",\"scenario\":\"safety/x\"}\n",
        );
        let (code, lines) = session(Role::ControlPlane, input);
        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert_eq!(lines[0]["type"], "handshake");
        assert_eq!(lines[0]["role"], "control-plane");
        assert_eq!(lines[0]["profiles"], serde_json::json!(PROFILES));
        let ids: Vec<&str> = lines[1..]
            .iter()
            .map(|l| l["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["r1", "r2", "r3", "r4"]);
        assert_eq!(lines[1]["status"], "PASS");
        assert!(lines[1]["evidence"]["dispatches"].is_string());
        assert_eq!(lines[2]["status"], "ERROR");
        assert!(
            lines[2]["detail"]
                .as_str()
                .unwrap()
                .contains("unknown field")
        );
        assert_eq!(
            lines[3]["status"], "N/A",
            "a worker case on a control-plane adapter"
        );
        assert_eq!(lines[4]["status"], "UNSUPPORTED");
    }

    #[test]
    fn order_violations_end_the_session() {
        let (code, lines) = session(
            Role::Worker,
            "{\"type\":\"run\",\"id\":\"r\",\"scenario\":\"x\"}\n",
        );
        assert_eq!(code, ExitCode::from(1));
        assert!(lines.is_empty());
        let (code, lines) = session(Role::Worker, "{\"type\":\"hello\"}\n{\"type\":\"hello\"}\n");
        assert_eq!(code, ExitCode::from(1));
        assert_eq!(lines.len(), 1);
        let (code, _) = session(Role::Worker, "{\"type\":\"hello\"}\nnot json\n");
        assert_eq!(code, ExitCode::from(1));
        // End of input without bye is a normal end.
        let (code, lines) = session(Role::Worker, "{\"type\":\"hello\"}\n");
        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(lines[0]["role"], "worker");
    }
}
