//! `cargo xtask bench scale`: the full path (client → scheduler → in-process policy →
//! worker → client) on NATS (JetStream) and Redis with one and with three `cap scheduler`
//! processes, side by side in one run, and the schedulers' resident memory as jobs go by.
//!
//! Every configuration gets fresh private servers (`cap-testkit`), so no round inherits
//! another's records; configurations alternate round by round so that background load
//! hits them alike. Each process is the release `cap` binary, as users run it.

use anyhow::{Context, Result, bail};
use cap_testkit::{NatsServer, RedisServer};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

/// What to run.
pub struct Options {
    /// Jobs per measurement (after the client's warm-up).
    pub jobs: u64,
    /// Rounds of each configuration.
    pub rounds: usize,
    /// Scheduler counts to compare (the first is the baseline of the ratios).
    pub schedulers: Vec<usize>,
    /// When non-zero: after the rounds, push this many jobs through one scheduler in
    /// ten equal batches and print its resident memory after each.
    pub rss_jobs: u64,
}

pub fn run(root: &Path, opts: &Options) -> Result<()> {
    if opts.schedulers.is_empty() || opts.rounds == 0 || opts.jobs == 0 {
        bail!("need at least one scheduler count, one round and one job");
    }
    let cap = build_cap(root)?;
    let policy = root.join("crates/cap-cli/demo/policy.yaml");
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); opts.schedulers.len()];
    for round in 0..opts.rounds {
        for (i, &n) in opts.schedulers.iter().enumerate() {
            let mut stack = Stack::start(&cap, &policy, n, &format!("r{round}s{n}"))?;
            let out = stack.bench(opts.jobs)?;
            let rate = out["jobs_per_sec"].as_f64().context("jobs_per_sec")?;
            let rss: Vec<String> = stack
                .scheduler_rss_kib()
                .iter()
                .map(|k| format!("{:.1}", *k as f64 / 1024.0))
                .collect();
            eprintln!(
                "round {round}: {n} scheduler(s): {rate:.0} jobs/s, p50 {} ms, p99 {} ms, scheduler RSS MiB [{}]",
                out["p50_ms"],
                out["p99_ms"],
                rss.join(", ")
            );
            rates[i].push(rate);
        }
    }
    println!(
        "full path on NATS (JetStream) + Redis, {} jobs per run, {} alternating rounds",
        opts.jobs, opts.rounds
    );
    println!(
        "{:<11} {:>12} {:>24} {:>8}",
        "schedulers", "median/s", "runs/s", "ratio"
    );
    let base = median(&rates[0]);
    for (i, &n) in opts.schedulers.iter().enumerate() {
        let m = median(&rates[i]);
        let runs: Vec<String> = rates[i].iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "{n:<11} {m:>12.0} {:>24} {:>7.2}x",
            runs.join(" "),
            m / base
        );
    }
    if opts.rss_jobs > 0 {
        rss_series(&cap, &policy, opts.rss_jobs)?;
    }
    Ok(())
}

/// One scheduler, `jobs` in ten batches: its VmRSS after each.
fn rss_series(cap: &Path, policy: &Path, jobs: u64) -> Result<()> {
    let mut stack = Stack::start(cap, policy, 1, "rss")?;
    let batch = (jobs / 10).max(1);
    println!("scheduler resident memory, {jobs} jobs through one scheduler in batches of {batch}");
    println!("{:>10} {:>10} {:>10}", "jobs", "RSS MiB", "jobs/s");
    for i in 1..=10u64 {
        let out = stack.bench(batch)?;
        let rss = stack.scheduler_rss_kib().first().copied().unwrap_or(0);
        println!(
            "{:>10} {:>10.1} {:>10.0}",
            i * batch,
            rss as f64 / 1024.0,
            out["jobs_per_sec"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

fn build_cap(root: &Path) -> Result<PathBuf> {
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["build", "--release", "--quiet", "-p", "cap-cli"])
        .status()
        .context("building cap")?;
    if !status.success() {
        bail!("building cap failed");
    }
    Ok(root.join("target/release/cap"))
}

/// Private NATS and Redis, `n` schedulers and an echo worker; all stopped on drop.
struct Stack {
    cap: PathBuf,
    nats: NatsServer,
    redis: RedisServer,
    topic: String,
    schedulers: Vec<Child>,
    worker: Child,
}

impl Stack {
    fn start(cap: &Path, policy: &Path, n: usize, tag: &str) -> Result<Self> {
        let nats = NatsServer::start();
        let redis = RedisServer::start();
        let topic = format!("job.scale-{tag}");
        let spawn = |args: &[&str]| -> Result<Child> {
            Command::new(cap)
                .args(args)
                .env("NATS_URL", nats.url())
                .env("REDIS_URL", redis.url())
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting cap {args:?}"))
        };
        let policy = policy.display().to_string();
        let mut schedulers = Vec::with_capacity(n);
        for _ in 0..n {
            schedulers.push(spawn(&["scheduler", "--policy", &policy])?);
        }
        let worker = spawn(&["worker", "echo", "--topic", &topic])?;
        // Subscriptions (and JetStream consumers) are made at start-up.
        sleep(Duration::from_secs(2));
        Ok(Stack {
            cap: cap.to_owned(),
            nats,
            redis,
            topic,
            schedulers,
            worker,
        })
    }

    fn bench(&mut self, jobs: u64) -> Result<serde_json::Value> {
        let out = Command::new(&self.cap)
            .args([
                "bench",
                "e2e",
                "--external",
                "--through-scheduler",
                "--json",
                "--topic",
                &self.topic,
                "--jobs",
                &jobs.to_string(),
            ])
            .env("NATS_URL", self.nats.url())
            .env("REDIS_URL", self.redis.url())
            .output()
            .context("running cap bench e2e")?;
        if !out.status.success() {
            bail!(
                "cap bench e2e failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        if v["failed"].as_u64() != Some(0) {
            bail!("jobs failed in the benchmark: {v}");
        }
        Ok(v)
    }

    fn scheduler_rss_kib(&self) -> Vec<u64> {
        self.schedulers.iter().map(|c| rss_kib(c.id())).collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in self
            .schedulers
            .iter_mut()
            .chain(std::iter::once(&mut self.worker))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// VmRSS of a process in KiB (0 when it cannot be read).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}
