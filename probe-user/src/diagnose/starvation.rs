//! Detector 1b: CPU starvation that no named preemptor explains.
//!
//! The recorder charges a run-queue wait to a preemptor only when the
//! target's thread was preempted; a thread that is woken and then queued
//! behind whatever runs is charged to nobody. On a machine far
//! overcommitted, most of the wait is of that kind and `preemption` cannot
//! name anyone. Rule: `preemption` did not fire, and the target's run-queue
//! wait (less its cgroup's throttled time) is at least [`MIN_RUN_SHARE`] of
//! the run (thread-time) and at least [`MIN_RUNNABLE_SHARE`] of the time its
//! threads wanted a CPU (on-CPU + wait). The evidence splits the wait into
//! the part charged to its own threads, to other tasks, and to nobody. The
//! ranking key is that wait.

use super::{
    finding::{Confidence, Finding, Measure},
    preemption::{is_softirq_thread, ms},
};
use crate::report::PreemptorReport;

pub const MIN_RUN_SHARE: f64 = 0.10;
pub const MIN_RUNNABLE_SHARE: f64 = 1.0 / 3.0;

pub const RULE: &str = "preemption did not fire; the target's run-queue wait (less throttled \
     time) >= 10% of the run (thread-time) and >= 1/3 of the time it wanted a CPU";

pub struct Input<'a> {
    pub target_tgids: &'a [u32],
    pub preemptors: &'a [PreemptorReport],
    pub wait_ns: u64,
    pub oncpu_ns: u64,
    pub throttled_ns: u64,
    pub duration_ns: u64,
    /// The preemption detector fired (then this one stays quiet).
    pub preemption_fired: bool,
}

/// The wait the rule counts (less throttled time), and its shares of the
/// run and of the time the target wanted a CPU.
fn shares(inp: &Input) -> (u64, f64, f64) {
    let wait = inp.wait_ns.saturating_sub(inp.throttled_ns);
    let wanted = wait.saturating_add(inp.oncpu_ns);
    let run_share = wait as f64 / inp.duration_ns.max(1) as f64;
    let wanted_share = wait as f64 / wanted.max(1) as f64;
    (wait, run_share, wanted_share)
}

/// The rule's two numbers, whether it fires or not.
pub fn measured(inp: &Input) -> Vec<Measure> {
    let (_, run_share, wanted_share) = shares(inp);
    vec![
        Measure::at_least(
            "wait_run_pct",
            100.0 * run_share,
            100.0 * MIN_RUN_SHARE,
            "%",
        ),
        Measure::at_least(
            "wait_wanted_pct",
            100.0 * wanted_share,
            100.0 * MIN_RUNNABLE_SHARE,
            "%",
        ),
    ]
}

pub fn detect(inp: &Input) -> Option<Finding> {
    if inp.preemption_fired || inp.duration_ns == 0 {
        return None;
    }
    let (wait, run_share, wanted_share) = shares(inp);
    if run_share < MIN_RUN_SHARE || wanted_share < MIN_RUNNABLE_SHARE {
        return None;
    }
    let own: u64 = inp
        .preemptors
        .iter()
        .filter(|p| inp.target_tgids.contains(&p.tgid))
        .map(|p| p.target_wait_ns)
        .sum();
    let outside: u64 = inp
        .preemptors
        .iter()
        .filter(|p| p.pid != 0 && !inp.target_tgids.contains(&p.tgid))
        .filter(|p| !is_softirq_thread(&p.comm))
        .map(|p| p.target_wait_ns)
        .sum();
    let nobody = wait.saturating_sub(own).saturating_sub(outside);
    let own_mostly = own as f64 >= 0.5 * wait as f64;
    let mut f = Finding {
        detector: "cpu_starvation",
        what: if own_mostly {
            format!(
                "the target has more runnable threads than CPUs: they wait {:.0}% of the time \
                 they want one, mostly behind each other",
                100.0 * wanted_share
            )
        } else {
            format!(
                "the target waits for a CPU {:.0}% of the time it wants one, mostly woken and \
                 queued behind other work (the machine is overcommitted)",
                100.0 * wanted_share
            )
        },
        confidence: Confidence::from_margin(
            (run_share / MIN_RUN_SHARE).min(wanted_share / MIN_RUNNABLE_SHARE),
            1.5,
            2.5,
        ),
        impact_ns: wait,
        evidence: Vec::new(),
        advice: if own_mostly {
            "size the target's thread pools to the CPUs it may use (OMP_NUM_THREADS, \
             torch.set_num_threads, worker counts), or give it more CPUs"
                .into()
        } else {
            "give the server CPUs of its own (cpuset / AllowedCPUs=, a higher cpu.weight for \
             its cgroup), or move other work off the machine; `tailprobe record` shows who \
             ran on its CPUs"
                .into()
        },
    };
    f.evidence(
        "wait_ms",
        ms(wait),
        format!(
            "its threads waited {:.1} ms in the run queue and ran {:.1} ms in a {:.1} s run \
             ({:.0}% of the run, {:.0}% of the time they wanted a CPU)",
            ms(wait),
            ms(inp.oncpu_ns),
            inp.duration_ns as f64 / 1e9,
            100.0 * run_share,
            100.0 * wanted_share
        ),
    );
    f.evidence(
        "wait_split_ms",
        ms(nobody),
        format!(
            "of that, {:.1} ms behind its own threads, {:.1} ms after preemption by other tasks, \
             {:.1} ms after a wakeup (charged to nobody: whoever ran is not recorded)",
            ms(own),
            ms(outside),
            ms(nobody)
        ),
    );
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, tgid: u32, wait_ms: u64) -> PreemptorReport {
        PreemptorReport {
            pid,
            tgid,
            comm: "x".into(),
            count: 1,
            target_wait_ns: wait_ms * 1_000_000,
        }
    }

    fn run(
        preemptors: &[PreemptorReport],
        wait_ms: u64,
        oncpu_ms: u64,
        fired: bool,
    ) -> Option<Finding> {
        detect(&Input {
            target_tgids: &[100],
            preemptors,
            wait_ns: wait_ms * 1_000_000,
            oncpu_ns: oncpu_ms * 1_000_000,
            throttled_ns: 0,
            duration_ns: 3_000_000_000,
            preemption_fired: fired,
        })
    }

    #[test]
    fn uncharged_waits_on_an_overcommitted_machine() {
        let f = run(&[p(7, 7, 500)], 11_000, 1_200, false).expect("fires");
        assert!(f.what.contains("overcommitted"), "{}", f.what);
        assert_eq!(f.evidence[1].value, 10_500.0);
        assert_eq!(f.impact_ns, 11_000_000_000);
    }

    #[test]
    fn own_threads_and_quiet_cases() {
        let f = run(&[p(101, 100, 2_000)], 3_000, 3_000, false).expect("fires");
        assert!(
            f.what.contains("more runnable threads than CPUs"),
            "{}",
            f.what
        );
        // The preemption detector already named someone.
        assert!(run(&[], 11_000, 1_200, true).is_none());
        // Under a third of the wanted time.
        assert!(run(&[], 1_000, 5_000, false).is_none());
        // Under 10% of the run.
        assert!(run(&[], 200, 100, false).is_none());
    }

    /// The measured numbers meet their bounds exactly when the detector
    /// fires (preemption not having fired).
    #[test]
    fn measured_agrees_with_the_rule() {
        for (wait_ms, oncpu_ms, throttled_ms) in [
            (500, 100, 0),
            (1000, 1000, 0),
            (1000, 2001, 0),
            (1000, 1999, 0),
            (3000, 1000, 2500),
            (5000, 9000, 0),
        ] {
            let inp = Input {
                target_tgids: &[100],
                preemptors: &[],
                wait_ns: wait_ms * 1_000_000,
                oncpu_ns: oncpu_ms * 1_000_000,
                throttled_ns: throttled_ms * 1_000_000,
                duration_ns: 10_000_000_000,
                preemption_fired: false,
            };
            let m = measured(&inp);
            assert_eq!(
                detect(&inp).is_some(),
                m.iter().all(Measure::met),
                "{wait_ms} {oncpu_ms} {throttled_ms}: {m:?}"
            );
        }
    }
}
