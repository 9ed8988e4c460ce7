//! The target's threads as seen from `/proc` during a run: names (kept after
//! a thread exits) and the kernel's own counters at both ends of the window.

use std::collections::BTreeMap;

use crate::procfs::{parse::SchedStat, ProcFs};

/// (schedstat, voluntary switches, involuntary switches) of one thread.
pub type KernelSnapshot = (SchedStat, u64, u64);

#[derive(Debug, Clone, Default)]
pub struct ThreadInfo {
    pub comm: String,
    pub created_during_run: bool,
    pub alive_at_end: bool,
    pub before: Option<KernelSnapshot>,
    pub after: Option<KernelSnapshot>,
}

#[derive(Debug, Default)]
pub struct ThreadBook {
    tgid: u32,
    threads: BTreeMap<u32, ThreadInfo>,
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
    pub fn start(proc: &ProcFs, tgid: u32) -> Self {
        let mut book = ThreadBook {
            tgid,
            threads: BTreeMap::new(),
        };
        for tid in proc.threads(tgid) {
            let info = ThreadInfo {
                comm: proc.thread_comm(tgid, tid).unwrap_or_default(),
                before: snapshot(proc, tgid, tid),
                ..Default::default()
            };
            book.threads.insert(tid, info);
        }
        book
    }

    /// Learn threads created since the last look. A thread born during the
    /// run started from zero, so its "before" snapshot is all zeros.
    pub fn refresh(&mut self, proc: &ProcFs) {
        for tid in proc.threads(self.tgid) {
            self.threads.entry(tid).or_insert_with(|| ThreadInfo {
                comm: proc.thread_comm(self.tgid, tid).unwrap_or_default(),
                created_during_run: true,
                before: Some((SchedStat::default(), 0, 0)),
                ..Default::default()
            });
        }
    }

    /// Take the closing snapshot, just before the maps are read.
    pub fn finish(&mut self, proc: &ProcFs) {
        self.refresh(proc);
        let tgid = self.tgid;
        for (tid, info) in self.threads.iter_mut() {
            info.after = snapshot(proc, tgid, *tid);
            info.alive_at_end = info.after.is_some();
            if let Some(c) = proc.thread_comm(tgid, *tid) {
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
