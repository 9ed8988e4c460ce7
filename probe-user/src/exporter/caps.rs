//! What the exporter needs from the kernel, checked from its effective
//! capabilities rather than its uid, so it can run as a non-privileged
//! container or a systemd unit with only the capabilities it uses.

use anyhow::{bail, Result};

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The `CapEff` mask of a status file.
pub fn effective(status_text: &str) -> Option<u64> {
    status_text
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

pub fn has(mask: u64, cap: u32) -> bool {
    mask & (1u64 << cap) != 0
}

/// Loading and attaching tracing programs needs CAP_BPF and CAP_PERFMON
/// (Linux >= 5.8), or CAP_SYS_ADMIN.
pub fn check_load(mask: u64) -> Result<()> {
    if has(mask, CAP_SYS_ADMIN) || (has(mask, CAP_BPF) && has(mask, CAP_PERFMON)) {
        return Ok(());
    }
    bail!(
        "tailprobe exporter needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) to load its \
         eBPF programs; effective capabilities are {mask:#x}. Run it as root, or grant them \
         (systemd: AmbientCapabilities=CAP_BPF CAP_PERFMON ...; Kubernetes: \
         securityContext.capabilities.add; see docs/fleet.md)"
    )
}

/// How the programs' run-time statistics can be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stats {
    /// Turn them on ourselves (BPF_ENABLE_STATS needs CAP_SYS_ADMIN).
    Enable,
    /// Already on for the whole machine (`kernel.bpf_stats_enabled=1`).
    AlreadyOn,
    /// Neither: no cost metrics.
    Unavailable,
}

pub fn stats(mask: u64, sysctl: Option<&str>) -> Stats {
    if sysctl.is_some_and(|s| s.trim() == "1") {
        Stats::AlreadyOn
    } else if has(mask, CAP_SYS_ADMIN) {
        Stats::Enable
    } else {
        Stats::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        let root = effective("Name:\tx\nCapEff:\t000001ffffffffff\n").unwrap();
        assert!(check_load(root).is_ok());
        assert_eq!(stats(root, Some("0\n")), Stats::Enable);
        let bpf = (1u64 << CAP_BPF) | (1 << CAP_PERFMON);
        assert!(check_load(bpf).is_ok());
        assert_eq!(stats(bpf, Some("0")), Stats::Unavailable);
        assert_eq!(stats(bpf, Some("1\n")), Stats::AlreadyOn);
        let e = check_load(1 << CAP_BPF).unwrap_err().to_string();
        assert!(e.contains("CAP_PERFMON"), "{e}");
        assert_eq!(effective("CapEff: zz"), None);
    }
}
