//! The target's threads as seen from `/proc` during a run: names (kept after
//! a thread exits) and the kernel's own counters at both ends of the window.

use std::collections::{BTreeMap, BTreeSet};

use crate::procfs::{parse::SchedStat, ProcFs};

/// (schedstat, voluntary switches, involuntary switches) of one thread.
pub type KernelSnapshot = (SchedStat, u64, u64);

/// Our run-queue total of a thread right now (its SLOTS entry; 0 when it
/// has none yet), read next to each kernel snapshot so that both sides of
/// the comparison cover the same window even when reading /proc for
/// thousands of threads takes seconds (a starved recorder).
pub type OursNow<'a> = &'a dyn Fn(u32) -> Option<u64>;

#[derive(Debug, Clone, Default)]
pub struct ThreadInfo {
    pub tgid: u32,
    pub comm: String,
    pub created_during_run: bool,
    pub alive_at_end: bool,
    pub before: Option<KernelSnapshot>,
    pub after: Option<KernelSnapshot>,
    /// Our run-queue total at the `before` and `after` snapshots.
    pub ours_before: Option<u64>,
    pub ours_after: Option<u64>,
}

#[derive(Debug, Default)]
pub struct ThreadBook {
    tgids: BTreeSet<u32>,
    threads: BTreeMap<u32, ThreadInfo>,
    /// Only this thread (`--tid`).
    only_tid: Option<u32>,
}

fn snapshot(proc: &ProcFs, tgid: u32, tid: u32) -> Option<KernelSnapshot> {
    let ss = proc.thread_schedstat(tgid, tid)?;
    let st = proc.thread_status(tgid, tid)?;
    Some((
        ss,
        st.voluntary_ctxt_switches,
        st.nonvoluntary_ctxt_switches,
    ))
}

impl ThreadBook {
    /// Take the first snapshot, right after attach.
    pub fn start(proc: &ProcFs, tgids: &[u32], only_tid: Option<u32>, ours: OursNow) -> Self {
        let mut book = ThreadBook {
            tgids: BTreeSet::new(),
            threads: BTreeMap::new(),
            only_tid,
        };
        for &tgid in tgids {
            book.add(proc, tgid, false, ours);
        }
        book
    }

    /// Follow another process that appeared during the run (its threads
    /// started from zero).
    pub fn add_process(&mut self, proc: &ProcFs, tgid: u32) {
        self.add(proc, tgid, true, &|_| Some(0));
    }

    fn add(&mut self, proc: &ProcFs, tgid: u32, new: bool, ours: OursNow) {
        if !self.tgids.insert(tgid) {
            return;
        }
        for tid in proc.threads(tgid) {
            if self.only_tid.is_some_and(|t| t != tid) {
                continue;
            }
            let (before, ours_before) = if new {
                (Some((SchedStat::default(), 0, 0)), Some(0))
            } else {
                (snapshot(proc, tgid, tid), ours(tid))
            };
            let info = ThreadInfo {
                tgid,
                comm: proc.thread_comm(tgid, tid).unwrap_or_default(),
                created_during_run: new,
                before,
                ours_before,
                ..Default::default()
            };
            self.threads.insert(tid, info);
        }
    }

    pub fn processes(&self) -> Vec<u32> {
        self.tgids.iter().copied().collect()
    }

    /// Learn threads created since the last look. A thread born during the
    /// run started from zero, so its "before" snapshot is all zeros.
    pub fn refresh(&mut self, proc: &ProcFs) {
        for &tgid in &self.tgids {
            for tid in proc.threads(tgid) {
                if self.only_tid.is_some_and(|t| t != tid) {
                    continue;
                }
                self.threads.entry(tid).or_insert_with(|| ThreadInfo {
                    tgid,
                    comm: proc.thread_comm(tgid, tid).unwrap_or_default(),
                    created_during_run: true,
                    before: Some((SchedStat::default(), 0, 0)),
                    ours_before: Some(0),
                    ..Default::default()
                });
            }
        }
    }

    /// Record a thread we learned about from the kernel (it may have lived
    /// and died between two looks at /proc).
    pub fn note_thread(&mut self, tid: u32, tgid: u32) {
        self.threads.entry(tid).or_insert_with(|| ThreadInfo {
            tgid,
            created_during_run: true,
            ..Default::default()
        });
    }

    /// Take the closing snapshot, just before the maps are read.
    pub fn finish(&mut self, proc: &ProcFs, ours: OursNow) {
        self.refresh(proc);
        for (tid, info) in self.threads.iter_mut() {
            info.after = snapshot(proc, info.tgid, *tid);
            info.ours_after = ours(*tid);
            info.alive_at_end = info.after.is_some() && proc.is_alive(info.tgid);
            if let Some(c) = proc.thread_comm(info.tgid, *tid) {
                info.comm = c;
            }
        }
    }

    pub fn get(&self, tid: u32) -> Option<&ThreadInfo> {
        self.threads.get(&tid)
    }

    pub fn len(&self) -> usize {
        self.threads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }
}
