//! Reading the maps back (and following more processes) once the programs
//! are attached: losses, IRQs, softirqs, CPUs, preemptors, wake edges, idle
//! states, page migrations, windows, the event stream, program costs.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap},
    Btf,
};
use probe_common::{
    filter, loss, CpuStats, DurStat, Event, MigratePages, Preemptor, Window, MIGRATE_REASONS,
    NR_SOFTIRQS, WINDOW_SLOTS,
};

use super::{attach_btf, map, threads, Probes, ProgStats};

impl Probes {
    /// Add a process to the followed set (TGID_SET mode).
    pub fn follow(&mut self, tgid: u32) -> Result<()> {
        self.follow_with(tgid, 1)
    }

    /// `follow`, with `value` as the process's `TGIDS` value.
    pub(super) fn follow_with(&mut self, tgid: u32, value: u32) -> Result<()> {
        threads::follow_tgid(&mut self.ebpf, tgid, value)?;
        // Two or more processes now: make sure the set is what filters.
        let mut mode: Array<&mut MapData, u32> = Array::try_from(
            self.ebpf
                .map_mut("MODE")
                .ok_or_else(|| anyhow!("map MODE missing"))?,
        )?;
        mode.set(0, filter::TGID_SET + 1, 0)
            .context("switching the filter to set mode")?;
        Ok(())
    }

    /// Stop following a process (the exporter, when it exits or leaves
    /// its selector). Absent is not an error.
    pub fn unfollow(&mut self, tgid: u32) -> Result<()> {
        threads::unfollow_tgid(&mut self.ebpf, tgid)
    }

    /// Loss counters: (name, per-CPU values).
    pub fn read_losses(&self) -> Result<Vec<(&'static str, Vec<u64>)>> {
        let m: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map(&self.ebpf, "LOSSES")?)?;
        let mut out = Vec::new();
        for (i, name) in loss::NAMES.iter().enumerate() {
            let vals = m
                .get(&(i as u32), 0)
                .with_context(|| format!("reading loss counter {name}"))?;
            out.push((*name, vals.iter().copied().collect()));
        }
        Ok(out)
    }

    /// Hard IRQ time charged to the target, per IRQ number (CPUs summed).
    pub fn read_irqs(&self) -> Result<BTreeMap<u32, DurStat>> {
        let m: PerCpuHashMap<&MapData, u32, DurStat> =
            PerCpuHashMap::try_from(map(&self.ebpf, "IRQS")?)?;
        let mut out = BTreeMap::new();
        for item in m.iter() {
            let (irq, per_cpu) = item.context("reading the IRQS map")?;
            let mut sum = DurStat::default();
            for d in per_cpu.iter() {
                sum.add(d);
            }
            out.insert(irq, sum);
        }
        Ok(out)
    }

    /// A per-CPU array of `DurStat` indexed by softirq vector: [vec][cpu].
    fn read_vec_percpu(&self, name: &str) -> Result<Vec<Vec<DurStat>>> {
        let m: PerCpuArray<&MapData, DurStat> = PerCpuArray::try_from(map(&self.ebpf, name)?)?;
        (0..NR_SOFTIRQS)
            .map(|v| {
                Ok(m.get(&v, 0)
                    .with_context(|| format!("reading {name}[{v}]"))?
                    .iter()
                    .copied()
                    .collect())
            })
            .collect()
    }

    /// Softirq time charged to the target: [vector][cpu].
    pub fn read_softirqs(&self) -> Result<Vec<Vec<DurStat>>> {
        self.read_vec_percpu("SOFTIRQS")
    }

    /// Softirq raise-to-entry delay on every CPU: [vector][cpu].
    pub fn read_softirq_delay(&self) -> Result<Vec<Vec<DurStat>>> {
        self.read_vec_percpu("SOFTIRQ_DELAY")
    }

    pub fn read_cpu_stats(&self) -> Result<Vec<CpuStats>> {
        let m: PerCpuArray<&MapData, CpuStats> =
            PerCpuArray::try_from(map(&self.ebpf, "CPU_STATS")?)?;
        Ok(m.get(&0, 0)
            .context("reading CPU_STATS")?
            .iter()
            .copied()
            .collect())
    }

    /// Who preempted target threads: each CPU's copy of an entry summed
    /// (`PREEMPTORS` is per CPU), the name and tgid from a copy that has them.
    pub fn read_preemptors(&self) -> Result<BTreeMap<u32, Preemptor>> {
        let m: PerCpuHashMap<&MapData, u32, Preemptor> =
            PerCpuHashMap::try_from(map(&self.ebpf, "PREEMPTORS")?)?;
        let mut out = BTreeMap::new();
        for item in m.iter() {
            let (pid, per_cpu) = item.context("reading the PREEMPTORS map")?;
            out.insert(pid, sum_preemptor(per_cpu.iter()));
        }
        Ok(out)
    }

    /// Attach the waker -> wakee program (`sched_wakeup_edges`), which is
    /// not part of a plain recording.
    pub fn attach_wake_edges(&mut self, btf: &Btf) -> Result<()> {
        attach_btf(&mut self.ebpf, btf, "sched_wakeup_edges", "sched_waking")?;
        self.attached.push("sched_wakeup_edges");
        Ok(())
    }

    /// Wakeups between the target's threads: (waker tid, woken tid) -> count.
    pub fn read_wake_edges(&self) -> Result<BTreeMap<(u32, u32), u64>> {
        let m: HashMap<&MapData, u64, u64> = HashMap::try_from(map(&self.ebpf, "WAKE_EDGES")?)?;
        let mut out = BTreeMap::new();
        for item in m.iter() {
            let (k, n) = item.context("reading the WAKE_EDGES map")?;
            out.insert(((k >> 32) as u32, k as u32), n);
        }
        Ok(out)
    }

    /// Attach the idle-state program (`cpu_idle`, on `power:cpu_idle`),
    /// which is not part of a plain recording.
    pub fn attach_cpu_idle(&mut self, btf: &Btf) -> Result<()> {
        attach_btf(&mut self.ebpf, btf, "cpu_idle", "cpu_idle")?;
        self.attached.push("cpu_idle");
        Ok(())
    }

    /// Idle periods on the CPUs the target ran on, per idle state number
    /// (the last also holds deeper ones): (state, periods ended, ns in them),
    /// CPUs summed; states never entered are left out.
    pub fn read_cpu_idle(&self) -> Result<Vec<(u32, u64, u64)>> {
        let m: PerCpuArray<&MapData, [u64; 2]> =
            PerCpuArray::try_from(map(&self.ebpf, "CPU_IDLE")?)?;
        let mut out = Vec::new();
        for s in 0..probe_common::CPU_IDLE_STATES {
            let (mut n, mut ns) = (0u64, 0u64);
            for v in m.get(&s, 0).context("reading CPU_IDLE")?.iter() {
                n += v[0];
                ns += v[1];
            }
            if n > 0 {
                out.push((s, n, ns));
            }
        }
        Ok(out)
    }

    /// `mm_migrate_pages` per reason (CPUs summed).
    pub fn read_migrate_pages(&self) -> Result<Vec<MigratePages>> {
        let m: PerCpuArray<&MapData, MigratePages> =
            PerCpuArray::try_from(map(&self.ebpf, "MIGRATE_PAGES")?)?;
        let mut out = Vec::new();
        for r in 0..MIGRATE_REASONS {
            let mut sum = MigratePages::default();
            for v in m.get(&r, 0).context("reading MIGRATE_PAGES")?.iter() {
                sum.add(v);
            }
            out.push(sum);
        }
        Ok(out)
    }

    /// Every window slot of every CPU (userspace merges by window id).
    pub fn read_windows(&self) -> Result<Vec<Window>> {
        let m: PerCpuArray<&MapData, Window> = PerCpuArray::try_from(map(&self.ebpf, "WINDOWS")?)?;
        let mut out = Vec::new();
        for i in 0..WINDOW_SLOTS {
            for w in m.get(&i, 0).context("reading WINDOWS")?.iter() {
                if w.id != 0 {
                    out.push(*w);
                }
            }
        }
        Ok(out)
    }

    /// Drain the ring buffer.
    pub fn drain_events(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        if let Some(rb) = self.events.as_mut() {
            while let Some(item) = rb.next() {
                if item.len() >= std::mem::size_of::<Event>() {
                    // SAFETY: the kernel wrote a whole `Event` (repr(C), all
                    // integers) at the start of the record; read_unaligned
                    // copes with any alignment.
                    out.push(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) });
                }
            }
        }
        out
    }

    /// Run count and run time of every attached program so far.
    pub fn program_stats(&self) -> Vec<ProgStats> {
        let mut out = Vec::new();
        for name in &self.attached {
            if let Some(p) = self.ebpf.program(name) {
                if let Ok(info) = p.info() {
                    out.push(ProgStats {
                        name,
                        run_count: info.run_count(),
                        run_time_ns: info.run_time().as_nanos() as u64,
                    });
                }
            }
        }
        out
    }
}

/// One preemptor's per-CPU copies as one entry: counts and waits added;
/// the name and tgid of the first copy that has a count (a CPU fills them
/// when its copy gets its first wait).
fn sum_preemptor<'a>(copies: impl Iterator<Item = &'a Preemptor>) -> Preemptor {
    let mut sum = Preemptor::ZERO;
    for c in copies {
        if c.count == 0 {
            continue;
        }
        if sum.count == 0 || (sum.comm[0] == 0 && c.comm[0] != 0) {
            sum.comm = c.comm;
            sum.tgid = c.tgid;
        }
        sum.count += c.count;
        sum.target_wait_ns += c.target_wait_ns;
    }
    sum
}

#[cfg(test)]
mod preemptor_tests {
    use super::*;

    fn copy(count: u64, wait: u64, comm: &[u8], tgid: u32) -> Preemptor {
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm);
        Preemptor {
            count,
            target_wait_ns: wait,
            comm: c,
            tgid,
            _pad: 0,
        }
    }

    #[test]
    fn per_cpu_copies_are_summed_and_named() {
        let copies = [
            copy(0, 0, b"", 0),
            copy(3, 300, b"", 7),
            copy(2, 50, b"hog", 7),
        ];
        let s = sum_preemptor(copies.iter());
        assert_eq!((s.count, s.target_wait_ns, s.tgid), (5, 350, 7));
        assert_eq!(&s.comm[..3], b"hog");
        let none = sum_preemptor([copy(0, 0, b"x", 1)].iter());
        assert_eq!((none.count, none.comm[0]), (0, 0));
    }
}
