//! Start-up of `tailprobe record`: time to attach in the report, optional
//! programs left out (and said so), and `--priority`.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tailprobe_tests::{attach_deadline, skip_unless_root, tailprobe_bin};

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
            if p.1 != 0 {
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
