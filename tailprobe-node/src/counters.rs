//! perf counters of a process: perf_event_open per thread, `inherit` so
//! threads started later are counted too, through the `perf-event2` crate.
//!
//! Events that are compared with each other are opened as one perf group
//! per thread and read with one `read()` (PERF_FORMAT_GROUP): the kernel
//! schedules a group on the PMU all at once, so instructions and cycles
//! cover the same instants and IPC is exact even when the PMU multiplexes
//! (both are scaled by the same enabled/running factor, which cancels).
//! Groups: `software` (context-switches, cpu-migrations, page-faults,
//! task-clock), `ipc` (instructions, cycles), `branches` (branches,
//! branch-misses), `llc` (LLC-load-misses). Why the crate and what was
//! measured: docs/node.md, "Counters".

use std::{
    fs::File,
    io::{self, Read as _},
    os::fd::{FromRawFd as _, IntoRawFd as _, OwnedFd},
    time::Duration,
};

use perf_event::events::{Cache, CacheId, CacheOp, CacheResult, Hardware, Software};
use perf_event::{Builder, Counter, Group};
use serde::Serialize;

/// What perf counts for an [`Event`].
#[derive(Debug, Clone)]
pub enum Kind {
    Software(Software),
    Hardware(Hardware),
    Cache(Cache),
}

/// An event we count.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: &'static str,
    pub kind: Kind,
    /// Counted by the CPU's PMU (absent in most VMs), not by the kernel.
    pub hardware: bool,
    /// Events with the same group are opened and read together.
    pub group: &'static str,
    /// Opened first, as the group's leader.
    pub leads: bool,
}

const fn sw(name: &'static str, ev: Software, leads: bool) -> Event {
    Event {
        name,
        kind: Kind::Software(ev),
        hardware: false,
        group: "software",
        leads,
    }
}

const fn hw(name: &'static str, ev: Hardware, group: &'static str, leads: bool) -> Event {
    Event {
        name,
        kind: Kind::Hardware(ev),
        hardware: true,
        group,
        leads,
    }
}

/// The events of `tailprobe counters` in the order they are printed,
/// software first; the events of one group are next to each other.
///
/// task-clock leads the software group: as a member it read 1-11% short
/// of the thread's CPU clock in 5 of 6 runs on this 6.18 kernel, as the
/// leader within 0.25% (docs/node.md, "Counters"). cycles leads `ipc` as in
/// `perf stat -e '{cycles,instructions}'`.
pub const EVENTS: &[Event] = &[
    sw("context-switches", Software::CONTEXT_SWITCHES, false),
    sw("cpu-migrations", Software::CPU_MIGRATIONS, false),
    sw("page-faults", Software::PAGE_FAULTS, false),
    sw("task-clock-ns", Software::TASK_CLOCK, true),
    hw("instructions", Hardware::INSTRUCTIONS, "ipc", false),
    hw("cycles", Hardware::CPU_CYCLES, "ipc", true),
    hw("branches", Hardware::BRANCH_INSTRUCTIONS, "branches", true),
    hw("branch-misses", Hardware::BRANCH_MISSES, "branches", false),
    Event {
        name: "LLC-load-misses",
        kind: Kind::Cache(Cache {
            which: CacheId::LL,
            operation: CacheOp::READ,
            result: CacheResult::MISS,
        }),
        hardware: true,
        group: "llc",
        leads: true,
    },
];

/// A builder for `ev` on thread `tid` (any CPU), counting user and kernel
/// time of the thread and the threads it starts later, enabled at once.
fn builder(ev: &Event, tid: u32) -> Builder<'static> {
    let mut b = match &ev.kind {
        Kind::Software(e) => Builder::new(*e),
        Kind::Hardware(e) => Builder::new(*e),
        Kind::Cache(e) => Builder::new(e.clone()),
    };
    b.observe_pid(tid as libc::pid_t)
        .any_cpu()
        .inherit(true)
        .include_kernel()
        .exclude_hv(true)
        .enabled(true);
    b
}

/// Open one counting event on thread `tid` (any CPU), on its own (not in
/// a group): read it with [`read_scaled`].
pub fn open(ev: &Event, tid: u32) -> io::Result<OwnedFd> {
    let raw = builder(ev, tid).build()?.into_raw_fd();
    // SAFETY: `into_raw_fd` gave up the counter's descriptor, so nothing
    // else owns or closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Read (value, time enabled, time running) of a counter from [`open`] and
/// scale it for multiplexing: (value, scaled).
pub fn read_scaled(fd: &OwnedFd) -> io::Result<(u64, bool)> {
    let mut f = File::from(fd.try_clone()?);
    let mut buf = [0u8; 24];
    f.read_exact(&mut buf)?;
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(b)
    };
    Ok(scale(word(0), word(1), word(2)))
}

/// A value scaled by time enabled / time running (the share of the time
/// the PMU counted it): (value, scaled).
fn scale(v: u64, enabled: u64, running: u64) -> (u64, bool) {
    if running == 0 || running >= enabled {
        return (v, false);
    }
    ((v as f64 * enabled as f64 / running as f64) as u64, true)
}

/// Whether an open error means "this node has no such counter".
pub fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) | Some(libc::ENODEV) | Some(libc::EINVAL)
    )
}

/// One event's result.
#[derive(Debug, Clone, Serialize)]
pub struct Count {
    pub event: &'static str,
    /// `None` when the event is not supported on this node.
    pub value: Option<u64>,
    /// Why there is no value ("not supported here: ...").
    pub note: Option<String>,
    /// True when the kernel multiplexed the counter and the value is scaled.
    pub scaled: bool,
}

/// One group open on one thread.
enum ThreadGroup {
    /// One perf group: the leader and the other members, read together.
    Grouped { group: Group, members: Vec<Counter> },
    /// The events opened one by one (a kernel that refused the group):
    /// each scaled by its own enabled/running.
    Separate(Vec<OwnedFd>),
}

/// One group's events and its perf groups, one per thread.
struct OpenGroup {
    /// Indices into [`EVENTS`], the leader first.
    events: Vec<usize>,
    threads: Vec<ThreadGroup>,
    /// Why the events are counted one by one, when they are.
    separate: Option<String>,
}

/// What one read of a group gave, summed over threads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupReading {
    pub group: &'static str,
    /// (event name, value), the leader first: each thread's value scaled
    /// by that thread's enabled/running (the same factor for every member
    /// of the group, so ratios within a group are exact), then summed.
    pub values: Vec<(&'static str, u64)>,
    /// Whether any thread's group was multiplexed (its values scaled).
    pub scaled: bool,
    /// Time the group was enabled and running on the PMU, summed over
    /// threads: every member of the group shares these two (zero when the
    /// events are counted one by one).
    pub enabled: Duration,
    pub running: Duration,
    /// Why the events were counted one by one, or a read that failed (the
    /// other threads still count).
    pub note: Option<String>,
}

/// Counters open on every thread of a process.
pub struct Session {
    open: Vec<OpenGroup>,
    unsupported: Vec<(usize, String)>,
}

/// The events of [`EVENTS`] grouped by `group`, each group's leader first,
/// the others in [`EVENTS`] order.
fn groups() -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, ev) in EVENTS.iter().enumerate() {
        match out.last_mut() {
            Some(g) if EVENTS[g[0]].group == ev.group && ev.leads => g.insert(0, i),
            Some(g) if EVENTS[g[0]].group == ev.group => g.push(i),
            _ => out.push(vec![i]),
        }
    }
    out
}

/// Open one group (`events`, the leader first) on thread `tid`, as one
/// perf group or, with `separate`, one event at a time.
fn open_group(events: &[usize], tid: u32, separate: bool) -> io::Result<ThreadGroup> {
    if separate {
        let fds = events.iter().map(|&i| open(&EVENTS[i], tid));
        return Ok(ThreadGroup::Separate(fds.collect::<io::Result<_>>()?));
    }
    let mut gb = builder(&EVENTS[events[0]], tid);
    gb.read_format(
        perf_event::ReadFormat::GROUP
            | perf_event::ReadFormat::TOTAL_TIME_ENABLED
            | perf_event::ReadFormat::TOTAL_TIME_RUNNING
            | perf_event::ReadFormat::ID,
    );
    let mut group = gb.build_group()?;
    let mut members = Vec::new();
    for &i in &events[1..] {
        members.push(group.add(&builder(&EVENTS[i], tid))?);
    }
    Ok(ThreadGroup::Grouped { group, members })
}

/// Open `events` on every thread of `tids`; threads that exited meanwhile
/// are left out. The first other error ends it.
fn open_on_threads(events: &[usize], tids: &[u32], separate: bool) -> io::Result<Vec<ThreadGroup>> {
    let mut threads = Vec::new();
    for &t in tids {
        match open_group(events, t, separate) {
            Ok(g) => threads.push(g),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(threads)
}

fn unsupported_note(ev: &Event, e: &io::Error) -> String {
    format!(
        "not supported here ({}: {e})",
        if ev.hardware {
            "no hardware PMU exposed to this node"
        } else {
            "kernel"
        }
    )
}

/// Add one thread's read of `tg` into `r`.
fn add_reading(r: &mut GroupReading, tg: &mut ThreadGroup) -> io::Result<()> {
    match tg {
        ThreadGroup::Grouped { group, members } => {
            let data = group.read()?;
            let enabled = data.time_enabled().unwrap_or_default();
            let running = data.time_running().unwrap_or_default();
            r.enabled += enabled;
            r.running += running;
            let leader = data.get(group.as_counter()).map(|e| e.value());
            let members = members.iter().map(|c| data.get(c).map(|e| e.value()));
            for (slot, v) in r
                .values
                .iter_mut()
                .zip(std::iter::once(leader).chain(members))
            {
                let (v, scaled) = scale(
                    v.unwrap_or(0),
                    enabled.as_nanos() as u64,
                    running.as_nanos() as u64,
                );
                slot.1 += v;
                r.scaled |= scaled;
            }
        }
        ThreadGroup::Separate(fds) => {
            for (slot, fd) in r.values.iter_mut().zip(fds.iter()) {
                let (v, scaled) = read_scaled(fd)?;
                slot.1 += v;
                r.scaled |= scaled;
            }
        }
    }
    Ok(())
}

impl Session {
    /// Open every group on each of `tids`. A kernel that refuses a group
    /// (EINVAL) gets its events one by one, said in the counts' note. A
    /// group that no thread could open because the node lacks one of its
    /// events is "not supported here" for all its events (they are only
    /// meaningful together); other errors (permissions) fail.
    pub fn start(tids: &[u32]) -> io::Result<Session> {
        let mut open = Vec::new();
        let mut unsupported = Vec::new();
        for events in groups() {
            let mut separate = None;
            let mut opened = open_on_threads(&events, tids, false);
            if let Err(e) = &opened {
                if e.raw_os_error() == Some(libc::EINVAL) && events.len() > 1 {
                    separate = Some(format!(
                        "counted one by one: the kernel refused the group ({e})"
                    ));
                    opened = open_on_threads(&events, tids, true);
                }
            }
            match opened {
                Ok(threads) => open.push(OpenGroup {
                    events,
                    threads,
                    separate,
                }),
                Err(e) if is_unsupported(&e) => {
                    for i in events {
                        unsupported.push((i, unsupported_note(&EVENTS[i], &e)));
                    }
                }
                Err(e) => {
                    let names: Vec<&str> = events.iter().map(|&i| EVENTS[i].name).collect();
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "perf_event_open({}, group {}) failed: {e}",
                            names.join(", "),
                            EVENTS[events[0]].group
                        ),
                    ));
                }
            }
        }
        Ok(Session { open, unsupported })
    }

    /// Read every open group once per thread (one `read()` each), summed
    /// over threads.
    pub fn read_groups(&mut self) -> Vec<GroupReading> {
        let mut out = Vec::new();
        for og in &mut self.open {
            let mut r = GroupReading {
                group: EVENTS[og.events[0]].group,
                values: og.events.iter().map(|&i| (EVENTS[i].name, 0)).collect(),
                note: og.separate.clone(),
                ..Default::default()
            };
            for tg in &mut og.threads {
                if let Err(e) = add_reading(&mut r, tg) {
                    r.note = Some(format!("read failed: {e}"));
                }
            }
            out.push(r);
        }
        out
    }

    /// Read every counter, summed over threads, scaled for multiplexing.
    pub fn read(&mut self) -> Vec<Count> {
        let readings = self.read_groups();
        EVENTS
            .iter()
            .enumerate()
            .map(|(i, ev)| {
                let found = readings.iter().find_map(|r| {
                    let v = r.values.iter().find(|(n, _)| *n == ev.name)?.1;
                    Some((r, v))
                });
                match found {
                    Some((r, v)) => Count {
                        event: ev.name,
                        value: Some(v),
                        note: r.note.clone(),
                        scaled: r.scaled,
                    },
                    None => Count {
                        event: ev.name,
                        value: None,
                        note: self
                            .unsupported
                            .iter()
                            .find(|(j, _)| *j == i)
                            .map(|(_, w)| w.clone()),
                        scaled: false,
                    },
                }
            })
            .collect()
    }
}

/// Instructions per cycle, when both were counted.
pub fn ipc(counts: &[Count]) -> Option<f64> {
    let get = |n: &str| counts.iter().find(|c| c.event == n)?.value;
    let (i, c) = (get("instructions")?, get("cycles")?);
    (c > 0).then(|| i as f64 / c as f64)
}

#[cfg(test)]
#[path = "counters_tests.rs"]
mod tests;
