//! Start-up of `tailprobe record`: what makes it attach in a blink on an
//! idle and on a saturated machine (issue 17).
//!
//! - **A real-time start.** From the first line of `main` until every
//!   program is attached, the recording thread runs at SCHED_FIFO 1, so that
//!   a machine saturated by normal threads does not make the tool that is to
//!   explain it wait for a CPU (on a 2-CPU machine under `hackbench` that
//!   wait was most of a second). SCHED_RESET_ON_FORK keeps it from the
//!   launched command, the built-in workload and our own helper threads:
//!   they start at the default policy. `--no-startup-boost` turns it off;
//!   where the kernel refuses it (no CAP_SYS_NICE), the run says so and goes
//!   on at its own priority.
//! - **The kernel's BTF parsed once.** `/sys/kernel/btf/vmlinux` (about
//!   5 MB) is read once, scanned for the `task_struct` offsets
//!   (`btf_scan`), and parsed once with aya's parser for the attach points;
//!   that parse is handed to aya's loader (`EbpfLoader::btf`). aya 0.14's
//!   `EbpfLoader::new()` reads and parses the same file by itself before
//!   `.btf()` can replace it (`Btf::from_sys_fs` in the constructor; strace
//!   shows the second `openat` of the file). [`new_loader`] builds the
//!   loader while that file is hidden from the calling thread, in a
//!   throw-away copy of the mount namespace, and returns to the real one at
//!   once; where that is not possible the loader parses as before, and the
//!   report says which (`attach_ms.loader_parsed_btf`).

use std::{ffi::OsStr, fs::File, os::fd::AsRawFd as _, sync::Mutex};

use aya::{Btf, EbpfLoader};

/// The real-time priority of the start-up.
pub const BOOST_PRIORITY: i32 = 1;

/// The flag that turns the start-up boost off.
pub const NO_BOOST_FLAG: &str = "--no-startup-boost";

/// What the command line asks of the start-up boost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoostPlan {
    /// Not a recording (`workload`, `serve`, ...): never boosted.
    NotRecord,
    /// `record --no-startup-boost`.
    Off,
    /// `record`: boost.
    Boost,
}

/// Decide from the raw arguments (program name first), before clap runs:
/// the boost starts at the first line of `main`. Only `record` is boosted;
/// the flag counts before `--` (after it come the launched command's own
/// arguments).
pub fn plan<S: AsRef<OsStr>>(args: &[S]) -> BoostPlan {
    if args.get(1).map(|a| a.as_ref()) != Some(OsStr::new("record")) {
        return BoostPlan::NotRecord;
    }
    let off = args
        .iter()
        .skip(2)
        .map(|a| a.as_ref())
        .take_while(|a| *a != OsStr::new("--"))
        .any(|a| a == OsStr::new(NO_BOOST_FLAG));
    if off {
        BoostPlan::Off
    } else {
        BoostPlan::Boost
    }
}

/// What became of the boost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boost {
    NotRecord,
    Off,
    /// Raised; `restore` is the policy and priority the thread had.
    Raised {
        restore: (i32, i32),
    },
    /// The thread was already real-time (policy, priority): left as it was.
    AlreadyRealtime(i32, i32),
    /// The kernel refused SCHED_FIFO (the error).
    Refused(String),
    /// Raised, then dropped back after the attach.
    Ended,
    /// Raised, then replaced by `--priority fifo:N` before the attach.
    Superseded,
}

static BOOST: Mutex<Option<Boost>> = Mutex::new(None);

fn set_state(b: Boost) {
    if let Ok(mut g) = BOOST.lock() {
        *g = Some(b);
    }
}

fn state() -> Option<Boost> {
    BOOST.lock().ok().and_then(|g| g.clone())
}

fn policy_name(p: i32) -> String {
    match p & !libc::SCHED_RESET_ON_FORK {
        libc::SCHED_OTHER => "SCHED_OTHER".into(),
        libc::SCHED_FIFO => "SCHED_FIFO".into(),
        libc::SCHED_RR => "SCHED_RR".into(),
        libc::SCHED_BATCH => "SCHED_BATCH".into(),
        libc::SCHED_IDLE => "SCHED_IDLE".into(),
        other => format!("policy {other}"),
    }
}

fn set_scheduler(policy: i32, prio: i32) -> std::io::Result<()> {
    crate::record::thread_sched::set(policy, prio)
}

/// Raise the calling thread (the first line of `main`: the main thread) to
/// SCHED_FIFO [`BOOST_PRIORITY`] with SCHED_RESET_ON_FORK, when `plan` says
/// so. Never fails: a refusal is remembered and reported.
pub fn boost_at_start(plan: BoostPlan) {
    let outcome = match plan {
        BoostPlan::NotRecord => Boost::NotRecord,
        BoostPlan::Off => Boost::Off,
        BoostPlan::Boost => {
            let (policy, prio) = crate::record::thread_sched::get().unwrap_or((-1, 0));
            let base = policy & !libc::SCHED_RESET_ON_FORK;
            if base == libc::SCHED_FIFO || base == libc::SCHED_RR {
                Boost::AlreadyRealtime(policy, prio)
            } else {
                match set_scheduler(libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, BOOST_PRIORITY) {
                    Ok(()) => Boost::Raised {
                        restore: (policy.max(0), prio),
                    },
                    Err(e) => Boost::Refused(e.to_string()),
                }
            }
        }
    };
    set_state(outcome);
}

/// `--priority fifo:N` replaced the boost (before the attach): the thread
/// keeps that policy after the attach.
pub fn superseded() {
    if matches!(state(), Some(Boost::Raised { .. })) {
        set_state(Boost::Superseded);
    }
}

/// All programs are attached: drop the boost, back to the policy the thread
/// had (its nice value was kept by the kernel; a `--priority nice:N` set
/// meanwhile stays). Idempotent. A failure to drop back is returned for the
/// report (the thread then stays real-time for the run).
pub fn end_boost() -> Result<(), String> {
    let Some(Boost::Raised { restore }) = state() else {
        return Ok(());
    };
    match set_scheduler(restore.0, restore.1) {
        Ok(()) => {
            set_state(Boost::Ended);
            Ok(())
        }
        Err(e) => Err(format!(
            "could not drop the start-up priority (SCHED_FIFO {BOOST_PRIORITY}) back to {}: \
             {e}; the recorder stays real-time for this run",
            policy_name(restore.0)
        )),
    }
}

/// The start-up priority for the report (`attach_ms.startup_priority`).
pub fn describe() -> String {
    match state() {
        None | Some(Boost::NotRecord) => "default (raised only by `tailprobe record`)".into(),
        Some(Boost::Off) => format!("default ({NO_BOOST_FLAG})"),
        Some(Boost::Raised { .. }) => {
            format!("fifo:{BOOST_PRIORITY} (not yet dropped)")
        }
        Some(Boost::Ended) => format!("fifo:{BOOST_PRIORITY} until attached"),
        Some(Boost::Superseded) => {
            format!("fifo:{BOOST_PRIORITY} until --priority took over")
        }
        Some(Boost::AlreadyRealtime(p, prio)) => {
            format!("{} {prio} (already real-time: not changed)", policy_name(p))
        }
        Some(Boost::Refused(e)) => {
            format!("default (SCHED_FIFO {BOOST_PRIORITY} refused: {e}; needs CAP_SYS_NICE)")
        }
    }
}

/// A note for the report when the boost was asked for and refused.
pub fn refusal_note() -> Option<String> {
    match state() {
        Some(Boost::Refused(e)) => Some(format!(
            "the start-up could not run at SCHED_FIFO {BOOST_PRIORITY} ({e}): on a busy \
             machine attaching may take longer; run as root with CAP_SYS_NICE"
        )),
        _ => None,
    }
}

/// The kernel's BTF (the bytes of `/sys/kernel/btf/vmlinux`) parsed with
/// aya's parser, once per run: for the attach points and for the loader.
pub fn parse_kernel_btf(raw: &[u8]) -> anyhow::Result<Btf> {
    use anyhow::Context as _;
    Btf::parse(raw, aya::Endianness::default()).with_context(|| {
        format!(
            "parsing the kernel's BTF ({})",
            crate::privileges::VMLINUX_BTF
        )
    })
}

/// An aya loader that takes `btf` (parsed once by the caller) without
/// parsing the kernel's BTF a second time, and whether the loader parsed it
/// anyway (the fallback).
///
/// `EbpfLoader::new()` in aya 0.14 always runs `Btf::from_sys_fs()`. Here it
/// runs while `/sys/kernel/btf` is covered, for this thread only, by an empty
/// tmpfs in a private copy of the mount namespace: its read fails at once,
/// and the thread goes back to the real namespace (and its working
/// directory) before anything else happens. Nothing is mounted where other
/// threads or processes can see it (the copy is made private first).
pub fn new_loader(btf: &Btf) -> (EbpfLoader<'_>, bool) {
    let (mut loader, parsed) = match hidden_sysfs_btf(EbpfLoader::new) {
        Ok(l) => (l, false),
        Err(_) => (EbpfLoader::new(), true),
    };
    loader.btf(Some(btf));
    (loader, parsed)
}

fn check(rc: libc::c_int, what: &str) -> Result<(), String> {
    if rc != 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Run `f` on this thread while `/sys/kernel/btf` is hidden from it.
fn hidden_sysfs_btf<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    // Where to come back to. A chrooted process would lose its root on the
    // way back (setns moves root and cwd to the namespace's root): not here.
    if std::fs::read_link("/proc/thread-self/root").map_err(|e| e.to_string())?
        != std::path::Path::new("/")
    {
        return Err("running in a chroot".into());
    }
    let home = File::open("/proc/thread-self/ns/mnt").map_err(|e| e.to_string())?;
    let cwd = File::open(".").map_err(|e| e.to_string())?;
    // SAFETY: unshare(2) affects only the calling thread's mount namespace
    // and filesystem context (CLONE_NEWNS implies CLONE_FS); no memory.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) }, "unshare")?;
    let back = || {
        // SAFETY: `home` is an open namespace fd for the duration of the
        // call; fchdir on an open directory fd. No memory is touched.
        let rc = unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNS) };
        // SAFETY: as above.
        let _ = unsafe { libc::fchdir(cwd.as_raw_fd()) };
        check(rc, "setns back")
    };
    // Make the copy private before mounting, so the tmpfs cannot propagate
    // to the real namespace.
    // SAFETY: NUL-terminated constant strings; null source/type/data are
    // allowed for a propagation change.
    let private = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if let Err(e) = check(private, "making the mount copy private") {
        back()?;
        return Err(e);
    }
    // SAFETY: NUL-terminated constant strings for source, target, type and
    // data.
    let covered = unsafe {
        libc::mount(
            c"tailprobe".as_ptr(),
            c"/sys/kernel/btf".as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            c"size=4k".as_ptr().cast(),
        )
    };
    if let Err(e) = check(covered, "covering /sys/kernel/btf") {
        back()?;
        return Err(e);
    }
    let out = f();
    // SAFETY: NUL-terminated constant path; a lazy unmount of our own tmpfs
    // in our own namespace copy (so that, should setns fail, the thread at
    // least sees the kernel's BTF again).
    let _ = unsafe { libc::umount2(c"/sys/kernel/btf".as_ptr(), libc::MNT_DETACH) };
    back()?;
    Ok(out)
}

/// Milliseconds between two CLOCK_MONOTONIC stamps.
pub fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e6
}

/// Where the time to attach went (the type lives with the report that
/// carries it).
pub use tailprobe_report::kernel::startup::Phases;

/// Timestamps taken along the start-up, turned into [`Phases`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Stamps {
    pub process_start: u64,
    pub setup: u64,
    pub target: u64,
    pub btf_read: u64,
    pub btf_offsets: u64,
    pub btf_parse: u64,
    pub config: u64,
    pub loaded: u64,
    pub attached: u64,
}

impl Stamps {
    pub fn phases(&self) -> Phases {
        Phases {
            before_setup: ms_between(self.process_start, self.setup),
            target: ms_between(self.setup, self.target),
            btf_read: ms_between(self.target, self.btf_read),
            btf_offsets: ms_between(self.btf_read, self.btf_offsets),
            btf_parse: ms_between(self.btf_offsets, self.btf_parse),
            config: ms_between(self.btf_parse, self.config),
            load: ms_between(self.config, self.loaded),
            attach: ms_between(self.loaded, self.attached),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn p(args: &[&str]) -> BoostPlan {
        plan(&args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn only_record_is_boosted_and_the_flag_turns_it_off() {
        assert_eq!(p(&["tailprobe", "record", "--pid", "1"]), BoostPlan::Boost);
        assert_eq!(p(&["tailprobe", "record"]), BoostPlan::Boost);
        assert_eq!(
            p(&["tailprobe", "record", "--no-startup-boost", "--pid", "1"]),
            BoostPlan::Off
        );
        for other in ["workload", "serve", "exec-gated", "diagnose", "--help"] {
            assert_eq!(p(&["tailprobe", other]), BoostPlan::NotRecord, "{other}");
        }
        assert_eq!(p(&["tailprobe"]), BoostPlan::NotRecord);
        // The flag after `--` belongs to the launched command.
        assert_eq!(
            p(&["tailprobe", "record", "--", "x", "--no-startup-boost"]),
            BoostPlan::Boost
        );
    }

    #[test]
    fn phases_are_the_differences_between_stamps() {
        let s = Stamps {
            process_start: 1_000_000,
            setup: 2_000_000,
            target: 2_500_000,
            btf_read: 3_500_000,
            btf_offsets: 4_000_000,
            btf_parse: 14_000_000,
            config: 15_000_000,
            loaded: 20_000_000,
            attached: 60_000_000,
        };
        let ph = s.phases();
        assert_eq!(ph.before_setup, 1.0);
        assert_eq!(ph.target, 0.5);
        assert_eq!(ph.btf_read, 1.0);
        assert_eq!(ph.btf_offsets, 0.5);
        assert_eq!(ph.btf_parse, 10.0);
        assert_eq!(ph.config, 1.0);
        assert_eq!(ph.load, 5.0);
        assert_eq!(ph.attach, 40.0);
        // Out of order stamps (a missing one) read as 0, never negative.
        assert_eq!(ms_between(5, 3), 0.0);
    }
}
