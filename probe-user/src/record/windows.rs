//! Merging the kernel's per-CPU window ring into one time series, draining
//! only complete windows, each exactly once. Pure.

use std::collections::BTreeMap;

use probe_common::Window;

use crate::report::WindowReport;

/// Collects windows across drains.
#[derive(Debug, Default)]
pub struct WindowSeries {
    window_ns: u64,
    /// Highest window id already emitted.
    drained_up_to: u64,
    /// The first window id of the run (earlier slots are stale).
    first_id: u64,
    pub windows: Vec<WindowReport>,
}

/// The least time a window is left open after it ends before a mid-run
/// drain takes it. A program stamps its event's time, then adds to the
/// window's slot; if its CPU is held between the two (a hypervisor's vCPU
/// preemption, or QEMU's single-threaded TCG, which runs one vCPU at a time
/// in slices of up to 100 ms), the count lands late. One window of slack
/// lost 16 of 161 waits of 20 ms windows in a TCG 6.1 guest (docs/vm-test.md).
pub const DRAIN_SLACK_MIN_NS: u64 = 250_000_000;

/// How long after its end a window may still receive counts, for a mid-run
/// drain: at least one window and `DRAIN_SLACK_MIN_NS`, at most half the
/// per-CPU ring (`slots` windows), so a slot is never reused before it is
/// drained.
pub fn drain_slack_ns(window_ns: u64, slots: u64) -> u64 {
    window_ns
        .max(DRAIN_SLACK_MIN_NS)
        .min(window_ns.saturating_mul(slots) / 2)
        .max(window_ns)
}

impl WindowSeries {
    pub fn new(window_ns: u64, start_ns: u64) -> Self {
        let first_id = start_ns.checked_div(window_ns).unwrap_or(0);
        WindowSeries {
            window_ns,
            drained_up_to: first_id.saturating_sub(1),
            first_id,
            windows: Vec::new(),
        }
    }

    /// Take in a read of every slot on every CPU; windows before
    /// `complete_before_ns` are complete and are emitted once, in order.
    pub fn drain(&mut self, slots: &[Window], complete_before_ns: u64) {
        if self.window_ns == 0 {
            return;
        }
        let limit = complete_before_ns / self.window_ns; // ids < limit are complete
        let mut merged: BTreeMap<u64, WindowReport> = BTreeMap::new();
        for w in slots {
            if w.id <= self.drained_up_to || w.id < self.first_id || w.id >= limit {
                continue;
            }
            let m = merged.entry(w.id).or_insert_with(|| WindowReport {
                start_ns: w.id * self.window_ns,
                ..Default::default()
            });
            m.runq_count += w.runq_count;
            m.runq_total_ns += w.runq_total_ns;
            m.runq_max_ns = m.runq_max_ns.max(w.runq_max_ns);
            m.oncpu_ns += w.oncpu_ns;
            m.voluntary_switches += w.voluntary_switches;
            m.involuntary_switches += w.involuntary_switches;
            m.migrations += w.migrations;
            m.hardirq_ns += w.hardirq_ns;
            m.softirq_ns += w.softirq_ns;
            m.page_faults += w.page_faults;
            m.numa_events += w.numa_events;
        }
        // Windows with no event at all are not in the ring: emit them empty
        // so the series has no gaps.
        let from = self.drained_up_to + 1;
        for id in from.max(self.first_id)..limit {
            let w = merged.remove(&id).unwrap_or(WindowReport {
                start_ns: id * self.window_ns,
                ..Default::default()
            });
            self.windows.push(w);
        }
        if limit > 0 {
            self.drained_up_to = self.drained_up_to.max(limit - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_slack_is_bounded_by_the_window_and_the_ring() {
        let ms = 1_000_000;
        // 20 ms windows, 1024 slots: 250 ms.
        assert_eq!(drain_slack_ns(20 * ms, 1024), 250 * ms);
        // Wide windows: one window.
        assert_eq!(drain_slack_ns(1000 * ms, 1024), 1000 * ms);
        // Narrow windows: half the ring (100 us x 1024 / 2 = 51.2 ms).
        assert_eq!(drain_slack_ns(100_000, 1024), 51_200_000);
        // Never under one window.
        assert_eq!(drain_slack_ns(10 * ms, 1), 10 * ms);
    }

    fn w(id: u64, runq: u64) -> Window {
        Window {
            id,
            runq_count: 1,
            runq_total_ns: runq,
            runq_max_ns: runq,
            ..Default::default()
        }
    }

    #[test]
    fn merges_cpus_and_emits_each_complete_window_once() {
        // 10 ms windows; the run started at 1.000 s (window 100).
        let mut s = WindowSeries::new(10_000_000, 1_000_000_000);
        // Two CPUs wrote window 100; window 101 is empty; 102 still open.
        let slots = [w(100, 5), w(100, 7), w(99, 1000), w(102, 3)];
        s.drain(&slots, 1_025_000_000);
        assert_eq!(s.windows.len(), 2);
        assert_eq!(s.windows[0].start_ns, 1_000_000_000);
        assert_eq!(s.windows[0].runq_count, 2);
        assert_eq!(s.windows[0].runq_total_ns, 12);
        assert_eq!(s.windows[0].runq_max_ns, 7);
        assert_eq!(s.windows[1].runq_count, 0);
        // Next drain: 102 completes; 100 is not emitted twice.
        s.drain(&slots, 1_031_000_000);
        assert_eq!(s.windows.len(), 3);
        assert_eq!(s.windows[2].start_ns, 1_020_000_000);
        assert_eq!(s.windows[2].runq_total_ns, 3);
    }

    #[test]
    fn disabled_windows_do_nothing() {
        let mut s = WindowSeries::new(0, 5);
        s.drain(&[w(1, 1)], 100);
        assert!(s.windows.is_empty());
    }
}
