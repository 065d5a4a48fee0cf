//! What `cap demo --compare-fencing` and `--compare-observability` share: the order of
//! the sides in each round, and the statistics of an on/off comparison.
//!
//! Both sides run in one process, alternately, so a machine whose speed drifts (a
//! shared host, another build) slows both. The cost is estimated from the rounds'
//! **paired** ratios (each round's "on" run against its own "off" run, seconds apart),
//! whose median is reported with a distribution-free 95 % confidence interval; the
//! medians and ranges of each side are printed beside it.

use cap_runtime::load::LoadReport;

/// Which side runs first in `round`: on, then off, the other way round in the next
/// round, so that neither side always runs on a warmer (or more tired) process.
pub(super) fn on_off_order(round: usize) -> [bool; 2] {
    if round.is_multiple_of(2) {
        [true, false]
    } else {
        [false, true]
    }
}

/// Median and range of one side.
pub(super) struct Summary {
    pub(super) median_jobs_per_sec: f64,
    pub(super) min_jobs_per_sec: f64,
    pub(super) max_jobs_per_sec: f64,
    /// min, median, max
    pub(super) p50_ms: [f64; 3],
    /// min, median, max
    pub(super) p99_ms: [f64; 3],
}

impl Summary {
    pub(super) fn to_json(&self) -> serde_json::Value {
        let r = |x: f64| (x * 1e3).round() / 1e3;
        serde_json::json!({
            "median_jobs_per_sec": self.median_jobs_per_sec.round(),
            "min_jobs_per_sec": self.min_jobs_per_sec.round(),
            "max_jobs_per_sec": self.max_jobs_per_sec.round(),
            "p50_ms": { "min": r(self.p50_ms[0]), "median": r(self.p50_ms[1]), "max": r(self.p50_ms[2]) },
            "p99_ms": { "min": r(self.p99_ms[0]), "median": r(self.p99_ms[1]), "max": r(self.p99_ms[2]) },
        })
    }
}

/// Median and range of the reports of one side.
pub(super) fn summarize(side: &[&LoadReport]) -> Summary {
    let tput = spread(side.iter().map(|r| r.jobs_per_sec).collect());
    Summary {
        median_jobs_per_sec: tput[1],
        min_jobs_per_sec: tput[0],
        max_jobs_per_sec: tput[2],
        p50_ms: spread(side.iter().map(|r| r.p50.as_secs_f64() * 1e3).collect()),
        p99_ms: spread(side.iter().map(|r| r.p99.as_secs_f64() * 1e3).collect()),
    }
}

/// The median of the rounds' on/off ratios of one figure, with a 95 % confidence
/// interval of that median.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Paired {
    /// The median ratio.
    pub(super) median: f64,
    /// The interval's bounds: order statistics of the sorted ratios, at ranks
    /// `(n - 1.96 √n) / 2` and `1 + (n + 1.96 √n) / 2` (the binomial interval of a median,
    /// assuming nothing of the distribution); the whole range below 6 rounds.
    pub(super) ci95: [f64; 2],
    /// Rounds.
    pub(super) n: usize,
}

impl Paired {
    /// From each round's (on, off) figures.
    pub(super) fn of(rounds: &[(f64, f64)]) -> Paired {
        let mut r: Vec<f64> = rounds
            .iter()
            .map(|(on, off)| on / off.max(f64::MIN_POSITIVE))
            .collect();
        r.sort_by(f64::total_cmp);
        let n = r.len();
        if n == 0 {
            return Paired {
                median: 0.0,
                ci95: [0.0; 2],
                n,
            };
        }
        let half = 0.98 * (n as f64).sqrt();
        // 1-based ranks, clamped to the sample.
        let lo = (((n as f64) / 2.0 - half).floor() as usize).clamp(1, n);
        let hi = ((1.0 + (n as f64) / 2.0 + half).ceil() as usize).clamp(1, n);
        Paired {
            median: median(&r),
            ci95: [r[lo - 1], r[hi - 1]],
            n,
        }
    }

    /// The change in percent (`+5.0` is 5 % more than off), and the interval's bounds.
    pub(super) fn change_percent(&self) -> [f64; 3] {
        [self.median, self.ci95[0], self.ci95[1]].map(|x| (x - 1.0) * 100.0)
    }

    pub(super) fn to_json(self) -> serde_json::Value {
        let r = |x: f64| (x * 1e4).round() / 1e4;
        serde_json::json!({
            "median": r(self.median),
            "ci95": [r(self.ci95[0]), r(self.ci95[1])],
            "rounds": self.n,
        })
    }
}

/// The minimum, median and maximum of `v` (zeros when empty).
pub(super) fn spread(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    match (v.first(), v.last()) {
        (Some(lo), Some(hi)) => [*lo, median(&v), *hi],
        _ => [0.0; 3],
    }
}

/// The median of sorted values (the mean of the middle two for an even count).
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Prints both sides of an on/off comparison (median and \[range\] of each figure) and
/// what turning `what` on costs (from the paired throughput ratios `tput`). `label`
/// names the sides (`fencing on`).
#[allow(clippy::too_many_arguments)]
pub(super) fn print_comparison(
    label: &str,
    what: &str,
    jobs: u64,
    rounds: usize,
    inflight: usize,
    on: &Summary,
    off: &Summary,
    tput: &Paired,
) {
    println!(
        "{jobs} jobs × {rounds} rounds, {inflight} in flight, {what} on vs off (median, [range]):"
    );
    for (name, s) in [("on", on), ("off", off)] {
        println!(
            "  {label} {name:<3} {:>8.0} jobs/s [{:.0}-{:.0}], p50 {:.2} ms [{:.2}-{:.2}], p99 {:.2} ms [{:.2}-{:.2}]",
            s.median_jobs_per_sec,
            s.min_jobs_per_sec,
            s.max_jobs_per_sec,
            s.p50_ms[1],
            s.p50_ms[0],
            s.p50_ms[2],
            s.p99_ms[1],
            s.p99_ms[0],
            s.p99_ms[2],
        );
    }
    let [c, lo, hi] = tput.change_percent().map(|x| -x);
    println!(
        "  turning {what} on costs {c:.1} % of the throughput (median of {} paired rounds, on/off = {:.3}; 95 % CI {hi:.1} % to {lo:.1} %)",
        tput.n, tput.median
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ranges() {
        assert_eq!(median(&[1.0, 2.0, 9.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), 3.0);
        assert_eq!(spread(vec![5.0, 1.0, 3.0]), [1.0, 3.0, 5.0]);
        assert_eq!(spread(Vec::new()), [0.0; 3]);
    }

    #[test]
    fn sides_take_turns_going_first() {
        assert_eq!(on_off_order(0), [true, false]);
        assert_eq!(on_off_order(1), [false, true]);
        assert_eq!(on_off_order(2), [true, false]);
    }

    #[test]
    fn paired_ratios_give_a_median_and_its_interval() {
        // Few rounds: the interval is the whole range.
        let p = Paired::of(&[(90.0, 100.0), (110.0, 100.0), (50.0, 50.0)]);
        assert_eq!(p.median, 1.0);
        assert_eq!(p.ci95, [0.9, 1.1]);
        assert_eq!(p.n, 3);
        // 100 rounds with ratios 0.50, 0.51, ..., 1.49: the median's interval is ranks
        // 40 to 61 (1-based), well inside the range.
        let rounds: Vec<(f64, f64)> = (0..100).map(|i| (50.0 + f64::from(i), 100.0)).collect();
        let p = Paired::of(&rounds);
        assert!((p.median - 0.995).abs() < 1e-9, "{p:?}");
        assert!((p.ci95[0] - 0.89).abs() < 1e-9, "{p:?}");
        assert!((p.ci95[1] - 1.10).abs() < 1e-9, "{p:?}");
        let [c, lo, hi] = p.change_percent();
        assert!((c + 0.5).abs() < 1e-6 && (lo + 11.0).abs() < 1e-6 && (hi - 10.0).abs() < 1e-6);
        assert_eq!(Paired::of(&[]).n, 0);
    }
}
