//! perf counters of a process (perf_event_open, one counter per thread and
//! event, `inherit` so threads started later are counted too).

use std::{
    fs::File,
    io::{self, Read as _},
    os::fd::{FromRawFd as _, OwnedFd},
};

use serde::Serialize;

/// An event we count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub name: &'static str,
    pub type_: u32,
    pub config: u64,
    pub hardware: bool,
}

const TYPE_HARDWARE: u32 = 0;
const TYPE_SOFTWARE: u32 = 1;
const TYPE_HW_CACHE: u32 = 3;

/// The events of `tailprobe counters`, software first.
pub const EVENTS: &[Event] = &[
    Event {
        name: "context-switches",
        type_: TYPE_SOFTWARE,
        config: 3,
        hardware: false,
    },
    Event {
        name: "cpu-migrations",
        type_: TYPE_SOFTWARE,
        config: 4,
        hardware: false,
    },
    Event {
        name: "page-faults",
        type_: TYPE_SOFTWARE,
        config: 2,
        hardware: false,
    },
    Event {
        name: "task-clock-ns",
        type_: TYPE_SOFTWARE,
        config: 1,
        hardware: false,
    },
    Event {
        name: "instructions",
        type_: TYPE_HARDWARE,
        config: 1,
        hardware: true,
    },
    Event {
        name: "cycles",
        type_: TYPE_HARDWARE,
        config: 0,
        hardware: true,
    },
    Event {
        name: "branches",
        type_: TYPE_HARDWARE,
        config: 4,
        hardware: true,
    },
    Event {
        name: "branch-misses",
        type_: TYPE_HARDWARE,
        config: 5,
        hardware: true,
    },
    // LLC (2) | read (0 << 8) | miss (1 << 16)
    Event {
        name: "LLC-load-misses",
        type_: TYPE_HW_CACHE,
        config: 2 | (1 << 16),
        hardware: true,
    },
];

/// `struct perf_event_attr` up to `config1` (PERF_ATTR_SIZE_VER0, 64 bytes);
/// the kernel zero-extends the fields we do not pass.
#[repr(C)]
#[derive(Default)]
struct Attr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const FLAG_INHERIT: u64 = 1 << 1;
const FLAG_EXCLUDE_HV: u64 = 1 << 6;
/// PERF_FLAG_FD_CLOEXEC from include/uapi/linux/perf_event.h.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
const READ_TOTAL_TIME_ENABLED: u64 = 1;
const READ_TOTAL_TIME_RUNNING: u64 = 2;

/// Open one counting event on thread `tid` (any CPU).
pub fn open(ev: &Event, tid: u32) -> io::Result<OwnedFd> {
    let attr = Attr {
        type_: ev.type_,
        size: std::mem::size_of::<Attr>() as u32,
        config: ev.config,
        read_format: READ_TOTAL_TIME_ENABLED | READ_TOTAL_TIME_RUNNING,
        flags: FLAG_INHERIT | FLAG_EXCLUDE_HV,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid perf_event_attr prefix whose `size` says how
    // much the kernel may read; pid = tid, cpu = -1, no group, no flags.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const Attr,
            tid as libc::pid_t,
            -1 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Read (value, time enabled, time running) and scale for multiplexing.
pub fn read_scaled(fd: &OwnedFd) -> io::Result<(u64, bool)> {
    let mut f = File::from(fd.try_clone()?);
    let mut buf = [0u8; 24];
    f.read_exact(&mut buf)?;
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(b)
    };
    let (v, en, run) = (word(0), word(1), word(2));
    if run == 0 || run >= en {
        return Ok((v, false));
    }
    Ok(((v as f64 * en as f64 / run as f64) as u64, true))
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

/// Counters open on every thread of a process.
pub struct Session {
    /// (event index, fds per thread) for the events that opened.
    open: Vec<(usize, Vec<OwnedFd>)>,
    unsupported: Vec<(usize, String)>,
}

impl Session {
    /// Open every event on each of `tids`. An event that no thread could
    /// open because the node lacks it is "not supported here"; other
    /// errors (permissions) fail.
    pub fn start(tids: &[u32]) -> io::Result<Session> {
        let mut open = Vec::new();
        let mut unsupported = Vec::new();
        for (i, ev) in EVENTS.iter().enumerate() {
            let mut fds = Vec::new();
            let mut err: Option<io::Error> = None;
            for &t in tids {
                match open_one(ev, t) {
                    Ok(fd) => fds.push(fd),
                    // The thread exited meanwhile.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            match err {
                None => open.push((i, fds)),
                Some(e) if is_unsupported(&e) => unsupported.push((
                    i,
                    format!(
                        "not supported here ({}: {e})",
                        if ev.hardware {
                            "no hardware PMU exposed to this node"
                        } else {
                            "kernel"
                        }
                    ),
                )),
                Some(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("perf_event_open({}) failed: {e}", ev.name),
                    ))
                }
            }
        }
        Ok(Session { open, unsupported })
    }

    /// Read every counter, summed over threads.
    pub fn read(&self) -> Vec<Count> {
        let mut out: Vec<Count> = Vec::new();
        for (i, ev) in EVENTS.iter().enumerate() {
            if let Some((_, fds)) = self.open.iter().find(|(j, _)| *j == i) {
                let mut sum = 0u64;
                let mut scaled = false;
                let mut note = None;
                for fd in fds {
                    match read_scaled(fd) {
                        Ok((v, s)) => {
                            sum += v;
                            scaled |= s;
                        }
                        Err(e) => note = Some(format!("read failed: {e}")),
                    }
                }
                out.push(Count {
                    event: ev.name,
                    value: Some(sum),
                    note,
                    scaled,
                });
            } else {
                let why = self
                    .unsupported
                    .iter()
                    .find(|(j, _)| *j == i)
                    .map(|(_, w)| w.clone());
                out.push(Count {
                    event: ev.name,
                    value: None,
                    note: why,
                    scaled: false,
                });
            }
        }
        out
    }
}

fn open_one(ev: &Event, tid: u32) -> io::Result<OwnedFd> {
    open(ev, tid)
}

/// Instructions per cycle, when both were counted.
pub fn ipc(counts: &[Count]) -> Option<f64> {
    let get = |n: &str| counts.iter().find(|c| c.event == n)?.value;
    let (i, c) = (get("instructions")?, get("cycles")?);
    (c > 0).then(|| i as f64 / c as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layout_matches_ver0() {
        assert_eq!(std::mem::size_of::<Attr>(), 64);
    }

    #[test]
    fn own_page_faults_are_counted() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let ev = EVENTS.iter().find(|e| e.name == "page-faults").unwrap();
        let fd = match open(ev, tid) {
            Ok(fd) => fd,
            Err(e) => {
                eprintln!("SKIP: own_page_faults_are_counted: perf_event_open refused here ({e})");
                return;
            }
        };
        let (before, _) = read_scaled(&fd).unwrap();
        let pages = 256;
        // A private anonymous mapping of our own: every first write to one
        // of its pages faults (a heap allocation could reuse pages that
        // other tests in this process already touched). 1 MiB cannot be
        // backed by a 2 MiB huge page.
        // SAFETY: anonymous private mapping, checked for MAP_FAILED below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                pages * 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        for p in 0..pages {
            // SAFETY: within the mapping just created.
            unsafe { std::ptr::write_volatile((base as *mut u8).add(p * 4096), 1) };
        }
        let (after, _) = read_scaled(&fd).unwrap();
        // SAFETY: unmapping exactly what was mapped.
        unsafe { libc::munmap(base, pages * 4096) };
        // Fresh pages fault once each (THP may fold them: allow that).
        assert!(after - before >= 1, "{before} -> {after}");
    }

    #[test]
    fn ipc_needs_both() {
        let c = |e: &'static str, v: Option<u64>| Count {
            event: e,
            value: v,
            note: None,
            scaled: false,
        };
        assert_eq!(
            ipc(&[c("instructions", Some(200)), c("cycles", Some(100))]),
            Some(2.0)
        );
        assert_eq!(
            ipc(&[c("instructions", None), c("cycles", Some(100))]),
            None
        );
    }
}
