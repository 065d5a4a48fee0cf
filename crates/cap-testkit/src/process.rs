//! [`Server`]: one child process that can be killed and started again.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process: its command line, kept to start it again after a kill.
pub struct Server {
    program: String,
    args: Vec<String>,
    port: u16,
    child: Option<Child>,
}

/// The first of `names` found on the machine.
pub(crate) fn find_binary(names: &[&str]) -> String {
    for n in names {
        if Path::new(n).is_file() {
            return (*n).to_owned();
        }
    }
    let bare = names
        .iter()
        .find(|n| !n.contains('/'))
        .copied()
        .unwrap_or_default();
    if Command::new(bare)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
    {
        return bare.to_owned();
    }
    panic!("{bare} is required (.ci/run installs it with apt-get)");
}

impl Server {
    /// Starts `program args…`, waiting up to 10 s for it to accept connections on
    /// `port`.
    pub(crate) fn start(program: &str, args: Vec<String>, port: u16) -> Self {
        let mut s = Server {
            program: program.to_owned(),
            args,
            port,
            child: None,
        };
        s.restart();
        s
    }

    /// The port it serves on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills it with `SIGKILL` (no shutdown, no flush) and waits for it to go.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again (with the same command line, so the same data directory), after
    /// killing it if it runs; waits for its port.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !crate::ports::open(self.port) {
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {} within 10 s",
                self.program,
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh directory under the system temp dir, removed by [`TempDir`]'s drop.
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "cap-testkit-{name}-{}-{}",
            std::process::id(),
            crate::free_port(0)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
