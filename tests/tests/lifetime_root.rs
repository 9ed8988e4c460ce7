//! Nothing tailprobe starts outlives it: the noise command and what it
//! forks stop at --duration; a SIGKILL of `noise`, `record` (built-in
//! workload and `-- CMD`) or `experiment` leaves no process behind; a noise
//! command that fails is a failure exit quoting its stderr; `record` of a
//! command that cannot run exits non-zero. Each test starts the processes it
//! then looks for, and knows their pids from files they write themselves.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tailprobe_tests::{skip_unless_root, tailprobe_bin};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tailprobe-life-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Alive and not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s[s.rfind(')').unwrap() + 1..].split_whitespace().next();
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// Wait until `f` holds, up to `limit`.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Pids written, one per line, by the test's own commands into `file`.
fn pids_in(file: &Path, n: usize) -> Vec<u32> {
    let mut out = Vec::new();
    let ok = wait_for(Duration::from_secs(20), || {
        out = std::fs::read_to_string(file)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        out.len() >= n
    });
    assert!(ok, "{} never held {n} pid(s): {out:?}", file.display());
    out
}

fn sigkill(c: &mut Child) {
    c.kill().unwrap();
    c.wait().unwrap();
}

/// A shell line that starts two long sleeps in the background (children of
/// the shell, so a signal to the shell alone leaves them), writes their pids
/// to `file` and waits.
fn two_sleepers(file: &Path) -> String {
    format!(
        "sleep 300 & echo $! >> {f}; sleep 300 & echo $! >> {f}; wait",
        f = file.display()
    )
}

#[test]
fn root_noise_cmd_stops_everything_it_started() {
    skip_unless_root!("root_noise_cmd_stops_everything_it_started");
    let d = scratch("noise-stop");
    let f = d.join("pids");
    // `yes` under a shell: the case the issue found still running.
    let line = format!(
        "yes > /dev/null & echo $! >> {f}; {}",
        two_sleepers(&f),
        f = f.display()
    );
    // Output to files, not pipes: a process left behind holding a pipe open
    // would make the test hang instead of failing.
    let (o, e) = (d.join("stdout"), d.join("stderr"));
    let t0 = Instant::now();
    let st = Command::new(tailprobe_bin())
        .args([
            "noise",
            "--place",
            "cpus:0",
            "--duration",
            "1500ms",
            "--noise-cmd",
            &line,
        ])
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .status()
        .unwrap();
    let took = t0.elapsed();
    let stderr = std::fs::read_to_string(&e).unwrap();
    assert_eq!(st.code(), Some(0), "{stderr}");
    let pids = pids_in(&f, 3);
    // Stopped at the time limit, with the 2 s grace at most.
    assert!(took < Duration::from_secs(10), "{took:?}");
    let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(
        left.is_empty(),
        "still running after noise returned: {left:?}"
    );
    let stdout = std::fs::read_to_string(&o).unwrap();
    assert!(stdout.contains("stopped at --duration"), "{stdout}");
}

#[test]
fn root_failing_noise_cmd_is_an_error_with_its_stderr() {
    skip_unless_root!("root_failing_noise_cmd_is_an_error_with_its_stderr");
    let out = Command::new(tailprobe_bin())
        .args([
            "noise",
            "--place",
            "cpus:0",
            "--duration",
            "5s",
            "--noise-cmd",
        ])
        .arg("echo 'stress-ng: no such stressor' >&2; exit 3")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("failed after"), "{stderr}");
    assert!(stderr.contains("exit status: 3"), "{stderr}");
    assert!(
        stderr.contains("its stderr:\nstress-ng: no such stressor"),
        "{stderr}"
    );
}

#[test]
fn root_sigkill_of_noise_leaves_no_process() {
    skip_unless_root!("root_sigkill_of_noise_leaves_no_process");
    let d = scratch("noise-kill");
    let f = d.join("pids");
    let mut tp = Command::new(tailprobe_bin())
        .args([
            "noise",
            "--place",
            "cpus:0",
            "--duration",
            "60s",
            "--noise-cmd",
        ])
        .arg(two_sleepers(&f))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pids = pids_in(&f, 2);
    assert!(pids.iter().all(|p| alive(*p)));
    sigkill(&mut tp);
    let gone = wait_for(Duration::from_secs(3), || pids.iter().all(|p| !alive(*p)));
    assert!(
        gone,
        "left running after SIGKILL of tailprobe noise: {pids:?}"
    );
}

#[test]
fn root_sigkill_of_record_with_a_command_leaves_no_process() {
    skip_unless_root!("root_sigkill_of_record_with_a_command_leaves_no_process");
    let d = scratch("record-cmd");
    let f = d.join("pids");
    let mut tp = Command::new(tailprobe_bin())
        .args(["record", "--duration", "60s", "--", "sh", "-c"])
        .arg(two_sleepers(&f))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pids = pids_in(&f, 2);
    sigkill(&mut tp);
    let gone = wait_for(Duration::from_secs(3), || pids.iter().all(|p| !alive(*p)));
    assert!(
        gone,
        "left running after SIGKILL of tailprobe record: {pids:?}"
    );
}

/// The pid in "probes attached to pid N" on tailprobe's stderr.
fn attached_pid(tp: &mut Child) -> u32 {
    use std::io::BufRead as _;
    let err = tp.stderr.take().unwrap();
    for line in std::io::BufReader::new(err).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.split("probes attached to pid ").nth(1) {
            return rest.trim().parse().unwrap();
        }
    }
    panic!("tailprobe ended without attaching");
}

#[test]
fn root_sigkill_of_record_leaves_no_builtin_workload() {
    skip_unless_root!("root_sigkill_of_record_leaves_no_builtin_workload");
    let mut tp = Command::new(tailprobe_bin())
        .args(["record", "--duration", "60s", "--builtin-threads", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = attached_pid(&mut tp);
    assert!(alive(pid));
    sigkill(&mut tp);
    let gone = wait_for(Duration::from_secs(3), || !alive(pid));
    assert!(
        gone,
        "the built-in workload (pid {pid}) outlived tailprobe record"
    );
}

#[test]
fn root_record_of_a_missing_command_fails() {
    skip_unless_root!("root_record_of_a_missing_command_fails");
    let out = Command::new(tailprobe_bin())
        .args(["record", "--", "/nonexistent/cmd"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot run \"/nonexistent/cmd\""),
        "{stderr}"
    );
    // A command's own failure is tailprobe's exit code.
    let out = Command::new(tailprobe_bin())
        .args(["record", "--duration", "5s", "--", "sh", "-c", "exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
}

/// Pids of processes whose parent is `ppid`, with their command lines.
fn children_of(ppid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        let parent: u32 = rest.split_whitespace().nth(1).unwrap().parse().unwrap();
        if parent == ppid {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            out.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    out
}

const PLAN: &str = r#"
name = "sigkill (test)"
governors = ["current"]
pinning = ["unpinned"]
noise = ["none"]
repeats = 1
warmup_s = 0.3
measure_s = 20.0
load_fraction = 0.4
noise_threads = 1
sweep = [0.5]
sweep_s = 20.0
max_total_s = 120.0
[slo]
percentile = 95.0
e2e_ms = 500.0
[server]
hidden = 64
layers = 1
"#;

#[test]
fn root_sigkill_of_experiment_leaves_no_server() {
    skip_unless_root!("root_sigkill_of_experiment_leaves_no_server");
    let d = scratch("experiment");
    let plan = d.join("plan.toml");
    std::fs::write(&plan, PLAN).unwrap();
    let mut tp = Command::new(tailprobe_bin())
        .arg("experiment")
        .arg("--plan")
        .arg(&plan)
        .arg("--out")
        .arg(d.join("out"))
        .arg("--baseline-doc")
        .arg(d.join("baseline.md"))
        .arg("--summary-doc")
        .arg(d.join("summary.md"))
        .arg("--journal")
        .arg(d.join("journal.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = None;
    let found = wait_for(Duration::from_secs(60), || {
        server = children_of(tp.id())
            .into_iter()
            .find(|(_, cmd)| cmd.contains(" serve "))
            .map(|(p, _)| p);
        server.is_some()
    });
    if !found {
        let _ = tp.kill();
        let st = tp.wait().unwrap();
        panic!("the experiment never started its server (status {st})");
    }
    let server = server.unwrap();
    sigkill(&mut tp);
    let gone = wait_for(Duration::from_secs(3), || !alive(server));
    assert!(
        gone,
        "the built-in server (pid {server}) outlived tailprobe experiment"
    );
}
