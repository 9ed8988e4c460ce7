//! A process and its threads as `/proc` shows them.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::parse::{self, SchedStat, Stat, Status};

/// `/proc`, or a fixture tree shaped like it.
#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
}

impl Default for ProcFs {
    fn default() -> Self {
        ProcFs::new("/proc")
    }
}

/// Why a pid cannot be profiled.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no process with pid {0} (is it still running?)")]
    NoSuchProcess(u32),
    #[error("pid {0} ({1}) is a kernel thread; tailprobe profiles user processes")]
    KernelThread(u32, String),
    #[error("pid {0} ({1}) has exited (zombie)")]
    Exited(u32, String),
    #[error("cannot read {0}: {1}")]
    Io(PathBuf, io::Error),
    #[error("cannot parse {0}")]
    Parse(PathBuf),
}

impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ProcFs { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn read(&self, rel: impl AsRef<Path>) -> io::Result<String> {
        fs::read_to_string(self.root.join(rel))
    }

    pub fn stat(&self, pid: u32) -> Result<Stat, TargetError> {
        let rel = format!("{pid}/stat");
        let s = self.read(&rel).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => TargetError::NoSuchProcess(pid),
            _ => TargetError::Io(self.root.join(&rel), e),
        })?;
        parse::stat(&s).ok_or_else(|| TargetError::Parse(self.root.join(rel)))
    }

    pub fn status(&self, pid: u32) -> Result<Status, TargetError> {
        let rel = format!("{pid}/status");
        let s = self.read(&rel).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => TargetError::NoSuchProcess(pid),
            _ => TargetError::Io(self.root.join(&rel), e),
        })?;
        parse::status(&s).ok_or_else(|| TargetError::Parse(self.root.join(rel)))
    }

    /// Check that `pid` is a live user process; returns its thread group id
    /// (a thread id given by mistake resolves to its process) and command.
    pub fn check_target(&self, pid: u32) -> Result<(u32, String), TargetError> {
        let st = self.stat(pid)?;
        if st.flags & parse::PF_KTHREAD != 0 {
            return Err(TargetError::KernelThread(pid, st.comm));
        }
        if matches!(st.state, 'Z' | 'X') {
            return Err(TargetError::Exited(pid, st.comm));
        }
        let status = self.status(pid)?;
        Ok((status.tgid, st.comm))
    }

    /// True while the process exists and is not a zombie.
    pub fn is_alive(&self, pid: u32) -> bool {
        matches!(self.stat(pid), Ok(st) if !matches!(st.state, 'Z' | 'X'))
    }

    /// Thread ids of a process, sorted; empty when it is gone.
    pub fn threads(&self, pid: u32) -> Vec<u32> {
        let mut tids: Vec<u32> = match fs::read_dir(self.root.join(format!("{pid}/task"))) {
            Ok(rd) => rd
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect(),
            Err(_) => Vec::new(),
        };
        tids.sort_unstable();
        tids
    }

    pub fn thread_comm(&self, pid: u32, tid: u32) -> Option<String> {
        self.read(format!("{pid}/task/{tid}/comm"))
            .ok()
            .map(|s| s.trim_end_matches('\n').to_string())
    }

    pub fn thread_schedstat(&self, pid: u32, tid: u32) -> Option<SchedStat> {
        parse::schedstat(&self.read(format!("{pid}/task/{tid}/schedstat")).ok()?)
    }

    pub fn thread_status(&self, pid: u32, tid: u32) -> Option<Status> {
        parse::status(&self.read(format!("{pid}/task/{tid}/status")).ok()?)
    }

    /// The command line joined by spaces; `None` when the process is gone.
    pub fn cmdline(&self, pid: u32) -> Option<String> {
        Some(self.cmdline_args(pid)?.join(" "))
    }

    /// The command line's arguments (empty ones dropped, bytes that are not
    /// UTF-8 replaced); `None` when the process is gone.
    pub fn cmdline_args(&self, pid: u32) -> Option<Vec<String>> {
        let raw = fs::read(self.root.join(format!("{pid}/cmdline"))).ok()?;
        Some(
            raw.split(|b| *b == 0)
                .filter(|p| !p.is_empty())
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect(),
        )
    }

    /// A process's current name (`comm`, which a thread pool may have
    /// changed since start); `None` when it is gone.
    pub fn comm(&self, pid: u32) -> Option<String> {
        self.read(format!("{pid}/comm"))
            .ok()
            .map(|s| s.trim_end_matches('\n').to_string())
    }

    /// Whether `/proc/<pid>` exists (a zombie still does).
    pub fn exists(&self, pid: u32) -> bool {
        self.root.join(pid.to_string()).exists()
    }

    /// The process a thread id belongs to (`Tgid` of its status); `None`
    /// when the thread is gone.
    pub fn tgid_of(&self, tid: u32) -> Option<u32> {
        self.status(tid).ok().map(|s| s.tgid)
    }

    /// A file of the calling process (`/proc/self/<name>`), as text.
    pub fn own_file(&self, name: &str) -> io::Result<String> {
        self.read(Path::new("self").join(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, ProcFs) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let w = |rel: &str, s: &str| {
            let f = p.join(rel);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, s).unwrap();
        };
        let stat = |pid: u32, comm: &str, state: char, flags: u64| {
            format!("{pid} ({comm}) {state} 1 1 1 0 -1 {flags} 0 0 0 0 0 0 0 0 20 0 2 0 1 0 0 0")
        };
        w("100/stat", &stat(100, "server", 'S', 4194560));
        w("100/status", "Name:\tserver\nTgid:\t100\n");
        w("100/task/100/comm", "server\n");
        w("100/task/101/comm", "worker-0\n");
        w("100/task/101/schedstat", "10 20 3\n");
        w("101/stat", &stat(101, "worker-0", 'R', 4194560));
        w("101/status", "Name:\tworker-0\nTgid:\t100\n");
        w("2/stat", &stat(2, "kthreadd", 'S', 2129984));
        w("2/status", "Name:\tkthreadd\nTgid:\t2\n");
        w("300/stat", &stat(300, "gone", 'Z', 4194560));
        w("300/status", "Name:\tgone\nTgid:\t300\n");
        let fs = ProcFs::new(p);
        (d, fs)
    }

    #[test]
    fn target_checks() {
        let (_d, fs) = fixture();
        assert_eq!(fs.check_target(100).unwrap(), (100, "server".into()));
        // A thread id resolves to its process.
        assert_eq!(fs.check_target(101).unwrap().0, 100);
        assert!(matches!(
            fs.check_target(2),
            Err(TargetError::KernelThread(2, _))
        ));
        assert!(matches!(
            fs.check_target(300),
            Err(TargetError::Exited(300, _))
        ));
        assert!(matches!(
            fs.check_target(999),
            Err(TargetError::NoSuchProcess(999))
        ));
        assert!(fs.is_alive(100));
        assert!(!fs.is_alive(300));
    }

    #[test]
    fn threads_and_their_files() {
        let (_d, fs) = fixture();
        assert_eq!(fs.threads(100), vec![100, 101]);
        assert_eq!(fs.threads(999), Vec::<u32>::new());
        assert_eq!(fs.thread_comm(100, 101).as_deref(), Some("worker-0"));
        assert_eq!(fs.thread_schedstat(100, 101).unwrap().wait_ns, 20);
        assert_eq!(fs.thread_schedstat(100, 100), None);
    }

    #[test]
    fn names_command_lines_and_owners() {
        let (d, fs) = fixture();
        let w = |rel: &str, s: &[u8]| std::fs::write(d.path().join(rel), s).unwrap();
        w("100/comm", b"server\n");
        w("100/cmdline", b"python3\0-m\0vllm\0\0--port\x008000\0");
        assert_eq!(fs.comm(100).as_deref(), Some("server"));
        assert_eq!(fs.comm(999), None);
        assert_eq!(
            fs.cmdline_args(100).unwrap(),
            ["python3", "-m", "vllm", "--port", "8000"]
        );
        assert_eq!(
            fs.cmdline(100).as_deref(),
            Some("python3 -m vllm --port 8000")
        );
        assert_eq!(fs.cmdline_args(999), None);
        assert!(fs.exists(100));
        assert!(fs.exists(300));
        assert!(!fs.exists(999));
        // A worker thread's id resolves to its process; the process to itself.
        assert_eq!(fs.tgid_of(101), Some(100));
        assert_eq!(fs.tgid_of(100), Some(100));
        assert_eq!(fs.tgid_of(999), None);
    }

    #[test]
    fn own_files_are_under_self() {
        let (d, fs) = fixture();
        std::fs::create_dir_all(d.path().join("self")).unwrap();
        std::fs::write(d.path().join("self/status"), "Name:\tme\nCapEff:\t0\n").unwrap();
        assert_eq!(fs.own_file("status").unwrap(), "Name:\tme\nCapEff:\t0\n");
        assert!(fs.own_file("stat").is_err());
    }
}
