//! CPU time per job, of this process and of the local `nats-server` and `redis-server`,
//! from `/proc` (Linux; elsewhere the figures are absent). Together with the wire floor
//! it shows where a job's CPU goes when both servers share the machine.

/// `/proc` reports CPU times in ticks of `USER_HZ`, 100 on Linux.
const USER_HZ: f64 = 100.0;

#[derive(Clone, Copy, Default)]
struct Sample {
    own: Option<f64>,
    nats: Option<f64>,
    redis: Option<f64>,
}

/// CPU microseconds per job over a measured stretch.
#[derive(Clone, Copy, Debug, Default)]
pub struct PerJob {
    pub own: Option<f64>,
    pub nats: Option<f64>,
    pub redis: Option<f64>,
}

impl PerJob {
    /// `own/nats/redis` in µs, `-` where unknown.
    pub fn describe(&self) -> String {
        let f = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        format!("{}/{}/{}", f(self.own), f(self.nats), f(self.redis))
    }
}

/// A measurement in progress.
pub struct Meter {
    start: Sample,
    nats_pid: Option<u32>,
    redis_pid: Option<u32>,
}

fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

fn find(comm: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (name.trim_end() == comm).then_some(pid)
    })
}

impl Meter {
    /// Starts measuring.
    pub fn start() -> Self {
        let (nats_pid, redis_pid) = (find("nats-server"), find("redis-server"));
        let mut m = Meter {
            start: Sample::default(),
            nats_pid,
            redis_pid,
        };
        m.start = m.sample();
        m
    }

    fn sample(&self) -> Sample {
        Sample {
            own: cpu_seconds("self"),
            nats: self.nats_pid.and_then(|p| cpu_seconds(&p.to_string())),
            redis: self.redis_pid.and_then(|p| cpu_seconds(&p.to_string())),
        }
    }

    /// CPU per job since [`start`](Self::start), for `jobs` jobs.
    pub fn per_job(&self, jobs: u64) -> PerJob {
        let end = self.sample();
        let per =
            |a: Option<f64>, b: Option<f64>| Some((b? - a?).max(0.0) * 1e6 / jobs.max(1) as f64);
        PerJob {
            own: per(self.start.own, end.own),
            nats: per(self.start.nats, end.nats),
            redis: per(self.start.redis, end.redis),
        }
    }
}
