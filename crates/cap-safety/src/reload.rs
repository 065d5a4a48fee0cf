//! Hot reload: poll the policy file for changes and reload on SIGHUP. A reload that fails
//! keeps the running policy (see [`Kernel::reload`]).

use crate::Kernel;
use crate::kernel::ReloadOutcome;
use std::path::Path;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How a policy file is watched.
#[derive(Debug, Clone)]
pub struct ReloadOptions {
    /// Poll the file's modification time and size this often; `None` disables polling.
    /// Default 1 s.
    pub poll_interval: Option<Duration>,
    /// Reload on SIGHUP (Unix). Default on.
    pub sighup: bool,
}

impl Default for ReloadOptions {
    fn default() -> Self {
        ReloadOptions {
            poll_interval: Some(Duration::from_secs(1)),
            sighup: true,
        }
    }
}

/// What identifies a version of the file on disk.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn reload_and_log(kernel: &Kernel, why: &str) {
    match kernel.reload() {
        Ok(ReloadOutcome::Loaded(s)) => {
            tracing::info!(snapshot = s.id(), trigger = why, "policy reloaded");
        }
        Ok(ReloadOutcome::Unchanged) => {
            tracing::debug!(trigger = why, "policy file unchanged");
        }
        // Kernel::reload has logged why; the running policy stays.
        Err(_) => {}
    }
}

/// Starts watching `kernel`'s policy file until `stop` turns true.
pub fn spawn(
    kernel: Kernel,
    options: ReloadOptions,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Some(path) = kernel.policy_path().map(Path::to_owned) else {
            return;
        };
        #[cfg(unix)]
        let mut hup = if options.sighup {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGHUP");
                    None
                }
            }
        } else {
            None
        };
        // Unknown at first: the first poll re-reads the file, which catches edits made
        // between loading the kernel and starting the watcher (an unchanged file is a
        // no-op: same snapshot id).
        let mut last = None;
        let mut tick = options.poll_interval.map(|d| {
            let mut t = tokio::time::interval(d.max(Duration::from_millis(10)));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let polled = async {
                match tick.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(unix)]
            let hupped = async {
                match hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hupped = std::future::pending::<()>();
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = hupped => {
                    last = stamp(&path);
                    reload_and_log(&kernel, "SIGHUP");
                }
                () = polled => {
                    let now = stamp(&path);
                    if now != last {
                        last = now;
                        if now.is_some() {
                            reload_and_log(&kernel, "file changed");
                        } else {
                            tracing::warn!(path = %path.display(), "policy file is gone; keeping the running policy");
                        }
                    }
                }
            }
        }
    })
}
