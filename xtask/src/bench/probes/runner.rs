//! Running the tools of the probe benchmark: bounded child processes, the
//! `kernel.bpf_stats_enabled` sysctl (restored on every way out), signals,
//! the tools it needs, and facts about the machine.

use super::*;

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// The sysctl's value before we changed it, kept while it is changed so that
/// a run killed outright (SIGKILL) is repaired by the next one. /run is a
/// tmpfs, cleared on reboot, as the sysctl itself is.
const STATS_SAVED: &str = "/run/tailprobe-bench-bpf-stats-enabled.orig";
pub(super) const RUNQLAT: &str = "/usr/sbin/runqlat";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catch SIGINT/SIGTERM/SIGHUP so that the section can clean up (children
/// get the default dispositions back at exec).
pub(super) fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

pub(super) fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

pub(super) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------
// kernel.bpf_stats_enabled, restored on every exit path

pub(super) fn read_stats_sysctl() -> Result<String> {
    Ok(std::fs::read_to_string(STATS_SYSCTL)
        .with_context(|| format!("reading {STATS_SYSCTL}"))?
        .trim()
        .to_string())
}

fn write_stats_sysctl(v: &str) -> Result<()> {
    std::fs::write(STATS_SYSCTL, v).with_context(|| format!("writing {v} to {STATS_SYSCTL}"))
}

/// A value saved by a run that was killed before it could restore it.
pub(super) fn restore_stale_stats_sysctl() -> Result<()> {
    if let Ok(old) = std::fs::read_to_string(STATS_SAVED) {
        let old = old.trim();
        if old == "0" || old == "1" {
            eprintln!(
                "xtask bench: restoring kernel.bpf_stats_enabled={old} left by an earlier run"
            );
            write_stats_sysctl(old)?;
        }
        let _ = std::fs::remove_file(STATS_SAVED);
    }
    Ok(())
}

/// `kernel.bpf_stats_enabled=1` while alive; the old value comes back on drop.
pub(super) struct StatsOn {
    old: String,
}

impl StatsOn {
    pub(super) fn enable() -> Result<Self> {
        let old = read_stats_sysctl()?;
        std::fs::write(STATS_SAVED, &old).with_context(|| format!("writing {STATS_SAVED}"))?;
        write_stats_sysctl("1")?;
        Ok(Self { old })
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        match write_stats_sysctl(&self.old) {
            Ok(()) => {
                let _ = std::fs::remove_file(STATS_SAVED);
            }
            Err(e) => eprintln!(
                "xtask bench: could not restore kernel.bpf_stats_enabled={} ({e:#}); \
                 run `sysctl kernel.bpf_stats_enabled={}`",
                self.old, self.old
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// Bounded child processes

/// A child that is stopped (SIGTERM, then SIGKILL) if it is still running
/// when dropped.
pub(super) struct Running {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    what: String,
}

pub(super) struct Finished {
    pub(super) stdout: String,
    pub(super) stderr: String,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

static SCRATCH: std::sync::Mutex<Option<tempfile::TempDir>> = std::sync::Mutex::new(None);

/// A private scratch directory (random name, mode 0700, ours), made on first
/// use; `scratch_cleanup` removes it.
pub(super) fn scratch_dir() -> Result<PathBuf> {
    let mut g = SCRATCH
        .lock()
        .map_err(|_| anyhow::anyhow!("scratch directory lock poisoned"))?;
    if g.is_none() {
        *g = Some(
            tempfile::Builder::new()
                .prefix("tailprobe-bench-probes-")
                .tempdir()
                .context("creating a private scratch directory")?,
        );
    }
    Ok(g.as_ref()
        .map(|d| d.path().to_path_buf())
        .unwrap_or_default())
}

pub(super) fn scratch_cleanup() {
    if let Ok(mut g) = SCRATCH.lock() {
        g.take();
    }
}

pub(super) fn spawn(argv: &[String]) -> Result<Running> {
    let what = argv.join(" ");
    eprintln!("xtask bench: {what}");
    let dir = scratch_dir()?;
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let out = dir.join(format!("{n}.out"));
    let err = dir.join(format!("{n}.err"));
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(&err)?)
        .spawn()
        .with_context(|| format!("starting {}", argv[0]))?;
    Ok(Running {
        child,
        out,
        err,
        what,
    })
}

impl Running {
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn stop(&mut self, sig: libc::c_int) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, sig);
            }
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// What the child has written to its stderr so far.
    pub(super) fn stderr_so_far(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Wait for the child to exit within `limit`; it must succeed.
    pub(super) fn finish(mut self, started: Instant, limit: Duration) -> Result<Finished> {
        let status = loop {
            if let Some(st) = self.child.try_wait()? {
                break st;
            }
            check_interrupted()?;
            if started.elapsed() > limit {
                bail!(
                    "`{}` ran past its limit of {limit:?}; stopped it",
                    self.what
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = std::fs::read_to_string(&self.out).unwrap_or_default();
        let stderr = std::fs::read_to_string(&self.err).unwrap_or_default();
        if !status.success() {
            let tail: String = stderr
                .lines()
                .rev()
                .take(8)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            bail!("`{}` failed ({status}):\n{tail}", self.what);
        }
        Ok(Finished { stdout, stderr })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop(libc::SIGTERM);
    }
}

pub(super) fn run_bounded(argv: &[String], limit: Duration) -> Result<Finished> {
    let t = Instant::now();
    spawn(argv)?.finish(t, limit)
}

pub(super) fn argv(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

// ---------------------------------------------------------------------------
// Tools

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

/// Install the Debian packages whose programs are missing, idempotently.
pub(in crate::bench) fn ensure_tools() -> Result<()> {
    let wanted = [
        (RUNQLAT, "libbpf-tools"),
        ("bpftool", "bpftool"),
        ("hackbench", "rt-tests"),
        ("stress-ng", "stress-ng"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(p, _)| !have(p))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "xtask bench: installing {} (apt-get install -y)",
        missing.join(" ")
    );
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        eprintln!("xtask bench: apt-get install failed; running apt-get update and retrying");
        let _ = Command::new("apt-get").arg("update").status();
        if !install() {
            bail!(
                "could not install {}: run `apt-get update && apt-get install -y {}`",
                missing.join(" "),
                missing.join(" ")
            );
        }
    }
    for (p, pkg) in wanted {
        if !have(p) {
            bail!("{p} is still missing after installing {pkg}");
        }
    }
    Ok(())
}

pub(super) fn first_line_of(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output();
    match out {
        Ok(o) => {
            let mut s = String::from_utf8_lossy(&o.stdout).to_string();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("?")
                .trim()
                .to_string()
        }
        Err(_) => "?".into(),
    }
}

// ---------------------------------------------------------------------------
// BPF run-time statistics

pub(super) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

pub(super) fn machine() -> (String, usize, String) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = cmd::output("uname", &["-r"]).unwrap_or_else(|| "?".into());
    (cpu, n, kernel)
}
