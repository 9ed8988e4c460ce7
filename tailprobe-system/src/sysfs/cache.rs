//! The last-level cache of a CPU, from `<sys>/devices/system/cpu/cpuN/cache/indexM/`.
//!
//! The one reader behind migration classes (`sysfs::topology`), the node
//! inventory's LLC groups and the noise generator's buffer size.

use std::{fs, path::Path};

use crate::cpulist;

/// The highest-level data or unified cache of one CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Llc {
    /// Cache level (3 on most servers, 2 on some small VMs).
    pub level: u32,
    /// The `id` file; absent on some VMs and older kernels.
    pub id: Option<u32>,
    /// The `size` file as the kernel writes it (`32768K`).
    pub size: Option<String>,
    /// CPUs sharing this cache (`shared_cpu_list`), ascending; empty when
    /// the file is missing or unreadable.
    pub shared_cpus: Vec<u32>,
}

impl Llc {
    /// Size in bytes, `None` when sysfs does not give it.
    pub fn size_bytes(&self) -> Option<u64> {
        self.size.as_deref().and_then(parse_size)
    }

    /// An identity that two CPUs share exactly when they share this cache:
    /// the `id`, else the first CPU sharing it, with the level in the top
    /// byte because distinct levels may reuse small ids. `None` when sysfs
    /// gives neither.
    pub fn key(&self) -> Option<u32> {
        let id = self.id.or_else(|| self.shared_cpus.first().copied())?;
        Some((self.level << 24) | (id & 0x00ff_ffff))
    }
}

/// The last-level cache of `cpu` under the sysfs mount `sys` (`/sys`):
/// among its `indexM` entries that are not instruction caches and state a
/// level, the highest level (the lowest index on a tie). `None` when the CPU
/// has no readable cache information (some VMs).
pub fn llc(sys: &Path, cpu: u32) -> Option<Llc> {
    let dir = sys.join(format!("devices/system/cpu/cpu{cpu}/cache"));
    let mut indices: Vec<u32> = fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            name.to_str()?.strip_prefix("index")?.parse().ok()
        })
        .collect();
    indices.sort_unstable();
    let mut best: Option<Llc> = None;
    for i in indices {
        let d = dir.join(format!("index{i}"));
        if read(&d.join("type")).as_deref() == Some("Instruction") {
            continue;
        }
        let Some(level) = read(&d.join("level")).and_then(|s| s.parse().ok()) else {
            continue;
        };
        if best.as_ref().is_some_and(|b| b.level >= level) {
            continue;
        }
        best = Some(Llc {
            level,
            id: read(&d.join("id")).and_then(|s| s.parse().ok()),
            size: read(&d.join("size")),
            shared_cpus: read(&d.join("shared_cpu_list"))
                .and_then(|s| cpulist::parse(&s).ok())
                .unwrap_or_default(),
        });
    }
    best
}

/// A cache size as sysfs writes it: "32768K", "1M", "512" -> bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mul)
}

fn read(p: &Path) -> Option<String> {
    Some(fs::read_to_string(p).ok()?.trim().to_string())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Write a fixture file `rel` under `root`, creating its directories.
    pub(in crate::sysfs) fn w(root: &Path, rel: &str, s: &str) {
        let f = root.join(rel);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, s).unwrap();
    }

    fn index(root: &Path, cpu: u32, i: u32, files: &[(&str, &str)]) {
        for (name, v) in files {
            w(
                root,
                &format!("devices/system/cpu/cpu{cpu}/cache/index{i}/{name}"),
                &format!("{v}\n"),
            );
        }
    }

    /// A CPU of a server: L1d, L1i, L2, L3 (the L1i is the largest index
    /// by size among the L1s here, to show instruction caches are skipped).
    #[test]
    fn highest_data_or_unified_level_wins() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        index(
            r,
            5,
            0,
            &[
                ("level", "1"),
                ("type", "Data"),
                ("size", "48K"),
                ("id", "5"),
            ],
        );
        index(
            r,
            5,
            1,
            &[("level", "1"), ("type", "Instruction"), ("size", "64K")],
        );
        index(
            r,
            5,
            2,
            &[
                ("level", "2"),
                ("type", "Unified"),
                ("size", "2048K"),
                ("id", "5"),
            ],
        );
        index(
            r,
            5,
            3,
            &[
                ("level", "3"),
                ("type", "Unified"),
                ("size", "107520K"),
                ("shared_cpu_list", "0-31,64-95"),
            ],
        );
        let l = llc(r, 5).unwrap();
        assert_eq!(l.level, 3);
        assert_eq!(l.id, None);
        assert_eq!(l.size_bytes(), Some(107_520 << 10));
        assert_eq!(l.shared_cpus.len(), 64);
        // No id: the first CPU sharing it names it, with the level on top.
        assert_eq!(l.key(), Some(3 << 24));
    }

    #[test]
    fn a_lone_instruction_cache_is_no_llc() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        index(
            r,
            0,
            0,
            &[("level", "1"), ("type", "Instruction"), ("size", "32K")],
        );
        assert_eq!(llc(r, 0), None);
        assert_eq!(llc(r, 1), None, "no cache directory at all");
    }

    #[test]
    fn key_prefers_the_id_and_keeps_levels_apart() {
        let l2 = Llc {
            level: 2,
            id: Some(7),
            size: None,
            shared_cpus: vec![7],
        };
        let l3 = Llc {
            level: 3,
            id: Some(7),
            size: None,
            shared_cpus: vec![0, 7],
        };
        assert_ne!(l2.key(), l3.key());
        assert_eq!(l3.key(), Some((3 << 24) | 7));
        let bare = Llc {
            level: 3,
            id: None,
            size: None,
            shared_cpus: vec![],
        };
        assert_eq!(bare.key(), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("32768K"), Some(32 << 20));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999999999999G"), None);
    }
}
