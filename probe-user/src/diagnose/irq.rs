//! Detector 5: hard IRQ and softirq time on the target's CPUs.
//!
//! Rule: the time IRQ handlers and softirqs ran while a target thread was
//! on the CPU (the recorder charges it to that thread), plus the run-queue
//! wait caused by `ksoftirqd` (softirq work deferred to a thread), is at
//! least [`MIN_ONCPU_SHARE`] of the target's on-CPU time and at least
//! [`MIN_RUN_SHARE`] of the run. The evidence names the softirq vectors and
//! the IRQs (with their `/proc/interrupts` device names) and the CPUs hit.
//! The ranking key is that stolen time.

use super::{
    finding::{pct, Confidence, Finding, Measure},
    preemption::{is_softirq_thread, ms},
};
use crate::report::{CpuReport, IrqReport, PreemptorReport, SoftirqReport};

pub const MIN_ONCPU_SHARE: f64 = 0.03;
pub const MIN_RUN_SHARE: f64 = 0.01;

pub const RULE: &str = "hard IRQ + softirq time charged to the target's threads (+ wait caused \
     by ksoftirqd) >= 3% of the target's on-CPU time and >= 1% of the run";

pub struct Input<'a> {
    pub irqs: &'a [IrqReport],
    pub softirqs: &'a [SoftirqReport],
    pub cpus: &'a [CpuReport],
    pub preemptors: &'a [PreemptorReport],
    pub target_oncpu_ns: u64,
    pub duration_ns: u64,
}

/// Hard IRQ, softirq and ksoftirqd-wait time taken from the target.
fn taken(inp: &Input) -> (u64, u64, u64) {
    let hard: u64 = inp.irqs.iter().map(|i| i.total_ns).sum();
    let soft: u64 = inp.softirqs.iter().map(|s| s.total_ns).sum();
    let deferred: u64 = inp
        .preemptors
        .iter()
        .filter(|p| is_softirq_thread(&p.comm))
        .map(|p| p.target_wait_ns)
        .sum();
    (hard, soft, deferred)
}

/// The rule's two numbers, whether it fires or not.
pub fn measured(inp: &Input) -> Vec<Measure> {
    let (hard, soft, deferred) = taken(inp);
    let stolen = hard + soft + deferred;
    vec![
        Measure::at_least(
            "irq_oncpu_pct",
            pct(stolen, inp.target_oncpu_ns),
            100.0 * MIN_ONCPU_SHARE,
            "%",
        ),
        Measure::at_least(
            "irq_run_pct",
            pct(stolen, inp.duration_ns),
            100.0 * MIN_RUN_SHARE,
            "%",
        ),
    ]
}

pub fn detect(inp: &Input) -> Option<Finding> {
    let (hard, soft, deferred) = taken(inp);
    let stolen = hard + soft + deferred;
    if inp.duration_ns == 0 || inp.target_oncpu_ns == 0 {
        return None;
    }
    let oncpu_share = stolen as f64 / inp.target_oncpu_ns as f64;
    let run_share = stolen as f64 / inp.duration_ns as f64;
    if oncpu_share < MIN_ONCPU_SHARE || run_share < MIN_RUN_SHARE {
        return None;
    }
    let mut soft_sorted: Vec<&SoftirqReport> = inp.softirqs.iter().collect();
    soft_sorted.sort_by_key(|s| std::cmp::Reverse(s.total_ns));
    let mut hard_sorted: Vec<&IrqReport> = inp.irqs.iter().collect();
    hard_sorted.sort_by_key(|i| std::cmp::Reverse(i.total_ns));
    let top_name = match (soft_sorted.first(), hard_sorted.first()) {
        (Some(s), Some(h)) if h.total_ns > s.total_ns => irq_label(h),
        (Some(s), _) => format!("softirq {}", s.name),
        (None, Some(h)) => irq_label(h),
        (None, None) => "softirq work in ksoftirqd".to_string(),
    };
    let mut cpus: Vec<(u32, u64)> = inp
        .cpus
        .iter()
        .map(|c| (c.cpu, c.target_hardirq_ns + c.target_softirq_ns))
        .filter(|(_, ns)| *ns > 0)
        .collect();
    cpus.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let cpu_list: Vec<String> = cpus
        .iter()
        .take(4)
        .map(|(c, ns)| format!("CPU {c} {:.1} ms", ms(*ns)))
        .collect();
    let mut f = Finding {
        detector: "irq",
        what: format!(
            "interrupt work runs on the target's CPUs: mostly {top_name} ({:.1}% of its CPU time)",
            100.0 * oncpu_share
        ),
        confidence: Confidence::from_margin(
            (oncpu_share / MIN_ONCPU_SHARE).min(run_share / MIN_RUN_SHARE),
            2.0,
            5.0,
        ),
        impact_ns: stolen,
        evidence: Vec::new(),
        advice: "keep device interrupts and their softirq work off the server's CPUs: set the \
                 IRQs' /proc/irq/N/smp_affinity_list to other CPUs (tell irqbalance to avoid the \
                 server's CPUs: IRQBALANCE_BANNED_CPULIST), and steer network receive work with \
                 the NIC's RSS/RPS masks (/sys/class/net/<if>/queues/rx-*/rps_cpus)"
            .into(),
    };
    f.evidence(
        "stolen_ms",
        ms(stolen),
        format!(
            "{:.1} ms taken from the target's threads: {:.1} ms hard IRQ, {:.1} ms softirq, \
             {:.1} ms waiting for ksoftirqd ({:.1}% of its {:.1} ms on-CPU, {:.1}% of the run)",
            ms(stolen),
            ms(hard),
            ms(soft),
            ms(deferred),
            100.0 * oncpu_share,
            ms(inp.target_oncpu_ns),
            100.0 * run_share
        ),
    );
    for s in soft_sorted.iter().take(3).filter(|s| s.total_ns > 0) {
        f.evidence(
            "softirq_ms",
            ms(s.total_ns),
            format!(
                "softirq {}: {} runs, {:.1} ms, longest {:.2} ms",
                s.name,
                s.count,
                ms(s.total_ns),
                ms(s.max_ns)
            ),
        );
    }
    for h in hard_sorted.iter().take(3).filter(|h| h.total_ns > 0) {
        f.evidence(
            "irq_ms",
            ms(h.total_ns),
            format!(
                "{}: {} interrupts, {:.1} ms, longest {:.2} ms",
                irq_label(h),
                h.count,
                ms(h.total_ns),
                ms(h.max_ns)
            ),
        );
    }
    if !cpu_list.is_empty() {
        f.evidence(
            "cpus",
            cpus.len() as f64,
            format!("where: {}", cpu_list.join(", ")),
        );
    }
    Some(f)
}

fn irq_label(h: &IrqReport) -> String {
    if h.name.is_empty() {
        format!("IRQ {}", h.irq)
    } else {
        format!("IRQ {} ({})", h.irq, h.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soft(name: &'static str, ms: u64) -> SoftirqReport {
        SoftirqReport {
            vector: 3,
            name,
            count: 100,
            total_ns: ms * 1_000_000,
            max_ns: 1_000_000,
        }
    }

    fn input<'a>(
        irqs: &'a [IrqReport],
        softirqs: &'a [SoftirqReport],
        preemptors: &'a [PreemptorReport],
        oncpu_ms: u64,
    ) -> Input<'a> {
        Input {
            irqs,
            softirqs,
            cpus: &[],
            preemptors,
            target_oncpu_ns: oncpu_ms * 1_000_000,
            duration_ns: 10_000_000_000,
        }
    }

    #[test]
    fn names_the_vector_and_the_device() {
        let s = [soft("NET_RX", 600), soft("TIMER", 5)];
        let f = detect(&input(&[], &s, &[], 9000)).expect("fires");
        assert!(f.what.contains("softirq NET_RX"), "{}", f.what);
        assert_eq!(f.impact_ns, 605_000_000);
        let h = [IrqReport {
            irq: 45,
            name: "mlx5_comp3@pci:0000:81:00.0".into(),
            count: 1000,
            total_ns: 900_000_000,
            max_ns: 50_000,
        }];
        let f = detect(&input(&h, &s, &[], 9000)).expect("fires");
        assert!(f.what.contains("IRQ 45 (mlx5_comp3"), "{}", f.what);
    }

    #[test]
    fn ksoftirqd_wait_counts_and_thresholds_hold() {
        let k = [PreemptorReport {
            pid: 12,
            tgid: 12,
            comm: "ksoftirqd/0".into(),
            count: 50,
            target_wait_ns: 400_000_000,
        }];
        let f = detect(&input(&[], &[], &k, 9000)).expect("fires");
        assert_eq!(f.impact_ns, 400_000_000);
        // Timer ticks on a busy thread: far under 3%.
        assert!(detect(&input(&[], &[soft("TIMER", 20)], &[], 9000)).is_none());
        // 3% of a lightly running target but under 1% of the run.
        assert!(detect(&input(&[], &[soft("NET_RX", 60)], &[], 1000)).is_none());
    }
}
