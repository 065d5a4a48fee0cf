//! The reference peers as long-running processes (`tests/peer/serve.py`): one interpreter
//! answers every case of a property test, one JSON line per request.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// A reference peer release, and the variable naming its interpreter (set by
/// `cargo xtask interop` and `.ci/run`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// cap-sdk-python 2.10.0 (`CAP_INTEROP_PYTHON`).
    V210,
    /// cap-sdk-python 2.17.0 (`CAP_INTEROP_PYTHON_217`).
    V217,
}

impl Version {
    pub fn env(self) -> &'static str {
        match self {
            Version::V210 => "CAP_INTEROP_PYTHON",
            Version::V217 => "CAP_INTEROP_PYTHON_217",
        }
    }

    pub fn release(self) -> &'static str {
        match self {
            Version::V210 => "2.10.0",
            Version::V217 => "2.17.0",
        }
    }

    /// The interpreter with this release installed; panics (the test fails) when the
    /// variable is not set.
    pub fn python(self) -> PathBuf {
        match std::env::var_os(self.env()) {
            Some(p) => PathBuf::from(p),
            None => panic!(
                "{} is not set: run `cargo xtask interop` (it installs cap-sdk-python=={} \
                 into a venv and runs the peer tests)",
                self.env(),
                self.release()
            ),
        }
    }
}

/// A running `serve.py`.
pub struct PeerServer {
    pub version: Version,
    child: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl PeerServer {
    /// Starts the peer and checks that it is the release asked for.
    pub fn start(version: Version) -> Self {
        // From cap-proto's tests or (through `#[path]`) another crate's.
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../cap-proto/tests/peer/serve.py");
        let mut child = Command::new(version.python())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the {} peer: {e}", version.release()));
        let stdin = BufWriter::new(child.stdin.take().unwrap());
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut peer = PeerServer {
            version,
            child,
            stdin,
            stdout,
        };
        let v = peer.call(json!({"op": "version"}));
        assert_eq!(
            v["version"],
            version.release(),
            "{} points at the wrong peer",
            version.env()
        );
        peer
    }

    /// One request, one answer (the peer's `{"error"}` answers are returned as they are).
    pub fn call(&mut self, request: Value) -> Value {
        writeln!(self.stdin, "{request}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).unwrap();
        assert!(n > 0, "the peer exited");
        serde_json::from_str(&line).unwrap()
    }

    /// Like [`call`](Self::call), failing on an `{"error"}` answer.
    pub fn ok(&mut self, request: Value) -> Value {
        let answer = self.call(request.clone());
        assert!(
            answer.get("error").is_none(),
            "peer {} failed on {request}: {}",
            self.version.release(),
            answer["error"]
        );
        answer
    }

    /// The peer's deterministic bytes of `bytes` parsed as `type_name`.
    pub fn canonical(&mut self, type_name: &str, bytes: &[u8]) -> Vec<u8> {
        let a = self.ok(json!({"op": "canonical", "type": type_name, "hex": super::hex(bytes)}));
        super::unhex(a["hex"].as_str().unwrap())
    }

    /// The peer's `validate_bus_packet` errors for a packet, as `field: message`.
    pub fn validate(&mut self, bytes: &[u8]) -> Vec<String> {
        let a = self.ok(json!({"op": "validate", "hex": super::hex(bytes)}));
        a["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{}: {}", e[0].as_str().unwrap(), e[1].as_str().unwrap()))
            .collect()
    }

    /// The packet signed by the peer with `key_pem` (PKCS#8 PEM) as it signs what it
    /// publishes (`plain`: the deterministic bytes without field 14, also on 2.17.0), or
    /// the peer's refusal.
    pub fn sign(&mut self, bytes: &[u8], key_pem: &str, plain: bool) -> Result<Vec<u8>, String> {
        let a = self
            .call(json!({"op": "sign", "hex": super::hex(bytes), "key": key_pem, "plain": plain}));
        match a.get("error") {
            Some(e) => Err(e.to_string()),
            None => Ok(super::unhex(a["hex"].as_str().unwrap())),
        }
    }

    /// Whether the peer's receive path accepts the packet (with the sender's public key
    /// in PEM when given); the peer's log lines.
    pub fn receive(&mut self, bytes: &[u8], pem: Option<&str>) -> (bool, Vec<String>) {
        let a = self.ok(json!({"op": "receive", "hex": super::hex(bytes), "pem": pem}));
        let log = a["log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap_or_default().to_owned())
            .collect();
        (a["accepted"].as_bool().unwrap(), log)
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
