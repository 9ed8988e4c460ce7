//! Which of the optional programs a run loads: every program left out is one
//! less to verify and attach at start-up (the verifier is most of the load
//! time) and one less to run on every event. Pure logic, from facts the
//! caller reads.

/// What the run asked for and what the machine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanInputs {
    /// Charge hard IRQ and softirq time to the target (`record --no-irq`
    /// turns it off).
    pub irq: bool,
    /// NUMA nodes with memory or CPUs (sysfs `devices/system/node/node*`).
    pub numa_nodes: usize,
    /// `kernel.numa_balancing`; None when the knob is absent.
    pub numa_balancing: Option<u64>,
}

/// An optional program that the run does not load, and why (the type
/// lives with the report that carries it).
pub use tailprobe_report::kernel::plan::LeftOut;

/// Programs that hard IRQ / softirq accounting needs.
pub const IRQ_PROGRAMS: [&str; 5] = [
    "irq_handler_entry",
    "irq_handler_exit",
    "softirq_entry",
    "softirq_exit",
    "softirq_raise",
];

/// Programs that see NUMA balancing move or swap tasks.
pub const NUMA_PROGRAMS: [&str; 3] = ["sched_move_numa", "sched_swap_numa", "sched_stick_numa"];

/// The optional programs this run leaves out, with the reason for each.
pub fn left_out(inp: &PlanInputs) -> Vec<LeftOut> {
    let mut out = Vec::new();
    if !inp.irq {
        for p in IRQ_PROGRAMS {
            out.push(LeftOut {
                program: p,
                reason: "IRQ accounting is off (--no-irq)".into(),
            });
        }
    }
    // The kernel turns NUMA balancing off by itself on a one-node machine
    // (there is nowhere to move a task), whatever the sysctl says; with one
    // node and the sysctl at 0 too, these tracepoints cannot fire.
    if inp.numa_nodes <= 1 && inp.numa_balancing.unwrap_or(0) == 0 {
        let why = format!(
            "one NUMA node and kernel.numa_balancing={}: NUMA balancing cannot move tasks",
            inp.numa_balancing
                .map_or_else(|| "absent".to_string(), |v| v.to_string())
        );
        for p in NUMA_PROGRAMS {
            out.push(LeftOut {
                program: p,
                reason: why.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[LeftOut]) -> Vec<&'static str> {
        v.iter().map(|l| l.program).collect()
    }

    #[test]
    fn one_node_without_balancing_leaves_numa_out() {
        let v = left_out(&PlanInputs {
            irq: true,
            numa_nodes: 1,
            numa_balancing: Some(0),
        });
        assert_eq!(names(&v), NUMA_PROGRAMS.to_vec());
        assert!(v[0].reason.contains("kernel.numa_balancing=0"), "{v:?}");
        let absent = left_out(&PlanInputs {
            irq: true,
            numa_nodes: 1,
            numa_balancing: None,
        });
        assert!(absent[0].reason.contains("absent"), "{absent:?}");
    }

    #[test]
    fn two_nodes_or_balancing_on_keep_numa() {
        for (nodes, bal) in [(2, Some(0)), (2, Some(1)), (1, Some(1)), (4, None)] {
            let v = left_out(&PlanInputs {
                irq: true,
                numa_nodes: nodes,
                numa_balancing: bal,
            });
            assert!(v.is_empty(), "{nodes} nodes, balancing {bal:?}: {v:?}");
        }
    }

    #[test]
    fn irq_off_leaves_the_five_irq_programs_out() {
        let v = left_out(&PlanInputs {
            irq: false,
            numa_nodes: 2,
            numa_balancing: Some(1),
        });
        assert_eq!(names(&v), IRQ_PROGRAMS.to_vec());
        assert!(v.iter().all(|l| l.reason.contains("--no-irq")));
    }
}
