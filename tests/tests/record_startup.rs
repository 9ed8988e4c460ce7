//! Start-up of `tailprobe record`: time to attach in the report, optional
//! programs left out (and said so), and `--priority`.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tailprobe_tests::{attach_deadline, skip_unless_root, tailprobe_bin};

/// The policy of `tailprobe record`'s start-up (SCHED_FIFO) and its
/// real-time priority.
const SCHED_FIFO: u64 = 1;
const BOOST: u64 = 1;

/// A process that sleeps, to record.
struct Sleeper(std::process::Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("60")
                .spawn()
                .expect("start sleep"),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn record_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(tailprobe_bin())
        .arg("record")
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .expect("run tailprobe record");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("JSON: {e}; stderr {err}"))
}

fn one_node_without_balancing() -> bool {
    let nodes = std::fs::read_dir("/sys/devices/system/node")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.starts_with("node") && n[4..].parse::<u32>().is_ok()
                })
                .count()
        })
        .unwrap_or(1)
        .max(1);
    let balancing = std::fs::read_to_string("/proc/sys/kernel/numa_balancing")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    nodes == 1 && balancing == 0
}

#[test]
fn root_report_says_when_it_attached_and_what_it_left_out() {
    skip_unless_root!("root_report_says_when_it_attached_and_what_it_left_out");
    let s = Sleeper::start();
    let pid = s.pid().to_string();
    let j = record_json(&["--pid", &pid, "--duration", "300ms", "--no-irq"]);
    let a = &j["attach_ms"];
    let (first, all) = (a["first"].as_f64().unwrap(), a["all"].as_f64().unwrap());
    assert!(first > 0.0 && all >= first, "{a}");
    assert!(
        all < attach_deadline().as_millis() as f64,
        "attached in {all} ms, more than the tests' deadline"
    );
    let (start, f, l) = (
        a["process_start_monotonic_ns"].as_u64().unwrap(),
        a["first_attached_monotonic_ns"].as_u64().unwrap(),
        a["all_attached_monotonic_ns"].as_u64().unwrap(),
    );
    assert!(start < f && f <= l, "{a}");
    assert!(
        l <= j["start_monotonic_ns"].as_u64().unwrap(),
        "the recording starts after the last attach: {a}"
    );
    assert_eq!(a["priority"], "default");
    // Root may raise itself: the start-up ran at SCHED_FIFO 1 and dropped it.
    assert_eq!(a["startup_priority"], "fifo:1 until attached", "{a}");
    // The BTF was parsed once, by us, and handed to aya's loader.
    assert_eq!(a["loader_parsed_btf"], false, "{a}");
    // The phases cover the whole start-up, from main's first line to the
    // last program attached, with nothing counted twice.
    let phases = a["phases"].as_object().expect("attach_ms.phases");
    assert_eq!(phases.len(), 8, "{a}");
    let sum: f64 = phases.values().map(|v| v.as_f64().unwrap()).sum();
    assert!(phases.values().all(|v| v.as_f64().unwrap() >= 0.0), "{a}");
    assert!(
        (sum - all).abs() < 0.01,
        "phases sum to {sum} ms, all {all} ms: {a}"
    );
    assert!(phases["attach"].as_f64().unwrap() > 0.0, "{a}");

    let left: Vec<&str> = j["left_out"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["program"].as_str().unwrap())
        .collect();
    let loaded: Vec<&str> = j["overhead"]["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "irq_handler_entry",
        "irq_handler_exit",
        "softirq_entry",
        "softirq_exit",
        "softirq_raise",
    ] {
        assert!(left.contains(&p), "{p} not in left_out {left:?}");
        assert!(!loaded.contains(&p), "{p} was loaded: {loaded:?}");
    }
    for l in j["left_out"].as_array().unwrap() {
        assert!(!l["reason"].as_str().unwrap().is_empty(), "{l}");
    }
    let numa = ["sched_move_numa", "sched_swap_numa", "sched_stick_numa"];
    for p in numa {
        assert_eq!(
            left.contains(&p),
            one_node_without_balancing(),
            "{p}: left out {left:?} on this machine"
        );
        assert_eq!(
            loaded.contains(&p),
            !one_node_without_balancing(),
            "{loaded:?}"
        );
    }
    // The required programs are all there.
    for p in ["sched_switch", "sched_wakeup", "sched_process_exit"] {
        assert!(loaded.contains(&p), "{p} missing from {loaded:?}");
    }
}

/// The scheduling policy and priority of a task, from /proc (fields 40-41
/// of stat: rt_priority, policy).
fn policy_of(path: &str) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm, field 3 (state) is at index 0: field N is at N - 3.
    Some((f.get(40 - 3)?.parse().ok()?, f.get(41 - 3)?.parse().ok()?))
}

#[test]
fn root_priority_fifo_applies_to_the_recorder_not_the_target() {
    skip_unless_root!("root_priority_fifo_applies_to_the_recorder_not_the_target");
    let s = Sleeper::start();
    let pid = s.pid().to_string();
    let child = Command::new(tailprobe_bin())
        .args(["record", "--pid", &pid, "--duration", "2s", "--json"])
        .args(["--priority", "fifo:3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tailprobe");
    let me = child.id();
    let deadline = Instant::now() + attach_deadline();
    let mut seen = None;
    while Instant::now() < deadline {
        if let Some(p) = policy_of(&format!("/proc/{me}/task/{me}/stat")) {
            // The start-up's SCHED_FIFO 1 comes first; --priority's after.
            if p == (3, SCHED_FIFO) {
                seen = Some(p);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("wait tailprobe");
    assert!(out.status.success());
    // SCHED_FIFO is policy 1.
    assert_eq!(seen, Some((3, 1)), "the recorder never ran at SCHED_FIFO 3");
    assert_eq!(
        policy_of(&format!("/proc/{pid}/stat")),
        Some((0, 0)),
        "the target's policy changed"
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(j["attach_ms"]["priority"], "fifo:3");
}

#[test]
fn bad_priority_is_a_usage_error() {
    for bad in ["fifo:0", "nice:-30", "rr:1", "fifo"] {
        let out = Command::new(tailprobe_bin())
            .args(["record", "--pid", "1", "--priority", bad])
            .output()
            .expect("run tailprobe");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("--priority"), "{bad}: {err}");
    }
}

/// Samples of (rt_priority, policy), each with its instant.
type Samples = Vec<(Instant, (u64, u64))>;

/// Every (rt_priority, policy) of `pid`'s main thread, sampled every 100 us
/// from a SCHED_FIFO 2 thread (so that the sampling itself is not starved)
/// until `stop` is set, with the instant of each sample.
fn sample_policy(
    pid: u32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Samples> {
    std::thread::spawn(move || {
        let p = libc::sched_param { sched_priority: 2 };
        // SAFETY: valid sched_param; pid 0 is this sampling thread.
        let fifo = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) } == 0;
        assert!(
            fifo,
            "the sampler could not run at SCHED_FIFO 2 (root test)"
        );
        let path = format!("/proc/{pid}/task/{pid}/stat");
        let mut seen = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(p) = policy_of(&path) {
                seen.push((Instant::now(), p));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        seen
    })
}

/// Start `tailprobe record --json ARGS`, sample its main thread's policy
/// until it exits, and return (samples, instant the "probes attached" line
/// was read, JSON report).
fn record_sampled(args: &[&str]) -> (Samples, Instant, serde_json::Value) {
    use std::io::BufRead as _;
    let mut child = Command::new(tailprobe_bin())
        .args(["record", "--json"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tailprobe");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_policy(child.id(), stop.clone());
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut attached_at = None;
    let mut lines = Vec::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).is_ok_and(|n| n > 0) {
        if line.contains("probes attached") && attached_at.is_none() {
            attached_at = Some(Instant::now());
        }
        lines.push(std::mem::take(&mut line));
    }
    let out = child.wait_with_output().expect("wait tailprobe");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = sampler.join().expect("sampler");
    assert_eq!(out.status.code(), Some(0), "{lines:?}");
    let j = serde_json::from_slice(&out.stdout).expect("JSON report");
    let attached_at = attached_at.unwrap_or_else(|| panic!("never attached: {lines:?}"));
    (seen, attached_at, j)
}

#[test]
fn root_startup_runs_at_fifo_1_until_attached_and_children_do_not_inherit_it() {
    skip_unless_root!("root_startup_runs_at_fifo_1_until_attached_and_children_do_not_inherit_it");
    let dir = std::env::temp_dir().join(format!("tailprobe-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("child-policy");
    // The launched command writes its own rt_priority and policy (stat
    // fields 40 and 41; `cut` has no space in its comm) and sleeps for the
    // recording to go on after the attach.
    let script = format!(
        "cut -d' ' -f40,41 /proc/self/stat > {}; sleep 1",
        file.display()
    );
    let (seen, attached_at, j) = record_sampled(&["--no-self-stats", "--", "sh", "-c", &script]);
    let boosted = seen
        .iter()
        .filter(|(_, p)| *p == (BOOST, SCHED_FIFO))
        .count();
    assert!(
        boosted > 0,
        "never saw the recorder at SCHED_FIFO {BOOST} in {} samples",
        seen.len()
    );
    // After the attach was announced (the boost is dropped before), only
    // the default policy.
    let after: Vec<_> = seen.iter().filter(|(t, _)| *t > attached_at).collect();
    assert!(
        after.len() > 100,
        "only {} samples after the attach",
        after.len()
    );
    assert!(
        after.iter().all(|(_, p)| *p == (0, 0)),
        "still real-time after the attach: {:?}",
        after.iter().find(|(_, p)| *p != (0, 0))
    );
    let child = std::fs::read_to_string(&file).expect("the command's policy file");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        child.trim(),
        "0 0",
        "the launched command inherited a policy"
    );
    assert_eq!(
        j["attach_ms"]["startup_priority"], "fifo:1 until attached",
        "{}",
        j["attach_ms"]
    );
}

#[test]
fn root_no_startup_boost_keeps_the_default_policy() {
    skip_unless_root!("root_no_startup_boost_keeps_the_default_policy");
    let s = Sleeper::start();
    let pid = s.pid().to_string();
    let (seen, _, j) =
        record_sampled(&["--pid", &pid, "--duration", "300ms", "--no-startup-boost"]);
    assert!(seen.len() > 100, "only {} samples", seen.len());
    assert!(
        seen.iter().all(|(_, p)| *p == (0, 0)),
        "a real-time sample with --no-startup-boost: {:?}",
        seen.iter().find(|(_, p)| *p != (0, 0))
    );
    let sp = j["attach_ms"]["startup_priority"].as_str().unwrap_or("");
    assert!(sp.contains("--no-startup-boost"), "{sp}");
}
