//! The CPU controller's accounting for a process's cgroup: where it is
//! (cgroup v1 `cpu` hierarchy, or the v2 unified tree), its quota, and its
//! throttling counters, for the cgroup and each ancestor (a quota on a
//! parent throttles the children). Everything is read under a root path so
//! tests run on fixture trees.
//!
//! v1: `cpu.cfs_quota_us` (-1: none), `cpu.cfs_period_us`, `cpu.stat`
//! (`nr_periods`, `nr_throttled`, `throttled_time` in ns).
//! v2: `cpu.max` (`max 100000` or `QUOTA PERIOD` in us), `cpu.stat`
//! (`nr_periods`, `nr_throttled`, `throttled_usec`).

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Version {
    V1,
    V2,
}

/// Where a process's CPU-controller cgroup lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuCgroup {
    pub version: Version,
    /// The controller's mount point (as the kernel shows it).
    pub mountpoint: PathBuf,
    /// The process's path inside the hierarchy, e.g. `/system.slice/x`.
    pub path: String,
}

/// Throttling counters of one cgroup level at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct CpuStat {
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_ns: u64,
}

/// One level of the hierarchy: its path, quota and counters.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Level {
    pub path: String,
    /// (quota us, period us); None: no quota.
    pub quota: Option<(u64, u64)>,
    pub stat: CpuStat,
}

/// The line of `/proc/<pid>/cgroup` and the mount to use for the CPU
/// controller: a v1 hierarchy with `cpu`, else the v2 tree.
pub fn locate_in(proc_cgroup: &str, mounts: &str) -> Option<CpuCgroup> {
    let mut v2_path = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if ctrls.is_empty() {
            v2_path = Some(path.to_string());
        } else if ctrls.split(',').any(|c| c == "cpu") {
            if let Some(mp) = mount_of(mounts, |fstype, opts| {
                fstype == "cgroup" && opts.split(',').any(|o| o == "cpu")
            }) {
                return Some(CpuCgroup {
                    version: Version::V1,
                    mountpoint: mp,
                    path: path.to_string(),
                });
            }
        }
    }
    let path = v2_path?;
    let mp = mount_of(mounts, |fstype, _| fstype == "cgroup2")?;
    Some(CpuCgroup {
        version: Version::V2,
        mountpoint: mp,
        path,
    })
}

fn mount_of(mounts: &str, want: impl Fn(&str, &str) -> bool) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 4 && want(f[2], f[3])).then(|| PathBuf::from(f[1]))
    })
}

/// Find the CPU cgroup of `pid`, reading `<root>/proc/<pid>/cgroup` and
/// `<root>/proc/self/mounts`.
pub fn locate(root: &Path, pid: u32) -> Option<CpuCgroup> {
    let cg = fs::read_to_string(root.join(format!("proc/{pid}/cgroup"))).ok()?;
    let mounts = fs::read_to_string(root.join("proc/self/mounts")).ok()?;
    locate_in(&cg, &mounts)
}

impl CpuCgroup {
    fn dir(&self, root: &Path, path: &str) -> PathBuf {
        let mp = self
            .mountpoint
            .strip_prefix("/")
            .unwrap_or(&self.mountpoint);
        root.join(mp).join(path.trim_start_matches('/'))
    }

    /// The process's cgroup and every ancestor up to the root of the
    /// hierarchy, leaf first. Levels whose files cannot be read are left out.
    pub fn read_levels(&self, root: &Path) -> Vec<Level> {
        let mut out = Vec::new();
        let mut path = self.path.clone();
        loop {
            let dir = self.dir(root, &path);
            if let Some(stat) = read_stat(&dir, self.version) {
                out.push(Level {
                    path: path.clone(),
                    quota: read_quota(&dir, self.version),
                    stat,
                });
            }
            if path == "/" || path.is_empty() {
                break;
            }
            path = match path.rfind('/') {
                Some(0) | None => "/".to_string(),
                Some(i) => path[..i].to_string(),
            };
        }
        out
    }
}

pub fn parse_stat(text: &str, version: Version) -> CpuStat {
    let mut s = CpuStat::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(k), Some(v)) = (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) else {
            continue;
        };
        match (k, version) {
            ("nr_periods", _) => s.nr_periods = v,
            ("nr_throttled", _) => s.nr_throttled = v,
            ("throttled_time", Version::V1) => s.throttled_ns = v,
            ("throttled_usec", Version::V2) => s.throttled_ns = v.saturating_mul(1000),
            _ => {}
        }
    }
    s
}

fn read_stat(dir: &Path, version: Version) -> Option<CpuStat> {
    let text = fs::read_to_string(dir.join("cpu.stat")).ok()?;
    // A v2 cgroup without the cpu controller has cpu.stat without these.
    text.contains("nr_periods")
        .then(|| parse_stat(&text, version))
}

/// (quota us, period us), None when unlimited.
pub fn parse_quota_v2(cpu_max: &str) -> Option<(u64, u64)> {
    let mut it = cpu_max.split_whitespace();
    let q = it.next()?.parse().ok()?;
    let p = it.next()?.parse().ok()?;
    Some((q, p))
}

fn read_quota(dir: &Path, version: Version) -> Option<(u64, u64)> {
    match version {
        Version::V2 => parse_quota_v2(&fs::read_to_string(dir.join("cpu.max")).ok()?),
        Version::V1 => {
            let q: i64 = fs::read_to_string(dir.join("cpu.cfs_quota_us"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let p: u64 = fs::read_to_string(dir.join("cpu.cfs_period_us"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            (q > 0).then_some((q as u64, p))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    #[test]
    fn v1_cpu_hierarchy_wins_over_unified() {
        let cg = "4:memory:/x\n1:cpu:/svc/a\n0::/user.slice\n";
        let c = locate_in(cg, MOUNTS).expect("found");
        assert_eq!(c.version, Version::V1);
        assert_eq!(c.mountpoint, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(c.path, "/svc/a");
        // Combined "cpu,cpuacct" v1 mounts too.
        let m = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n";
        let c = locate_in("3:cpu,cpuacct:/k\n", m).expect("found");
        assert_eq!(c.mountpoint, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
    }

    #[test]
    fn pure_v2() {
        let m = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        let c = locate_in("0::/system.slice/vllm.service\n", m).expect("found");
        assert_eq!(c.version, Version::V2);
        assert_eq!(c.path, "/system.slice/vllm.service");
        assert!(locate_in("1:cpu:/a\n", "").is_none());
    }

    #[test]
    fn stats_and_quotas() {
        let v1 = "nr_periods 100\nnr_throttled 40\nthrottled_time 3000000\nnr_bursts 0\n";
        assert_eq!(
            parse_stat(v1, Version::V1),
            CpuStat {
                nr_periods: 100,
                nr_throttled: 40,
                throttled_ns: 3_000_000
            }
        );
        let v2 = "usage_usec 5\nnr_periods 10\nnr_throttled 4\nthrottled_usec 2500\n";
        assert_eq!(parse_stat(v2, Version::V2).throttled_ns, 2_500_000);
        assert_eq!(parse_quota_v2("max 100000\n"), None);
        assert_eq!(parse_quota_v2("20000 100000\n"), Some((20000, 100000)));
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn reads_levels_from_fixture_trees() {
        let dir = std::env::temp_dir().join(format!("tp-cg-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        // v1: quota on the parent.
        write(&dir, "proc/7/cgroup", "1:cpu:/p/leaf\n0::/\n");
        write(&dir, "proc/self/mounts", MOUNTS);
        let base = "sys/fs/cgroup/cpu";
        write(
            &dir,
            &format!("{base}/cpu.stat"),
            "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n",
        );
        write(&dir, &format!("{base}/cpu.cfs_quota_us"), "-1\n");
        write(&dir, &format!("{base}/cpu.cfs_period_us"), "100000\n");
        write(
            &dir,
            &format!("{base}/p/cpu.stat"),
            "nr_periods 50\nnr_throttled 45\nthrottled_time 900000000\n",
        );
        write(&dir, &format!("{base}/p/cpu.cfs_quota_us"), "10000\n");
        write(&dir, &format!("{base}/p/cpu.cfs_period_us"), "100000\n");
        write(
            &dir,
            &format!("{base}/p/leaf/cpu.stat"),
            "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n",
        );
        write(&dir, &format!("{base}/p/leaf/cpu.cfs_quota_us"), "-1\n");
        write(
            &dir,
            &format!("{base}/p/leaf/cpu.cfs_period_us"),
            "100000\n",
        );
        let c = locate(&dir, 7).expect("located");
        let levels = c.read_levels(&dir);
        let paths: Vec<&str> = levels.iter().map(|l| l.path.as_str()).collect();
        assert_eq!(paths, ["/p/leaf", "/p", "/"]);
        assert_eq!(levels[1].quota, Some((10000, 100000)));
        assert_eq!(levels[1].stat.nr_throttled, 45);
        assert_eq!(levels[0].quota, None);

        // v2, on its own mount.
        write(&dir, "proc/8/cgroup", "0::/svc\n");
        write(
            &dir,
            "proc/self/mounts",
            "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n",
        );
        write(
            &dir,
            "sys/fs/cgroup/svc/cpu.stat",
            "usage_usec 1\nnr_periods 20\nnr_throttled 5\nthrottled_usec 7000\n",
        );
        write(&dir, "sys/fs/cgroup/svc/cpu.max", "5000 100000\n");
        let c = locate(&dir, 8).expect("located");
        assert_eq!(c.version, Version::V2);
        let levels = c.read_levels(&dir);
        assert_eq!(levels.len(), 1, "the root has no cpu.stat in the fixture");
        assert_eq!(levels[0].quota, Some((5000, 100000)));
        assert_eq!(levels[0].stat.throttled_ns, 7_000_000);
        let _ = fs::remove_dir_all(&dir);
    }
}
