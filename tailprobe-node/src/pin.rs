//! Pinning: where a target may run and allocate. Launch a command pinned
//! (CPU affinity and MPOL_BIND set in the child before exec), or re-pin
//! every thread of a running process through the journal.

use std::{fs, io, os::unix::process::CommandExt as _, path::Path, process::Command, str::FromStr};

use serde::Serialize;

use crate::{
    affinity, fsx, inventory,
    journal::{Journal, JournalError},
    NotAvailable, Roots,
};
use tailprobe_system::{cpulist, procfs::ProcFs};

/// Where to pin: `node:N`, `cpus:LIST` or `device-local`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSpec {
    Node(u32),
    Cpus(Vec<u32>),
    DeviceLocal,
}

impl FromStr for PinSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "device-local" {
            return Ok(PinSpec::DeviceLocal);
        }
        if let Some(n) = s.strip_prefix("node:") {
            return n
                .trim()
                .parse()
                .map(PinSpec::Node)
                .map_err(|_| format!("bad node number {n:?} (example: node:0)"));
        }
        if let Some(l) = s.strip_prefix("cpus:") {
            return cpulist::parse(l)
                .map(PinSpec::Cpus)
                .map_err(|e| e.to_string());
        }
        Err(format!(
            "unknown placement {s:?}: use node:N, cpus:LIST (e.g. cpus:0-15) or device-local"
        ))
    }
}

/// A resolved placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub cpus: Vec<u32>,
    /// The node memory is bound to: the node of the CPUs when they all sit
    /// on one node; `None` when they span nodes.
    pub mem_node: Option<u32>,
    /// Words: "node1 (device-local: 4 accelerators)", "CPUs 0-3".
    pub why: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(transparent)]
    OutOfRange(#[from] affinity::OutOfRange),
    #[error("NUMA node {node} does not exist (nodes here: {present})")]
    NoNode { node: u32, present: String },
    #[error(transparent)]
    NotAvailable(#[from] NotAvailable),
    #[error("cannot read {0}: {1}")]
    Io(std::path::PathBuf, io::Error),
    #[error("no process with pid {0} (is it still running?)")]
    PidGone(u32),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// CPUs of each node: (node, cpus).
pub fn node_cpus(roots: &Roots) -> Vec<(u32, Vec<u32>)> {
    inventory::numa_nodes(roots)
        .into_iter()
        .map(|n| {
            (
                n.id,
                cpulist::parse_maybe_empty(&n.cpus).unwrap_or_default(),
            )
        })
        .collect()
}

/// Nodes the CPUs sit on.
pub fn nodes_of(roots: &Roots, cpus: &[u32]) -> Vec<u32> {
    node_cpus(roots)
        .into_iter()
        .filter(|(_, nc)| nc.iter().any(|c| cpus.contains(c)))
        .map(|(n, _)| n)
        .collect()
}

/// Resolve a spec against this node.
pub fn resolve(roots: &Roots, spec: &PinSpec) -> Result<Placement, PinError> {
    let online = affinity::online_cpus(&roots.sys)
        .map_err(|e| PinError::Io(roots.sys.join("devices/system/cpu/online"), e))?;
    let nodes = node_cpus(roots);
    let by_node = |node: u32, why: String| -> Result<Placement, PinError> {
        let Some((_, cpus)) = nodes.iter().find(|(n, _)| *n == node) else {
            let ids: Vec<u32> = nodes.iter().map(|(n, _)| *n).collect();
            return Err(PinError::NoNode {
                node,
                present: cpulist::Display(&ids).to_string(),
            });
        };
        let cpus: Vec<u32> = cpus
            .iter()
            .copied()
            .filter(|c| online.contains(c))
            .collect();
        if cpus.is_empty() {
            return Err(
                NotAvailable(format!("node{node} has no online CPUs (memory-only node)")).into(),
            );
        }
        Ok(Placement {
            cpus,
            mem_node: Some(node),
            why,
        })
    };
    match spec {
        PinSpec::Node(n) => by_node(*n, format!("node{n}")),
        PinSpec::Cpus(c) => {
            affinity::check_online(c, &online)?;
            let ns = nodes_of(roots, c);
            Ok(Placement {
                cpus: c.clone(),
                mem_node: (ns.len() == 1).then(|| ns[0]),
                why: format!("CPUs {}", cpulist::Display(c)),
            })
        }
        PinSpec::DeviceLocal => {
            let acc = inventory::accelerators(roots);
            let Some(n) = inventory::device_local_node(&acc) else {
                return Err(NotAvailable(if acc.is_empty() {
                    "device-local placement needs a PCI accelerator (NVIDIA 0x10de, AMD 0x1002); \
                     this node has none: pin with node:N or cpus:LIST"
                        .to_string()
                } else {
                    format!(
                        "the NUMA node of the {} accelerator(s) is unknown (numa_node -1): \
                         pin with node:N or cpus:LIST",
                        acc.len()
                    )
                })
                .into());
            };
            let k = acc.iter().filter(|a| a.numa_node == Some(n)).count();
            by_node(
                n,
                format!("node{n} (device-local: {k} of {} accelerators)", acc.len()),
            )
        }
    }
}

/// MPOL_BIND from include/uapi/linux/mempolicy.h.
const MPOL_BIND: libc::c_int = 2;
const NODEMASK_WORDS: usize = 16;

/// Bind the calling thread's future allocations to `node`.
fn bind_memory(mask: &[libc::c_ulong; NODEMASK_WORDS]) -> io::Result<()> {
    let bits = (NODEMASK_WORDS * 8 * std::mem::size_of::<libc::c_ulong>()) as libc::c_ulong;
    // SAFETY: `mask` is a valid array of `bits` bits; set_mempolicy reads it
    // and keeps no pointer.
    let rc = unsafe { libc::syscall(libc::SYS_set_mempolicy, MPOL_BIND, mask.as_ptr(), bits) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Make `cmd` start pinned: affinity and (when the placement has one node)
/// memory bound to that node, both set in the child before exec, so every
/// page it touches is placed from the first.
pub fn pin_command(cmd: &mut Command, p: &Placement) -> io::Result<()> {
    // Build the masks here: only async-signal-safe calls run in the child.
    let set = affinity::cpu_set(&p.cpus)?;
    let mut mask: [libc::c_ulong; NODEMASK_WORDS] = [0; NODEMASK_WORDS];
    let node = p.mem_node;
    if let Some(n) = node {
        let per = 8 * std::mem::size_of::<libc::c_ulong>();
        let (w, b) = (n as usize / per, n as usize % per);
        if w >= NODEMASK_WORDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("node {n} is too large"),
            ));
        }
        mask[w] |= 1 << b;
    }
    // SAFETY: the closure runs in the forked child before exec and only
    // makes the sched_setaffinity and set_mempolicy system calls on data
    // prepared before the fork (no allocation: `set` and `mask` were built
    // in the parent and are only read).
    unsafe {
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(io::Error::last_os_error());
            }
            if node.is_some() {
                bind_memory(&mask)?;
            }
            Ok(())
        });
    }
    Ok(())
}

/// One thread's affinity before and after a re-pin.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadPin {
    pub tid: u32,
    pub comm: String,
    pub before: String,
    pub after: String,
    /// Set when the thread could not be re-pinned (it exited, ...).
    pub error: Option<String>,
}

/// `Cpus_allowed_list` of a thread as the kernel shows it.
pub fn allowed_list(proc: &ProcFs, pid: u32, tid: u32) -> Option<String> {
    proc.thread_status(pid, tid).map(|s| s.cpus_allowed_list)
}

/// `Mems_allowed_list` of a process.
pub fn mems_allowed(proc_root: &Path, pid: u32) -> Option<String> {
    let s = fs::read_to_string(proc_root.join(format!("{pid}/status"))).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Mems_allowed_list:"))
        .map(|v| v.trim().to_string())
}

/// Re-pin every thread of `pid` to `cpus`, journaling each thread's mask.
pub fn repin(
    roots: &Roots,
    journal: &mut Journal,
    pid: u32,
    cpus: &[u32],
) -> Result<Vec<ThreadPin>, PinError> {
    let proc = ProcFs::new(&roots.proc);
    if !proc.is_alive(pid) {
        return Err(PinError::PidGone(pid));
    }
    let tids = proc.threads(pid);
    if tids.is_empty() {
        return Err(PinError::PidGone(pid));
    }
    let mut out = Vec::new();
    for tid in tids {
        let before = allowed_list(&proc, pid, tid).unwrap_or_default();
        let comm = proc.thread_comm(pid, tid).unwrap_or_default();
        let error = match journal.set_thread_affinity(pid, tid, cpus) {
            Ok(()) => None,
            Err(JournalError::Affinity { source, .. })
                if source.raw_os_error() == Some(libc::ESRCH) =>
            {
                Some("thread exited".to_string())
            }
            Err(e) => return Err(e.into()),
        };
        let after = allowed_list(&proc, pid, tid).unwrap_or_default();
        out.push(ThreadPin {
            tid,
            comm,
            before,
            after,
            error,
        });
    }
    if !proc.is_alive(pid) {
        return Err(PinError::PidGone(pid));
    }
    Ok(out)
}

/// Threads of `pid` whose allowed CPUs are no longer `cpus` (the server
/// changed its affinity back, or started threads with its own mask).
pub fn overridden(roots: &Roots, pid: u32, cpus: &[u32]) -> Vec<(u32, String)> {
    let proc = ProcFs::new(&roots.proc);
    let want = cpulist::Display(cpus).to_string();
    proc.threads(pid)
        .into_iter()
        .filter_map(|tid| {
            let now = allowed_list(&proc, pid, tid)?;
            let norm = cpulist::parse(&now)
                .map(|v| cpulist::Display(&v).to_string())
                .unwrap_or(now);
            (norm != want).then_some((tid, norm))
        })
        .collect()
}

/// Read the CPUs in `<sys>/devices/system/node/nodeN/cpulist`.
pub fn read_node_cpus(roots: &Roots, node: u32) -> Option<Vec<u32>> {
    let s = fsx::read_opt(
        &roots
            .sys
            .join(format!("devices/system/node/node{node}/cpulist")),
    )?;
    cpulist::parse_maybe_empty(&s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_node(root: &Path) {
        let w = |rel: &str, s: &str| {
            let f = root.join(rel);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, s).unwrap();
        };
        w("devices/system/cpu/online", "0-7\n");
        w("devices/system/node/node0/cpulist", "0-3\n");
        w("devices/system/node/node1/cpulist", "4-7\n");
        for (bdf, node) in [
            ("0000:18:00.0", 0),
            ("0000:9a:00.0", 1),
            ("0000:ab:00.0", 1),
        ] {
            w(&format!("bus/pci/devices/{bdf}/vendor"), "0x10de\n");
            w(&format!("bus/pci/devices/{bdf}/class"), "0x030200\n");
            w(
                &format!("bus/pci/devices/{bdf}/numa_node"),
                &format!("{node}\n"),
            );
        }
    }

    #[test]
    fn specs_parse() {
        assert_eq!("node:1".parse::<PinSpec>(), Ok(PinSpec::Node(1)));
        assert_eq!(
            "cpus:0-2".parse::<PinSpec>(),
            Ok(PinSpec::Cpus(vec![0, 1, 2]))
        );
        assert_eq!("device-local".parse::<PinSpec>(), Ok(PinSpec::DeviceLocal));
        assert!("socket:0"
            .parse::<PinSpec>()
            .unwrap_err()
            .contains("node:N"));
        assert!("node:x".parse::<PinSpec>().is_err());
    }

    #[test]
    fn resolves_on_a_two_node_fixture() {
        let d = tempfile::tempdir().unwrap();
        two_node(d.path());
        let r = Roots::new(d.path(), "/proc");
        let p = resolve(&r, &PinSpec::DeviceLocal).unwrap();
        assert_eq!(p.cpus, vec![4, 5, 6, 7]);
        assert_eq!(p.mem_node, Some(1));
        assert!(p.why.contains("2 of 3"), "{}", p.why);
        let p = resolve(&r, &PinSpec::Cpus(vec![2, 5])).unwrap();
        assert_eq!(p.mem_node, None);
        let e = resolve(&r, &PinSpec::Cpus(vec![7, 8, 9]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("8-9") && e.contains("online CPUs: 0-7"), "{e}");
        let e = resolve(&r, &PinSpec::Node(2)).unwrap_err().to_string();
        assert!(e.contains("nodes here: 0-1"), "{e}");
    }
}
