//! Target resolution: from a [`TargetSpec`] to the processes to follow now
//! and how to find more during the run.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use super::target::{self, TargetSpec};
use crate::procfs::ProcFs;

/// Resolved target: processes to follow now, and how to find more.
pub(super) struct Resolved {
    pub tgids: Vec<u32>,
    pub tid: Option<u32>,
    pub comm: String,
    pub notes: Vec<String>,
    pub rescan: Rescan,
}

/// How to find more processes during the run.
pub(super) enum Rescan {
    None,
    Comm(String),
    Cgroup(PathBuf),
}

pub(super) fn resolve(
    proc: &ProcFs,
    spec: &TargetSpec,
    launched_pid: Option<u32>,
) -> Result<Resolved> {
    let mut notes = Vec::new();
    let one = |pid: u32, notes: &mut Vec<String>| -> Result<(u32, String)> {
        let (tgid, comm) = proc.check_target(pid)?;
        if tgid != pid {
            notes.push(format!(
                "pid {pid} is a thread of process {tgid}: recording the whole process"
            ));
        }
        Ok((tgid, comm))
    };
    Ok(match spec {
        TargetSpec::Pid(p) => {
            let (tgid, comm) = one(*p, &mut notes)?;
            Resolved {
                tgids: vec![tgid],
                tid: None,
                comm,
                notes,
                rescan: Rescan::None,
            }
        }
        TargetSpec::Tid(t) => {
            let (tgid, _) = proc.check_target(*t)?;
            let comm = proc.thread_comm(tgid, *t).unwrap_or_default();
            Resolved {
                tgids: vec![tgid],
                tid: Some(*t),
                comm,
                notes,
                rescan: Rescan::None,
            }
        }
        TargetSpec::Command(_) => {
            let pid = launched_pid.context("internal: command not launched")?;
            let comm = proc.stat(pid).map(|s| s.comm).unwrap_or_default();
            Resolved {
                tgids: vec![pid],
                tid: None,
                comm,
                notes,
                rescan: Rescan::None,
            }
        }
        TargetSpec::Comm(name) => {
            let tgids = target::pids_by_comm(proc, name);
            if tgids.is_empty() {
                bail!("no process is named {name:?} (comm, at most 15 characters; see `ps -e -o comm`)");
            }
            Resolved {
                tgids,
                tid: None,
                comm: name.clone(),
                notes,
                rescan: Rescan::Comm(name.clone()),
            }
        }
        TargetSpec::Cgroup(path) => in_cgroup(
            target::cgroup_dir(Path::new(target::CGROUP_ROOT), path)?,
            notes,
        ),
        TargetSpec::Group(g) => in_cgroup(g.dir.clone(), notes),
    })
}

/// Every process under a cgroup directory now, and rescan it for more.
fn in_cgroup(dir: PathBuf, mut notes: Vec<String>) -> Resolved {
    let tgids = target::pids_in_cgroup_tree(&dir);
    if tgids.is_empty() {
        notes.push(format!(
            "cgroup {} has no process yet: waiting for some",
            dir.display()
        ));
    }
    Resolved {
        tgids,
        tid: None,
        comm: dir.display().to_string(),
        notes,
        rescan: Rescan::Cgroup(dir),
    }
}
