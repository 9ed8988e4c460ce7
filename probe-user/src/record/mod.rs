//! A recording session: resolve the target, attach, follow it until the
//! duration, Ctrl-C or its exit, then collect everything and build the report.
//!
//! [`run`] goes through the phases in order, one module each:
//! `resolve` (target resolution), `attach` (privileges, BTF, load and
//! attach), `follow` (the drain loop, with `stream` sorting what the kernel
//! streams), `finish` (the final snapshot, then `assemble`, pure, builds the
//! report).

mod assemble;
mod attach;
mod finish;
mod follow;
mod numa;
mod options;
pub mod priority;
mod resolve;
mod stream;
pub mod target;
pub mod thread_sched;
mod watch;
pub mod windows;

use std::{
    collections::BTreeMap,
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{kernel::startup, procfs::ProcFs, report::RecordReport};

pub(crate) use finish::irq_names;
pub use options::{Callback, RecordOptions};
pub use target::TargetSpec;
pub use watch::ThreadBook;

static PROCESS_START_NS: OnceLock<u64> = OnceLock::new();

/// Stamp the process's start (first thing in `main`): `attach_ms` counts
/// from here. Without it, from the start of [`run`].
pub fn mark_process_start() {
    PROCESS_START_NS.get_or_init(monotonic_ns);
}

/// CLOCK_MONOTONIC now, in ns (lives in `tailprobe_system::clock`).
pub use tailprobe_system::clock::monotonic_ns;

/// Record the target the options name, from start to report.
pub fn run(opts: &RecordOptions) -> Result<RecordReport> {
    mark_process_start();
    let mut stamps = startup::Stamps {
        process_start: PROCESS_START_NS.get().copied().unwrap_or(0),
        setup: monotonic_ns(),
        ..startup::Stamps::default()
    };
    attach::require_privileges(opts)?;
    let proc = ProcFs::default();
    let mut launched = match &opts.target {
        TargetSpec::Command(argv) => Some(target::Launched::start(argv, opts.quiet_command)?),
        _ => None,
    };
    // After the target is started, so that it keeps its own priority.
    attach::apply_priority(opts.priority)?;
    let mut r = resolve::resolve(&proc, &opts.target, launched.as_ref().map(|l| l.pid()))?;
    let mut notes = std::mem::take(&mut r.notes);
    // Pids inside the targets' PID namespaces, read now and at the end (a
    // process that exits in between keeps the one read here).
    let ns_pids: BTreeMap<u32, u32> = r
        .tgids
        .iter()
        .filter_map(|p| Some((*p, target::members::ns_pid(proc.root(), *p)?)))
        .collect();
    let mut a = attach::attach(opts, &proc, &r, &mut stamps, &mut notes)?;
    if let Some(l) = launched.as_mut() {
        l.release()?;
    }
    let start_ns = monotonic_ns();
    let started = Instant::now();
    let probes = &a.probes;
    let book = ThreadBook::start(&proc, &r.tgids, r.tid, &|t| probes.thread_runq_total(t));
    let main_pid = r.tgids.first().copied().unwrap_or(0);
    if let Some(cb) = &opts.on_attached {
        (cb.0)(main_pid);
    }
    let duration = match (opts.duration, &launched) {
        (Some(d), _) => d,
        (None, Some(_)) => Duration::MAX,
        (None, None) => Duration::from_secs(10),
    };
    let mut live = follow::Live::new(book, a.window_ns, a.attach_begin_ns, opts.max_outliers);
    let f = follow::Follow {
        opts,
        proc: &proc,
        r: &r,
        follow_children: a.follow_children,
        window_ns: a.window_ns,
        main_pid,
        duration,
        started,
    };
    let end_reason = follow::follow(&f, &mut a.probes, &mut launched, &mut live)?;
    let ended = finish::Ended {
        end_reason,
        start_ns,
        main_pid,
        ns_pids,
        notes,
    };
    finish::finish(opts, &proc, r, a, live, ended)
}
