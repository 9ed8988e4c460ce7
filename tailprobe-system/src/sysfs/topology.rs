//! CPU -> last-level cache and NUMA node, for classifying migrations.

use std::{fs, path::Path};

use probe_common::CpuTopo;

use super::cache;
use crate::cpulist;

/// Which LLC and node each online CPU belongs to. `root` is the sysfs mount
/// (`/sys`). CPUs whose cache information is missing (some VMs) get an LLC id
/// of their own node, so no migration is ever called cross-LLC without
/// evidence; `None` when even the online list is unreadable.
pub fn cpu_topology(root: &Path) -> Option<Vec<(u32, CpuTopo)>> {
    let cpu_dir = root.join("devices/system/cpu");
    let online = cpulist::parse(&fs::read_to_string(cpu_dir.join("online")).ok()?).ok()?;
    let mut out = Vec::with_capacity(online.len());
    for cpu in online {
        let node_id = node_of(root, cpu).unwrap_or(0);
        let llc_id = cache::llc(root, cpu)
            .and_then(|l| l.key())
            .unwrap_or(node_id | 0x8000_0000);
        out.push((cpu, CpuTopo { llc_id, node_id }));
    }
    Some(out)
}

/// The node of a CPU: the `nodeN` link in its directory, else the node whose
/// cpulist contains it.
fn node_of(root: &Path, cpu: u32) -> Option<u32> {
    let dir = root.join(format!("devices/system/cpu/cpu{cpu}"));
    if let Ok(rd) = fs::read_dir(&dir) {
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name.strip_prefix("node").and_then(|n| n.parse().ok()) {
                return Some(n);
            }
        }
    }
    let rd = fs::read_dir(root.join("devices/system/node")).ok()?;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(n) = name
            .to_string_lossy()
            .strip_prefix("node")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let list = fs::read_to_string(e.path().join("cpulist")).ok()?;
        if cpulist::parse_maybe_empty(&list).ok()?.contains(&cpu) {
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::cache::tests::w;

    /// Two sockets, two CPUs each, one L3 per socket (shape of a 2-node server).
    #[test]
    fn two_node_fixture() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        w(r, "devices/system/cpu/online", "0-3\n");
        w(r, "devices/system/node/node0/cpulist", "0-1\n");
        w(r, "devices/system/node/node1/cpulist", "2-3\n");
        for cpu in 0..4u32 {
            let base = format!("devices/system/cpu/cpu{cpu}/cache");
            w(r, &format!("{base}/index0/level"), "1\n");
            w(r, &format!("{base}/index0/type"), "Data\n");
            w(r, &format!("{base}/index0/id"), &format!("{cpu}\n"));
            w(r, &format!("{base}/index3/level"), "3\n");
            w(r, &format!("{base}/index3/type"), "Unified\n");
            w(
                r,
                &format!("{base}/index3/shared_cpu_list"),
                if cpu < 2 { "0-1\n" } else { "2-3\n" },
            );
        }
        let t = cpu_topology(r).unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t[0].1.node_id, 0);
        assert_eq!(t[3].1.node_id, 1);
        assert_eq!(t[0].1.llc_id, t[1].1.llc_id);
        assert_ne!(t[1].1.llc_id, t[2].1.llc_id);
    }

    #[test]
    fn missing_cache_info_is_not_cross_llc() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        w(r, "devices/system/cpu/online", "0-1\n");
        fs::create_dir_all(r.join("devices/system/cpu/cpu0/node0")).unwrap();
        fs::create_dir_all(r.join("devices/system/cpu/cpu1/node0")).unwrap();
        let t = cpu_topology(r).unwrap();
        assert_eq!(t[0].1, t[1].1);
    }

    #[test]
    fn unreadable_root_is_none() {
        assert!(cpu_topology(Path::new("/nonexistent-tailprobe")).is_none());
    }
}
