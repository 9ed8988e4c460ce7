//! What the kernel streams during a run, sorted: outliers for the report,
//! thread exits to harvest, forks to follow.

use std::time::Instant;

use probe_common::event;

use super::ThreadBook;
use crate::{procfs::ProcFs, report::Outlier};

/// What the kernel streamed: outliers (kept up to `max`), and threads that
/// exited, to harvest once their last switch-out is in.
#[derive(Default)]
pub(super) struct Stream {
    pub outliers: Vec<Outlier>,
    pub not_kept: u64,
    pub max: usize,
    pub exits: Vec<(u32, Instant)>,
}

impl Stream {
    pub fn take(&mut self, ev: &probe_common::Event, book: &mut ThreadBook, proc: &ProcFs) {
        let kind = match ev.kind {
            event::RUNQ_OUTLIER => "runq_wait",
            event::HARDIRQ_OUTLIER => "hardirq",
            event::SOFTIRQ_OUTLIER => "softirq",
            event::PAGE_FAULT => "page_fault",
            event::MIGRATION => "migration",
            event::THREAD_EXIT => {
                book.note_thread(ev.tid, ev.tgid);
                self.exits.push((ev.tid, Instant::now()));
                return;
            }
            event::PROCESS_FORK => {
                book.add_process(proc, ev.aux);
                return;
            }
            _ => return,
        };
        if self.outliers.len() >= self.max {
            self.not_kept += 1;
            return;
        }
        self.outliers.push(Outlier {
            ts_ns: ev.ts_ns,
            kind,
            tid: ev.tid,
            tgid: ev.tgid,
            cpu: ev.cpu,
            value_ns: ev.value_ns,
            preempted_by: (ev.kind == event::RUNQ_OUTLIER && ev.aux != 0).then_some(ev.aux),
            irq: matches!(ev.kind, event::HARDIRQ_OUTLIER | event::SOFTIRQ_OUTLIER)
                .then_some(ev.aux),
            from_cpu: (ev.kind == event::MIGRATION && ev.aux >> 16 != 0xffff)
                .then_some(ev.aux >> 16),
        });
    }
}
