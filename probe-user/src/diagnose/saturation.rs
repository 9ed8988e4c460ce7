//! Detector 2: one thread saturated while the others wait on it.
//!
//! Rule: exactly one thread of the target is runnable (on-CPU or waiting in
//! the run queue: it never blocks) for at least [`HOT_SHARE`] of the run,
//! at least twice the runnable share of the next busiest thread, and at
//! least one other thread of the target blocks regularly (at least
//! [`MIN_BLOCKS_PER_S`] voluntary switches per second) while runnable for
//! less than [`OTHER_MAX_SHARE`] of the run: the work funnels through one
//! thread. Runnable, not on-CPU, share is used so that a saturated thread
//! is still recognised when it also loses its CPU to neighbours (that is
//! the preemption detector's part). The ranking key is the hot thread's
//! on-CPU time: the serial work everything else queues behind.

use super::finding::{pct, Confidence, Finding, Measure};
use super::preemption::ms;
use crate::report::{ThreadReport, WakeEdge};

pub const HOT_SHARE: f64 = 0.90;
pub const OTHER_MAX_SHARE: f64 = 0.50;
pub const MIN_BLOCKS_PER_S: f64 = 10.0;
/// Confidence from who woke the waiters (when known).
pub const WOKEN_BY_HOT_HIGH: f64 = 0.5;
pub const WOKEN_BY_HOT_LOW: f64 = 0.1;

pub const RULE: &str = "exactly one thread runnable (on-CPU + run-queue wait) >= 90% of the run \
     and >= 2x the next thread, while another thread blocks >= 10 times/s and is runnable < 50%";

/// On-CPU plus run-queue time. The recorder credits on-CPU time at
/// switch-out, so a thread that rarely leaves its CPU is short of the run
/// still in progress at the end; the kernel's schedstat delta (present for
/// threads alive at both ends) includes it: the larger of the two is used.
fn runnable(t: &ThreadReport) -> u64 {
    let ours = t.oncpu_ns.saturating_add(t.runq_wait.total_ns);
    let kernel = t
        .kernel
        .as_ref()
        .map(|k| k.oncpu_ns.saturating_add(k.runq_wait_ns))
        .unwrap_or(0);
    ours.max(kernel)
}

fn oncpu(t: &ThreadReport) -> u64 {
    t.oncpu_ns
        .max(t.kernel.as_ref().map(|k| k.oncpu_ns).unwrap_or(0))
}

/// The threads, the most runnable first (ties by tid).
fn most_runnable_first(threads: &[ThreadReport]) -> Vec<&ThreadReport> {
    let mut by_share: Vec<&ThreadReport> = threads.iter().collect();
    by_share.sort_by(|a, b| runnable(b).cmp(&runnable(a)).then(a.tid.cmp(&b.tid)));
    by_share
}

/// The rule's numbers for the most runnable thread, whether it fires or
/// not: its runnable share, and how many times the next thread's it is.
pub fn measured(threads: &[ThreadReport], duration_ns: u64) -> Vec<Measure> {
    let by_share = most_runnable_first(threads);
    // A thread waits on the hot one only if there are two.
    let mut out = vec![Measure::at_least(
        "active_threads",
        threads.len() as f64,
        2.0,
        "",
    )];
    if let Some(hot) = by_share.first().map(|t| runnable(t)) {
        out.push(Measure::at_least(
            "hottest_runnable_pct",
            pct(hot, duration_ns),
            100.0 * HOT_SHARE,
            "%",
        ));
        if let Some(next) = by_share.get(1).map(|t| runnable(t)) {
            out.push(Measure::at_least(
                "hottest_vs_next",
                hot as f64 / next.max(1) as f64,
                2.0,
                "x",
            ));
        }
    }
    out
}

pub fn detect(threads: &[ThreadReport], edges: &[WakeEdge], duration_ns: u64) -> Option<Finding> {
    if duration_ns == 0 || threads.len() < 2 {
        return None;
    }
    let dur = duration_ns as f64;
    let share = |t: &ThreadReport| runnable(t) as f64 / dur;
    let by_share = most_runnable_first(threads);
    let hot = by_share[0];
    let next = by_share[1];
    if share(hot) < HOT_SHARE || share(next) >= HOT_SHARE || share(hot) < 2.0 * share(next) {
        return None;
    }
    let secs = dur / 1e9;
    let waiters: Vec<&&ThreadReport> = by_share[1..]
        .iter()
        .filter(|t| {
            t.voluntary_switches as f64 / secs >= MIN_BLOCKS_PER_S && share(t) < OTHER_MAX_SHARE
        })
        .collect();
    if waiters.is_empty() {
        return None;
    }
    let blocks: u64 = waiters.iter().map(|t| t.voluntary_switches).sum();
    // Who woke the waiters, when the waker program ran.
    let from_hot: u64 = edges
        .iter()
        .filter(|e| e.waker_tid == hot.tid && waiters.iter().any(|w| w.tid == e.wakee_tid))
        .map(|e| e.count)
        .sum();
    let waiter_wakeups: u64 = waiters.iter().map(|t| t.wakeups).sum::<u64>().max(from_hot);
    let woken_by_hot =
        (!edges.is_empty() && waiter_wakeups > 0).then(|| from_hot as f64 / waiter_wakeups as f64);
    let margin = (share(hot) - share(next)) / (HOT_SHARE - OTHER_MAX_SHARE);
    let mut f = Finding {
        detector: "saturated_thread",
        what: format!(
            "one thread is saturated: {} (tid {}) is runnable {:.0}% of the time while {} other \
             thread(s) block and wait",
            hot.comm,
            hot.tid,
            100.0 * share(hot),
            waiters.len()
        ),
        // "Waiting on it" is shown by who woke them when the waker program
        // ran (high when at least half came from the hot thread, low when
        // under a tenth), else inferred from their blocking (medium at most).
        confidence: match woken_by_hot {
            Some(s) if s >= WOKEN_BY_HOT_HIGH => Confidence::High,
            Some(s) if s < WOKEN_BY_HOT_LOW => Confidence::Low,
            _ => Confidence::from_margin(margin, 1.0, f64::INFINITY),
        },
        impact_ns: oncpu(hot),
        evidence: Vec::new(),
        advice: format!(
            "thread {} is the bottleneck: move work off it (tokenisation, detokenisation, \
             scheduling, logging) to other threads or processes, or split its loop; adding \
             workers elsewhere will not help until this thread is relieved",
            hot.comm
        ),
    };
    f.evidence(
        "hot_oncpu_ms",
        ms(oncpu(hot)),
        format!(
            "{} (tid {}) ran {:.1} ms and waited {:.1} ms for a CPU in a {:.1} s run \
             ({:.0}% runnable; it blocked {} times)",
            hot.comm,
            hot.tid,
            ms(oncpu(hot)),
            ms(runnable(hot).saturating_sub(oncpu(hot))),
            secs,
            100.0 * share(hot),
            hot.voluntary_switches
        ),
    );
    f.evidence(
        "next_thread_runnable_pct",
        100.0 * share(next),
        format!(
            "the next busiest thread, {} (tid {}), was runnable {:.0}% of the time",
            next.comm,
            next.tid,
            100.0 * share(next)
        ),
    );
    f.evidence(
        "waiter_blocks",
        blocks as f64,
        format!(
            "{} other thread(s) blocked {} times ({:.0}/s) and were runnable {:.0}% of the time \
             on average",
            waiters.len(),
            blocks,
            blocks as f64 / secs,
            100.0 * waiters.iter().map(|t| share(t)).sum::<f64>() / waiters.len() as f64
        ),
    );
    if let Some(share) = woken_by_hot {
        f.evidence(
            "waiters_woken_by_hot_pct",
            100.0 * share,
            format!(
                "{:.0}% of the waiting threads' wakeups came from {} ({} of {})",
                100.0 * share,
                hot.comm,
                from_hot,
                waiter_wakeups
            ),
        );
    }
    Some(f)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        report::{IrqTime, Migrations, NumaTaskEvents},
        stats::WaitSummary,
    };

    pub fn thread(tid: u32, oncpu_ms: u64, wait_ms: u64, voluntary: u64) -> ThreadReport {
        ThreadReport {
            tid,
            tgid: 100,
            comm: format!("t{tid}"),
            alive_at_end: true,
            created_during_run: false,
            runq_wait: WaitSummary {
                count: 1,
                total_ns: wait_ms * 1_000_000,
                mean_ns: 0,
                p50_ns: None,
                p95_ns: None,
                p99_ns: None,
                max_ns: 0,
            },
            oncpu_ns: oncpu_ms * 1_000_000,
            voluntary_switches: voluntary,
            involuntary_switches: 0,
            wakeups: 0,
            migrations: Migrations::default(),
            hardirq: IrqTime::default(),
            softirq: IrqTime::default(),
            page_faults: 0,
            numa_balancing: NumaTaskEvents::default(),
            kernel: None,
        }
    }

    const TEN_S: u64 = 10_000_000_000;

    #[test]
    fn fires_on_a_pipeline_bottleneck() {
        let ts = [
            thread(1, 6000, 3500, 5),
            thread(2, 300, 20, 3000),
            thread(3, 300, 20, 3000),
        ];
        let f = detect(&ts, &[], TEN_S).expect("fires");
        assert!(f.what.contains("t1 (tid 1)"), "{}", f.what);
        assert_eq!(f.impact_ns, 6_000_000_000);
        assert_eq!(f.evidence[2].value, 6000.0);
    }

    #[test]
    fn who_woke_the_waiters_sets_the_confidence() {
        let mut ts = vec![
            thread(1, 6000, 3500, 5),
            thread(2, 300, 20, 3000),
            thread(3, 300, 20, 3000),
        ];
        ts[1].wakeups = 3000;
        ts[2].wakeups = 3000;
        let edge = |waker_tid, wakee_tid, count| WakeEdge {
            waker_tid,
            wakee_tid,
            count,
        };
        let f = detect(&ts, &[edge(1, 2, 2900), edge(1, 3, 2900)], TEN_S).expect("fires");
        assert_eq!(f.confidence, Confidence::High);
        let e = f.evidence.last().expect("evidence");
        assert_eq!(e.key, "waiters_woken_by_hot_pct");
        assert!((e.value - 5800.0 / 60.0).abs() < 1e-9);
        // Woken by someone else: the hot thread is not what they wait on.
        let f = detect(&ts, &[edge(2, 3, 3000)], TEN_S).expect("fires");
        assert_eq!(f.confidence, Confidence::Low);
    }

    #[test]
    fn kernel_accounting_covers_the_run_in_progress() {
        let mut hot = thread(1, 8000, 0, 0);
        hot.kernel = Some(crate::report::KernelAccounting {
            runq_wait_ns: 100_000_000,
            oncpu_ns: 9_800_000_000,
            voluntary_switches: 0,
            involuntary_switches: 0,
        });
        let f = detect(&[hot, thread(2, 100, 0, 500)], &[], TEN_S).expect("fires");
        assert_eq!(f.impact_ns, 9_800_000_000);
    }

    #[test]
    fn quiet_when_balanced_alone_or_idle() {
        // Two saturated threads: parallel CPU-bound work, not one bottleneck.
        let ts = [thread(1, 9500, 0, 5), thread(2, 9400, 0, 3000)];
        assert!(detect(&ts, &[], TEN_S).is_none());
        // One thread only: nobody waits on it.
        assert!(detect(&[thread(1, 9900, 0, 0)], &[], TEN_S).is_none());
        // Hot thread, but the others never block.
        let ts = [thread(1, 9900, 0, 0), thread(2, 10, 0, 5)];
        assert!(detect(&ts, &[], TEN_S).is_none());
        // Nobody is saturated.
        let ts = [thread(1, 5000, 100, 10), thread(2, 300, 0, 3000)];
        assert!(detect(&ts, &[], TEN_S).is_none());
    }
}
