//! Naming the target: a pid, one thread, a command name, a cgroup, a
//! systemd unit, a container, a Kubernetes pod, or a command tailprobe
//! launches. Resolves names to processes (`members`, through the cgroup
//! layouts in `cgroup_layout`), and launches commands held at the starting
//! line until the probes are attached.

pub mod cgroup_layout;
pub mod members;
pub mod unit;

use std::{
    fs,
    io::Write as _,
    os::fd::FromRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::{node::child, procfs::ProcFs};

pub use members::{cgroup_dir, pids_in_cgroup, pids_in_cgroup_tree, Group, CGROUP_ROOT};

/// How the user named the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    Pid(u32),
    Tid(u32),
    /// Every process whose command name (`/proc/<pid>/comm`) is this.
    Comm(String),
    /// Every process in this cgroup (v2 path, absolute or under /sys/fs/cgroup).
    Cgroup(PathBuf),
    /// Every process of a systemd unit, a container or a pod, resolved to
    /// its cgroup directory.
    Group(Group),
    /// Launch this command and follow it (and its children).
    Command(Vec<String>),
}

impl TargetSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            TargetSpec::Pid(_) => "pid",
            TargetSpec::Tid(_) => "tid",
            TargetSpec::Comm(_) => "comm",
            TargetSpec::Cgroup(_) => "cgroup",
            TargetSpec::Group(g) => g.kind,
            TargetSpec::Command(_) => "command",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            TargetSpec::Pid(p) | TargetSpec::Tid(p) => p.to_string(),
            TargetSpec::Comm(c) => c.clone(),
            TargetSpec::Cgroup(p) => p.display().to_string(),
            TargetSpec::Group(g) => g.name.clone(),
            TargetSpec::Command(argv) => argv.join(" "),
        }
    }
}

/// Processes whose comm is `name` (the kernel keeps 15 bytes of it).
pub fn pids_by_comm(proc: &ProcFs, name: &str) -> Vec<u32> {
    let want: String = name.chars().take(15).collect();
    let Ok(rd) = fs::read_dir(proc.root()) else {
        return Vec::new();
    };
    let mut out: Vec<u32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(proc.root().join(format!("{pid}/comm")))
                .map(|c| c.trim_end_matches('\n') == want)
                .unwrap_or(false)
        })
        .filter(|pid| proc.check_target(*pid).is_ok())
        .collect();
    out.sort_unstable();
    out
}

/// A launched command, held before `exec` until [`Launched::release`].
pub struct Launched {
    pub child: Child,
    gate: Option<fs::File>,
}

impl Launched {
    /// Start `argv`, held at the starting line, so no event is missed.
    ///
    /// The child is tailprobe itself running the hidden `exec-gated`
    /// subcommand: it waits for one byte on an inherited pipe, then execs
    /// the command in place (same pid). (A `pre_exec` hook cannot be used:
    /// `spawn` waits for the exec to happen.)
    pub fn start(argv: &[String], quiet: bool) -> Result<Launched> {
        if argv.is_empty() {
            bail!("empty command after --");
        }
        let exe = std::env::current_exe().context("finding tailprobe's own executable")?;
        let mut fds = [0i32; 2];
        // SAFETY: valid pointer to two ints.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error()).context("creating the launch pipe");
        }
        let (rd, wr) = (fds[0], fds[1]);
        // SAFETY: we own both fds and hand them to File, which closes them.
        let (rd_file, gate) = unsafe { (fs::File::from_raw_fd(rd), fs::File::from_raw_fd(wr)) };
        // The read end must survive exec into the gated child.
        // SAFETY: fcntl on an fd we own.
        if unsafe { libc::fcntl(rd, libc::F_SETFD, 0) } != 0 {
            return Err(std::io::Error::last_os_error()).context("preparing the launch pipe");
        }
        let mut cmd = Command::new(exe);
        cmd.arg("exec-gated")
            .arg("--fd")
            .arg(rd.to_string())
            .arg("--")
            .args(argv);
        if quiet {
            cmd.stdout(std::process::Stdio::null());
        }
        check_runnable(&argv[0])?;
        // Its own process group, killed with us (SIGKILL included).
        let child = child::spawn(&mut cmd).with_context(|| format!("starting {:?}", argv[0]))?;
        drop(rd_file);
        Ok(Launched {
            child,
            gate: Some(gate),
        })
    }

    /// Let the command run (exec).
    pub fn release(&mut self) -> Result<()> {
        if let Some(mut g) = self.gate.take() {
            g.write_all(&[1])
                .context("releasing the launched command")?;
        }
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        // Never released: closing the gate makes the child fail before exec.
        drop(self.gate.take());
        // SIGTERM to its group, 2 s, then SIGKILL to whatever is left, so
        // nothing the command forked outlives the recording.
        if let Err(e) = child::stop(&mut self.child, Duration::from_secs(2)) {
            eprintln!(
                "tailprobe: stopping the launched command (pid {}): {e}",
                self.child.id()
            );
        }
    }
}

/// Refuse a command that cannot be run before anything is attached: a path
/// that is not an executable file, or a name not found on `$PATH`.
pub fn check_runnable(prog: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let runnable = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if prog.contains('/') {
        if !runnable(Path::new(prog)) {
            bail!("cannot run {prog:?}: no executable file at that path");
        }
        return Ok(());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| runnable(&d.join(prog))) {
        return Ok(());
    }
    bail!("cannot run {prog:?}: command not found on $PATH");
}

/// The gated child's side (`tailprobe exec-gated --fd N -- CMD`): wait for
/// the go byte, then become the command. Returns only on failure.
pub fn exec_gated(fd: i32, argv: &[String]) -> anyhow::Error {
    use std::os::unix::process::CommandExt as _;
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into a valid buffer from an inherited fd.
    let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
    // SAFETY: closing the inherited fd, which this process owns.
    unsafe { libc::close(fd) };
    if n != 1 {
        return anyhow::anyhow!("tailprobe stopped before the command was started");
    }
    let Some((prog, args)) = argv.split_first() else {
        return anyhow::anyhow!("empty command");
    };
    let err = Command::new(prog).args(args).exec();
    anyhow::Error::new(err).context(format!("running {prog:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_lookup_on_a_fixture() {
        let d = tempfile::tempdir().unwrap();
        let w = |rel: &str, s: &str| {
            let f = d.path().join(rel);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, s).unwrap();
        };
        for (pid, comm) in [(10, "vllm"), (11, "python3"), (12, "vllm")] {
            w(&format!("{pid}/comm"), &format!("{comm}\n"));
            w(
                &format!("{pid}/stat"),
                &format!("{pid} ({comm}) S 1 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0 0"),
            );
            w(
                &format!("{pid}/status"),
                &format!("Name:\t{comm}\nTgid:\t{pid}\n"),
            );
        }
        let p = ProcFs::new(d.path());
        assert_eq!(pids_by_comm(&p, "vllm"), vec![10, 12]);
        assert_eq!(pids_by_comm(&p, "nothing"), Vec::<u32>::new());
    }
}
