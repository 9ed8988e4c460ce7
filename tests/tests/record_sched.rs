//! Root integration tests of `tailprobe record` against workloads whose
//! answer is known, compared with the kernel's own accounting over exactly
//! the same window (the workload's threads are blocked outside it).

use std::time::Duration;

use tailprobe_tests::{
    delta, kernel_counters, kernel_migrations, online_cpus, skip_unless_root, thread, u,
    KernelCounters, Recording, Workload,
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");

/// Agreement tolerances, stated once: run-queue totals within 3% (+2 ms for
/// very small totals; measured on a 2-CPU host at load average 23: 98.65%
/// to 99.99% of schedstat's, as README says), on-CPU time within 5%; switch
/// counts within 2% (+3).
fn close(ours: u64, kernel: u64, rel: f64, abs: u64) -> bool {
    let diff = ours.abs_diff(kernel) as f64;
    diff <= kernel as f64 * rel + abs as f64
}

fn snapshot(pid: u32, tids: &[u32]) -> Vec<KernelCounters> {
    tids.iter().map(|t| kernel_counters(pid, *t)).collect()
}

/// Two threads spinning on one CPU: each waits for the CPU about half of the
/// time; our run-queue total and involuntary switches match schedstat and
/// /proc status.
#[test]
fn root_two_spinners_on_one_cpu_wait_half_the_time() {
    skip_unless_root!("root_two_spinners_on_one_cpu_wait_half_the_time");
    let spin_ms = 1500u64;
    let mut w = Workload::start(WORKLOAD, &["spin2", "0", &spin_ms.to_string()]);
    let rec = Recording::start(w.pid(), &[]);
    let before = snapshot(w.pid(), &w.tids);
    w.go_and_wait(Duration::from_secs(30));
    let after = snapshot(w.pid(), &w.tids);
    let (code, report) = rec.stop();
    assert_eq!(code, 0, "exit code");
    assert_eq!(report["end_reason"], "interrupted");
    assert_eq!(report["lossy"], false, "{:#}", report["losses"]);
    let mut kernel_wait = 0u64;
    for (i, tid) in w.tids.iter().enumerate() {
        let k = delta(before[i], after[i]);
        let t = thread(&report, *tid);
        let ours_wait = u(&t["runq_wait"]["total_ns"]);
        eprintln!(
            "tid {tid}: run-queue ours {ours_wait} ns, schedstat {} ns ({:.2}%); involuntary ours {}, kernel {}",
            k.wait_ns,
            ours_wait as f64 * 100.0 / k.wait_ns.max(1) as f64,
            t["involuntary_switches"],
            k.involuntary
        );
        // Each of two spinners sharing a CPU waits a large share of the time:
        // at least 30% of its own spin time (ideally ~50%).
        assert!(
            k.wait_ns >= spin_ms * 1_000_000 * 3 / 10,
            "the workload did not contend as designed: schedstat wait {} ns",
            k.wait_ns
        );
        // With other work preempting the spinners, schedstat's wait exceeds
        // ours by about 18 us per involuntary switch on this project's VM,
        // switch counts equal; about 41% of it is the wakeup-to-switch
        // latency that schedstat counts as waiting (the switch after a
        // wakeup preemption skips the rq clock update), the rest is not
        // explained yet (docs/accuracy.md). That much more is allowed on
        // the kernel's side, per involuntary switch.
        let ours_invol = u(&t["involuntary_switches"]);
        let skip_slack = if ours_wait < k.wait_ns {
            ours_invol * 25_000
        } else {
            0
        };
        kernel_wait += k.wait_ns;
        assert!(
            close(ours_wait, k.wait_ns, 0.03, 2_000_000 + skip_slack),
            "run-queue total: ours {ours_wait}, kernel {} ({ours_invol} involuntary switches)",
            k.wait_ns
        );
        assert!(
            ours_invol >= 10,
            "too few involuntary switches: {ours_invol}"
        );
        assert!(
            close(ours_invol, k.involuntary, 0.02, 3),
            "involuntary: ours {ours_invol}, kernel {}",
            k.involuntary
        );
        assert!(close(u(&t["voluntary_switches"]), k.voluntary, 0.02, 3));
        assert!(u(&t["runq_wait"]["count"]) >= ours_invol - 3);
        let p95 = u(&t["runq_wait"]["p95_ns"]);
        let max = u(&t["runq_wait"]["max_ns"]);
        assert!(p95 > 0 && p95 <= max, "p95 {p95} max {max}");
        // On-CPU time against schedstat's run time, same tolerance.
        assert!(
            close(u(&t["oncpu_ns"]), k.run_ns, 0.05, 2_000_000),
            "on-CPU: ours {}, kernel {}",
            t["oncpu_ns"],
            k.run_ns
        );
    }
    let pct = report["process"]["runq_agreement_pct"]
        .as_f64()
        .expect("agreement");
    // The same allowance on schedstat's side as above, for the process.
    let invol = u(&report["process"]["involuntary_switches"]);
    let low = 97.0 - (invol * 25_000) as f64 * 100.0 / kernel_wait.max(1) as f64;
    assert!(
        (low..=103.0).contains(&pct),
        "process agreement {pct}% (lowest allowed {low:.2}% with {invol} involuntary switches)"
    );
}

/// A thread moved to the other CPU N times is seen migrating at least N times.
#[test]
fn root_bounced_thread_migrates_at_least_n_times() {
    skip_unless_root!("root_bounced_thread_migrates_at_least_n_times");
    if online_cpus() < 2 {
        tailprobe_tests::skip(
            "root_bounced_thread_migrates_at_least_n_times",
            "needs 2 CPUs",
        );
        return;
    }
    let n = 200u64;
    let mut w = Workload::start(WORKLOAD, &["bounce", &n.to_string()]);
    let rec = Recording::start(w.pid(), &[]);
    let tid = w.tids[0];
    let kernel_before = kernel_migrations(w.pid(), tid);
    w.go_and_wait(Duration::from_secs(30));
    let kernel = kernel_migrations(w.pid(), tid)
        .zip(kernel_before)
        .map(|(a, b)| a - b);
    let (code, report) = rec.stop();
    assert_eq!(code, 0);
    let t = thread(&report, tid);
    let migrations = u(&t["migrations"]["total"]);
    eprintln!(
        "bounced {n} times: {migrations} migrations seen, kernel's se.nr_migrations {kernel:?}"
    );
    assert!(
        migrations >= n,
        "expected at least {n} migrations, saw {migrations}"
    );
    // A bounce is one migration; the load balancer may add a few, which the
    // kernel counts too (se.nr_migrations, where /proc/PID/sched exists).
    // Without it, at most 2 extra moves.
    let bound = kernel.map_or(n + 2, |k| k.max(n) + 2);
    assert!(
        migrations <= bound,
        "{migrations} migrations for {n} bounces (kernel {kernel:?}): double counting"
    );
    if let Some(k) = kernel {
        assert!(
            migrations.abs_diff(k) <= 2,
            "ours {migrations}, kernel's se.nr_migrations {k}"
        );
    }
    // On one node, never cross-NUMA (two-node machines: tests/tests/vm_numa.rs).
    if report["numa"]["nodes"] == 1 {
        assert_eq!(u(&t["migrations"]["cross_numa"]), 0);
    }
}

/// A thread that sleeps N times switches out voluntarily about N times and is
/// woken as often; our counts match the kernel's (/proc status) within 2.
#[test]
fn root_sleeper_switches_voluntarily() {
    skip_unless_root!("root_sleeper_switches_voluntarily");
    let n = 300u64;
    let mut w = Workload::start(WORKLOAD, &["sleeper", &n.to_string(), "1000"]);
    let rec = Recording::start(w.pid(), &[]);
    let before = snapshot(w.pid(), &w.tids);
    w.go_and_wait(Duration::from_secs(30));
    let after = snapshot(w.pid(), &w.tids);
    let (_, report) = rec.stop();
    let k = delta(before[0], after[0]);
    let t = thread(&report, w.tids[0]);
    let vol = u(&t["voluntary_switches"]);
    eprintln!(
        "slept {n} times: voluntary ours {vol}, kernel {}; wakeups {}",
        k.voluntary, t["wakeups"]
    );
    // The comparison is with the kernel's count, not with N: a sleep whose
    // timer fires before the thread has blocked ends without a switch, and
    // the kernel does not count it either (QEMU 6.1 lane: 298 of 300, ours
    // 298 too). The kernel's count only has to show that the workload did
    // sleep, nearly every time.
    assert!(
        k.voluntary >= n * 9 / 10,
        "the kernel counted {} voluntary switches for {n} sleeps: the workload did not sleep",
        k.voluntary
    );
    assert!(
        close(vol, k.voluntary, 0.0, 2),
        "voluntary: ours {vol}, kernel {}",
        k.voluntary
    );
    // One wakeup per sleep. Observed here: 299 to 302 for 300 sleeps (+1
    // for the start barrier) on 6.18, so 2% tolerance.
    let wakeups = u(&t["wakeups"]);
    assert!(
        close(wakeups, vol, 0.02, 0),
        "wakeups {wakeups} vs voluntary switches {vol}"
    );
    // Every wakeup that finds the thread off its CPU ends in a run-queue
    // wait that we timed. A wakeup that finds it still on its CPU (the timer
    // fired while it was switching out) is counted by sched_wakeup but ends
    // no wait: seen once in a final `cargo xtask test` run on an otherwise
    // idle machine, and in 2 of ~20 runs of this test on a loaded one (with
    // and without the hot-path changes of issue 13). A few such, not more.
    let timed = u(&t["runq_wait"]["count"]);
    eprintln!("timed run-queue waits {timed}, wakeups {wakeups}, voluntary {vol}");
    assert!(
        timed + 3 >= wakeups.min(vol),
        "timed waits {timed} vs wakeups {wakeups}, voluntary {vol}"
    );
    // Waits after a wakeup from idle are a few microseconds each. The kernel
    // stamps them with its run-queue clock, which it does not always update
    // at the switch that follows a wakeup preemption, so schedstat can read
    // lower than the real wait but never higher: ours must not be below it,
    // and may exceed it by at most 50 us per wakeup on average.
    let ours_wait = u(&t["runq_wait"]["total_ns"]);
    eprintln!("run-queue: ours {ours_wait} ns, schedstat {} ns", k.wait_ns);
    assert!(
        ours_wait as f64 >= k.wait_ns as f64 * 0.95 - 1_000_000.0,
        "run-queue: ours {ours_wait} below the kernel's {}",
        k.wait_ns
    );
    let slack_ns = 50_000 * tailprobe_tests::time_scale();
    assert!(
        ours_wait.saturating_sub(k.wait_ns) <= slack_ns * n,
        "run-queue: ours {ours_wait} exceeds the kernel's {} by more than {slack_ns} ns per wakeup",
        k.wait_ns
    );
    // The report says why it disagrees with schedstat, from its numbers:
    // ours is higher, within what wakeups onto an idle CPU explain.
    let p = &report["process"];
    let pct = p["runq_agreement_pct"].as_f64().unwrap_or(100.0);
    let note = p["runq_agreement_note"].as_str();
    eprintln!("agreement {pct:.1}%: {note:?}");
    if (pct - 100.0).abs() > 1.0 {
        let note = note.expect("a note when agreement is off by more than a point");
        if pct > 100.0 && tailprobe_tests::time_scale() == 1 {
            assert!(
                note.contains("higher than schedstat's") && note.contains("within"),
                "{note}"
            );
        }
    } else {
        assert!(note.is_none(), "{note:?}");
    }
}

/// Threads created after the probes were attached are followed too.
#[test]
fn root_threads_created_after_attach_are_recorded() {
    skip_unless_root!("root_threads_created_after_attach_are_recorded");
    let mut w = Workload::start(WORKLOAD, &["spawn", "3", "40"]);
    let rec = Recording::start(w.pid(), &[]);
    let all = w.go_and_wait(Duration::from_secs(30));
    let (_, report) = rec.stop();
    assert_eq!(all.len(), 3, "{all:?}");
    for tid in all {
        let t = thread(&report, tid);
        // 40 sleeps of 500 us each. A sleep whose timer fires before the
        // thread has blocked ends without a switch (seen once in a slow TCG
        // guest: 38), so at least 90% of them, not all.
        assert!(u(&t["voluntary_switches"]) >= 36, "tid {tid}: {t:#}");
        assert_eq!(t["created_during_run"], true);
    }
}

/// The target exits mid-run: exit code 3, and the report of what was seen.
#[test]
fn root_target_exit_mid_run_reports_what_was_seen() {
    skip_unless_root!("root_target_exit_mid_run_reports_what_was_seen");
    let mut w = Workload::start(WORKLOAD, &["exit-after", "300"]);
    let rec = Recording::start(w.pid(), &[]);
    w.go();
    let (code, report) = rec.wait();
    assert_eq!(code, 3, "exit code when the target exits");
    assert_eq!(report["end_reason"], "target_exited");
    // The main thread used 300 ms of CPU before exiting: we see it within
    // the 5% on-CPU tolerance (slice boundaries are stamped at the
    // tracepoint, the kernel's at pick time; the exit path adds a little).
    let oncpu = u(&report["process"]["oncpu_ns"]);
    assert!(
        oncpu >= 285_000_000,
        "on-CPU {oncpu} ns: {:#}",
        report["process"]
    );
}
