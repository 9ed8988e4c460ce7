//! Detector 4: stop-the-world pauses (all threads of the target off-CPU
//! together: a garbage collector, a SIGSTOP, a global barrier).
//!
//! Rule, on the recorder's fixed windows: the target is normally busy (its
//! median on-CPU time per window is at least [`BUSY_SHARE`] of a window);
//! a pause is a run of consecutive windows in which no thread of the target
//! ran or ended a run-queue wait, at least [`MIN_PAUSE_NS`] long, with
//! activity on both sides, and not ended by a run-queue wait of at least
//! half its length (that would be starvation, which the preemption and
//! throttling detectors own). It fires on at least [`MIN_PAUSES`] pauses,
//! or one of at least [`LONG_PAUSE_NS`]. The ranking key is the pause time
//! times the target's typical number of running threads.

use super::{
    finding::{pct, Confidence, Finding, Measure},
    preemption::ms,
};
use crate::report::WindowReport;

pub const BUSY_SHARE: f64 = 0.10;
pub const MIN_PAUSE_NS: u64 = 50_000_000;
pub const LONG_PAUSE_NS: u64 = 200_000_000;
pub const MIN_PAUSES: usize = 2;

pub const RULE: &str = "target busy (median on-CPU per window >= 10%); >= 2 gaps of >= 50 ms \
     (or one >= 200 ms) in which none of its threads ran, bracketed by activity and not ended \
     by a run-queue wait of half the gap";

/// One pause: where it started and how long it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    pub start_ns: u64,
    pub len_ns: u64,
}

fn silent(w: &WindowReport) -> bool {
    w.oncpu_ns == 0 && w.runq_count == 0
}

/// Pauses in a window series (see the module rule), and the median on-CPU
/// per window.
pub fn find(windows: &[WindowReport], window_ns: u64) -> (Vec<Pause>, u64) {
    let mut oncpu: Vec<u64> = windows.iter().map(|w| w.oncpu_ns).collect();
    oncpu.sort_unstable();
    let median = oncpu.get(oncpu.len() / 2).copied().unwrap_or(0);
    let mut out = Vec::new();
    if window_ns == 0 {
        return (out, median);
    }
    let mut i = 0;
    while i < windows.len() {
        if !silent(&windows[i]) {
            i += 1;
            continue;
        }
        let first = i;
        while i < windows.len() && silent(&windows[i]) {
            i += 1;
        }
        // Bracketed: an active window before and after.
        if first == 0 || i == windows.len() {
            continue;
        }
        let len_ns = (i - first) as u64 * window_ns;
        let starved = windows[i].runq_max_ns.saturating_mul(2) >= len_ns;
        if len_ns >= MIN_PAUSE_NS && !starved {
            out.push(Pause {
                start_ns: windows[first].start_ns,
                len_ns,
            });
        }
    }
    (out, median)
}

/// The rule's numbers, whether it fires or not: how busy the target was
/// (median on-CPU per window), how many pauses qualified and the longest.
pub fn measured(windows: &[WindowReport], window_ns: u64) -> Vec<Measure> {
    if window_ns == 0 {
        return Vec::new();
    }
    let (pauses, median) = find(windows, window_ns);
    let longest = pauses.iter().map(|p| p.len_ns).max().unwrap_or(0);
    vec![
        Measure::at_least(
            "median_window_busy_pct",
            pct(median, window_ns),
            100.0 * BUSY_SHARE,
            "%",
        ),
        Measure::at_least("pauses", pauses.len() as f64, MIN_PAUSES as f64, ""),
        Measure::at_least("longest_pause_ms", ms(longest), ms(LONG_PAUSE_NS), " ms"),
    ]
}

pub fn detect(windows: &[WindowReport], window_ns: u64, duration_ns: u64) -> Option<Finding> {
    let (pauses, median) = find(windows, window_ns);
    if window_ns == 0 || (median as f64) < BUSY_SHARE * window_ns as f64 {
        return None;
    }
    let longest = pauses.iter().map(|p| p.len_ns).max().unwrap_or(0);
    if pauses.len() < MIN_PAUSES && longest < LONG_PAUSE_NS {
        return None;
    }
    let total: u64 = pauses.iter().map(|p| p.len_ns).sum();
    let running = (median as f64 / window_ns as f64).max(1.0);
    let secs = duration_ns.max(1) as f64 / 1e9;
    let mut f = Finding {
        detector: "stop_the_world",
        what: format!(
            "the whole target stops: {} pauses of {:.0}-{:.0} ms in which none of its threads ran",
            pauses.len(),
            ms(pauses.iter().map(|p| p.len_ns).min().unwrap_or(0)),
            ms(longest)
        ),
        confidence: Confidence::from_margin(pauses.len() as f64 / MIN_PAUSES as f64, 2.0, 5.0),
        impact_ns: (total as f64 * running) as u64,
        evidence: Vec::new(),
        advice: "find what stops every thread at once: a garbage collector (Python: gc.freeze() \
                 after start-up, raise gc thresholds; JVM/Go: tune the collector), a global lock \
                 or barrier, or an external SIGSTOP/freezer (cgroup freezer, debugger, checkpoint)"
            .into(),
    };
    f.evidence(
        "pauses",
        pauses.len() as f64,
        format!(
            "{} pauses ({:.1}/s), {:.0} ms in all ({:.1}% of the run), the longest {:.0} ms",
            pauses.len(),
            pauses.len() as f64 / secs,
            ms(total),
            100.0 * total as f64 / duration_ns.max(1) as f64,
            ms(longest)
        ),
    );
    f.evidence(
        "busy_oncpu_per_window_ms",
        ms(median),
        format!(
            "between pauses the target runs {:.1} ms per {:.0} ms window (median)",
            ms(median),
            ms(window_ns)
        ),
    );
    if pauses.len() >= 3 {
        let gaps: Vec<u64> = pauses
            .windows(2)
            .map(|p| p[1].start_ns.saturating_sub(p[0].start_ns))
            .collect();
        let mean = gaps.iter().sum::<u64>() / gaps.len() as u64;
        f.evidence(
            "mean_interval_ms",
            ms(mean),
            format!("a pause starts every {:.0} ms on average", ms(mean)),
        );
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = 10_000_000;

    /// A series from a pattern: 'x' busy window, '.' silent, 'r' busy after
    /// a long run-queue wait.
    fn series(pattern: &str) -> Vec<WindowReport> {
        pattern
            .chars()
            .enumerate()
            .map(|(i, c)| WindowReport {
                start_ns: i as u64 * W,
                oncpu_ns: if c == '.' { 0 } else { 5_000_000 },
                runq_count: u64::from(c != '.'),
                runq_max_ns: if c == 'r' { 100_000_000 } else { 10_000 },
                ..WindowReport::default()
            })
            .collect()
    }

    #[test]
    fn finds_bracketed_pauses() {
        let s = series("xxxxx.....xxxxx......xxx..xxx");
        let (p, median) = find(&s, W);
        assert_eq!(median, 5_000_000);
        assert_eq!(
            p,
            [
                Pause {
                    start_ns: 5 * W,
                    len_ns: 50_000_000
                },
                Pause {
                    start_ns: 15 * W,
                    len_ns: 60_000_000
                }
            ]
        );
        let f = detect(&s, W, 29 * W).expect("fires");
        assert_eq!(f.evidence[0].value, 2.0);
        assert_eq!(f.impact_ns, 110_000_000);
    }

    #[test]
    fn quiet_for_starvation_edges_and_idle_targets() {
        // Ended by a long run-queue wait: starvation, not a pause.
        assert!(detect(&series("xxxx..........rxxxx..........rxx"), W, 32 * W).is_none());
        // Silent at the edges only.
        assert!(detect(&series("..........xxxxxxxxx.........."), W, 30 * W).is_none());
        // One short pause.
        assert!(detect(&series("xxxxxxxx......xxxxxxxx"), W, 22 * W).is_none());
        // A mostly idle target (median window silent).
        assert!(detect(&series("x.........x.........x.........x"), W, 31 * W).is_none());
    }

    #[test]
    fn one_long_pause_is_enough() {
        let s = series(&format!(
            "xxxxxxxxxxxxxxxxxxxxxxxx{}xxxxxxxxxxxxxxxxxxxxxx",
            ".".repeat(25)
        ));
        let f = detect(&s, W, s.len() as u64 * W).expect("fires");
        assert_eq!(f.evidence[0].value, 1.0);
    }
}
