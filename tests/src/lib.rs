//! Helpers for tailprobe's root integration tests: finding the binary,
//! skipping with a printed reason, driving the known workloads, and reading
//! the kernel's own accounting (independently of tailprobe's readers).

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// Skip a test with a reason on stderr. Tests never pass by doing nothing
/// silently: CI (root) runs them all.
#[macro_export]
macro_rules! skip_unless_root {
    ($name:expr) => {
        if !$crate::is_root() {
            $crate::skip_fixable($name, "needs root (CAP_BPF, CAP_PERFMON)");
            return;
        }
    };
}

/// Say that a test is skipped because this machine lacks what it needs (a
/// second CPU or NUMA node, a kernel option): one line `SKIP: name: reason`,
/// which `cargo xtask test` counts and lists at the end. The caller returns.
pub fn skip(name: &str, reason: &str) {
    eprintln!("SKIP: {name}: {reason}");
}

/// Like [`skip`], for what the test's set-up could provide here (root, an
/// installed tool). With `TAILPROBE_REQUIRE_ALL=1` (what `cargo xtask test`
/// sets when run as root, as CI does) such a skip is a failure instead.
pub fn skip_fixable(name: &str, reason: &str) {
    if require_all() {
        panic!("{name}: would be skipped ({reason}), but TAILPROBE_REQUIRE_ALL=1: this test can run here");
    }
    skip(name, reason);
}

/// `TAILPROBE_REQUIRE_ALL=1`: skips of tests that can run here fail.
pub fn require_all() -> bool {
    std::env::var("TAILPROBE_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The tailprobe binary: $TAILPROBE_BIN (set by `cargo xtask test`), else
/// target/debug/tailprobe next to the test executable's directory.
pub fn tailprobe_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TAILPROBE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> -> target/debug/tailprobe
    let p = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("tailprobe"))
        .expect("target directory");
    assert!(
        p.exists(),
        "{} not found: run `cargo build -p probe-user` first or set TAILPROBE_BIN",
        p.display()
    );
    p
}

/// Factor for absolute time tolerances (never for counts or ratios):
/// $TAILPROBE_TEST_TIME_SCALE, default 1. `cargo xtask vm-test` sets 10 in
/// its QEMU guests, where the CPU is emulated (TCG) and every instruction,
/// the probes' included, takes several times longer.
pub fn time_scale() -> u64 {
    std::env::var("TAILPROBE_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v: &u64| *v >= 1)
        .unwrap_or(1)
}

/// How long a test waits for `tailprobe record` to attach: 20 s on the
/// host (a debug build attaches in under 1 s on a busy 2-CPU machine),
/// times [`time_scale`] (an emulated CPU is several times slower).
pub fn attach_deadline() -> Duration {
    Duration::from_secs(20 * time_scale())
}

/// How long a test waits for `tailprobe record` to finish after it was
/// stopped or its duration ran out: 150 s (the longest `--duration` the
/// tests give is 120 s) plus 30 s times [`time_scale`] for the report.
pub fn finish_deadline() -> Duration {
    Duration::from_secs(150 + 30 * time_scale())
}

pub fn online_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A running test workload (tests/src/bin/workload.rs).
pub struct Workload {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    pub tids: Vec<u32>,
    /// The workload's own pid when `child` is a launcher (`systemd-run
    /// --pipe`) rather than the workload itself; see [`Workload::set_pid`].
    pid_override: Option<u32>,
}

impl Workload {
    /// `bin` is `env!("CARGO_BIN_EXE_workload")` of the calling test.
    pub fn start(bin: &str, args: &[&str]) -> Workload {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        Workload::start_command(cmd)
    }

    /// `cmd` runs the workload with its stdin and stdout passed through (for
    /// example `systemd-run --pipe ... -- workload spin2 ...`): the same
    /// ready/go/done protocol as [`Workload::start`].
    pub fn start_command(mut cmd: Command) -> Workload {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start workload");
        let stdin = child.stdin.take();
        let lines = line_channel(child.stdout.take().expect("workload stdout"));
        let mut w = Workload {
            child,
            stdin,
            lines,
            tids: Vec::new(),
            pid_override: None,
        };
        let ready = w.expect_line("ready", Duration::from_secs(10 * time_scale()));
        w.tids = parse_tids(&ready);
        w
    }

    pub fn pid(&self) -> u32 {
        self.pid_override.unwrap_or_else(|| self.child.id())
    }

    /// The workload's pid when the child is a launcher that runs it
    /// elsewhere (a systemd unit's main pid).
    pub fn set_pid(&mut self, pid: u32) {
        self.pid_override = Some(pid);
    }

    fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => continue,
                Err(e) => panic!("workload: no `{prefix}` line within {timeout:?}: {e}"),
            }
        }
    }

    /// Start the phase and wait for it to finish; returns every tid that
    /// took part (threads created during the phase included).
    pub fn go_and_wait(&mut self, timeout: Duration) -> Vec<u32> {
        let stdin = self.stdin.as_mut().expect("workload stdin");
        writeln!(stdin, "go").expect("write go");
        stdin.flush().expect("flush");
        parse_tids(&self.expect_line("done", timeout))
    }

    /// Start the phase without waiting (for workloads that exit).
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("workload stdin");
        writeln!(stdin, "go").expect("write go");
        stdin.flush().expect("flush");
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_tids(line: &str) -> Vec<u32> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect()
}

fn line_channel<R: std::io::Read + Send + 'static>(r: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `tailprobe record --pid P --json`, running until stopped.
pub struct Recording {
    child: Child,
    stderr_lines: mpsc::Receiver<String>,
    stdout: Option<ChildStdout>,
    pub stderr_seen: Vec<String>,
}

impl Recording {
    /// Start recording `--pid pid` and wait until the probes are attached.
    pub fn start(pid: u32, extra: &[&str]) -> Recording {
        let pid = pid.to_string();
        Recording::start_with(&["--pid", &pid], extra)
    }

    /// Start recording with the given target arguments (e.g. `--tid N`,
    /// `--comm NAME`), then `extra`; wait until the probes are attached.
    pub fn start_with(target: &[&str], extra: &[&str]) -> Recording {
        let mut cmd = Command::new(tailprobe_bin());
        cmd.args(["record", "--duration", "60s", "--json"])
            .args(target)
            .args(extra);
        Recording::start_command(cmd)
    }

    /// Start `cmd` (a `tailprobe record ... --json` command line the caller
    /// built, e.g. another binary or another user) and wait until attached.
    pub fn start_command(mut cmd: Command) -> Recording {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tailprobe record");
        let stderr_lines = line_channel(child.stderr.take().expect("stderr"));
        let stdout = child.stdout.take();
        let mut r = Recording {
            child,
            stderr_lines,
            stdout,
            stderr_seen: Vec::new(),
        };
        let limit = attach_deadline();
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match r.stderr_lines.recv_timeout(left) {
                Ok(l) => {
                    let attached = l.contains("probes attached");
                    r.stderr_seen.push(l);
                    if attached {
                        return r;
                    }
                }
                Err(_) => panic!(
                    "tailprobe did not attach within {limit:?}; stderr: {:?}",
                    r.stderr_seen
                ),
            }
        }
    }

    /// Stop with SIGINT (as Ctrl-C) and return (exit code, JSON report).
    pub fn stop(self) -> (i32, serde_json::Value) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.wait()
    }

    /// Wait for it to end on its own; returns (exit code, JSON report).
    /// Within [`finish_deadline`]: a recording that does not end is killed
    /// and the test fails saying so, with what it printed on stderr.
    pub fn wait(mut self) -> (i32, serde_json::Value) {
        let stdout = self.stdout.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut out = String::new();
            let read = match stdout {
                Some(mut s) => std::io::Read::read_to_string(&mut s, &mut out).map(|_| ()),
                None => Ok(()),
            };
            let _ = tx.send(read.map(|()| out));
        });
        let limit = finish_deadline();
        let out = match rx.recv_timeout(limit) {
            Ok(r) => r.expect("read stdout"),
            Err(_) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                while let Ok(l) = self.stderr_lines.try_recv() {
                    self.stderr_seen.push(l);
                }
                panic!(
                    "tailprobe record did not finish within {limit:?} (killed); stderr: {:?}",
                    self.stderr_seen
                );
            }
        };
        let st = self.child.wait().expect("wait tailprobe");
        while let Ok(l) = self.stderr_lines.try_recv() {
            self.stderr_seen.push(l);
        }
        let json: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!(
                "tailprobe printed no JSON report ({e}); stdout {out:?}; stderr {:?}",
                self.stderr_seen
            )
        });
        (st.code().unwrap_or(-1), json)
    }
}

/// The kernel's own per-thread accounting.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelCounters {
    pub run_ns: u64,
    pub wait_ns: u64,
    pub voluntary: u64,
    pub involuntary: u64,
}

pub fn kernel_counters(pid: u32, tid: u32) -> KernelCounters {
    let ss =
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).expect("schedstat");
    let mut it = ss
        .split_whitespace()
        .map(|v| v.parse::<u64>().expect("schedstat number"));
    let (run_ns, wait_ns) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    let st = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).expect("status");
    let field = |k: &str| -> u64 {
        st.lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{k} missing from status"))
    };
    KernelCounters {
        run_ns,
        wait_ns,
        voluntary: field("voluntary_ctxt_switches:"),
        involuntary: field("nonvoluntary_ctxt_switches:"),
    }
}

pub fn delta(a: KernelCounters, b: KernelCounters) -> KernelCounters {
    KernelCounters {
        run_ns: b.run_ns - a.run_ns,
        wait_ns: b.wait_ns - a.wait_ns,
        voluntary: b.voluntary - a.voluntary,
        involuntary: b.involuntary - a.involuntary,
    }
}

/// The per-thread object of a report.
pub fn thread(report: &serde_json::Value, tid: u32) -> &serde_json::Value {
    report["threads"]
        .as_array()
        .expect("threads array")
        .iter()
        .find(|t| t["tid"].as_u64() == Some(tid as u64))
        .unwrap_or_else(|| panic!("tid {tid} not in the report: {report:#}"))
}

pub fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

/// Minor + major page faults of a thread (fields 10 and 12 of its stat).
pub fn kernel_faults(pid: u32, tid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).expect("stat");
    let close = s.rfind(')').expect("comm end");
    let f: Vec<u64> = s[close + 2..]
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // After the comm, field 3 is index 0: minflt (10) is 7, majflt (12) is 9.
    f[7] + f[9]
}

/// `se.nr_migrations` from /proc/<pid>/task/<tid>/sched, when the kernel
/// shows it (CONFIG_SCHED_DEBUG).
pub fn kernel_migrations(pid: u32, tid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/sched")).ok()?;
    s.lines()
        .find(|l| l.trim_start().starts_with("se.nr_migrations"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
}

/// NET_RX softirqs run on every CPU so far (/proc/softirqs).
pub fn net_rx_softirqs() -> u64 {
    let s = std::fs::read_to_string("/proc/softirqs").expect("/proc/softirqs");
    s.lines()
        .find(|l| l.trim_start().starts_with("NET_RX:"))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

/// Decode a Perfetto trace with the independent decoder
/// (`tests/python/decode_trace.py`, the PyPI `perfetto` package's protobuf
/// classes): its JSON (counts, request durations), or None when the
/// package is missing (the caller skips, fixably).
pub fn python_decode_trace(path: &std::path::Path) -> Option<serde_json::Value> {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import perfetto.protos.perfetto.trace.perfetto_trace_pb2",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/decode_trace.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "decode_trace.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("decoder prints JSON"))
}

/// Run the phase of a `spin2` workload (two threads spinning `spin_ms` on
/// one CPU) while `rec` records it, stop the recording, and check each
/// thread against the kernel's own accounting over the same window with
/// record_sched.rs's tolerances: the workload contended (schedstat wait at
/// least 30% of `spin_ms`), run-queue totals within 5% (+2 ms),
/// involuntary switches within 2% (+3). `label` heads the printed figures.
/// Returns the report.
pub fn spin2_agrees_with_schedstat(
    w: &mut Workload,
    rec: Recording,
    spin_ms: u64,
    label: &str,
) -> serde_json::Value {
    let snap = |w: &Workload| -> Vec<KernelCounters> {
        w.tids
            .iter()
            .map(|t| kernel_counters(w.pid(), *t))
            .collect()
    };
    let before = snap(w);
    w.go_and_wait(Duration::from_secs(30));
    let after = snap(w);
    let (code, report) = rec.stop();
    assert_eq!(code, 0, "exit code; notes {:#}", report["notes"]);
    assert_eq!(report["lossy"], false, "{:#}", report["losses"]);
    // Every thread's numbers first, so that a failure shows all of them.
    let rows: Vec<(u32, KernelCounters, u64, u64)> = w
        .tids
        .iter()
        .enumerate()
        .map(|(i, tid)| {
            let k = delta(before[i], after[i]);
            let t = thread(&report, *tid);
            let (ours, inv) = (
                u(&t["runq_wait"]["total_ns"]),
                u(&t["involuntary_switches"]),
            );
            eprintln!(
                "{label}: tid {tid}: run-queue ours {ours} ns, schedstat {} ns ({:.2}%); involuntary ours {inv}, kernel {}",
                k.wait_ns,
                ours as f64 * 100.0 / k.wait_ns.max(1) as f64,
                k.involuntary
            );
            (*tid, k, ours, inv)
        })
        .collect();
    for (_tid, k, ours, inv) in rows {
        assert!(
            k.wait_ns >= spin_ms * 1_000_000 * 3 / 10,
            "the workload did not contend as designed: schedstat wait {} ns",
            k.wait_ns
        );
        assert!(
            ours.abs_diff(k.wait_ns) as f64 <= k.wait_ns as f64 * 0.05 + 2e6,
            "run-queue total: ours {ours}, kernel {}",
            k.wait_ns
        );
        assert!(
            inv.abs_diff(k.involuntary) as f64 <= k.involuntary as f64 * 0.02 + 3.0,
            "involuntary: ours {inv}, kernel {}",
            k.involuntary
        );
    }
    report
}

pub mod exporter;
mod serve;
pub use serve::{ServeProc, Sysctl};
