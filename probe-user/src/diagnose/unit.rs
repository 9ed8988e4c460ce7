//! `--unit NAME`: a systemd unit's processes, through its control group
//! (`systemctl show --property ControlGroup`), found in whichever cgroup
//! tree this machine mounts (v2 at `/sys/fs/cgroup`, the v2 `unified` tree
//! beside v1 controllers, or the v1 `name=systemd` hierarchy).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

/// Trees to look in, under the cgroup mount root, in order.
const TREES: [&str; 3] = ["", "unified", "systemd"];

/// The unit name as systemd expects it (`vllm` -> `vllm.service`).
pub fn unit_name(u: &str) -> String {
    if u.contains('.') {
        u.to_string()
    } else {
        format!("{u}.service")
    }
}

/// The directory of `control_group` (e.g. `/system.slice/x.service`) in
/// the first tree under `cgroup_root` that has it with a `cgroup.procs`.
pub fn find_dir(cgroup_root: &Path, control_group: &str) -> Option<PathBuf> {
    let rel = control_group.trim().trim_start_matches('/');
    if rel.is_empty() {
        return None;
    }
    TREES
        .iter()
        .map(|t| cgroup_root.join(t).join(rel))
        .find(|d| d.join("cgroup.procs").exists())
}

/// Resolve a unit to its cgroup directory with systemctl.
pub fn resolve(unit: &str) -> Result<PathBuf> {
    let name = unit_name(unit);
    let out = Command::new("systemctl")
        .args(["show", "--property", "ControlGroup", "--value", &name])
        .output()
        .with_context(|| format!("running `systemctl show {name}` (is systemd installed?)"))?;
    if !out.status.success() {
        bail!(
            "`systemctl show {name}` failed: {}; give the target with --pid or --cgroup instead",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let cg = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if cg.is_empty() {
        bail!("unit {name} has no control group (not running?): start it, or use --pid");
    }
    find_dir(Path::new("/sys/fs/cgroup"), &cg).with_context(|| {
        format!("unit {name}'s control group {cg} is in no cgroup tree under /sys/fs/cgroup")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_trees() {
        assert_eq!(unit_name("vllm"), "vllm.service");
        assert_eq!(unit_name("x.scope"), "x.scope");
        let dir = std::env::temp_dir().join(format!("tp-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cg = "/system.slice/vllm.service";
        // Only in the unified tree (v1 controllers beside it).
        let unified = dir.join("unified/system.slice/vllm.service");
        std::fs::create_dir_all(&unified).unwrap();
        std::fs::write(unified.join("cgroup.procs"), "42\n").unwrap();
        assert_eq!(find_dir(&dir, cg), Some(unified));
        // A pure v2 mount wins when it has the group.
        let v2 = dir.join("system.slice/vllm.service");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("cgroup.procs"), "42\n").unwrap();
        assert_eq!(find_dir(&dir, cg), Some(v2));
        assert_eq!(find_dir(&dir, "/"), None);
        assert_eq!(find_dir(&dir, "/other.service"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
