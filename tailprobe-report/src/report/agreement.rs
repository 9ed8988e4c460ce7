//! What the run-queue agreement with the kernel's accounting means, in a
//! sentence computed from the numbers (pure).
//!
//! Two known effects of the kernel's clock skip after a wakeup preemption
//! (`rq_clock_skip_update`; measured in docs/accuracy.md) move schedstat
//! away from our own clock, in opposite directions:
//! - a preempted task's schedstat wait starts at the preemptor's wakeup,
//!   before the switch: schedstat is higher, by up to about
//!   [`PREEMPTION_GAP_NS`] per involuntary switch (18-20 us measured);
//! - a task woken onto an idle CPU gets about 0 ns from schedstat, however
//!   long the CPU took to come back: ours is higher, by up to about
//!   [`IDLE_WAKE_GAP_NS`] per voluntary switch (16-27 us measured).

use super::model::KernelAccounting;

/// Schedstat's excess per involuntary switch that the first effect covers.
pub const PREEMPTION_GAP_NS: f64 = 25_000.0;
/// Our excess per voluntary switch that the second effect covers.
pub const IDLE_WAKE_GAP_NS: f64 = 50_000.0;
/// Agreement closer than this (in percent points) needs no note.
pub const CLOSE_PCT: f64 = 1.0;

/// A note on `ours_pct` (our run-queue total as a share of the kernel's)
/// when it is off by more than [`CLOSE_PCT`]: the gap in time and per
/// switch, and whether the known effects cover it.
pub fn note(ours_pct: f64, k: &KernelAccounting) -> Option<String> {
    if (ours_pct - 100.0).abs() <= CLOSE_PCT || k.runq_wait_ns == 0 {
        return None;
    }
    let kernel = k.runq_wait_ns as f64;
    let gap = kernel * (1.0 - ours_pct / 100.0);
    let ms = gap.abs() / 1e6;
    Some(if gap > 0.0 {
        let per = gap / k.involuntary_switches.max(1) as f64;
        let covered = k.involuntary_switches > 0 && per <= PREEMPTION_GAP_NS;
        format!(
            "schedstat's run-queue total is {ms:.1} ms higher than ours ({:.1} us per \
             involuntary switch): {}",
            per / 1e3,
            if covered {
                "within what schedstat adds after wakeup preemptions (its wait starts at the \
                 preemptor's wakeup, up to ~25 us each; docs/accuracy.md)"
            } else {
                "more than the known effect of wakeup preemptions covers (~25 us each; \
                 docs/accuracy.md): not explained"
            }
        )
    } else {
        let per = -gap / k.voluntary_switches.max(1) as f64;
        let covered = k.voluntary_switches > 0 && per <= IDLE_WAKE_GAP_NS;
        format!(
            "our run-queue total is {ms:.1} ms higher than schedstat's ({:.1} us per voluntary \
             switch): {}",
            per / 1e3,
            if covered {
                "within what schedstat leaves out of wakeups onto idle CPUs (it charges them \
                 ~0 ns; docs/accuracy.md)"
            } else {
                "more than the known effect of wakeups onto idle CPUs covers (~50 us each; \
                 docs/accuracy.md): not explained"
            }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(wait_ms: u64, vol: u64, invol: u64) -> KernelAccounting {
        KernelAccounting {
            runq_wait_ns: wait_ms * 1_000_000,
            oncpu_ns: 0,
            voluntary_switches: vol,
            involuntary_switches: invol,
        }
    }

    #[test]
    fn close_agreement_needs_no_note() {
        assert_eq!(note(99.5, &k(1000, 10, 10)), None);
        assert_eq!(note(100.9, &k(1000, 10, 10)), None);
        assert_eq!(note(50.0, &k(0, 10, 10)), None);
    }

    #[test]
    fn schedstat_higher_by_preemptions() {
        // 97.2% of 1500 ms: 42 ms over 2330 involuntary switches = 18 us each.
        let n = note(97.2, &k(1500, 0, 2330)).expect("note");
        assert!(n.contains("42.0 ms higher than ours"), "{n}");
        assert!(n.contains("18.0 us per involuntary switch"), "{n}");
        assert!(n.contains("within"), "{n}");
        // The same gap over 100 switches: 420 us each, not covered.
        let n = note(97.2, &k(1500, 0, 100)).expect("note");
        assert!(n.contains("not explained"), "{n}");
        // No involuntary switch at all: not covered either.
        assert!(note(97.2, &k(1500, 5, 0))
            .unwrap()
            .contains("not explained"));
    }

    #[test]
    fn ours_higher_by_idle_wakeups() {
        // The sleeper: ours 8.3 ms, schedstat 3.5 ms, 301 voluntary switches.
        let pct = 8.3 / 3.5 * 100.0;
        let n = note(pct, &k(0, 301, 0)).unwrap_or_default();
        assert!(n.is_empty(), "kernel total 0: no note, {n}");
        let n = note(
            pct,
            &KernelAccounting {
                runq_wait_ns: 3_500_000,
                oncpu_ns: 0,
                voluntary_switches: 301,
                involuntary_switches: 0,
            },
        )
        .expect("note");
        assert!(n.contains("4.8 ms higher than schedstat's"), "{n}");
        assert!(n.contains("15.9 us per voluntary switch"), "{n}");
        assert!(n.contains("within"), "{n}");
        let n = note(300.0, &k(100, 10, 0)).expect("note");
        assert!(n.contains("not explained"), "{n}");
    }
}
