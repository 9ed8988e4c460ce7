//! `--unit NAME`: a systemd unit's processes, through its control group
//! (`systemctl show --property ControlGroup`), found in whichever cgroup
//! tree this machine mounts (v2 at `/sys/fs/cgroup`, the v2 `unified` tree
//! beside v1 controllers, or the v1 `name=systemd` hierarchy).

use std::{path::Path, process::Command};

use anyhow::{bail, Context as _, Result};

use super::members::{find_dir, Group};

/// The unit name as systemd expects it (`vllm` -> `vllm.service`).
pub fn unit_name(u: &str) -> String {
    if u.contains('.') {
        u.to_string()
    } else {
        format!("{u}.service")
    }
}

/// Resolve a unit to its cgroup directory under `cgroup_root` with systemctl.
pub fn resolve(cgroup_root: &Path, unit: &str) -> Result<Group> {
    let name = unit_name(unit.trim());
    if name == ".service" {
        bail!("--unit needs a unit name, e.g. vllm or vllm.service");
    }
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
    let dir = find_dir(cgroup_root, &cg).with_context(|| {
        format!(
            "unit {name}'s control group {cg} is in no cgroup tree under {}",
            cgroup_root.display()
        )
    })?;
    Ok(Group {
        kind: "unit",
        name,
        runtime: None,
        dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_trees() {
        assert_eq!(unit_name("vllm"), "vllm.service");
        assert_eq!(unit_name("x.scope"), "x.scope");
        let d = tempfile::tempdir().unwrap();
        let cg = "/system.slice/vllm.service";
        // Only in the unified tree (v1 controllers beside it).
        let unified = d.path().join("unified/system.slice/vllm.service");
        std::fs::create_dir_all(&unified).unwrap();
        std::fs::write(unified.join("cgroup.procs"), "42\n").unwrap();
        assert_eq!(find_dir(d.path(), cg), Some(unified));
        // A pure v2 mount wins when it has the group.
        let v2 = d.path().join("system.slice/vllm.service");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("cgroup.procs"), "42\n").unwrap();
        assert_eq!(find_dir(d.path(), cg), Some(v2));
        assert_eq!(find_dir(d.path(), "/"), None);
        assert_eq!(find_dir(d.path(), "/other.service"), None);
    }
}
