//! Per-CPU `FtraceEventBundle`s: compact scheduler events (switch, waking)
//! and IRQ / softirq entry/exit, from the kernel's trace records. Pure: the
//! caller converts timestamps and writes the packets.

use std::collections::BTreeMap;

use perfetto_protos::{
    ftrace_event::FtraceEvent,
    ftrace_event_bundle::{ftrace_event_bundle::CompactSched, FtraceEventBundle},
    irq::{
        IrqHandlerEntryFtraceEvent, IrqHandlerExitFtraceEvent, SoftirqEntryFtraceEvent,
        SoftirqExitFtraceEvent,
    },
};
use probe_common::{trace::kind, TraceRec};

/// Events a CPU's bundle collects before it is written.
pub const BUNDLE_EVENTS: usize = 2048;

/// `prev_state` of a switch as the `sched_switch` trace event reports it
/// (what Perfetto decodes): `0x100` (TASK_REPORT_MAX) when preempted, else
/// the highest reportable state bit of the raw state word, `0x80` for
/// TASK_IDLE, 0 for TASK_RUNNING.
pub fn reported_prev_state(raw: u32, preempted: bool) -> i64 {
    const TASK_REPORT: u32 = 0x7f;
    const TASK_IDLE: u32 = 0x402;
    const TASK_RTLOCK_WAIT: u32 = 0x1000;
    if preempted {
        return 0x100;
    }
    if raw == TASK_IDLE {
        return 0x80;
    }
    if raw == TASK_RTLOCK_WAIT {
        return 2;
    }
    let s = raw & TASK_REPORT;
    if s == 0 {
        0
    } else {
        1i64 << (31 - s.leading_zeros())
    }
}

/// A command name from the kernel's 16 bytes.
pub fn comm_str(c: &[u8; 16]) -> String {
    let n = c.iter().position(|b| *b == 0).unwrap_or(16);
    String::from_utf8_lossy(&c[..n]).into_owned()
}

/// One event kept for a CPU, already on the trace clock.
#[derive(Debug, Clone)]
enum Ev {
    Switch {
        ts: u64,
        prev_state: i64,
        next_pid: i32,
        prio: i32,
        comm: String,
    },
    Waking {
        ts: u64,
        pid: i32,
        target_cpu: i32,
        prio: i32,
        comm: String,
    },
    Irq {
        ts: u64,
        end: u64,
        tid: u32,
        hard: bool,
        number: u32,
    },
}

impl Ev {
    fn ts(&self) -> u64 {
        match self {
            Ev::Switch { ts, .. } | Ev::Waking { ts, .. } | Ev::Irq { ts, .. } => *ts,
        }
    }
}

/// Counts of what a bundle carries (for the size cap's accounting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BundleCounts {
    pub switches: u64,
    pub wakings: u64,
    pub irqs: u64,
}

impl BundleCounts {
    pub fn total(&self) -> u64 {
        self.switches + self.wakings + self.irqs
    }
}

/// Events per CPU, waiting to be written as bundles.
pub struct CpuBundles {
    cpus: BTreeMap<u32, Vec<Ev>>,
    /// IRQ number -> name (from /proc/interrupts), for the slices' titles.
    irq_names: BTreeMap<u32, String>,
}

impl CpuBundles {
    pub fn new(irq_names: BTreeMap<u32, String>) -> Self {
        CpuBundles {
            cpus: BTreeMap::new(),
            irq_names,
        }
    }

    /// Add one record, its timestamp already converted (`ts`); returns the
    /// CPU whose bundle is full, if any.
    pub fn push(&mut self, r: &TraceRec, ts: u64) -> Option<u32> {
        let ev = match r.kind {
            kind::SWITCH => Ev::Switch {
                ts,
                prev_state: reported_prev_state(r.state, r.aux != 0),
                next_pid: r.pid as i32,
                prio: r.prio,
                comm: comm_str(&r.comm),
            },
            kind::WAKING => Ev::Waking {
                ts,
                pid: r.pid as i32,
                target_cpu: if r.aux == u32::MAX {
                    r.cpu as i32
                } else {
                    r.aux as i32
                },
                prio: r.prio,
                comm: comm_str(&r.comm),
            },
            kind::HARDIRQ | kind::SOFTIRQ => Ev::Irq {
                ts,
                end: ts.saturating_add(r.dur_ns),
                tid: r.pid,
                hard: r.kind == kind::HARDIRQ,
                number: r.aux,
            },
            _ => return None,
        };
        let v = self.cpus.entry(r.cpu).or_default();
        v.push(ev);
        (v.len() >= BUNDLE_EVENTS).then_some(r.cpu)
    }

    /// CPUs with events waiting.
    pub fn pending(&self) -> Vec<u32> {
        self.cpus
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(c, _)| *c)
            .collect()
    }

    /// Take CPU `cpu`'s events as one bundle (time-sorted).
    pub fn take(&mut self, cpu: u32) -> Option<(FtraceEventBundle, BundleCounts)> {
        let mut evs = self.cpus.remove(&cpu)?;
        if evs.is_empty() {
            return None;
        }
        evs.sort_by_key(Ev::ts);
        Some(self.bundle(cpu, &evs))
    }

    fn bundle(&self, cpu: u32, evs: &[Ev]) -> (FtraceEventBundle, BundleCounts) {
        let mut b = FtraceEventBundle::new();
        b.set_cpu(cpu);
        let mut cs = CompactSched::new();
        let mut interned: BTreeMap<String, u32> = BTreeMap::new();
        let mut intern = |s: &str, table: &mut Vec<String>| -> u32 {
            if let Some(i) = interned.get(s) {
                return *i;
            }
            let i = table.len() as u32;
            table.push(s.to_string());
            interned.insert(s.to_string(), i);
            i
        };
        let (mut last_switch, mut last_waking) = (0u64, 0u64);
        let mut n = BundleCounts::default();
        for e in evs {
            match e {
                Ev::Switch {
                    ts,
                    prev_state,
                    next_pid,
                    prio,
                    comm,
                } => {
                    cs.switch_timestamp.push(ts - last_switch);
                    last_switch = *ts;
                    cs.switch_prev_state.push(*prev_state);
                    cs.switch_next_pid.push(*next_pid);
                    cs.switch_next_prio.push(*prio);
                    let i = intern(comm, &mut cs.intern_table);
                    cs.switch_next_comm_index.push(i);
                    n.switches += 1;
                }
                Ev::Waking {
                    ts,
                    pid,
                    target_cpu,
                    prio,
                    comm,
                } => {
                    cs.waking_timestamp.push(ts - last_waking);
                    last_waking = *ts;
                    cs.waking_pid.push(*pid);
                    cs.waking_target_cpu.push(*target_cpu);
                    cs.waking_prio.push(*prio);
                    let i = intern(comm, &mut cs.intern_table);
                    cs.waking_comm_index.push(i);
                    cs.waking_common_flags.push(0);
                    n.wakings += 1;
                }
                Ev::Irq {
                    ts,
                    end,
                    tid,
                    hard,
                    number,
                } => {
                    b.event
                        .push(self.irq_event(*ts, *tid, *hard, *number, true));
                    b.event
                        .push(self.irq_event(*end, *tid, *hard, *number, false));
                    n.irqs += 1;
                }
            }
        }
        b.compact_sched = Some(cs).into();
        (b, n)
    }

    fn irq_event(&self, ts: u64, tid: u32, hard: bool, number: u32, entry: bool) -> FtraceEvent {
        let mut e = FtraceEvent::new();
        e.set_timestamp(ts);
        e.set_pid(tid);
        match (hard, entry) {
            (true, true) => {
                let mut i = IrqHandlerEntryFtraceEvent::new();
                i.set_irq(number as i32);
                let name = self
                    .irq_names
                    .get(&number)
                    .cloned()
                    .unwrap_or_else(|| format!("irq {number}"));
                i.set_name(name);
                e.set_irq_handler_entry(i);
            }
            (true, false) => {
                let mut i = IrqHandlerExitFtraceEvent::new();
                i.set_irq(number as i32);
                i.set_ret(1);
                e.set_irq_handler_exit(i);
            }
            (false, true) => {
                let mut s = SoftirqEntryFtraceEvent::new();
                s.set_vec(number);
                e.set_softirq_entry(s);
            }
            (false, false) => {
                let mut s = SoftirqExitFtraceEvent::new();
                s.set_vec(number);
                e.set_softirq_exit(s);
            }
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comm(s: &str) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..s.len()].copy_from_slice(s.as_bytes());
        c
    }

    fn switch(cpu: u32, ts: u64, next: u32, name: &str, state: u32, preempt: bool) -> TraceRec {
        TraceRec {
            ts_ns: ts,
            kind: kind::SWITCH,
            cpu,
            pid: next,
            state,
            prio: 120,
            aux: u32::from(preempt),
            comm: comm(name),
            ..TraceRec::default()
        }
    }

    #[test]
    fn prev_state_is_reported_as_the_trace_event_does() {
        assert_eq!(reported_prev_state(0, true), 0x100);
        assert_eq!(reported_prev_state(1, true), 0x100);
        assert_eq!(reported_prev_state(0, false), 0);
        assert_eq!(reported_prev_state(1, false), 1);
        assert_eq!(reported_prev_state(2, false), 2);
        assert_eq!(reported_prev_state(0x402, false), 0x80);
        // TASK_KILLABLE = WAKEKILL | UNINTERRUPTIBLE: reported as D.
        assert_eq!(reported_prev_state(0x102, false), 2);
        assert_eq!(reported_prev_state(0x20, false), 0x20);
    }

    #[test]
    fn a_bundle_is_sorted_delta_encoded_and_interned() {
        let mut b = CpuBundles::new(BTreeMap::from([(24, "eth0".to_string())]));
        b.push(&switch(1, 3000, 11, "b", 0, true), 3000);
        b.push(&switch(1, 1000, 10, "a", 1, false), 1000);
        b.push(&switch(1, 5000, 10, "a", 0, false), 5000);
        let w = TraceRec {
            kind: kind::WAKING,
            cpu: 1,
            pid: 10,
            aux: 2,
            prio: -1,
            comm: comm("a"),
            ..TraceRec::default()
        };
        b.push(&w, 2000);
        let irq = TraceRec {
            kind: kind::HARDIRQ,
            cpu: 1,
            pid: 10,
            dur_ns: 50,
            aux: 24,
            ..TraceRec::default()
        };
        b.push(&irq, 1500);
        assert_eq!(b.pending(), vec![1]);
        let (bundle, n) = b.take(1).unwrap();
        assert_eq!(
            n,
            BundleCounts {
                switches: 3,
                wakings: 1,
                irqs: 1
            }
        );
        assert_eq!(bundle.cpu(), 1);
        let cs = bundle.compact_sched.as_ref().unwrap();
        assert_eq!(cs.switch_timestamp, vec![1000, 2000, 2000]);
        assert_eq!(cs.switch_next_pid, vec![10, 11, 10]);
        assert_eq!(cs.switch_prev_state, vec![1, 0x100, 0]);
        assert_eq!(cs.intern_table, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(cs.switch_next_comm_index, vec![0, 1, 0]);
        assert_eq!(cs.waking_timestamp, vec![2000]);
        assert_eq!(cs.waking_target_cpu, vec![2]);
        assert_eq!(cs.waking_prio, vec![-1], "unread prio stays -1");
        assert_eq!(bundle.event.len(), 2);
        assert_eq!(bundle.event[0].timestamp(), 1500);
        assert_eq!(bundle.event[0].irq_handler_entry().name(), "eth0");
        assert_eq!(bundle.event[1].timestamp(), 1550);
        assert!(b.take(1).is_none());
    }

    #[test]
    fn a_full_cpu_is_reported() {
        let mut b = CpuBundles::new(BTreeMap::new());
        let mut full = None;
        for i in 0..BUNDLE_EVENTS as u64 {
            full = b.push(&switch(3, i, 1, "x", 0, false), i);
        }
        assert_eq!(full, Some(3));
    }
}
