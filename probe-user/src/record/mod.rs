//! A recording session: check the target, attach, wait for the duration,
//! Ctrl-C or the target's exit, then collect and build the report.

mod assemble;
mod watch;

use std::{
    io::{IsTerminal as _, Write as _},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{
    kernel::{
        btf_offsets,
        loader::{map_entries_for, LoadConfig, Probes},
    },
    privileges,
    procfs::ProcFs,
    report::{EndReason, RecordReport, Target},
    signals, sysfs,
};

pub use watch::ThreadBook;

/// What to record.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    pub pid: u32,
    pub duration: Duration,
    /// Target started by tailprobe itself.
    pub builtin: bool,
    /// Override of the per-thread map size.
    pub max_threads: Option<u32>,
    /// How often to check the target and refresh its thread list.
    pub poll: Duration,
    /// Progress on stderr (only when it is a terminal).
    pub progress: bool,
    /// Called once the probes are attached (tests and scripts sync on it).
    pub on_attached: Option<fn(u32)>,
}

/// CLOCK_MONOTONIC now, in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

pub fn run(opts: &RecordOptions) -> Result<RecordReport> {
    privileges::require_root("tailprobe record")?;
    privileges::require_btf()?;
    let proc = ProcFs::default();
    let (tgid, comm) = proc.check_target(opts.pid)?;
    let mut notes = Vec::new();
    if tgid != opts.pid {
        notes.push(format!(
            "pid {} is a thread of process {tgid}: recording the whole process",
            opts.pid
        ));
    }
    let btf = std::fs::read(privileges::VMLINUX_BTF)
        .with_context(|| format!("reading {}", privileges::VMLINUX_BTF))?;
    let offsets = btf_offsets::resolve(&btf).context("resolving task_struct offsets from BTF")?;
    drop(btf);
    let threads_now = proc.threads(tgid).len();
    let topology = sysfs::topology::cpu_topology(Path::new("/sys"));
    let cfg = LoadConfig {
        tgid,
        offsets,
        max_threads: opts
            .max_threads
            .unwrap_or_else(|| map_entries_for(threads_now)),
        topology: topology.clone(),
    };
    let probes = Probes::load_and_attach(&cfg)?;
    let start_ns = monotonic_ns();
    let started = Instant::now();
    let mut book = ThreadBook::start(&proc, tgid);
    if let Some(cb) = opts.on_attached {
        cb(tgid);
    }
    let show_progress = opts.progress && std::io::stderr().is_terminal();
    let end_reason = loop {
        let elapsed = started.elapsed();
        if elapsed >= opts.duration {
            break EndReason::Duration;
        }
        if signals::stop_requested() {
            break EndReason::Interrupted;
        }
        if !proc.is_alive(tgid) {
            break EndReason::TargetExited;
        }
        book.refresh(&proc);
        if show_progress {
            eprint!(
                "\rrecording pid {tgid} ({comm}): {:.1}/{:.1} s, {} threads   ",
                elapsed.as_secs_f64(),
                opts.duration.as_secs_f64(),
                book.len()
            );
            let _ = std::io::stderr().flush();
        }
        std::thread::sleep(opts.poll.min(opts.duration.saturating_sub(elapsed)));
    };
    if show_progress {
        eprint!("\r{:70}\r", "");
    }
    if end_reason == EndReason::TargetExited {
        // The exiting threads' last switch-out comes just after /proc shows
        // the process as a zombie: give it a moment to reach the maps.
        std::thread::sleep(Duration::from_millis(50));
    }
    // Kernel accounting first, then our maps, then detach (drop).
    book.finish(&proc);
    let end_ns = monotonic_ns();
    let counters = probes.read_threads()?;
    let losses = probes.read_losses()?;
    drop(probes);
    if end_reason == EndReason::TargetExited {
        notes.push("the target exited during the run: this is what was seen until then".into());
    }
    let target = Target {
        pid: tgid,
        comm,
        cmdline: proc.cmdline(tgid).unwrap_or_default(),
        builtin: opts.builtin,
    };
    Ok(assemble::build(assemble::Inputs {
        target,
        start_ns,
        end_ns,
        end_reason,
        counters,
        losses,
        book,
        offsets,
        topology_known: topology.is_some(),
        notes,
    }))
}
