//! Capabilities: the effective set this process holds (`CapEff` in
//! `/proc/self/status`, the same bits `capget(2)` returns) and which ones
//! each command needs on the running kernel. Pure parsing and decisions
//! here; the checks that read the live process are in `privileges`.

use std::fmt;

/// The capabilities tailprobe's commands need (numbers from
/// `linux/capability.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cap {
    /// Override file permissions (root-owned sysfs knobs, the journal).
    DacOverride = 1,
    /// Read another user's `/proc/<pid>/numa_maps`, open perf counters on it.
    SysPtrace = 19,
    /// BPF and perf before 5.8; BPF run-time statistics, mounting tracefs.
    SysAdmin = 21,
    /// Affinity and priority of other users' threads; raised priorities.
    SysNice = 23,
    /// perf events and tracing programs (5.8+).
    Perfmon = 38,
    /// Loading BPF programs and maps (5.8+).
    Bpf = 39,
}

impl Cap {
    pub fn bit(self) -> u64 {
        1u64 << (self as u32)
    }

    pub fn name(self) -> &'static str {
        match self {
            Cap::DacOverride => "CAP_DAC_OVERRIDE",
            Cap::SysPtrace => "CAP_SYS_PTRACE",
            Cap::SysAdmin => "CAP_SYS_ADMIN",
            Cap::SysNice => "CAP_SYS_NICE",
            Cap::Perfmon => "CAP_PERFMON",
            Cap::Bpf => "CAP_BPF",
        }
    }

    /// The lower-case name `setcap` and systemd take (`cap_bpf`).
    pub fn setcap_name(self) -> String {
        self.name().to_ascii_lowercase()
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A capability set (a 64-bit mask, as the kernel prints it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapSet(pub u64);

impl CapSet {
    /// Whether `cap` is in the set, counting what CAP_SYS_ADMIN still
    /// grants on 5.8+ kernels (`bpf_capable()` and `perfmon_capable()`
    /// accept it for CAP_BPF and CAP_PERFMON).
    pub fn grants(self, cap: Cap) -> bool {
        let admin = self.0 & Cap::SysAdmin.bit() != 0;
        self.0 & cap.bit() != 0 || (admin && matches!(cap, Cap::Bpf | Cap::Perfmon))
    }

    /// The capabilities of `need` this set does not grant, in order.
    pub fn missing(self, need: &[Cap]) -> Vec<Cap> {
        need.iter().copied().filter(|c| !self.grants(*c)).collect()
    }
}

/// How the programs' run-time statistics (run count, run time) can be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BpfStats {
    /// Turn them on ourselves (BPF_ENABLE_STATS needs CAP_SYS_ADMIN).
    Enable,
    /// Already on for the whole machine (`kernel.bpf_stats_enabled=1`).
    AlreadyOn,
    /// Neither: no cost figures.
    Unavailable,
}

/// The way to BPF run-time statistics for a process holding `set`, given
/// the text of `/proc/sys/kernel/bpf_stats_enabled` (when readable).
pub fn bpf_stats(set: CapSet, sysctl: Option<&str>) -> BpfStats {
    if sysctl.is_some_and(|s| s.trim() == "1") {
        BpfStats::AlreadyOn
    } else if set.0 & Cap::SysAdmin.bit() != 0 {
        BpfStats::Enable
    } else {
        BpfStats::Unavailable
    }
}

/// The effective set from a `/proc/<pid>/status` text (`CapEff:` line, hex).
pub fn effective_from_status(status: &str) -> Option<CapSet> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok().map(CapSet)
}

/// (major, minor) from a kernel release string (`6.1.0-18-amd64`).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.trim().split(['.', '-', '+']);
    let major = it.next()?.parse().ok()?;
    let minor = it
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    Some((major, minor))
}

/// What loading and attaching tailprobe's eBPF programs needs: CAP_BPF and
/// CAP_PERFMON on 5.8 and later, CAP_SYS_ADMIN before (the split
/// capabilities did not exist). An unknown version is taken as new.
pub fn for_bpf(kernel: Option<(u32, u32)>) -> Vec<Cap> {
    match kernel {
        Some(v) if v < (5, 8) => vec![Cap::SysAdmin],
        _ => vec![Cap::Bpf, Cap::Perfmon],
    }
}

/// The refusal for `what` when `missing` is not empty: names exactly the
/// missing capabilities and how to grant them. `None` when nothing misses.
pub fn refusal(what: &str, need: &[Cap], missing: &[Cap], euid: u32) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    let names = |v: &[Cap]| v.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ");
    let setcap = need
        .iter()
        .map(|c| c.setcap_name())
        .collect::<Vec<_>>()
        .join(",");
    let ambient = need.iter().map(|c| c.name()).collect::<Vec<_>>().join(" ");
    Some(format!(
        "{what} needs {} and this process lacks {} (effective uid {euid}); run it as root, \
         give the binary file capabilities (`sudo setcap {setcap}+ep $(command -v tailprobe)`), \
         or in a systemd unit set AmbientCapabilities={ambient}",
        names(need),
        names(missing),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_stats_from_caps_and_sysctl() {
        let admin = CapSet(Cap::SysAdmin.bit());
        let bpf = CapSet(Cap::Bpf.bit() | Cap::Perfmon.bit());
        assert_eq!(bpf_stats(admin, Some("0\n")), BpfStats::Enable);
        assert_eq!(bpf_stats(admin, None), BpfStats::Enable);
        assert_eq!(bpf_stats(bpf, Some("0")), BpfStats::Unavailable);
        assert_eq!(bpf_stats(bpf, Some("1\n")), BpfStats::AlreadyOn);
    }

    #[test]
    fn status_and_sets() {
        // Root in this project's build container (CAP_SYS_RESOURCE dropped).
        let root = effective_from_status("Name:\tx\nCapEff:\t000001fffeffffff\n").unwrap();
        assert!(root
            .missing(&[Cap::Bpf, Cap::Perfmon, Cap::SysNice])
            .is_empty());
        let bpf_perfmon = CapSet(Cap::Bpf.bit() | Cap::Perfmon.bit());
        assert_eq!(
            effective_from_status("CapEff:\t000000c000000000\n"),
            Some(bpf_perfmon)
        );
        assert_eq!(bpf_perfmon.missing(&[Cap::Bpf, Cap::Perfmon]), vec![]);
        assert_eq!(bpf_perfmon.missing(&[Cap::SysNice]), vec![Cap::SysNice]);
        // CAP_SYS_ADMIN still grants the BPF and perf checks.
        let admin = CapSet(Cap::SysAdmin.bit());
        assert!(admin.missing(&[Cap::Bpf, Cap::Perfmon]).is_empty());
        assert_eq!(admin.missing(&[Cap::SysNice]), vec![Cap::SysNice]);
        let only_bpf = CapSet(Cap::Bpf.bit());
        assert_eq!(
            only_bpf.missing(&[Cap::Bpf, Cap::Perfmon]),
            vec![Cap::Perfmon]
        );
        assert_eq!(effective_from_status("Name:\tx\n"), None);
        assert_eq!(effective_from_status("CapEff:\tzz\n"), None);
    }

    #[test]
    fn kernel_versions_and_needs() {
        assert_eq!(kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("5.4.0"), Some((5, 4)));
        assert_eq!(kernel_version("6.18.44-fc-v1045"), Some((6, 18)));
        assert_eq!(kernel_version("5.10+"), Some((5, 10)));
        assert_eq!(kernel_version("junk"), None);
        assert_eq!(for_bpf(Some((5, 4))), vec![Cap::SysAdmin]);
        assert_eq!(for_bpf(Some((5, 8))), vec![Cap::Bpf, Cap::Perfmon]);
        assert_eq!(for_bpf(None), vec![Cap::Bpf, Cap::Perfmon]);
    }

    #[test]
    fn refusal_lists_exactly_the_missing() {
        let need = [Cap::Bpf, Cap::Perfmon];
        assert_eq!(refusal("tailprobe record", &need, &[], 0), None);
        let m = refusal("tailprobe record", &need, &[Cap::Perfmon], 65534).unwrap();
        assert!(m.contains("lacks CAP_PERFMON (effective uid 65534)"), "{m}");
        assert!(m.contains("setcap cap_bpf,cap_perfmon+ep"), "{m}");
        assert!(m.contains("AmbientCapabilities=CAP_BPF CAP_PERFMON"), "{m}");
    }
}
