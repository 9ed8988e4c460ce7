//! The exporter's per-target mode of `sched_switch` and `sched_wakeup`
//! (`PER_TARGET` set by the loader): the scheduler counters and the
//! run-queue wait histogram are kept per CPU and per *target* (a name the
//! exporter exports), not per thread, and a waiting thread's start stamp
//! lives in a dense tid-indexed array of 8-byte entries instead of its
//! 4.5 KiB thread slot. What is shared by both sides lives here: the
//! layouts, the stamp arithmetic and the target index packing, all pure.
//!
//! `record` keeps the per-thread mode (per-thread histograms, preemptors,
//! windows): this mode exists for an always-on agent's cost.

use crate::{ThreadStats, HIST_BUCKETS};

/// Scheduler totals of one target on one CPU (`TARGET_SCHED`, a per-CPU
/// array indexed by target index). Readers sum the CPUs' copies (and take
/// the largest `runq_max_ns`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TargetSched {
    pub runq_count: u64,
    pub runq_total_ns: u64,
    pub runq_max_ns: u64,
    pub oncpu_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub wakeups: u64,
    pub _pad: u64,
    /// Run-queue waits by `bucket_index`.
    pub hist: [u64; HIST_BUCKETS],
}

impl TargetSched {
    pub const ZERO: TargetSched = TargetSched {
        runq_count: 0,
        runq_total_ns: 0,
        runq_max_ns: 0,
        oncpu_ns: 0,
        voluntary_switches: 0,
        involuntary_switches: 0,
        wakeups: 0,
        _pad: 0,
        hist: [0; HIST_BUCKETS],
    };

    /// The counters as a thread's (the fields the two share; the rest 0).
    pub fn as_stats(&self) -> ThreadStats {
        ThreadStats {
            runq_count: self.runq_count,
            runq_total_ns: self.runq_total_ns,
            runq_max_ns: self.runq_max_ns,
            oncpu_ns: self.oncpu_ns,
            voluntary_switches: self.voluntary_switches,
            involuntary_switches: self.involuntary_switches,
            wakeups: self.wakeups,
            ..ThreadStats::ZERO
        }
    }

    /// Add another CPU's copy (the maximum is a maximum).
    pub fn add(&mut self, o: &TargetSched) {
        self.runq_count += o.runq_count;
        self.runq_total_ns += o.runq_total_ns;
        self.runq_max_ns = self.runq_max_ns.max(o.runq_max_ns);
        self.oncpu_ns += o.oncpu_ns;
        self.voluntary_switches += o.voluntary_switches;
        self.involuntary_switches += o.involuntary_switches;
        self.wakeups += o.wakeups;
        for (a, b) in self.hist.iter_mut().zip(o.hist.iter()) {
            *a += *b;
        }
    }
}

/// When a thread's current run-queue wait began (`WAIT_STAMPS[tid]`), in
/// [`stamp`] units; 0 = none.
///
/// Two stamps, so that a wakeup never has to read the entry (a load that
/// misses, the line having last been written on the thread's own CPU; a
/// store does not stall): `sched_wakeup` writes `wake` alone, the
/// switch-out writes both (`requeue` set when the thread stays runnable,
/// `wake` cleared, since a wakeup seen while it still ran starts no wait).
/// At the switch-in the wait began at `requeue` if set, else at `wake`: a
/// thread preempted while going to sleep stays queued, and a wakeup that
/// comes meanwhile (`ttwu_runnable`) must not move the start of its wait.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitStamp {
    pub wake: u32,
    pub requeue: u32,
}

impl WaitStamp {
    pub const ZERO: WaitStamp = WaitStamp {
        wake: 0,
        requeue: 0,
    };

    /// The stamp the pending wait began at, 0 when none is pending.
    #[inline(always)]
    pub fn start(self) -> u32 {
        if self.requeue != 0 {
            self.requeue
        } else {
            self.wake
        }
    }
}

/// 32-bit wait stamps: the clock in units of 16 ns, wrapping every
/// 68.7 s (longer than `MAX_SANE_DELTA_NS`, beyond which waits are
/// discarded anyway), with the low bit set so a stamp is never 0. An
/// entry costs 8 bytes per possible tid: 32 MiB at the largest `pid_max`
/// (4194304), where two 64-bit stamps would take 64.
pub mod stamp {
    /// log2 of the unit in ns.
    pub const SHIFT: u32 = 4;
    /// The span after which stamps wrap, in ns.
    pub const WRAP_NS: u64 = 1 << (32 + SHIFT);

    /// The stamp of clock reading `ns`.
    #[inline(always)]
    pub fn of(ns: u64) -> u32 {
        ((ns >> SHIFT) as u32) | 1
    }

    /// Nanoseconds from stamp `start` to stamp `end` (wrapping: exact to
    /// within two units for spans below `WRAP_NS`).
    #[inline(always)]
    pub fn delta_ns(start: u32, end: u32) -> u64 {
        u64::from(end.wrapping_sub(start)) << SHIFT
    }
}

/// Target indices of processes: `TGID_TARGET` packs one byte per tgid,
/// eight to a u64 word (index + 1; 0 = not followed). 255 targets at
/// most; 4 MiB at the largest `pid_max`.
pub mod index {
    /// Targets a byte can name (index 0..MAX_TARGETS, stored + 1).
    pub const MAX_TARGETS: u32 = 255;

    /// The word holding `tgid`'s byte.
    #[inline(always)]
    pub fn word_of(tgid: u32) -> u32 {
        tgid >> 3
    }

    /// `tgid`'s stored byte in its word (index + 1, 0 = not followed).
    #[inline(always)]
    pub fn byte_in(word: u64, tgid: u32) -> u32 {
        ((word >> ((tgid & 7) * 8)) & 0xff) as u32
    }

    /// `word` with `tgid`'s byte set to `stored` (index + 1, or 0).
    pub fn with_byte(word: u64, tgid: u32, stored: u8) -> u64 {
        let shift = (tgid & 7) * 8;
        (word & !(0xffu64 << shift)) | (u64::from(stored) << shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_give_deltas_across_the_wrap() {
        let start = 5u64 << 32 << stamp::SHIFT; // a multiple of the wrap
        for (a, d) in [
            (start - 1000, 3_000u64),
            (start - 16, 1_000_000),
            (start + 7, 59_000_000_000),
        ] {
            let got = stamp::delta_ns(stamp::of(a), stamp::of(a + d));
            assert!(got.abs_diff(d) <= 32, "{a} +{d}: {got}");
        }
        assert_ne!(stamp::of(0), 0);
        assert_ne!(stamp::of(stamp::WRAP_NS), 0);
    }

    #[test]
    fn the_earlier_stamp_wins() {
        let w = WaitStamp {
            wake: 9,
            requeue: 3,
        };
        assert_eq!(w.start(), 3);
        assert_eq!(
            WaitStamp {
                wake: 9,
                requeue: 0
            }
            .start(),
            9
        );
        assert_eq!(WaitStamp::ZERO.start(), 0);
    }

    #[test]
    fn packs_one_byte_per_tgid() {
        let mut w = 0u64;
        for t in 8..16u32 {
            w = index::with_byte(w, t, (t * 10) as u8);
        }
        for t in 8..16u32 {
            assert_eq!(index::byte_in(w, t), t * 10);
            assert_eq!(index::word_of(t), 1);
        }
        w = index::with_byte(w, 11, 0);
        assert_eq!(index::byte_in(w, 11), 0);
        assert_eq!(index::byte_in(w, 12), 120);
        assert_eq!(index::byte_in(w, 10), 100);
    }

    #[test]
    fn sums_cpu_copies() {
        let mut a = TargetSched::ZERO;
        let mut b = TargetSched::ZERO;
        a.runq_count = 2;
        a.runq_max_ns = 50;
        a.hist[3] = 2;
        b.runq_count = 1;
        b.runq_max_ns = 70;
        b.hist[3] = 1;
        b.wakeups = 4;
        a.add(&b);
        assert_eq!(
            (a.runq_count, a.runq_max_ns, a.hist[3], a.wakeups),
            (3, 70, 3, 4)
        );
    }
}
