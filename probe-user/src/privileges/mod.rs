//! Refusing early and clearly when we lack what the kernel will demand:
//! the capabilities each command needs (not `euid == 0`), and BTF.

pub mod caps;

use anyhow::{bail, Result};
use std::path::Path;

pub use caps::{Cap, CapSet};

use crate::procfs::{self, ProcFs};

/// This process's effective capabilities (`CapEff` in /proc/self/status).
/// When the file cannot be read, an empty set for a non-root user and the
/// full set for root (what the kernel grants root without a bounding set).
pub fn effective() -> CapSet {
    effective_in(&ProcFs::default())
}

/// [`effective`] with `self/status` read under `proc`.
pub fn effective_in(proc: &ProcFs) -> CapSet {
    proc.own_file("status")
        .ok()
        .and_then(|s| caps::effective_from_status(&s))
        .unwrap_or_else(|| CapSet(if euid() == 0 { u64::MAX } else { 0 }))
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The running kernel's (major, minor), from uname(2).
pub fn kernel_version() -> Option<(u32, u32)> {
    // SAFETY: utsname is plain bytes; uname fills it or fails.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    // SAFETY: the kernel NUL-terminates release within its array.
    let rel = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    caps::kernel_version(&rel.to_string_lossy())
}

/// What loading tailprobe's eBPF programs needs on this kernel.
pub fn bpf_caps() -> Vec<Cap> {
    caps::for_bpf(kernel_version())
}

/// Fails, naming exactly the missing capabilities, unless this process
/// holds every one of `need`.
pub fn require(what: &str, need: &[Cap]) -> Result<()> {
    let missing = effective().missing(need);
    if let Some(msg) = caps::refusal(what, need, &missing, euid()) {
        bail!(msg);
    }
    Ok(())
}

/// Fails unless this process may load and attach tailprobe's eBPF programs
/// (CAP_BPF and CAP_PERFMON; CAP_SYS_ADMIN before Linux 5.8).
pub fn require_bpf(what: &str) -> Result<()> {
    require(what, &bpf_caps())
}

/// Whether this process holds `cap` (CAP_SYS_ADMIN counts for CAP_BPF and
/// CAP_PERFMON).
pub fn has(cap: Cap) -> bool {
    effective().grants(cap)
}

/// How this process can get BPF run-time statistics (see
/// [`caps::bpf_stats`]).
pub fn bpf_stats() -> caps::BpfStats {
    let proc = ProcFs::default();
    let sysctl = procfs::sysctl(proc.root(), "kernel/bpf_stats_enabled").ok();
    caps::bpf_stats(effective_in(&proc), sysctl.as_deref())
}

/// Compatibility for callers written before capabilities were checked: what
/// they guarded was loading eBPF programs, so this is [`require_bpf`].
pub fn require_root(what: &str) -> Result<()> {
    require_bpf(what)
}

/// Path of the running kernel's BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Fails unless the kernel exposes BTF (CONFIG_DEBUG_INFO_BTF).
pub fn require_btf() -> Result<()> {
    if !Path::new(VMLINUX_BTF).exists() {
        bail!(
            "this kernel has no BTF ({VMLINUX_BTF} is missing): tailprobe resolves kernel \
             struct offsets from BTF and attaches BTF tracepoints. Use a kernel built with \
             CONFIG_DEBUG_INFO_BTF=y (Debian, Ubuntu, Fedora and RHEL kernels are)"
        );
    }
    Ok(())
}
