//! Detector 6: lock convoys and GIL contention: threads of the target that
//! take turns, each blocking until another of them wakes it.
//!
//! Rule, from who woke whom among the target's threads (`wake_edges`): a
//! contender is a thread that blocks at least [`MIN_BLOCKS_PER_S`] times a
//! second, gets at least [`MIN_PEER_WAKE_SHARE`] of its wakeups from other
//! contenders, and wakes other contenders itself (the hand-off goes both
//! ways: a pipeline, where one stage only wakes the next, is not a convoy).
//! It fires when at least two threads contend, together they want the CPU
//! (on-CPU at least [`MIN_BUSY_CPUS`] of one CPU), and yet they ran no more
//! than [`MAX_PARALLEL_CPUS`] CPUs' worth at a time on average: their work is
//! serialised by what they hand to each other (a mutex, the GIL, a
//! condition variable). The ranking key is the contenders' blocked time
//! (run minus on-CPU and run-queue time), scaled by the share of their
//! wakeups that came from each other.

use std::collections::BTreeMap;

use super::{
    finding::{Confidence, Finding, Measure},
    preemption::ms,
};
use crate::report::{ThreadReport, WakeEdge};

pub const MIN_BLOCKS_PER_S: f64 = 20.0;
/// CPython's GIL waits are timed (5 ms switch interval): about half of a
/// waiter's wakeups are its own time-outs, so the bar is below one half.
pub const MIN_PEER_WAKE_SHARE: f64 = 0.3;
pub const MIN_BUSY_CPUS: f64 = 0.5;
pub const MAX_PARALLEL_CPUS: f64 = 1.25;

pub const RULE: &str = ">= 2 threads that each block >= 20 times/s, get >= 30% of their wakeups \
     from each other and wake each other, together on-CPU >= 0.5 CPU but <= 1.25 CPUs (serialised)";

struct Contender<'a> {
    t: &'a ThreadReport,
    peer_wakes: u64,
}

/// The threads that block often and are woken by, and wake, others in the
/// set: candidates, narrowed until every one qualifies.
fn members(
    threads: &[ThreadReport],
    edges: &[WakeEdge],
    by_tid: &BTreeMap<u32, &ThreadReport>,
    secs: f64,
) -> Vec<u32> {
    let mut set: Vec<u32> = threads
        .iter()
        .filter(|t| t.voluntary_switches as f64 / secs >= MIN_BLOCKS_PER_S)
        .map(|t| t.tid)
        .collect();
    loop {
        let keep: Vec<u32> = set
            .iter()
            .copied()
            .filter(|tid| {
                let woken: u64 = edges
                    .iter()
                    .filter(|e| e.wakee_tid == *tid && set.contains(&e.waker_tid))
                    .map(|e| e.count)
                    .sum();
                let wakes = edges
                    .iter()
                    .any(|e| e.waker_tid == *tid && set.contains(&e.wakee_tid));
                let total = by_tid.get(tid).map(|t| t.wakeups).unwrap_or(0).max(woken);
                wakes && total > 0 && woken as f64 / total as f64 >= MIN_PEER_WAKE_SHARE
            })
            .collect();
        if keep.len() == set.len() {
            break;
        }
        set = keep;
    }
    set
}

/// The threads that qualify as contenders (by tid) and the CPUs they keep
/// busy together: what both the rule and its measured numbers start from.
struct Contention<'a> {
    by_tid: BTreeMap<u32, &'a ThreadReport>,
    set: Vec<u32>,
    cpus: f64,
}

fn contention<'a>(
    threads: &'a [ThreadReport],
    edges: &[WakeEdge],
    duration_ns: u64,
) -> Contention<'a> {
    let by_tid: BTreeMap<u32, &ThreadReport> = threads.iter().map(|t| (t.tid, t)).collect();
    let set = members(threads, edges, &by_tid, duration_ns as f64 / 1e9);
    let oncpu: u64 = set
        .iter()
        .filter_map(|tid| by_tid.get(tid))
        .map(|t| t.oncpu_ns)
        .sum();
    let cpus = oncpu as f64 / duration_ns.max(1) as f64;
    Contention { by_tid, set, cpus }
}

/// The rule's numbers, whether it fires or not: how many threads qualify
/// as contenders, and how many CPUs they keep busy together.
pub fn measured(threads: &[ThreadReport], edges: &[WakeEdge], duration_ns: u64) -> Vec<Measure> {
    if duration_ns == 0 {
        return Vec::new();
    }
    let Contention { set, cpus, .. } = contention(threads, edges, duration_ns);
    vec![
        Measure::at_least("contending_threads", set.len() as f64, 2.0, ""),
        Measure::at_least("contenders_busy_cpus", cpus, MIN_BUSY_CPUS, " CPUs"),
        Measure::at_most("contenders_parallel_cpus", cpus, MAX_PARALLEL_CPUS, " CPUs"),
    ]
}

pub fn detect(threads: &[ThreadReport], edges: &[WakeEdge], duration_ns: u64) -> Option<Finding> {
    if duration_ns == 0 || edges.is_empty() {
        return None;
    }
    let dur = duration_ns as f64;
    let secs = dur / 1e9;
    let Contention { by_tid, set, cpus } = contention(threads, edges, duration_ns);
    if set.len() < 2 {
        return None;
    }
    let contenders: Vec<Contender> = set
        .iter()
        .filter_map(|tid| {
            let t = *by_tid.get(tid)?;
            let peer_wakes = edges
                .iter()
                .filter(|e| e.wakee_tid == *tid && set.contains(&e.waker_tid))
                .map(|e| e.count)
                .sum();
            Some(Contender { t, peer_wakes })
        })
        .collect();
    let oncpu: u64 = contenders.iter().map(|c| c.t.oncpu_ns).sum();
    if !(MIN_BUSY_CPUS..=MAX_PARALLEL_CPUS).contains(&cpus) {
        return None;
    }
    let handoffs: u64 = contenders.iter().map(|c| c.peer_wakes).sum();
    let wakeups: u64 = contenders
        .iter()
        .map(|c| c.t.wakeups.max(c.peer_wakes))
        .sum();
    let peer_share = handoffs as f64 / wakeups.max(1) as f64;
    let blocked: u64 = contenders
        .iter()
        .map(|c| {
            duration_ns
                .saturating_sub(c.t.oncpu_ns)
                .saturating_sub(c.t.runq_wait.total_ns)
        })
        .sum();
    let names: Vec<String> = contenders
        .iter()
        .take(6)
        .map(|c| format!("{} ({})", c.t.comm, c.t.tid))
        .collect();
    let python = contenders.iter().any(|c| c.t.comm.starts_with("python"));
    let lock = if python {
        "the GIL (a CPython process)"
    } else {
        "a shared lock (mutex, condition variable or GIL)"
    };
    let mut f = Finding {
        detector: "lock_convoy",
        what: format!(
            "{} threads take turns on {lock}: they wake each other {:.0} times/s and together \
             run only {:.2} CPUs",
            contenders.len(),
            handoffs as f64 / secs,
            cpus
        ),
        confidence: Confidence::from_margin(
            (peer_share / MIN_PEER_WAKE_SHARE).min(contenders.len() as f64 / 2.0),
            1.5,
            1.9,
        ),
        impact_ns: (blocked as f64 * peer_share) as u64,
        evidence: Vec::new(),
        advice: "shorten or split the contended critical section (finer-grained locks, per-thread \
                 state, lock-free queues); for a CPython server, move CPU-heavy work out of the \
                 interpreter (processes, native code that releases the GIL) or run fewer Python \
                 threads"
            .into(),
    };
    f.evidence(
        "handoffs_per_s",
        handoffs as f64 / secs,
        format!(
            "{} wakeups among them in {:.1} s ({:.0}% of their wakeups came from each other)",
            handoffs,
            secs,
            100.0 * peer_share
        ),
    );
    f.evidence(
        "parallel_cpus",
        cpus,
        format!(
            "they ran {:.1} ms in all: {:.2} CPUs on average for {} threads",
            ms(oncpu),
            cpus,
            contenders.len()
        ),
    );
    f.evidence(
        "blocked_ms",
        ms(blocked),
        format!(
            "they spent {:.1} ms blocked; threads: {}",
            ms(blocked),
            names.join(", ")
        ),
    );
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::saturation::tests::thread;

    const TEN_S: u64 = 10_000_000_000;

    fn e(waker_tid: u32, wakee_tid: u32, count: u64) -> WakeEdge {
        WakeEdge {
            waker_tid,
            wakee_tid,
            count,
        }
    }

    fn with_wakeups(mut t: ThreadReport, w: u64) -> ThreadReport {
        t.wakeups = w;
        t
    }

    #[test]
    fn fires_on_threads_handing_a_lock_around() {
        let ts = [
            with_wakeups(thread(1, 2500, 100, 3000), 3000),
            with_wakeups(thread(2, 2500, 100, 3000), 3000),
            with_wakeups(thread(3, 2500, 100, 3000), 3000),
            with_wakeups(thread(4, 100, 0, 50), 50),
        ];
        let edges = [
            e(1, 2, 1500),
            e(1, 3, 1400),
            e(2, 1, 1500),
            e(2, 3, 1400),
            e(3, 1, 1400),
            e(3, 2, 1400),
            e(4, 1, 10),
        ];
        let f = detect(&ts, &edges, TEN_S).expect("fires");
        assert!(f.what.starts_with("3 threads"), "{}", f.what);
        assert!((f.evidence[1].value - 0.75).abs() < 1e-9);
        assert_eq!(f.evidence[0].value, 860.0);
    }

    #[test]
    fn quiet_for_a_pipeline_parallel_work_or_idle_ping_pong() {
        // Producer wakes consumers; nobody wakes the producer.
        let ts = [
            with_wakeups(thread(1, 9000, 0, 5), 0),
            with_wakeups(thread(2, 300, 0, 3000), 3000),
            with_wakeups(thread(3, 300, 0, 3000), 3000),
        ];
        let edges = [e(1, 2, 3000), e(1, 3, 3000)];
        assert!(detect(&ts, &edges, TEN_S).is_none());
        // Both ways, but running 1.8 CPUs: not serialised.
        let ts = [
            with_wakeups(thread(1, 9000, 0, 3000), 3000),
            with_wakeups(thread(2, 9000, 0, 3000), 3000),
        ];
        let edges = [e(1, 2, 3000), e(2, 1, 3000)];
        assert!(detect(&ts, &edges, TEN_S).is_none());
        // Both ways, but hardly running: an idle request/response pair.
        let ts = [
            with_wakeups(thread(1, 200, 0, 3000), 3000),
            with_wakeups(thread(2, 200, 0, 3000), 3000),
        ];
        assert!(detect(&ts, &edges, TEN_S).is_none());
        // Mostly woken from outside (timers, I/O).
        let ts = [
            with_wakeups(thread(1, 4000, 0, 3000), 30000),
            with_wakeups(thread(2, 4000, 0, 3000), 30000),
        ];
        assert!(detect(&ts, &edges, TEN_S).is_none());
    }
}
