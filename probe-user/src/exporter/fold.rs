//! Folding the kernel's per-thread slots into per-target totals at each
//! scrape. Pure: the caller reads the maps. Counters of a target only go
//! up: a thread's slot is harvested into its target's `retired` total when
//! the thread exits (the slot is then freed), and a live slot is counted
//! as it is now.

use std::collections::BTreeMap;

use probe_common::{per_target::TargetSched, ThreadStats, HIST_BUCKETS};

use crate::kernel::loader::ThreadCounters;

/// One target's counters and run-queue wait histogram (kernel buckets).
#[derive(Debug, Clone)]
pub struct Agg {
    pub stats: ThreadStats,
    pub hist: Vec<u64>,
    /// Threads with a live slot now.
    pub threads: u64,
}

impl Default for Agg {
    fn default() -> Self {
        Agg {
            stats: ThreadStats::ZERO,
            hist: vec![0; HIST_BUCKETS],
            threads: 0,
        }
    }
}

impl Agg {
    pub fn add(&mut self, c: &ThreadCounters) {
        self.stats.add(&c.stats);
        for (a, b) in self.hist.iter_mut().zip(&c.hist) {
            *a = a.saturating_add(*b);
        }
    }

    /// Add the kernel's per-target scheduler totals (the per-target mode
    /// keeps waits, switches, on-CPU time and wakeups there, not in the
    /// thread slots, whose same fields then stay 0).
    pub fn add_sched(&mut self, t: &TargetSched) {
        self.stats.add(&t.as_stats());
        for (a, b) in self.hist.iter_mut().zip(&t.hist) {
            *a = a.saturating_add(*b);
        }
    }
}

/// Totals of threads that have exited (their slots freed), per target,
/// and which target a thread belongs to (kept once seen: a thread's
/// counters stay with the name they were first counted under).
#[derive(Debug, Default)]
pub struct Ledger {
    pub retired: BTreeMap<String, Agg>,
    /// tid -> target name, for threads with a slot.
    pub owner: BTreeMap<u32, String>,
    /// Slots of processes that are no longer followed (a pid reused or a
    /// process moved out of every selector between two rescans) are
    /// counted under the name they had.
    pub unowned_slots: u64,
}

impl Ledger {
    /// Name of a thread's target: the one it was first seen under, else
    /// its process's current name.
    fn name_of(&mut self, tid: u32, tgid: u32, names: &BTreeMap<u32, String>) -> Option<String> {
        if let Some(n) = self.owner.get(&tid) {
            return Some(n.clone());
        }
        let n = names.get(&tgid)?.clone();
        self.owner.insert(tid, n.clone());
        Some(n)
    }

    /// A thread's final counters: into its target's retired total.
    pub fn retire(&mut self, tid: u32, c: &ThreadCounters, names: &BTreeMap<u32, String>) {
        let name = self.name_of(tid, c.stats.tgid, names);
        self.owner.remove(&tid);
        match name {
            Some(n) => self.retired.entry(n).or_default().add(c),
            None => self.unowned_slots += 1,
        }
    }

    /// Per-target totals now: retired plus every live slot.
    pub fn fold(
        &mut self,
        live: &BTreeMap<u32, ThreadCounters>,
        names: &BTreeMap<u32, String>,
    ) -> BTreeMap<String, Agg> {
        let mut out = self.retired.clone();
        for a in out.values_mut() {
            a.threads = 0;
        }
        for (tid, c) in live {
            if let Some(n) = self.name_of(*tid, c.stats.tgid, names) {
                let a = out.entry(n).or_default();
                a.add(c);
                a.threads += 1;
            }
        }
        // Threads whose slot is gone without a retire (freed elsewhere) are
        // forgotten, so the map cannot grow without bound.
        self.owner.retain(|t, _| live.contains_key(t));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_target_totals_join_the_slots_counters() {
        let mut a = Agg::default();
        a.add(&tc(1, &[])); // a slot with only a page fault, say
        a.stats.page_faults = 7;
        let mut t = TargetSched::ZERO;
        t.runq_count = 2;
        t.runq_total_ns = 3000;
        t.runq_max_ns = 2000;
        t.voluntary_switches = 5;
        t.wakeups = 4;
        t.hist[probe_common::bucket_index(2000)] = 2;
        a.add_sched(&t);
        a.add_sched(&t);
        assert_eq!(a.stats.runq_count, 4);
        assert_eq!(a.stats.runq_total_ns, 6000);
        assert_eq!(a.stats.runq_max_ns, 2000);
        assert_eq!((a.stats.voluntary_switches, a.stats.wakeups), (10, 8));
        assert_eq!(a.stats.page_faults, 7);
        assert_eq!(a.hist.iter().sum::<u64>(), 4);
    }

    fn tc(tgid: u32, waits: &[u64]) -> ThreadCounters {
        let mut stats = ThreadStats::ZERO;
        stats.tgid = tgid;
        let mut hist = vec![0; HIST_BUCKETS];
        for w in waits {
            stats.runq_count += 1;
            stats.runq_total_ns += w;
            hist[probe_common::bucket_index(*w)] += 1;
        }
        ThreadCounters { stats, hist }
    }

    #[test]
    fn totals_never_go_down_across_exits() {
        let mut l = Ledger::default();
        let names: BTreeMap<u32, String> = [(100, "a".to_string()), (200, "b".to_string())].into();
        let mut live: BTreeMap<u32, ThreadCounters> = BTreeMap::new();
        live.insert(101, tc(100, &[1000, 2000]));
        live.insert(102, tc(100, &[5000]));
        live.insert(201, tc(200, &[7]));
        let f1 = l.fold(&live, &names);
        assert_eq!(f1["a"].stats.runq_count, 3);
        assert_eq!(f1["a"].stats.runq_total_ns, 8000);
        assert_eq!(f1["a"].threads, 2);
        assert_eq!(f1["b"].hist.iter().sum::<u64>(), 1);
        // 102 exits: harvested, slot freed. Process 100 is then gone from
        // the names (exited), but 101's slot still counts under "a".
        let gone = live.remove(&102).unwrap();
        l.retire(102, &gone, &names);
        let names2: BTreeMap<u32, String> = [(200, "b".to_string())].into();
        let f2 = l.fold(&live, &names2);
        assert_eq!(f2["a"].stats.runq_count, 3);
        assert_eq!(f2["a"].threads, 1);
        // A slot nobody owns is not counted anywhere.
        live.insert(301, tc(300, &[1]));
        let f3 = l.fold(&live, &names2);
        assert!(!f3.contains_key("other"));
        assert_eq!(f3.len(), 2);
    }
}
