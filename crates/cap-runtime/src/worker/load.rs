//! The process's CPU and memory load for heartbeats, from `/proc` (Linux).
//!
//! CPU load: CPU time used by this process since the previous sample over wall time
//! times the number of CPUs, in percent (0-100). Memory load: the resident set size
//! (`/proc/self/statm`) over `MemTotal` (`/proc/meminfo`), in percent. Where `/proc` is
//! not readable, both are 0.

use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux ABI).
const TICKS_PER_SEC: f64 = 100.0;
/// Page size assumed for `/proc/self/statm` (4 KiB on x86-64 and most aarch64 kernels).
const PAGE_SIZE: u64 = 4096;

/// `utime + stime` in clock ticks from the text of `/proc/<pid>/stat`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain spaces: parse after
    // the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After ')': field 3 (state) is index 0; utime is field 14 → index 11, stime index 12.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `MemTotal` in bytes from the text of `/proc/meminfo`.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident set size in bytes from the text of `/proc/self/statm`.
pub fn rss(statm: &str) -> Option<u64> {
    let pages: u64 = statm.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_SIZE)
}

/// Percent of `part` in `whole`, clamped to 0-100.
fn percent(part: f64, whole: f64) -> f32 {
    if whole <= 0.0 || !part.is_finite() {
        return 0.0;
    }
    ((part / whole) * 100.0).clamp(0.0, 100.0) as f32
}

/// Samples the process's load; keeps the previous CPU sample to compute the rate.
#[derive(Debug)]
pub struct LoadSampler {
    cpus: f64,
    last: Option<(Instant, u64)>,
    mem_total: Option<u64>,
}

impl Default for LoadSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl LoadSampler {
    /// A sampler; the first CPU sample is taken now.
    pub fn new() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(1.0);
        let mut s = LoadSampler {
            cpus,
            last: None,
            mem_total: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|t| mem_total(&t)),
        };
        s.last = s.read_ticks().map(|t| (Instant::now(), t));
        s
    }

    fn read_ticks(&self) -> Option<u64> {
        std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| cpu_ticks(&t))
    }

    /// CPU load (percent of all CPUs) since the previous call, and memory load (percent
    /// of physical memory).
    pub fn sample(&mut self) -> (f32, f32) {
        let now = Instant::now();
        let cpu = match (self.read_ticks(), self.last) {
            (Some(ticks), Some((then, before))) => {
                self.last = Some((now, ticks));
                let wall = now.duration_since(then).as_secs_f64();
                let used = ticks.saturating_sub(before) as f64 / TICKS_PER_SEC;
                percent(used, wall * self.cpus)
            }
            (Some(ticks), None) => {
                self.last = Some((now, ticks));
                0.0
            }
            _ => 0.0,
        };
        let mem = match (
            std::fs::read_to_string("/proc/self/statm")
                .ok()
                .and_then(|t| rss(&t)),
            self.mem_total,
        ) {
            (Some(r), Some(total)) => percent(r as f64, total as f64),
            _ => 0.0,
        };
        (cpu, mem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_texts() {
        let stat =
            "1234 (my (odd) name) S 1 1234 1234 0 -1 4194304 500 0 0 0 250 75 0 0 20 0 4 0 100 0 0";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("garbage"), None);
        let meminfo = "MemTotal:       16384 kB\nMemFree:        1 kB\n";
        assert_eq!(mem_total(meminfo), Some(16384 * 1024));
        assert_eq!(rss("1000 256 10 1 0 100 0"), Some(256 * 4096));
        assert_eq!(percent(1.0, 4.0), 25.0);
        assert_eq!(percent(9.0, 4.0), 100.0);
        assert_eq!(percent(1.0, 0.0), 0.0);
    }

    #[test]
    fn samples_this_process() {
        let mut s = LoadSampler::new();
        // Burn some CPU so the rate is measurable.
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 60 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let (cpu, mem) = s.sample();
        assert!((0.0..=100.0).contains(&cpu));
        assert!(mem > 0.0 && mem < 100.0, "memory load {mem}");
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(cpu > 0.0, "a busy loop shows CPU load");
        }
    }
}
