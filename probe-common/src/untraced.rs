//! A target thread that switches out with no switch-in seen on its CPU:
//! the kernel ran it without tracing the switch that put it there.
//!
//! Some kernels do not fire `sched_switch` for every switch: the sandbox
//! kernel this project is developed on (6.18.44-fc) never traces a switch
//! whose `prev` is one of its init's threads (ftrace, bpftrace and our
//! programs all miss the same ones; docs/accuracy.md). A target thread that
//! such a task hands the CPU to is switched in unseen, and its next
//! switch-out finds no on-CPU stamp.
//!
//! What is still known at that switch-out: when the thread began to wait
//! (`since`, our clock), now (our clock), and the length of the slice that
//! is ending by the kernel's own accounting (`se.sum_exec_runtime -
//! se.prev_sum_exec_runtime`: the scheduler sets the latter at each pick).
//! The wait is the rest of the span.

/// The slice and the wait of an untraced switch-in, rebuilt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rebuilt {
    /// On-CPU time of the slice that ends now.
    pub ran_ns: u64,
    /// The run-queue wait that preceded it.
    pub wait_ns: u64,
}

/// Rebuild from `since_ns` (start of the wait, 0 when none was pending),
/// `now_ns` and the kernel's slice length (`None` when this kernel's BTF
/// did not give its fields). `None` when it cannot be rebuilt: then the
/// slice is lost, and counted as lost.
///
/// The kernel's slice is on the run queue's task clock, which leaves out
/// IRQ (and steal) time that our clock counts: it is capped at the span,
/// so a slice is never longer than the time since the wait began, and the
/// wait never negative.
#[inline(always)]
pub fn rebuild(since_ns: u64, now_ns: u64, kernel_slice_ns: Option<u64>) -> Option<Rebuilt> {
    let slice = kernel_slice_ns?;
    if since_ns == 0 || now_ns <= since_ns {
        return None;
    }
    let span = now_ns - since_ns;
    if span > crate::MAX_SANE_DELTA_NS {
        return None;
    }
    let ran_ns = if slice < span { slice } else { span };
    Some(Rebuilt {
        ran_ns,
        wait_ns: span - ran_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_span_splits_into_wait_then_slice() {
        // Waiting from t=1000, now t=9000, the kernel says it ran 3000.
        assert_eq!(
            rebuild(1_000, 9_000, Some(3_000)),
            Some(Rebuilt {
                ran_ns: 3_000,
                wait_ns: 5_000
            })
        );
    }

    #[test]
    fn a_slice_longer_than_the_span_is_capped() {
        assert_eq!(
            rebuild(1_000, 2_000, Some(5_000)),
            Some(Rebuilt {
                ran_ns: 1_000,
                wait_ns: 0
            })
        );
    }

    #[test]
    fn nothing_to_rebuild_from() {
        // No pending wait, the clock going backwards, no kernel fields, or
        // a span beyond any sane wait.
        assert_eq!(rebuild(0, 9_000, Some(1)), None);
        assert_eq!(rebuild(9_000, 9_000, Some(1)), None);
        assert_eq!(rebuild(9_001, 9_000, Some(1)), None);
        assert_eq!(rebuild(1_000, 9_000, None), None);
        assert_eq!(rebuild(1, 2 + crate::MAX_SANE_DELTA_NS, Some(1)), None);
    }
}

#[cfg(test)]
mod loss_tests {
    use crate::loss;

    /// A rebuilt switch-in is counted but is no loss; every other counter,
    /// including one that could not be rebuilt, is.
    #[test]
    fn rebuilt_is_not_a_loss() {
        let rebuilt = loss::NAMES[loss::SWITCH_IN_REBUILT as usize];
        assert_eq!(rebuilt, "switch_in_untraced_rebuilt");
        assert!(!loss::is_loss(rebuilt));
        let losses = loss::NAMES.iter().filter(|n| loss::is_loss(n)).count();
        assert_eq!(losses, loss::NAMES.len() - 1);
        assert!(loss::is_loss(loss::NAMES[loss::SWITCH_IN_LOST as usize]));
    }
}
