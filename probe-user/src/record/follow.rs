//! The drain loop: follow the target until the duration, Ctrl-C, a stop
//! request or its exit, draining the kernel's stream, finding new processes,
//! harvesting exited threads and reading windows as it goes.

use std::{
    collections::BTreeMap,
    io::{IsTerminal as _, Write as _},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{
    monotonic_ns, numa,
    resolve::{Rescan, Resolved},
    stream::Stream,
    target::{self, Launched},
    windows, RecordOptions, ThreadBook,
};
use crate::{
    kernel::loader::{Probes, ThreadCounters},
    procfs::ProcFs,
    report::EndReason,
    signals,
};

/// How often the target's pages per node are sampled during a run.
const NUMA_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// How long an exited thread waits for its last switch-out before its
/// counters are harvested.
const HARVEST_AFTER: Duration = Duration::from_millis(300);

/// What the loop gathers for the final report.
pub(super) struct Live {
    pub book: ThreadBook,
    pub series: windows::WindowSeries,
    pub stream: Stream,
    /// Counters of threads that exited during the run (their map slots are
    /// freed for new threads).
    pub harvested: BTreeMap<u32, ThreadCounters>,
    /// (CLOCK_MONOTONIC ns, KiB per node) sampled during the run.
    pub numa_samples: Vec<(u64, BTreeMap<u32, u64>)>,
    pub command_exit_code: Option<i32>,
}

impl Live {
    pub fn new(
        book: ThreadBook,
        window_ns: u64,
        attach_begin_ns: u64,
        max_outliers: usize,
    ) -> Self {
        Live {
            book,
            series: windows::WindowSeries::new(window_ns, attach_begin_ns),
            stream: Stream {
                max: max_outliers,
                ..Stream::default()
            },
            harvested: BTreeMap::new(),
            numa_samples: Vec::new(),
            command_exit_code: None,
        }
    }
}

/// What the loop reads but does not change.
pub(super) struct Follow<'a> {
    pub opts: &'a RecordOptions,
    pub proc: &'a ProcFs,
    pub r: &'a Resolved,
    pub follow_children: bool,
    pub window_ns: u64,
    pub main_pid: u32,
    pub duration: Duration,
    /// When the run started (the duration counts from here).
    pub started: Instant,
}

/// Follow the target until the run ends; say why it ended.
pub(super) fn follow(
    f: &Follow<'_>,
    probes: &mut Probes,
    launched: &mut Option<Launched>,
    live: &mut Live,
) -> Result<EndReason> {
    let mut last_window_drain = Instant::now();
    let mut last_numa_sample = Instant::now();
    let show_progress = f.opts.progress && std::io::stderr().is_terminal();
    let window_drain_every = Duration::from_nanos(
        (f.window_ns
            .saturating_mul(probe_common::WINDOW_SLOTS as u64)
            / 4)
        .clamp(50_000_000, 1_000_000_000),
    );
    let end_reason = loop {
        let elapsed = f.started.elapsed();
        if let Some(end) = ended(f, elapsed, launched, live) {
            break end;
        }
        poll(f, probes, live)?;
        if last_numa_sample.elapsed() >= NUMA_SAMPLE_EVERY {
            let kib = numa::kib_per_node(&live.book.processes());
            live.numa_samples.push((monotonic_ns(), kib));
            last_numa_sample = Instant::now();
        }
        if last_window_drain.elapsed() >= window_drain_every {
            // Slack: an event stamped just before a boundary may reach its
            // slot later (windows::DRAIN_SLACK_MIN_NS says why).
            live.series.drain(
                &probes.read_windows()?,
                monotonic_ns().saturating_sub(windows::drain_slack_ns(
                    f.window_ns,
                    u64::from(probe_common::WINDOW_SLOTS),
                )),
            );
            last_window_drain = Instant::now();
        }
        if show_progress {
            progress(f, elapsed, live);
        }
        std::thread::sleep(f.opts.poll.min(f.duration.saturating_sub(elapsed)));
    };
    if show_progress {
        eprint!("\r{:100}\r", "");
    }
    Ok(end_reason)
}

/// Why the run ends now, if it does.
fn ended(
    f: &Follow<'_>,
    elapsed: Duration,
    launched: &mut Option<Launched>,
    live: &mut Live,
) -> Option<EndReason> {
    if elapsed >= f.duration {
        return Some(EndReason::Duration);
    }
    if signals::stop_requested() {
        return Some(EndReason::Interrupted);
    }
    if f.opts
        .stop
        .as_ref()
        .is_some_and(|s| s.load(Ordering::SeqCst))
    {
        return Some(EndReason::Stopped);
    }
    if let Some(l) = launched.as_mut() {
        if let Ok(Some(st)) = l.child.try_wait() {
            live.command_exit_code = st.code();
            if f.opts.builtin {
                return Some(EndReason::TargetExited);
            }
            return Some(EndReason::CommandExited);
        }
    } else if matches!(f.r.rescan, Rescan::None)
        && !f.follow_children
        && !f.proc.is_alive(f.main_pid)
    {
        return Some(EndReason::TargetExited);
    }
    None
}

/// One turn of the loop: the kernel's stream, new processes, thread
/// book-keeping and the harvest of exited threads.
fn poll(f: &Follow<'_>, probes: &mut Probes, live: &mut Live) -> Result<()> {
    // Kernel stream: outliers, thread exits, followed forks.
    let evs = probes.drain_events();
    if let Some(tl) = &f.opts.timeline {
        crate::timeline::session::feed(tl, probes, &evs)?;
    }
    for ev in evs {
        live.stream.take(&ev, &mut live.book, f.proc);
    }
    // New processes for --comm / --cgroup.
    let found = match &f.r.rescan {
        Rescan::None => Vec::new(),
        Rescan::Comm(name) => target::pids_by_comm(f.proc, name),
        Rescan::Cgroup(dir) => target::pids_in_cgroup_tree(dir),
    };
    for tgid in found {
        if !live.book.processes().contains(&tgid) {
            probes.follow(tgid)?;
            live.book.add_process(f.proc, tgid);
        }
    }
    live.book.refresh(f.proc);
    // Harvest exited threads once their last switch-out is in.
    let ripe: Vec<u32> = live
        .stream
        .exits
        .iter()
        .filter(|(_, at)| at.elapsed() > HARVEST_AFTER)
        .map(|(t, _)| *t)
        .collect();
    live.stream
        .exits
        .retain(|(_, at)| at.elapsed() <= HARVEST_AFTER);
    for tid in ripe {
        if let Some(c) = probes.harvest_thread(tid)? {
            merge_counters(&mut live.harvested, tid, c);
        }
    }
    Ok(())
}

/// The progress line on stderr.
fn progress(f: &Follow<'_>, elapsed: Duration, live: &Live) {
    let total = if f.duration == Duration::MAX {
        "until the command exits".to_string()
    } else {
        format!("{:.1} s", f.duration.as_secs_f64())
    };
    eprint!(
        "\rrecording {} ({}): {:.1} s of {total}, {} threads, {} outliers   ",
        f.opts.target.describe(),
        f.r.comm,
        elapsed.as_secs_f64(),
        live.book.len(),
        live.stream.outliers.len() as u64 + live.stream.not_kept
    );
    let _ = std::io::stderr().flush();
}

/// Add a thread's counters to those already held for it.
pub(super) fn merge_counters(
    into: &mut BTreeMap<u32, ThreadCounters>,
    tid: u32,
    c: ThreadCounters,
) {
    match into.get_mut(&tid) {
        None => {
            into.insert(tid, c);
        }
        Some(e) => {
            e.stats.add(&c.stats);
            crate::stats::merge(&mut e.hist, &c.hist);
        }
    }
}
