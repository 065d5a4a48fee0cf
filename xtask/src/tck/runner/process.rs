//! The adapter process: started from an argv (no shell), its stdout read by one thread
//! (lines checked by [`parse_message`]), its stderr kept (bounded), and the run itself.

use super::wire::{Handshake, Message, parse_message, read_bounded};
use super::{
    CASE_TIMEOUT, GRACE, HANDSHAKE_TIMEOUT, PROTOCOL_VERSION, Role, STDERR_KEPT, Scenario, Status,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The result of one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseResult {
    /// The case id.
    pub id: String,
    /// Its profile.
    pub profile: String,
    /// Its role.
    pub role: Role,
    /// Whether required.
    pub required: bool,
    /// Whether it was the adapter's role's (sent to it).
    pub applicable: bool,
    /// The outcome.
    pub status: Status,
    /// Why.
    pub detail: String,
    /// How long the adapter took.
    pub duration_ms: u64,
    /// What the adapter observed.
    pub evidence: BTreeMap<String, String>,
}

/// One adapter's run.
#[derive(Clone, Debug)]
pub struct Run {
    /// Its handshake.
    pub handshake: Handshake,
    /// Every case, in id order.
    pub cases: Vec<CaseResult>,
    /// Protocol violations by the adapter.
    pub violations: Vec<String>,
    /// The start of its stderr.
    pub stderr: String,
}

enum Incoming {
    Message(Message),
    Violation(String),
}

fn spawn_reader(stdout: impl Read + Send + 'static) -> Receiver<Incoming> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        loop {
            let item = match read_bounded(&mut r) {
                Ok(None) | Err(_) => return,
                Ok(Some(Err(v))) => Incoming::Violation(v),
                Ok(Some(Ok(line))) if line.trim().is_empty() => continue,
                Ok(Some(Ok(line))) => match parse_message(&line) {
                    Ok(m) => Incoming::Message(m),
                    Err(v) => Incoming::Violation(v),
                },
            };
            if tx.send(item).is_err() {
                return;
            }
        }
    });
    rx
}

fn spawn_stderr(stderr: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let k = kept.clone();
    std::thread::spawn(move || {
        let mut r = stderr;
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                return;
            }
            let mut kept = k.lock().unwrap_or_else(|e| e.into_inner());
            let room = STDERR_KEPT.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
    });
    kept
}

fn send(stdin: &mut ChildStdin, v: &Value) -> std::io::Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    stdin.write_all(line.as_bytes())?;
    stdin.flush()
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The runner's time limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// For the handshake.
    pub handshake: Duration,
    /// For each result.
    pub case: Duration,
    /// For the exit after `bye`.
    pub grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: HANDSHAKE_TIMEOUT,
            case: CASE_TIMEOUT,
            grace: GRACE,
        }
    }
}

/// Runs the adapter `argv` over `scenarios` (those of `profiles`) with the default
/// [`Timeouts`]. `Err` when the adapter cannot be started or does not complete its
/// handshake (then no case ran).
pub fn run_adapter(
    argv: &[String],
    scenarios: &[Scenario],
    profiles: &[String],
) -> Result<Run, String> {
    run_adapter_with(argv, scenarios, profiles, Timeouts::default())
}

/// [`run_adapter`] with other time limits.
pub fn run_adapter_with(
    argv: &[String],
    scenarios: &[Scenario],
    profiles: &[String],
    limits: Timeouts,
) -> Result<Run, String> {
    let (program, args) = argv.split_first().ok_or("the adapter argv is empty")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {program}: {e}"))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        kill(&mut child);
        return Err("the adapter's pipes are missing".into());
    };
    let rx = spawn_reader(stdout);
    let kept = spawn_stderr(stderr);
    let stderr_text = |kept: &Arc<Mutex<Vec<u8>>>| {
        String::from_utf8_lossy(&kept.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    };
    let mut violations = Vec::new();
    if let Err(e) = send(&mut stdin, &json!({"type": "hello"})) {
        kill(&mut child);
        return Err(format!("sending hello: {e}"));
    }
    let handshake = match rx.recv_timeout(limits.handshake) {
        Ok(Incoming::Message(Message::Handshake(h))) => h,
        Ok(Incoming::Message(Message::Result { id, .. })) => {
            kill(&mut child);
            return Err(format!("a result ({id:?}) before the handshake"));
        }
        Ok(Incoming::Violation(v)) => {
            kill(&mut child);
            return Err(format!("a bad handshake line: {v}"));
        }
        Err(RecvTimeoutError::Timeout) => {
            kill(&mut child);
            return Err(format!("no handshake within {:?}", limits.handshake));
        }
        Err(RecvTimeoutError::Disconnected) => {
            kill(&mut child);
            return Err(format!(
                "the adapter ended before its handshake; stderr: {}",
                stderr_text(&kept).trim()
            ));
        }
    };
    if handshake.protocol_version != PROTOCOL_VERSION {
        kill(&mut child);
        return Err(format!(
            "the adapter speaks adapter-v{}, not v{PROTOCOL_VERSION}",
            handshake.protocol_version
        ));
    }
    let mut cases = Vec::new();
    let mut dead: Option<String> = None;
    for sc in scenarios.iter().filter(|s| profiles.contains(&s.profile)) {
        let mut case = CaseResult {
            id: sc.id.clone(),
            profile: sc.profile.clone(),
            role: sc.role,
            required: sc.required,
            applicable: sc.role == handshake.role,
            status: Status::NotApplicable,
            detail: String::new(),
            duration_ms: 0,
            evidence: BTreeMap::new(),
        };
        if !case.applicable {
            case.detail = format!(
                "the adapter's role {} does not own a {} case",
                handshake.role, sc.role
            );
            cases.push(case);
            continue;
        }
        if let Some(why) = &dead {
            case.status = Status::Error;
            case.detail = why.clone();
            cases.push(case);
            continue;
        }
        let mut run = json!({"type": "run", "id": sc.id, "scenario": sc.id});
        if !sc.params.is_empty() {
            run["params"] = json!(sc.params);
        }
        let started = Instant::now();
        if let Err(e) = send(&mut stdin, &run) {
            dead = Some(format!("the adapter stopped reading: {e}"));
            case.status = Status::Error;
            case.detail = format!("sending the run: {e}");
            cases.push(case);
            continue;
        }
        let answer = rx.recv_timeout(limits.case);
        case.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match answer {
            Ok(Incoming::Message(Message::Result {
                id,
                status,
                detail,
                evidence,
            })) if id == sc.id => {
                case.status = status;
                case.detail = detail;
                case.evidence = evidence;
            }
            Ok(Incoming::Message(Message::Result { id, .. })) => {
                let v = format!("a result for {id:?} where {:?} was asked", sc.id);
                case.status = Status::Error;
                case.detail = v.clone();
                violations.push(v);
            }
            Ok(Incoming::Message(Message::Handshake(_))) => {
                let v = format!("a second handshake instead of the result of {}", sc.id);
                case.status = Status::Error;
                case.detail = v.clone();
                violations.push(v);
            }
            Ok(Incoming::Violation(v)) => {
                case.status = Status::Error;
                case.detail = format!("protocol violation: {v}");
                violations.push(format!("{}: {v}", sc.id));
            }
            Err(RecvTimeoutError::Timeout) => {
                case.status = Status::Error;
                case.detail = format!("no result within {:?}", limits.case);
                dead = Some(format!("the adapter was stopped after {} timed out", sc.id));
                kill(&mut child);
            }
            Err(RecvTimeoutError::Disconnected) => {
                case.status = Status::Error;
                case.detail = "the adapter exited".into();
                dead = Some(format!("the adapter exited during {}", sc.id));
            }
        }
        cases.push(case);
    }
    let _ = send(&mut stdin, &json!({"type": "bye"}));
    drop(stdin);
    let end = Instant::now() + limits.grace;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                violations.push(format!(
                    "the adapter did not exit within {:?} of bye",
                    limits.grace
                ));
                kill(&mut child);
                break;
            }
        }
    }
    // Anything still coming: more messages than runs.
    while let Ok(extra) = rx.recv_timeout(Duration::from_millis(200)) {
        violations.push(match extra {
            Incoming::Message(Message::Result { id, .. }) => format!("an extra result for {id:?}"),
            Incoming::Message(Message::Handshake(_)) => "an extra handshake".into(),
            Incoming::Violation(v) => v,
        });
    }
    Ok(Run {
        handshake,
        cases,
        violations,
        stderr: stderr_text(&kept),
    })
}
