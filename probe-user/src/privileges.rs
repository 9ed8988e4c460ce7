//! Refusing early and clearly when we lack what the kernel will demand.

use anyhow::{bail, Result};
use std::path::Path;

/// Fails with a plain message unless running as root.
pub fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!(
            "{what} needs root (it loads eBPF programs: CAP_BPF and CAP_PERFMON); \
             run it as root, e.g. `sudo tailprobe ...` (effective uid is {euid})"
        );
    }
    Ok(())
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
