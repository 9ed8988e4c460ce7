//! Processes the root tests start and stop: `tailprobe serve` on a free
//! port, and a sysctl set for one test and put back after it.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use crate::tailprobe_bin;

/// `tailprobe serve --port 0 ARGS` as a child process, killed on drop: the
/// built-in server of the load, diagnose and serve tests. `--duration 120s`
/// unless ARGS give one.
pub struct ServeProc {
    pub child: Child,
    /// `http://127.0.0.1:PORT`, from the server's first line on stderr.
    pub url: String,
}

impl ServeProc {
    /// Start it, optionally with a file-descriptor limit (RLIMIT_NOFILE).
    pub fn start(args: &[&str], nofile: Option<u64>) -> ServeProc {
        ServeProc::spawn(Command::new(tailprobe_bin()), args, nofile)
    }

    /// Start it on the CPUs of a taskset list ("0", "0-1").
    pub fn start_on(cpus: &str, args: &[&str]) -> ServeProc {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", cpus]).arg(tailprobe_bin());
        ServeProc::spawn(cmd, args, None)
    }

    fn spawn(mut cmd: Command, args: &[&str], nofile: Option<u64>) -> ServeProc {
        use std::os::unix::process::CommandExt as _;
        cmd.args(["serve", "--port", "0"]).args(args);
        if !args.contains(&"--duration") {
            cmd.args(["--duration", "120s"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = nofile {
            // SAFETY: between fork and exec only setrlimit, which is
            // async-signal-safe, runs; the struct lives on this stack.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("start tailprobe serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut line = String::new();
        BufReader::new(stderr)
            .read_line(&mut line)
            .expect("serve's first line");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        ServeProc { child, url }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.url
            .trim_start_matches("http://")
            .parse()
            .expect("address")
    }
}

impl Drop for ServeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kernel knob (a sysctl under /proc/sys, a debugfs or sysfs file) set
/// for a test; the old value is written back on drop, also on panic.
pub struct Sysctl {
    path: PathBuf,
    old: String,
}

impl Sysctl {
    /// Write `value` to `path`; panics (naming the file) when it cannot.
    pub fn set(path: impl Into<PathBuf>, value: &str) -> Sysctl {
        let path = path.into();
        let old =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        std::fs::write(&path, value)
            .unwrap_or_else(|e| panic!("write {value} to {}: {e}", path.display()));
        Sysctl {
            path,
            old: old.trim().to_string(),
        }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, &self.old) {
            eprintln!(
                "could not restore {} to {}: {e}",
                self.path.display(),
                self.old
            );
        }
    }
}
