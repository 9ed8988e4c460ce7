//! Helpers of the `tailprobe diagnose` root tests (diagnose_root.rs,
//! diagnose_numa.rs): a CPU cgroup per test, the diag_workload processes,
//! running diagnose and reading its JSON.

#![allow(dead_code)]

use std::{
    fs,
    io::{BufRead, BufReader, Read as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tailprobe_tests::{skip, tailprobe_bin};

pub const WORKLOAD: &str = env!("CARGO_BIN_EXE_diag_workload");
pub const SECS: &str = "6s";

/// A CPU cgroup made for one test, removed (its processes moved back to the
/// parent) when dropped. v1 `cpu` hierarchy or the v2 tree with `cpu`.
pub struct TestCgroup {
    dir: PathBuf,
    pub v1: bool,
}

impl TestCgroup {
    pub fn create(name: &str) -> Option<TestCgroup> {
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        let (base, is_v1) = if v1.join("cpu.shares").exists() {
            (v1.to_path_buf(), true)
        } else {
            let v2 = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| {
                    fs::read_to_string(p.join("cgroup.controllers"))
                        .map(|c| c.split_whitespace().any(|x| x == "cpu"))
                        .unwrap_or(false)
                })?;
            let _ = fs::write(v2.join("cgroup.subtree_control"), "+cpu");
            (v2, false)
        };
        let dir = base.join(format!("tp-diag-{name}-{}", std::process::id()));
        fs::create_dir(&dir).ok()?;
        let cg = TestCgroup { dir, v1: is_v1 };
        // The largest weight: other work on the machine hardly preempts it.
        if cg.v1 {
            cg.write("cpu.shares", "262144");
        } else {
            cg.write("cpu.weight", "10000");
        }
        Some(cg)
    }

    /// Back to the default weight (v1 `cpu.shares` 1024, v2 `cpu.weight`
    /// 100): for a target that must compete with kernel threads on equal
    /// terms.
    pub fn default_weight(&self) {
        if self.v1 {
            self.write("cpu.shares", "1024");
        } else {
            self.write("cpu.weight", "100");
        }
    }

    pub fn write(&self, file: &str, v: &str) {
        fs::write(self.dir.join(file), v)
            .unwrap_or_else(|e| panic!("writing {v} to {}/{file}: {e}", self.dir.display()));
    }

    pub fn quota(&self, quota_us: u64, period_us: u64) {
        if self.v1 {
            self.write("cpu.cfs_period_us", &period_us.to_string());
            self.write("cpu.cfs_quota_us", &quota_us.to_string());
        } else {
            self.write("cpu.max", &format!("{quota_us} {period_us}"));
        }
    }

    pub fn add(&self, pid: u32) {
        self.write("cgroup.procs", &pid.to_string());
    }

    /// The path the kernel shows in /proc/<pid>/cgroup.
    pub fn path(&self) -> String {
        format!(
            "/{}",
            self.dir.file_name().unwrap_or_default().to_string_lossy()
        )
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let parent = self.dir.parent().map(Path::to_path_buf);
        if let (Some(parent), Ok(procs)) =
            (parent, fs::read_to_string(self.dir.join("cgroup.procs")))
        {
            for p in procs.lines() {
                let _ = fs::write(parent.join("cgroup.procs"), p);
            }
        }
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A diag_workload process, killed when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// Start `diag_workload ARGS` on `cpus` (taskset list, "" for any) and
    /// wait for its `ready`.
    pub fn start(cpus: &str, args: &[&str]) -> Proc {
        let mut cmd = if cpus.is_empty() {
            Command::new(WORKLOAD)
        } else {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus, WORKLOAD]);
            c
        };
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start diag_workload");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .expect("read ready");
        assert_eq!(line.trim(), "ready", "diag_workload {args:?}");
        Proc(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGCONT first: a stopped process dies only once continued.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGCONT) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tailprobe diagnose --pid P --json`. tailprobe itself runs in a
/// heavy-weight cgroup of its own too, so that a target spinning at the
/// largest weight does not starve its start-up and its end.
pub fn diagnose(pid: u32) -> Value {
    diagnose_with(pid, "", &[], || {})
}

/// `tailprobe diagnose --pid P --duration SECS --json EXTRA`, as
/// [`diagnose`], on the CPUs of a taskset list (`""`: any); `on_attached`
/// runs once tailprobe says its probes are attached (so a workload can
/// start its phase inside the recording).
pub fn diagnose_with(pid: u32, cpus: &str, extra: &[&str], on_attached: impl FnOnce()) -> Value {
    let mut cmd = if cpus.is_empty() {
        Command::new(tailprobe_bin())
    } else {
        let mut c = Command::new("taskset");
        c.args(["-c", cpus]).arg(tailprobe_bin());
        c
    };
    let mut child = cmd
        .args([
            "diagnose",
            "--pid",
            &pid.to_string(),
            "--duration",
            SECS,
            "--json",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tailprobe diagnose");
    let tool = TestCgroup::create("tool");
    if let Some(t) = &tool {
        t.add(child.id());
    }
    let mut stdout = child.stdout.take().expect("stdout");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let err = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("probes attached") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // Several times the recorder's deadline: diagnose loads more programs.
    let limit = 3 * tailprobe_tests::attach_deadline();
    match rx.recv_timeout(limit) {
        Ok(()) => on_attached(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            panic!("tailprobe diagnose did not attach within {limit:?}");
        }
    }
    let status = child.wait().expect("wait for tailprobe diagnose");
    drop(tool);
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    assert!(status.success(), "tailprobe diagnose failed: {stderr}");
    serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "diagnose JSON ({e}): {}; stderr {stderr}",
            String::from_utf8_lossy(&stdout)
        )
    })
}

/// The text report of `tailprobe diagnose --pid P --duration D EXTRA`.
pub fn diagnose_text(pid: u32, duration: &str, extra: &[&str]) -> String {
    let out = Command::new(tailprobe_bin())
        .args([
            "diagnose",
            "--pid",
            &pid.to_string(),
            "--duration",
            duration,
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run tailprobe diagnose");
    assert!(
        out.status.success(),
        "tailprobe diagnose failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The status (`fired`, `quiet`, `not_available`) and note of a detector.
pub fn status<'a>(d: &'a Value, detector: &str) -> (&'a str, Option<&'a str>) {
    let r = d["detectors"]
        .as_array()
        .expect("detectors")
        .iter()
        .find(|r| r["detector"] == detector)
        .unwrap_or_else(|| panic!("no detector {detector}: {d:#}"));
    (r["status"].as_str().unwrap_or_default(), r["note"].as_str())
}

pub fn detectors_fired(d: &Value) -> Vec<String> {
    d["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["detector"].as_str().unwrap_or_default().to_string())
        .collect()
}

pub fn first(d: &Value) -> &Value {
    d["findings"]
        .get(0)
        .unwrap_or_else(|| panic!("no finding at all: {d:#}"))
}

pub fn evidence(f: &Value, key: &str) -> f64 {
    f["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .find(|e| e["key"] == key)
        .and_then(|e| e["value"].as_f64())
        .unwrap_or_else(|| panic!("no evidence {key}: {f:#}"))
}

pub fn fired(d: &Value, detector: &str) -> bool {
    detectors_fired(d).iter().any(|x| x == detector)
}

pub fn cgroup(name: &str) -> Option<TestCgroup> {
    let cg = TestCgroup::create(name);
    if cg.is_none() {
        skip(
            name,
            "no CPU cgroup controller to place the test workloads in",
        );
    }
    cg
}
