//! Who is in a group: the one cgroup resolver (a path, a systemd unit, a
//! container, a Kubernetes pod -> a cgroup directory), the processes under
//! a cgroup directory, and each process's pid inside its PID namespace.
//! Every function takes its roots (`/proc`, `/sys/fs/cgroup`) so the tests
//! run on the fixture trees in `tests/fixtures/cgroups/`.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Result};

use super::cgroup_layout::{self as layout, CgroupLine, Runtime};

/// The cgroup mount root on a live machine.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Trees a plain path is looked up in, under the cgroup mount root, in
/// order: the v2 mount itself, the v2 `unified` tree beside v1
/// controllers, and the v1 `name=systemd` hierarchy.
const PATH_TREES: [&str; 3] = ["", "unified", "systemd"];

/// A named group of processes resolved to its cgroup directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// `unit`, `container` or `pod`.
    pub kind: &'static str,
    /// The full name: the unit (`vllm.service`), the container id, the pod UID.
    pub name: String,
    /// The container runtime whose layout matched (containers only).
    pub runtime: Option<&'static str>,
    /// The cgroup directory; its processes and its descendants' are the target.
    pub dir: PathBuf,
}

/// The directory of `rel` (e.g. `/system.slice/x.service`) in the first of
/// `trees` under `cgroup_root` that has it with a `cgroup.procs`.
pub fn find_in_trees<S: AsRef<str>>(cgroup_root: &Path, trees: &[S], rel: &str) -> Option<PathBuf> {
    let rel = rel.trim().trim_start_matches('/');
    if rel.is_empty() {
        return None;
    }
    trees
        .iter()
        .map(|t| cgroup_root.join(t.as_ref()).join(rel))
        .find(|d| d.join("cgroup.procs").is_file())
}

/// `control_group` (a path as systemd or `/proc/<pid>/cgroup` writes it) in
/// whichever tree this machine mounts it.
pub fn find_dir(cgroup_root: &Path, control_group: &str) -> Option<PathBuf> {
    find_in_trees(cgroup_root, &PATH_TREES, control_group)
}

/// The cgroup directory for a user-given `--cgroup` path: absolute under
/// the cgroup root, or relative to it (looked up in each tree).
pub fn cgroup_dir(cgroup_root: &Path, path: &Path) -> Result<PathBuf> {
    if path.starts_with(cgroup_root) && path.join("cgroup.procs").is_file() {
        return Ok(path.to_path_buf());
    }
    if let Some(d) = find_dir(cgroup_root, &path.to_string_lossy()) {
        return Ok(d);
    }
    bail!(
        "{} is not a cgroup (no cgroup.procs there, nor under {} in the v2, unified or \
         systemd trees); give a path like /sys/fs/cgroup/system.slice/my.service or \
         system.slice/my.service, or name the target with --unit, --container or --pod",
        path.display(),
        cgroup_root.display()
    );
}

/// Processes (thread group ids) in a cgroup itself, not its descendants.
pub fn pids_in_cgroup(dir: &Path) -> Vec<u32> {
    let mut out: Vec<u32> = fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Processes in a cgroup and all its descendants (a pod keeps its
/// processes in per-container children; a unit may delegate).
pub fn pids_in_cgroup_tree(dir: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        out.extend(pids_in_cgroup(&d));
        if let Ok(rd) = fs::read_dir(&d) {
            stack.extend(
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The pid inside the innermost PID namespace, from a `/proc/<pid>/status`
/// text's `NSpid:` line, when the process is in a namespace below the one
/// of that `/proc` (more than one field); `None` otherwise.
pub fn ns_pid_from_status(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let fields: Vec<u32> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    (fields.len() > 1).then(|| fields.last().copied()).flatten()
}

/// [`ns_pid_from_status`] for a live pid under `proc_root`.
pub fn ns_pid(proc_root: &Path, pid: u32) -> Option<u32> {
    ns_pid_from_status(&fs::read_to_string(proc_root.join(format!("{pid}/status"))).ok()?)
}

/// Each pid under `proc_root` with its parsed `cgroup` file.
fn scan(proc_root: &Path) -> Vec<(u32, Vec<CgroupLine>)> {
    let Ok(rd) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, Vec<CgroupLine>)> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let text = fs::read_to_string(proc_root.join(format!("{pid}/cgroup"))).ok()?;
            Some((pid, layout::parse_proc_cgroup(&text)))
        })
        .collect();
    out.sort_by_key(|(p, _)| *p);
    out
}

/// One candidate group seen in `/proc`: its name, runtime, a line that
/// locates it, the path to it in that line's hierarchy, and its processes.
#[derive(Debug)]
struct Seen {
    runtime: Option<Runtime>,
    line: CgroupLine,
    path: String,
    pids: Vec<u32>,
}

fn collect(
    proc_root: &Path,
    pick: impl Fn(&str) -> Option<(String, Option<Runtime>, String)>,
) -> BTreeMap<String, Seen> {
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    for (pid, lines) in scan(proc_root) {
        let Some(line) = layout::primary_line(&lines) else {
            continue;
        };
        let Some((name, runtime, path)) = pick(&line.path) else {
            continue;
        };
        seen.entry(name)
            .or_insert_with(|| Seen {
                runtime,
                line: line.clone(),
                path,
                pids: Vec::new(),
            })
            .pids
            .push(pid);
    }
    seen
}

/// Pick the one group whose name starts with `given`, or say why not.
fn choose(
    kind: &'static str,
    given: &str,
    want: &str,
    cgroup_root: &Path,
    seen: BTreeMap<String, Seen>,
) -> Result<Group> {
    let matches: Vec<(&String, &Seen)> = seen.iter().filter(|(n, _)| n.starts_with(want)).collect();
    let list = |v: &[(&String, &Seen)]| {
        v.iter()
            .map(|(n, s)| {
                let rt = s
                    .runtime
                    .map(|r| format!("{}, ", r.name()))
                    .unwrap_or_default();
                format!("  {n} ({rt}{} process(es), {})", s.pids.len(), s.path)
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    match matches.as_slice() {
        [] => {
            let all: Vec<(&String, &Seen)> = seen.iter().collect();
            if all.is_empty() {
                bail!(
                    "no {kind} matches {given:?}: no process on this machine is in a {kind} \
                     cgroup layout tailprobe knows (docs/targets.md); give --cgroup PATH or --pid"
                );
            }
            bail!(
                "no {kind} matches {given:?}; the {kind}s with processes here are:\n{}",
                list(&all)
            );
        }
        [(name, s)] => {
            let dir = layout::trees_for(&s.line);
            let dir = find_in_trees(cgroup_root, &dir, &s.path).ok_or_else(|| {
                anyhow::anyhow!(
                    "{kind} {name}'s cgroup {} (from /proc/{}/cgroup) is in no cgroup tree under {}",
                    s.path,
                    s.pids.first().copied().unwrap_or(0),
                    cgroup_root.display()
                )
            })?;
            Ok(Group {
                kind,
                name: (*name).clone(),
                runtime: s.runtime.map(Runtime::name),
                dir,
            })
        }
        several => bail!(
            "{given:?} matches {} {kind}s; give more of the id:\n{}",
            several.len(),
            list(several)
        ),
    }
}

/// `--container ID`: the container whose id starts with `id` (a short
/// prefix as `docker ps` prints it, or the full id), found through the
/// cgroup paths in `/proc/*/cgroup`.
pub fn resolve_container(proc_root: &Path, cgroup_root: &Path, id: &str) -> Result<Group> {
    let want = id.trim();
    if want.is_empty() {
        bail!("--container needs an id (or a prefix of one, as `docker ps` prints it)");
    }
    // Hex ids are compared in lower case; `ctr` names as given.
    let want_hex = want.to_ascii_lowercase();
    let seen = collect(proc_root, |path| {
        let c = layout::classify(path).0?;
        Some((c.id, Some(c.runtime), c.path))
    });
    let want = if want.bytes().all(|b| b.is_ascii_hexdigit()) {
        want_hex.as_str()
    } else {
        want
    };
    choose("container", id, want, cgroup_root, seen)
}

/// `--pod UID`: the Kubernetes pod whose UID starts with `uid` (dashes or
/// underscores, any case), found through the cgroup paths in `/proc/*/cgroup`.
pub fn resolve_pod(proc_root: &Path, cgroup_root: &Path, uid: &str) -> Result<Group> {
    let want = layout::pod_uid_chars(uid);
    if want.is_empty() {
        bail!("--pod needs a pod UID (kubectl get pod NAME -o jsonpath='{{.metadata.uid}}')");
    }
    let seen = collect(proc_root, |path| {
        let p = layout::classify(path).1?;
        Some((p.uid, None, p.path))
    });
    choose("pod", uid, &want, cgroup_root, seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> (PathBuf, PathBuf) {
        let base = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/cgroups")
            .join(name);
        (base.join("proc"), base.join("cgroup"))
    }

    const DOCKER_A: &str = "3f2a9c0d1e7b4a5f8c6d2e1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a10";
    const DOCKER_B: &str = "3f2b000000000000000000000000000000000000000000000000000000000042";
    const POD: &str = "0b7e6a1c-2d3f-4e5a-8b9c-1d2e3f4a5b6c";

    fn resolved(g: &Group, cg: &Path) -> String {
        g.dir
            .strip_prefix(cg)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| g.dir.display().to_string())
    }

    #[test]
    fn docker_systemd_driver_v2_with_short_and_ambiguous_prefixes() {
        let (proc, cg) = fixture("docker-systemd-v2");
        let g = resolve_container(&proc, &cg, "3f2a9c").unwrap();
        assert_eq!(g.name, DOCKER_A);
        assert_eq!(g.runtime, Some("docker"));
        assert_eq!(
            resolved(&g, &cg),
            format!("system.slice/docker-{DOCKER_A}.scope")
        );
        // The container's processes, nested cgroups included.
        assert_eq!(pids_in_cgroup_tree(&g.dir), vec![2001, 2002]);
        assert_eq!(pids_in_cgroup(&g.dir), vec![2001]);
        // Upper case works too (ids are hex).
        assert_eq!(
            resolve_container(&proc, &cg, "3F2A9C").unwrap().name,
            DOCKER_A
        );
        let e = resolve_container(&proc, &cg, "3f2")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("matches 2 containers") && e.contains(DOCKER_A) && e.contains(DOCKER_B),
            "{e}"
        );
        let e = resolve_container(&proc, &cg, "ffff")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no container matches") && e.contains(DOCKER_B),
            "{e}"
        );
        assert_eq!(
            resolve_container(&proc, &cg, DOCKER_B).unwrap().name,
            DOCKER_B
        );
        assert!(resolve_container(&proc, &cg, " ").is_err());
        // The process in the container's PID namespace.
        assert_eq!(ns_pid(&proc, 2001), Some(1));
        assert_eq!(ns_pid(&proc, 2002), Some(7));
        assert_eq!(ns_pid(&proc, 1), None);
    }

    #[test]
    fn docker_cgroupfs_driver_v1_found_in_its_hierarchy() {
        let (proc, cg) = fixture("docker-cgroupfs-v1");
        let g = resolve_container(&proc, &cg, "3f2a").unwrap();
        assert_eq!(resolved(&g, &cg), format!("systemd/docker/{DOCKER_A}"));
        assert_eq!(pids_in_cgroup_tree(&g.dir), vec![3001]);
        assert!(resolve_pod(&proc, &cg, "0b7e")
            .unwrap_err()
            .to_string()
            .contains("no pod"));
    }

    #[test]
    fn kubepods_systemd_driver_containerd() {
        let (proc, cg) = fixture("kubepods-systemd-containerd-v2");
        let under = POD.replace('-', "_");
        for given in [POD.to_string(), under.clone(), POD[..8].to_uppercase()] {
            let g = resolve_pod(&proc, &cg, &given).unwrap();
            assert_eq!(g.name, POD);
            assert_eq!(
                resolved(&g, &cg),
                format!(
                    "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{under}.slice"
                )
            );
            // Pause container and the app container.
            assert_eq!(pids_in_cgroup_tree(&g.dir), vec![4001, 4002, 4003]);
        }
        let g = resolve_container(&proc, &cg, "aa11").unwrap();
        assert_eq!(g.runtime, Some("containerd"));
        assert_eq!(pids_in_cgroup_tree(&g.dir), vec![4002, 4003]);
        let e = resolve_pod(&proc, &cg, "ffffffff").unwrap_err().to_string();
        assert!(e.contains(POD), "{e}");
    }

    #[test]
    fn kubepods_cgroupfs_driver_crio_v1() {
        let (proc, cg) = fixture("kubepods-cgroupfs-crio-v1");
        let g = resolve_pod(&proc, &cg, POD).unwrap();
        assert_eq!(
            resolved(&g, &cg),
            format!("systemd/kubepods/besteffort/pod{POD}")
        );
        assert_eq!(pids_in_cgroup_tree(&g.dir), vec![5001, 5002]);
        let g = resolve_container(&proc, &cg, "bb22").unwrap();
        assert_eq!(g.runtime, Some("cri-o"));
        assert_eq!(pids_in_cgroup_tree(&g.dir), vec![5002]);
    }

    #[test]
    fn containerd_namespace_and_podman() {
        let (proc, cg) = fixture("containerd-ctr-podman-v2");
        let g = resolve_container(&proc, &cg, "redis").unwrap();
        assert_eq!(
            (g.name.as_str(), g.runtime),
            ("redis-1", Some("containerd"))
        );
        assert_eq!(resolved(&g, &cg), "default/redis-1");
        let g = resolve_container(&proc, &cg, "cc33").unwrap();
        assert_eq!(g.runtime, Some("podman"));
        assert_eq!(pids_in_cgroup_tree(&g.dir), vec![6002]);
    }

    #[test]
    fn cgroup_paths() {
        let (_, cg) = fixture("docker-cgroupfs-v1");
        // Relative: found in the v1 systemd tree.
        let d = cgroup_dir(&cg, Path::new(&format!("/docker/{DOCKER_A}"))).unwrap();
        assert_eq!(d, cg.join(format!("systemd/docker/{DOCKER_A}")));
        assert_eq!(cgroup_dir(&cg, &d).unwrap(), d);
        let e = cgroup_dir(&cg, Path::new("nope")).unwrap_err().to_string();
        assert!(e.contains("not a cgroup"), "{e}");
        assert_eq!(find_dir(&cg, "/"), None);
    }

    #[test]
    fn nspid_lines() {
        assert_eq!(ns_pid_from_status("Name:\tx\nNSpid:\t4242\t17\n"), Some(17));
        assert_eq!(ns_pid_from_status("NSpid:\t4242\n"), None);
        assert_eq!(ns_pid_from_status("NSpid:\t10\t5\t1\n"), Some(1));
        assert_eq!(ns_pid_from_status("Name:\tx\n"), None);
    }
}
