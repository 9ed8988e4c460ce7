//! Root tests of `tailprobe diagnose`: each planted cause is named first,
//! and the same workload without the cause leaves that detector quiet.
//!
//! The targets sit in a CPU cgroup of their own with the largest weight, so
//! that whatever else runs on the machine (other builds) does not preempt
//! them enough to be a cause: the only cause is the planted one. The NUMA
//! and frequency/idle detectors on a two-node machine: diagnose_numa.rs.

mod diagnose_support;

use std::{
    fs,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use diagnose_support::{cgroup, detectors_fired, diagnose, evidence, fired, first, Proc, SECS};
use serde_json::Value;
use tailprobe_tests::{skip, skip_fixable, tailprobe_bin};
#[test]
fn root_diagnose_names_a_hog_in_another_cgroup() {
    tailprobe_tests::skip_unless_root!("root_diagnose_names_a_hog_in_another_cgroup");
    let (Some(cg), Some(hog_cg)) = (cgroup("target"), cgroup("hog")) else {
        return;
    };
    let target = Proc::start("0", &["spin"]);
    cg.add(target.pid());
    let hog = Proc::start("0", &["spin"]);
    hog_cg.add(hog.pid());
    let d = diagnose(target.pid());
    let f = first(&d);
    assert_eq!(f["detector"], "preemption", "{d:#}");
    let what = f["what"].as_str().unwrap_or_default();
    assert!(what.contains(&format!("pid {}", hog.pid())), "{what}");
    assert!(
        what.contains(&hog_cg.path()),
        "names the hog's cgroup: {what}"
    );
    // Two equal-weight groups on one CPU: the target waits about half the run.
    let wait = evidence(f, "outside_wait_ms");
    assert!(wait > 0.25 * 6000.0, "outside wait {wait} ms: {d:#}");
    // What it measured: the outside wait's share of the run agrees with the
    // evidence, and both numbers are past their bounds.
    let m = measured(&d, "preemption");
    assert!(m.iter().all(|(v, t)| v >= t), "{m:?}");
    let run_ms = d["duration_ns"].as_f64().expect("duration_ns") / 1e6;
    assert!(
        (m[0].0 - 100.0 * wait / run_ms).abs() < 0.1,
        "{m:?} vs {wait} ms of {run_ms} ms"
    );

    // Without the hog, the same target is not preempted enough to matter,
    // and the measured share says by how much.
    drop(hog);
    let d = diagnose(target.pid());
    assert!(!fired(&d, "preemption"), "{d:#}");
    let m = measured(&d, "preemption");
    assert!(m.iter().any(|(v, t)| v < t), "{m:?}");
}

/// `(value, threshold)` of each number detector `name` measured.
fn measured(d: &serde_json::Value, name: &str) -> Vec<(f64, f64)> {
    d["detectors"]
        .as_array()
        .expect("detectors")
        .iter()
        .find(|r| r["detector"] == name)
        .and_then(|r| r["measured"].as_array())
        .expect("measured")
        .iter()
        .map(|m| {
            (
                m["value"].as_f64().expect("value"),
                m["threshold"].as_f64().expect("threshold"),
            )
        })
        .collect()
}

#[test]
fn root_diagnose_names_a_saturated_pipeline_thread() {
    tailprobe_tests::skip_unless_root!("root_diagnose_names_a_saturated_pipeline_thread");
    let Some(cg) = cgroup("pipeline") else {
        return;
    };
    // Producer: 1 ms of work per item, no rest; 3 consumers: 20 us per item.
    let p = Proc::start("", &["pipeline", "1000", "0", "20", "3"]);
    cg.add(p.pid());
    let d = diagnose(p.pid());
    let f = first(&d);
    assert_eq!(f["detector"], "saturated_thread", "{d:#}");
    assert!(
        f["what"].as_str().unwrap_or_default().contains("producer"),
        "{f:#}"
    );
    // The consumers are woken by the producer: who woke whom shows it.
    assert!(evidence(f, "waiters_woken_by_hot_pct") >= 50.0, "{f:#}");
    assert_eq!(f["confidence"], "high", "{f:#}");
    drop(p);

    // The same pipeline with the work spread: producer 100 us + 1 ms rest,
    // consumers 300 us per item.
    let p = Proc::start("", &["pipeline", "100", "1000", "300", "3"]);
    cg.add(p.pid());
    let d = diagnose(p.pid());
    assert!(!fired(&d, "saturated_thread"), "{d:#}");
}

#[test]
fn root_diagnose_names_cfs_throttling() {
    tailprobe_tests::skip_unless_root!("root_diagnose_names_cfs_throttling");
    let Some(cg) = cgroup("quota") else {
        return;
    };
    // Two spinning threads' worth of demand would need 2 CPUs; the quota
    // gives 0.2.
    cg.quota(20_000, 100_000);
    let p = Proc::start("", &["duty", "2", "10000", "10000"]);
    cg.add(p.pid());
    let d = diagnose(p.pid());
    let f = first(&d);
    assert_eq!(f["detector"], "cfs_throttling", "{d:#}");
    assert!(evidence(f, "throttled_periods_pct") > 50.0, "{f:#}");
    assert!((evidence(f, "quota_cpus") - 0.2).abs() < 1e-9, "{f:#}");
    assert!(
        f["what"].as_str().unwrap_or_default().contains(&cg.path()),
        "{f:#}"
    );
    drop(p);

    // The same workload in a cgroup without a quota.
    let Some(free) = cgroup("noquota") else {
        return;
    };
    let p = Proc::start("", &["duty", "2", "10000", "10000"]);
    free.add(p.pid());
    let d = diagnose(p.pid());
    assert!(!fired(&d, "cfs_throttling"), "{d:#}");
}

/// SIGSTOP the process for `stop` every `every` until dropped.
struct Stopper {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Stopper {
    fn start(pid: u32, stop_for: Duration, every: Duration) -> Stopper {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
                std::thread::sleep(stop_for);
                // SAFETY: as above.
                unsafe { libc::kill(pid as i32, libc::SIGCONT) };
                std::thread::sleep(every.saturating_sub(stop_for));
            }
        });
        Stopper {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Stopper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[test]
fn root_diagnose_names_stop_the_world_pauses() {
    tailprobe_tests::skip_unless_root!("root_diagnose_names_stop_the_world_pauses");
    let Some(cg) = cgroup("stw") else {
        return;
    };
    // Two threads each busy 3 ms in every 10 ms; all stopped for 100 ms
    // every 500 ms.
    let p = Proc::start("", &["duty", "2", "3000", "10000"]);
    cg.add(p.pid());
    let stopper = Stopper::start(
        p.pid(),
        Duration::from_millis(100),
        Duration::from_millis(500),
    );
    let d = diagnose(p.pid());
    drop(stopper);
    let f = first(&d);
    assert_eq!(f["detector"], "stop_the_world", "{d:#}");
    // About 12 pauses in 6 s.
    let n = evidence(f, "pauses");
    assert!((6.0..=14.0).contains(&n), "{n} pauses: {f:#}");

    // Not stopped: no pause.
    let d = diagnose(p.pid());
    assert!(!fired(&d, "stop_the_world"), "{d:#}");
}

/// Steer loopback receive work (RPS) to a CPU mask; put it back on drop.
struct Rps {
    file: PathBuf,
    saved: String,
}

impl Rps {
    fn steer(mask: &str) -> Option<Rps> {
        let file = PathBuf::from("/sys/class/net/lo/queues/rx-0/rps_cpus");
        let saved = fs::read_to_string(&file).ok()?;
        fs::write(&file, mask).ok()?;
        Some(Rps { file, saved })
    }
}

impl Drop for Rps {
    fn drop(&mut self) {
        let _ = fs::write(&self.file, self.saved.trim());
    }
}

#[test]
fn root_diagnose_names_softirq_load_on_the_target_cpu() {
    tailprobe_tests::skip_unless_root!("root_diagnose_names_softirq_load_on_the_target_cpu");
    if tailprobe_tests::online_cpus() < 2 {
        skip(
            "root_diagnose_names_softirq_load_on_the_target_cpu",
            "needs 2 CPUs",
        );
        return;
    }
    let Some(cg) = cgroup("irq") else {
        return;
    };
    // At the default weight: a busy CPU's receive softirqs run in
    // ksoftirqd, and a target at the largest weight starves it (the
    // softirqs then wait, and the target hardly notices: 22 ms of softirq
    // in 5 s, no finding, seen on 2026-12-03), which is not what a server at
    // the default weight lives with.
    cg.default_weight();
    let target = Proc::start("0", &["spin"]);
    cg.add(target.pid());
    // Loopback traffic sent from CPU 1 ...
    let flood = Proc::start("1", &["udp-flood"]);
    // ... by a sender in a heavy-weight cgroup of its own (not the
    // target's), so that other work on the machine does not starve it and
    // thin the traffic (seen with three builds running: no finding).
    let Some(flood_cg) = cgroup("irq-flood") else {
        return;
    };
    flood_cg.add(flood.pid());
    {
        // ... whose receive softirq RPS sends to CPU 0, the target's.
        let Some(_rps) = Rps::steer("1") else {
            skip(
                "root_diagnose_names_softirq_load_on_the_target_cpu",
                "no RPS on lo",
            );
            return;
        };
        let d = diagnose(target.pid());
        let findings = d["findings"].as_array().expect("findings");
        let at = findings
            .iter()
            .position(|f| f["detector"] == "irq")
            .unwrap_or_else(|| panic!("no irq finding: {d:#}"));
        let f = &findings[at];
        assert!(
            f["what"].as_str().unwrap_or_default().contains("NET_RX"),
            "{f:#}"
        );
        // First, unless other work on the machine took the target's CPU
        // (at the default weight a build beside the tests can: preemption
        // by rustc ranked above the irq finding once): then what ranks
        // above it is that load, named, and none of it is the test's own
        // processes.
        for g in &findings[..at] {
            let what = g["what"].as_str().unwrap_or_default();
            assert!(
                ["preemption", "stop_the_world", "cpu_starvation"]
                    .contains(&g["detector"].as_str().unwrap_or_default())
                    && !what.contains("diag_workload"),
                "ranked above the planted softirq load: {g:#}\n{d:#}"
            );
        }
    }
    // Received on the sender's CPU: nothing lands on the target.
    let d = diagnose(target.pid());
    drop(flood);
    assert!(!fired(&d, "irq"), "{d:#}");
}

#[test]
fn root_diagnose_finds_no_cause_in_a_quiet_workload() {
    tailprobe_tests::skip_unless_root!("root_diagnose_finds_no_cause_in_a_quiet_workload");
    let Some(cg) = cgroup("quiet") else {
        return;
    };
    // Wakes every 10 ms for 200 us of work.
    let p = Proc::start("", &["sleeper", "10000", "200"]);
    cg.add(p.pid());
    let d = diagnose(p.pid());
    assert!(detectors_fired(&d).is_empty(), "{d:#}");
    // Every CPU-side detector ran and stayed quiet; the node ones (NUMA,
    // frequency) are quiet or say why they cannot apply (one node, a VM).
    let runs = d["detectors"].as_array().expect("detectors");
    assert_eq!(runs.len(), 9, "{d:#}");
    for r in runs {
        let node_side = r["detector"] == "numa" || r["detector"] == "frequency_idle";
        let ok = r["status"] == "quiet"
            || (node_side && r["status"] == "not_available" && r["note"].is_string());
        assert!(ok, "{r:#}");
        // A quiet detector says what it measured, and at least one of its
        // numbers is short of its bound (that is why it stayed quiet).
        let measured = r["measured"].as_array().expect("measured");
        if r["status"] == "quiet" {
            let short = measured.iter().any(|m| {
                let (v, t) = (
                    m["value"].as_f64().unwrap(),
                    m["threshold"].as_f64().unwrap(),
                );
                if m["needs"] == "<=" {
                    v > t
                } else {
                    v < t
                }
            });
            assert!(!measured.is_empty() && short, "{r:#}");
        } else {
            assert!(measured.is_empty(), "{r:#}");
        }
    }
    // And the text says so.
    let out = Command::new(tailprobe_bin())
        .args([
            "diagnose",
            "--pid",
            &p.pid().to_string(),
            "--duration",
            "2s",
        ])
        .output()
        .expect("run tailprobe diagnose");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("No CPU-side cause found"), "{text}");
    assert!(text.contains("measured: outside_wait_run_pct"), "{text}");
}

#[test]
fn root_diagnose_names_a_mutex_convoy() {
    tailprobe_tests::skip_unless_root!("root_diagnose_names_a_mutex_convoy");
    let Some(cg) = cgroup("mutex") else {
        return;
    };
    // Four threads holding one mutex 500 us at a time, 10 us between.
    let p = Proc::start("", &["mutex", "4", "500", "10"]);
    cg.add(p.pid());
    let d = diagnose(p.pid());
    let f = first(&d);
    assert_eq!(f["detector"], "lock_convoy", "{d:#}");
    assert!(evidence(f, "parallel_cpus") <= 1.25, "{f:#}");
    assert!(evidence(f, "handoffs_per_s") >= 40.0, "{f:#}");
    drop(p);

    // The same threads, each with a mutex of its own.
    let p = Proc::start("", &["mutexes", "4", "500", "10"]);
    cg.add(p.pid());
    let d = diagnose(p.pid());
    assert!(!fired(&d, "lock_convoy"), "{d:#}");
}

/// A CPython process whose THREADS threads run `body` forever.
fn python(threads: u32, body: &str) -> Option<Proc> {
    let script = format!(
        "import threading, time\n\
         def work():\n    x = 0\n    while True:\n{body}\n\
         for _ in range({threads}):\n    threading.Thread(target=work, daemon=True).start()\n\
         print('ready', flush=True)\n\
         threading.Event().wait()\n"
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let out = child.stdout.take()?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).ok()?;
    assert_eq!(line.trim(), "ready", "python workload");
    Some(Proc(child))
}

#[test]
fn root_diagnose_names_gil_contention() {
    tailprobe_tests::skip_unless_root!("root_diagnose_names_gil_contention");
    let Some(cg) = cgroup("gil") else {
        return;
    };
    // Four threads of pure-Python arithmetic: they share one interpreter lock.
    let Some(p) = python(4, "        for i in range(1000):\n            x += i * i") else {
        skip_fixable("root_diagnose_names_gil_contention", "python3 not runnable");
        return;
    };
    cg.add(p.pid());
    let d = diagnose(p.pid());
    let f = first(&d);
    assert_eq!(f["detector"], "lock_convoy", "{d:#}");
    assert!(
        f["what"].as_str().unwrap_or_default().contains("GIL"),
        "{f:#}"
    );
    drop(p);

    // Four threads that mostly sleep (the GIL is free while they do).
    let Some(p) = python(4, "        time.sleep(0.002)\n        x += 1") else {
        return;
    };
    cg.add(p.pid());
    let d = diagnose(p.pid());
    assert!(!fired(&d, "lock_convoy"), "{d:#}");
}

#[test]
fn root_diagnose_names_cpu_oversubscription() {
    tailprobe_tests::skip_unless_root!("root_diagnose_names_cpu_oversubscription");
    let Some(cg) = cgroup("oversub") else {
        return;
    };
    // Four always-busy threads allowed one CPU: each waits ~3/4 of the time.
    let p = Proc::start("0", &["duty", "4", "10000", "10000"]);
    cg.add(p.pid());
    let d = diagnose(p.pid());
    let f = first(&d);
    assert_eq!(f["detector"], "cpu_starvation", "{d:#}");
    assert!(
        f["what"]
            .as_str()
            .unwrap_or_default()
            .contains("more runnable threads than CPUs"),
        "{f:#}"
    );
    drop(p);

    // One busy thread on that CPU: nothing to wait for.
    let p = Proc::start("0", &["duty", "1", "10000", "10000"]);
    cg.add(p.pid());
    let d = diagnose(p.pid());
    assert!(!fired(&d, "cpu_starvation"), "{d:#}");
}

/// A recording of `pid` in this process (the recorder as a library), for
/// what the JSON of `tailprobe diagnose` does not show.
struct InProcess {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<anyhow::Result<tailprobe::report::RecordReport>>,
}

impl InProcess {
    /// Start it with the options `set` changes; returns once the probes are
    /// attached.
    fn start(pid: u32, set: impl FnOnce(&mut tailprobe::record::RecordOptions)) -> InProcess {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut ro = tailprobe::record::RecordOptions::new(tailprobe::record::TargetSpec::Pid(pid));
        ro.duration = Some(Duration::from_secs(120));
        ro.stop = Some(stop.clone());
        ro.quiet_command = true;
        set(&mut ro);
        ro.on_attached = Some(tailprobe::record::Callback::new(move |_| {
            let _ = tx.send(());
        }));
        let handle = std::thread::spawn(move || tailprobe::record::run(&ro));
        rx.recv_timeout(Duration::from_secs(60))
            .expect("probes attached within 60 s");
        InProcess { stop, handle }
    }

    fn stop(self) -> tailprobe::report::RecordReport {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .join()
            .expect("recording thread")
            .expect("recording succeeded")
    }
}

/// The waker program (`sched_wakeup_edges`, on `sched_waking`) against the
/// kernel's own count: two threads pass a byte back and forth 1500 times
/// over a Unix socket pair, each blocking in its read until the other
/// writes. Every voluntary switch of one of them (the kernel's
/// `voluntary_ctxt_switches`) is a sleep that the other ends, apart from
/// the start and end barriers and the final park (at most 3); the edges from
/// one to the other must match that count.
#[test]
fn root_waker_edges_agree_with_the_kernel() {
    tailprobe_tests::skip_unless_root!("root_waker_edges_agree_with_the_kernel");
    let rounds = 1500u64;
    let mut w = tailprobe_tests::Workload::start(
        env!("CARGO_BIN_EXE_workload"),
        &["pingpong", &rounds.to_string()],
    );
    let pid = w.pid();
    let (a, b) = (w.tids[0], w.tids[1]);
    let rec = InProcess::start(pid, |ro| ro.wake_edges = true);
    let before = [a, b].map(|t| tailprobe_tests::kernel_counters(pid, t));
    w.go_and_wait(Duration::from_secs(60));
    let after = [a, b].map(|t| tailprobe_tests::kernel_counters(pid, t));
    let report = rec.stop();
    assert!(
        !report.lossy,
        "the recorder lost events: {:?}",
        report.notes
    );
    let edge = |from: u32, to: u32| {
        report
            .wake_edges
            .iter()
            .find(|e| e.waker_tid == from && e.wakee_tid == to)
            .map_or(0, |e| e.count)
    };
    for (i, (from, to)) in [(b, a), (a, b)].into_iter().enumerate() {
        let kernel = after[i].voluntary - before[i].voluntary;
        let ours = edge(from, to);
        eprintln!(
            "wakeups of {to} by {from}: waker edges {ours}, kernel voluntary switches {kernel}"
        );
        assert!(
            kernel >= rounds / 2,
            "the workload hardly slept ({kernel} voluntary switches of {to} for {rounds} rounds)"
        );
        assert!(
            ours.abs_diff(kernel) <= 3,
            "waker edges {from}->{to}: {ours}, kernel: {kernel} voluntary switches of {to}"
        );
    }
}

/// `diagnose --url --rate`: the built-in server on CPU 0 and a spinning hog
/// in another cgroup (twice the server's weight) on the same CPU. Preemption
/// is named first, a tie with the requests above p95 is computed for it, and
/// its verdict follows the rule from its numbers (whether the hog's waits
/// land in the slow requests varies from run to run: below). (Without the
/// hog, preemption stays quiet: `root_diagnose_names_a_hog_in_another_cgroup`.)
#[test]
fn root_diagnose_ties_preemption_to_the_slow_requests() {
    tailprobe_tests::skip_unless_root!("root_diagnose_ties_preemption_to_the_slow_requests");
    let (Some(cg), Some(hog_cg), Some(tool)) = (cgroup("srv"), cgroup("srvhog"), cgroup("drive"))
    else {
        return;
    };
    // The server's group gets half the hog's weight: a server that is idle
    // between requests is otherwise favoured at each wakeup and hardly waits.
    if cg.v1 {
        cg.write("cpu.shares", "131072");
    } else {
        cg.write("cpu.weight", "5000");
    }
    let server = tailprobe_tests::ServeProc::start_on(
        "0",
        &[
            "--workers",
            "1",
            "--hidden",
            "32",
            "--layers",
            "1",
            "--duration",
            "180s",
        ],
    );
    let url = server.url.clone();
    cg.add(server.pid());
    let hog = Proc::start("0", &["spin"]);
    hog_cg.add(hog.pid());
    // tailprobe (recorder and load generator) on CPU 1, away from the server.
    let child = Command::new("taskset")
        .args(["-c", "1"])
        .arg(tailprobe_bin())
        .args([
            "diagnose",
            "--pid",
            &server.pid().to_string(),
            "--url",
            &format!("{url}/v1/completions"),
            "--rate",
            "20",
            "--duration",
            SECS,
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tailprobe diagnose");
    tool.add(child.id());
    let out = child.wait_with_output().expect("wait for diagnose");
    assert!(
        out.status.success(),
        "tailprobe diagnose --url failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: Value = serde_json::from_slice(&out.stdout).expect("diagnose JSON");
    let f = first(&d);
    assert_eq!(f["detector"], "preemption", "{d:#}");
    let load = &d["load"];
    let ok = load["ok"].as_u64().unwrap_or(0);
    assert!(ok >= 60, "too few requests succeeded: {load:#}");
    let tie = load["ties"]
        .as_array()
        .expect("ties")
        .iter()
        .find(|t| t["detector"] == "preemption")
        .unwrap_or_else(|| panic!("no tie computed for preemption: {load:#}"));
    let n = |k: &str| tie[k].as_f64().unwrap_or_else(|| panic!("{k}: {tie:#}"));
    let all_pct = 100.0 * n("all_overlapping") / n("all_requests");
    eprintln!(
        "served_matched {}; slow {}/{} overlapping (95% interval {:.0}-{:.0}%) vs all {all_pct:.0}%; \
         held {:.2} vs {:.2} ms; gap {:.2} ms, {:.0}% explained",
        load["served_matched"],
        tie["slow_overlapping"],
        tie["slow_requests"],
        n("slow_overlap_pct_low"),
        n("slow_overlap_pct_high"),
        n("slow_mean_overlap_ms"),
        n("other_mean_overlap_ms"),
        n("latency_gap_ms"),
        n("gap_explained_pct"),
    );
    // Whether the slow requests are the ones the hog held is a property of
    // each run's data: this test passed with a tie in 2 runs at 12:41 and
    // 12:52 today, and at 13:27 on the same quiet machine 3 of 3 runs had
    // the hog's waits more in the typical requests than in the slow ones
    // (slow 2.48 vs other 4.15 ms; 1.35 vs 3.69; 1.80 vs 3.80), which the
    // tool reported as "not tied", correctly. What is checked is that the
    // verdict follows the rule from its own numbers (docs/diagnose.md):
    // tied exactly when the slow requests' 95% interval reaches the overall
    // share and at least 10% of the latency gap is explained.
    let rule = n("slow_overlap_pct_high") >= all_pct && n("gap_explained_pct") >= 10.0;
    assert_eq!(tie["tied"] == true, rule, "{tie:#}");
    if rule {
        assert!(
            evidence(f, "slow_requests_overlap_pct") > 0.0,
            "a tied finding carries the tie: {f:#}"
        );
    }
}

/// Idle-state entries of one CPU summed from cpuidle sysfs (`usage` of every
/// state), or None without cpuidle.
fn cpuidle_usage(cpu: u32) -> Option<u64> {
    let base = PathBuf::from(format!("/sys/devices/system/cpu/cpu{cpu}/cpuidle"));
    let mut total = 0;
    let mut any = false;
    for e in fs::read_dir(&base).ok()?.flatten() {
        if !e.file_name().to_string_lossy().starts_with("state") {
            continue;
        }
        let u: u64 = fs::read_to_string(e.path().join("usage"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        total += u;
        any = true;
    }
    any.then_some(total)
}

/// The `cpu_idle` program against the kernel's own count: a thread pinned
/// to CPU 1 sleeping 1 ms 2000 times, so CPU 1 (and only it) is a CPU the
/// target ran on; the idle periods the program counts there must match the
/// growth of CPU 1's cpuidle `usage` counters over the same time (minus the
/// periods before the target first ran there, and the edges of the window).
#[test]
fn root_cpu_idle_program_agrees_with_cpuidle_usage() {
    tailprobe_tests::skip_unless_root!("root_cpu_idle_program_agrees_with_cpuidle_usage");
    if cpuidle_usage(1).is_none() {
        skip(
            "root_cpu_idle_program_agrees_with_cpuidle_usage",
            "CPU 1 has no cpuidle states in sysfs (no cpuidle driver)",
        );
        return;
    }
    let mut w = tailprobe_tests::Workload::start(
        env!("CARGO_BIN_EXE_workload"),
        &["sleeper", "2000", "1000"],
    );
    let pid = w.pid();
    let st = Command::new("taskset")
        .args(["-a", "-p", "-c", "1", &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("taskset");
    assert!(st.success(), "pinning the workload to CPU 1");
    let rec = InProcess::start(pid, |ro| ro.cpu_idle = true);
    let before = cpuidle_usage(1).expect("usage");
    w.go_and_wait(Duration::from_secs(60));
    let after = cpuidle_usage(1).expect("usage");
    let report = rec.stop();
    let idle = report
        .cpu_idle
        .as_ref()
        .unwrap_or_else(|| panic!("cpu_idle not attached: {:?}", report.unavailable));
    let ours: u64 = idle.states.iter().map(|s| s.exits).sum();
    let kernel = after - before;
    eprintln!(
        "CPU 1 idle periods: cpu_idle program {ours} (states {:?}), cpuidle usage {kernel}; \
         program {} runs, {} ns",
        idle.states, idle.program_runs, idle.program_run_time_ns
    );
    if kernel < 200 {
        // A machine kept busy by other work never idles: nothing to compare.
        skip(
            "root_cpu_idle_program_agrees_with_cpuidle_usage",
            &format!("CPU 1 entered an idle state only {kernel} times (the machine is busy)"),
        );
        return;
    }
    // The program also counts between `after` and the stop; it misses the
    // periods before the target's first run on CPU 1.
    let diff = ours.abs_diff(kernel) as f64;
    assert!(
        diff <= 20.0 + 0.05 * kernel as f64,
        "cpu_idle program {ours} vs cpuidle usage {kernel}"
    );
}
