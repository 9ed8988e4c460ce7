//! The target arguments the commands share (`--pid`, `--unit`,
//! `--container`, `--pod`, `--cgroup`), flattened into each command's
//! arguments, and their resolution to a [`TargetSpec`] or to processes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;

use crate::{
    procfs::ProcFs,
    record::{
        target::{self, members, unit},
        TargetSpec,
    },
};

/// Which processes: one of these (at most one).
#[derive(Debug, Clone, Default, Args)]
#[group(id = "target_args", multiple = false)]
pub struct TargetArgs {
    /// A process (all its threads; a thread id resolves to its process).
    #[arg(long, short)]
    pub pid: Option<u32>,
    /// Every process of this systemd unit (e.g. vllm or vllm.service),
    /// found through its control group.
    #[arg(long, value_name = "NAME")]
    pub unit: Option<String>,
    /// Every process of this container (docker, containerd, CRI-O or
    /// podman), by id or a unique prefix of it as `docker ps` / `crictl
    /// ps` print it, found through the cgroup paths in /proc/*/cgroup.
    #[arg(long, value_name = "ID")]
    pub container: Option<String>,
    /// Every process of this Kubernetes pod (all its containers), by UID or
    /// a unique prefix (`kubectl get pod NAME -o jsonpath='{.metadata.uid}'`;
    /// dashes or underscores), found in the kubepods cgroup layout.
    #[arg(long, value_name = "UID")]
    pub pod: Option<String>,
    /// Every process in this cgroup, e.g. system.slice/vllm.service (looked
    /// up in the v2 tree, the `unified` tree beside v1 controllers and the
    /// v1 `systemd` tree) or an absolute path under /sys/fs/cgroup.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
}

impl TargetArgs {
    /// Whether any target was given.
    pub fn given(&self) -> bool {
        self.pid.is_some()
            || self.unit.is_some()
            || self.container.is_some()
            || self.pod.is_some()
            || self.cgroup.is_some()
    }

    /// The target as a record target; `None` when none was given. Unit,
    /// container and pod are resolved to their cgroup now, so that a typo
    /// is refused before anything is attached.
    pub fn spec(&self) -> Result<Option<TargetSpec>> {
        self.spec_in(Path::new("/proc"), Path::new(members::CGROUP_ROOT))
    }

    fn spec_in(&self, proc_root: &Path, cgroup_root: &Path) -> Result<Option<TargetSpec>> {
        Ok(Some(if let Some(p) = self.pid {
            TargetSpec::Pid(p)
        } else if let Some(u) = &self.unit {
            TargetSpec::Group(unit::resolve(cgroup_root, u)?)
        } else if let Some(c) = &self.container {
            TargetSpec::Group(members::resolve_container(proc_root, cgroup_root, c)?)
        } else if let Some(p) = &self.pod {
            TargetSpec::Group(members::resolve_pod(proc_root, cgroup_root, p)?)
        } else if let Some(c) = &self.cgroup {
            TargetSpec::Cgroup(target::cgroup_dir(cgroup_root, c)?)
        } else {
            return Ok(None);
        }))
    }

    /// The processes (thread group ids) the target names now, with a
    /// description for messages: for commands that act on processes (pin,
    /// numa, counters). Errors when none was given or the group is empty.
    pub fn processes(&self, proc: &ProcFs) -> Result<(Vec<u32>, String)> {
        let Some(spec) = self.spec()? else {
            bail!("name a target: --pid, --unit, --container, --pod or --cgroup");
        };
        processes_of(proc, &spec)
    }
}

/// The live user processes of `spec` (a pid or a cgroup-based target).
pub fn processes_of(proc: &ProcFs, spec: &TargetSpec) -> Result<(Vec<u32>, String)> {
    let (pids, what) = match spec {
        TargetSpec::Pid(p) => {
            let (tgid, comm) = proc.check_target(*p)?;
            return Ok((vec![tgid], format!("pid {tgid} ({comm})")));
        }
        TargetSpec::Cgroup(dir) => (
            members::pids_in_cgroup_tree(dir),
            format!("cgroup {}", dir.display()),
        ),
        TargetSpec::Group(g) => (
            members::pids_in_cgroup_tree(&g.dir),
            format!("{} {}", g.kind, g.name),
        ),
        other => bail!(
            "internal: {} targets name no group of processes",
            other.kind()
        ),
    };
    let live: Vec<u32> = pids
        .into_iter()
        .filter(|p| proc.check_target(*p).is_ok())
        .collect();
    if live.is_empty() {
        bail!("{what} has no running process now");
    }
    Ok((live, what))
}

/// The main process of a group, for commands that follow one process (an
/// experiment's external server): the process whose parent is outside the
/// group (the container's init, the unit's main process); among several,
/// the one with the most threads, then the lowest pid.
pub fn main_process(proc: &ProcFs, pids: &[u32]) -> Option<u32> {
    let roots: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|p| proc.stat(*p).is_ok_and(|s| !pids.contains(&s.ppid)))
        .collect();
    let pool = if roots.is_empty() { pids } else { &roots };
    pool.iter()
        .copied()
        .max_by_key(|p| (proc.threads(*p).len(), std::cmp::Reverse(*p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        t: TargetArgs,
    }

    #[test]
    fn one_target_at_most() {
        let t = T::try_parse_from(["x", "--container", "abc"]).unwrap();
        assert_eq!(t.t.container.as_deref(), Some("abc"));
        assert!(t.t.given());
        assert!(!T::try_parse_from(["x"]).unwrap().t.given());
        let e = T::try_parse_from(["x", "--pid", "1", "--pod", "u"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn resolves_on_a_fixture_tree() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/cgroups");
        let (proc, cg) = (
            base.join("kubepods-systemd-containerd-v2/proc"),
            base.join("kubepods-systemd-containerd-v2/cgroup"),
        );
        let t = T::try_parse_from(["x", "--pod", "0b7e6a1c"]).unwrap().t;
        let Some(TargetSpec::Group(g)) = t.spec_in(&proc, &cg).unwrap() else {
            panic!("not a group");
        };
        assert_eq!(
            (g.kind, g.name.as_str()),
            ("pod", "0b7e6a1c-2d3f-4e5a-8b9c-1d2e3f4a5b6c")
        );
        let t = T::try_parse_from(["x", "--cgroup", "system.slice/kubelet.service"])
            .unwrap()
            .t;
        assert_eq!(
            t.spec_in(&proc, &cg).unwrap(),
            Some(TargetSpec::Cgroup(cg.join("system.slice/kubelet.service")))
        );
        let t = T::try_parse_from(["x", "--container", "zz"]).unwrap().t;
        let e = t.spec_in(&proc, &cg).unwrap_err().to_string();
        assert!(e.contains("no container matches \"zz\""), "{e}");
    }

    #[test]
    fn main_process_is_the_root_of_the_group() {
        let d = tempfile::tempdir().unwrap();
        // 100: the container's init (parent 50, outside); 101 its child
        // with more threads; 200 another root with 3 threads.
        for (pid, ppid, threads) in [(100u32, 50u32, 1u32), (101, 100, 8), (200, 60, 3)] {
            let dir = d.path().join(pid.to_string());
            for t in 0..threads {
                std::fs::create_dir_all(dir.join(format!("task/{}", pid * 100 + t))).unwrap();
            }
            std::fs::write(
                dir.join("stat"),
                format!(
                    "{pid} (p) S {ppid} 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 {threads} 0 1 0 0 0"
                ),
            )
            .unwrap();
        }
        let proc = ProcFs::new(d.path());
        assert_eq!(main_process(&proc, &[100, 101]), Some(100));
        // Two roots: the one with more threads.
        assert_eq!(main_process(&proc, &[100, 101, 200]), Some(200));
        assert_eq!(main_process(&proc, &[]), None);
    }
}
