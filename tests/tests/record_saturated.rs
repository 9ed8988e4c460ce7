//! A saturated CPU with the recorder starved on it (issue 16 item 8): our
//! run-queue totals must still agree with the kernel's own accounting
//! (schedstat) for the same threads and window.
//!
//! Known answer: N threads spinning on one CPU, and tailprobe confined to
//! that same CPU, so that it gets about 1/(N+1) of it and every read of
//! /proc or of its maps is slow. At any instant N-1 (or N) of the spinners
//! wait, so over the recorded window the run-queue total of the process is
//! close to (N-1) x the window; schedstat's `run_delay` counts the same
//! waits.

use std::{
    io::Read as _,
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tailprobe_tests::{attach_deadline, skip_unless_root, tailprobe_bin, Workload};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");

fn pin_to(cpu: usize) -> impl FnMut() -> std::io::Result<()> {
    move || {
        // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays in bounds;
        // pid 0 is the child being set up (async-signal-safe syscall only).
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

#[test]
fn root_starved_recorder_agrees_with_schedstat_on_a_saturated_cpu() {
    skip_unless_root!("root_starved_recorder_agrees_with_schedstat_on_a_saturated_cpu");
    let n = 48u64;
    let spin_ms = 3000u64;
    let n_s = n.to_string();
    let ms_s = spin_ms.to_string();
    let mut w = Workload::start(WORKLOAD, &["spin-n", "0", &n_s, &ms_s]);
    let pid = w.pid().to_string();
    // SAFETY: pre_exec runs pin_to in the child after fork, and pin_to only
    // calls sched_setaffinity (async-signal-safe).
    let mut rec = unsafe {
        Command::new(tailprobe_bin())
            .args(["record", "--pid", &pid, "--duration", "60s", "--json"])
            .args(["--outlier-runq", "0", "--window", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .pre_exec(pin_to(0))
            .spawn()
            .expect("start tailprobe")
    };
    // Wait for the attach line on stderr.
    let mut err = rec.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut all = String::new();
        while let Ok(k) = err.read(&mut buf) {
            if k == 0 {
                break;
            }
            all.push_str(&String::from_utf8_lossy(&buf[..k]));
            if all.contains("probes attached") {
                let _ = tx.send(());
                all.clear();
            }
        }
    });
    rx.recv_timeout(attach_deadline())
        .expect("tailprobe did not attach");
    let t = Instant::now();
    w.go_and_wait(Duration::from_secs(60 + spin_ms / 1000 * n));
    eprintln!("spinners done after {:.1} s", t.elapsed().as_secs_f64());
    // SAFETY: signal to our own child.
    unsafe { libc::kill(rec.id() as i32, libc::SIGINT) };
    let out = rec.wait_with_output().expect("wait tailprobe");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let p = &r["process"];
    let ours = f(&p["runq_wait"]["total_ns"]);
    let kernel = f(&p["kernel"]["runq_wait_ns"]);
    let agreement = f(&p["runq_agreement_pct"]);
    let window = f(&r["duration_ns"]);
    eprintln!(
        "ours {:.3} s, schedstat {:.3} s, agreement {agreement:.1}%, window {:.3} s, \
         (N-1) x window {:.3} s, lossy {}",
        ours / 1e9,
        kernel / 1e9,
        window / 1e9,
        (n - 1) as f64 * window / 1e9,
        r["lossy"]
    );
    assert!(
        (95.0..=105.0).contains(&agreement),
        "our run-queue total is {agreement:.1}% of schedstat's for the same threads"
    );
}

/// One churned thread as the workload reported it.
struct Churned {
    tid: u64,
    /// schedstat's run-queue total, read as the thread's last act ...
    run_delay: u64,
    /// ... between these two CLOCK_MONOTONIC stamps.
    t1: u64,
    t2: u64,
}

/// Run the workload's `churn` mode (`churn_args`: threads per batch, spin
/// ms, total ms; pinned to the last CPU) under `tailprobe record --pid ...
/// --window 0 --outlier-irq 0 --json EXTRA`; stop the recording `linger`
/// after the workload is done. Returns the churned threads and the report.
fn churn_under_record(
    churn_args: &[&str],
    extra: &[&str],
    linger: Duration,
) -> (Vec<Churned>, serde_json::Value) {
    use std::io::{BufRead as _, BufReader, Write as _};
    let cpu = (tailprobe_tests::online_cpus() - 1).to_string();
    let mut w = Command::new(WORKLOAD)
        .args(["churn", &cpu])
        .args(churn_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start workload");
    let mut lines = BufReader::new(w.stdout.take().expect("stdout")).lines();
    let ready = lines.next().expect("ready line").expect("read");
    assert!(ready.starts_with("ready"), "{ready}");
    let pid = w.id().to_string();
    let mut rec = Command::new(tailprobe_bin())
        .args(["record", "--pid", &pid, "--duration", "120s", "--json"])
        .args(["--window", "0", "--outlier-irq", "0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tailprobe");
    let mut err = BufReader::new(rec.stderr.take().expect("stderr")).lines();
    let deadline = Instant::now() + attach_deadline();
    loop {
        let l = err
            .next()
            .expect("tailprobe ended before attaching")
            .expect("read");
        if l.contains("probes attached") {
            break;
        }
        assert!(Instant::now() < deadline, "tailprobe did not attach");
    }
    std::thread::spawn(move || for _ in err {});
    let mut stdin = w.stdin.take().expect("stdin");
    writeln!(stdin, "go").expect("go");
    stdin.flush().expect("flush");
    let mut churned = Vec::new();
    for l in lines.by_ref() {
        let l = l.expect("read workload");
        let f: Vec<u64> = l
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        if l.starts_with("churn-thread ") && f.len() == 6 {
            churned.push(Churned {
                tid: f[0],
                run_delay: f[3],
                t1: f[4],
                t2: f[5],
            });
        }
        if l.starts_with("done") {
            break;
        }
    }
    std::thread::sleep(linger);
    // SAFETY: signal to our own child.
    unsafe { libc::kill(rec.id() as i32, libc::SIGINT) };
    let out = rec.wait_with_output().expect("wait tailprobe");
    drop(stdin);
    let _ = w.wait();
    let r = serde_json::from_slice(&out.stdout).expect("JSON report");
    (churned, r)
}

/// Threads that come and go (issue 16 item 8 saw our totals at 149-354% of
/// schedstat's on such workloads). Each thread reads the kernel's own
/// run-queue total (schedstat) as its last act; every wait we streamed for
/// it that ended before that read must add up to the same number (one wait
/// counted twice, a stale pending wait, a wait of another thread with the
/// same tid would all show). What we count after that read is the thread's
/// exit path, which schedstat can no longer show once the thread is gone:
/// that, and the waits of every thread that exited, is why a sum of
/// schedstat over the threads alive at the end comes out lower than ours.
#[test]
fn root_churning_threads_match_schedstat_up_to_each_threads_last_instruction() {
    skip_unless_root!("root_churning_threads_match_schedstat_up_to_each_threads_last_instruction");
    let (churned, r) = churn_under_record(
        &["8", "1", "2500"],
        &[
            "--outlier-runq",
            "1ns",
            "--max-outliers",
            "1000000",
            "--max-threads",
            "65536",
        ],
        Duration::ZERO,
    );
    // Losses that touch run-queue waits (the preemptor map filling up with
    // hundreds of short-lived preemptors does not).
    for l in r["losses"].as_array().expect("losses") {
        let name = l["name"].as_str().unwrap_or("?");
        if [
            "ringbuf_reserve_failed",
            "thread_map_insert_failed",
            "task_read_failed",
            "bad_delta_discarded",
            "switch_in_untraced_lost",
        ]
        .contains(&name)
        {
            assert_eq!(l["total"], 0, "a run that lost waits cannot be judged: {l}");
        }
    }
    assert_eq!(r["outliers_not_kept"], 0);
    assert!(churned.len() >= 8, "only {} threads churned", churned.len());
    let mut waits: std::collections::HashMap<u64, Vec<(u64, u64)>> = Default::default();
    for o in r["outliers"].as_array().expect("outliers") {
        if o["kind"] == "runq_wait" {
            let (tid, ts, v) = (
                o["tid"].as_u64().unwrap(),
                o["ts_ns"].as_u64().unwrap(),
                o["value_ns"].as_u64().unwrap(),
            );
            waits.entry(tid).or_default().push((ts, v));
        }
    }
    let (mut ours_sum, mut kernel_sum, mut exit_path) = (0u64, 0u64, 0u64);
    let mut off = Vec::new();
    for c in &churned {
        let ws = waits.get(&c.tid).map(Vec::as_slice).unwrap_or(&[]);
        let upto = |t: u64| ws.iter().filter(|w| w.0 <= t).map(|w| w.1).sum::<u64>();
        let (lo, hi) = (upto(c.t1), upto(c.t2));
        // Our stamp (ktime) and the kernel's clock (rq_clock) differ by a
        // few microseconds per wait, and drift apart by up to about 0.02%
        // over a wait of a second (seen on a loaded machine).
        let slack = 20_000 * ws.len() as u64 + c.run_delay / 1000;
        if !(lo <= c.run_delay + slack && c.run_delay <= hi + slack) {
            off.push(format!(
                "thread {}: schedstat {} ns, ours {lo}..{hi} ns ({} waits: {ws:?})",
                c.tid,
                c.run_delay,
                ws.len()
            ));
        }
        ours_sum += lo;
        kernel_sum += c.run_delay;
        exit_path += ws.iter().map(|w| w.1).sum::<u64>() - hi;
    }
    let pct = ours_sum as f64 * 100.0 / kernel_sum as f64;
    eprintln!(
        "{} threads: ours {ours_sum} ns, schedstat {kernel_sum} ns ({pct:.2}%); \
         waits after the last instruction (exit path) {exit_path} ns",
        churned.len()
    );
    // On a fresh 6.18 machine, in about one run in three, 1-3% of the
    // threads differ from schedstat by part of a wait, in both directions,
    // while the total agrees; the code before issue 13's hot path does the
    // same (docs/accuracy.md: not explained yet). More than 5% of the threads
    // (and more than one), or a total off by more than 0.5%, would be
    // systematic.
    for o in &off {
        eprintln!("not matched: {o}");
    }
    assert!(
        off.len() <= 1 || off.len() * 20 <= churned.len(),
        "{} of {} threads do not match schedstat: {off:#?}",
        off.len(),
        churned.len()
    );
    assert!((99.5..=100.5).contains(&pct), "{pct:.2}%");
}

/// Slots in the tid-indexed array for the slot-reuse test.
const SLOTS: u64 = 128;

/// Per-thread slots are reused (issue 13): a process that starts and ends
/// many more threads than the tid-indexed array has slots keeps every thread
/// in the array (no hash fallback) and loses none of their waits. Batches of
/// 4 threads pinned to one CPU, each spinning 10 ms, for 6 s: hundreds of
/// threads, each waiting behind the others and reading its own schedstat
/// `run_delay` as its last act. `--max-threads 128` gives the array 128
/// slots; a slot comes free when record harvests its thread, about 0.3 s
/// after the exit, so fewer than that are held at once.
#[test]
fn root_thread_churn_beyond_the_array_reuses_slots_and_loses_nothing() {
    skip_unless_root!("root_thread_churn_beyond_the_array_reuses_slots_and_loses_nothing");
    // Let record harvest the last exits (0.3 s after each) before stopping.
    let (churned, r) = churn_under_record(
        &["4", "10", "6000"],
        // The recorder at nice -20: slots come free only as fast as it
        // harvests, and a recorder starved by other work on the machine
        // (three builds and a QEMU guest: 110 hash fallbacks in one run)
        // would test the machine's load, not the reuse.
        &[
            "--max-threads",
            &SLOTS.to_string(),
            "--priority",
            "nice:-20",
        ],
        Duration::from_millis(800),
    );
    assert!(
        churned.len() as u64 > 2 * SLOTS,
        "only {} threads churned in 6 s; the test needs more than {} to show reuse \
         (a machine too busy to run it)",
        churned.len(),
        2 * SLOTS
    );
    let s = &r["thread_slots"];
    eprintln!("{} threads churned; thread_slots: {s}", churned.len());
    assert_eq!(s["capacity"], SLOTS, "{s}");
    assert_eq!(
        s["hash_fallback"], 0,
        "threads fell back to the hash although slots were freed: {s}"
    );
    let (fresh, reused) = (s["fresh"].as_u64().unwrap(), s["reused"].as_u64().unwrap());
    assert!(fresh <= SLOTS, "{s}");
    // Every churned thread (and the workload's own) got an array slot.
    assert!(
        fresh + reused >= churned.len() as u64,
        "{} threads, {fresh} fresh + {reused} reused slots",
        churned.len()
    );
    for l in r["losses"].as_array().expect("losses") {
        let name = l["name"].as_str().unwrap_or("?");
        // A rebuilt switch-in (the kernel did not trace it) is counted,
        // not lost (docs/accuracy.md).
        if !["preemptor_map_insert_failed", "switch_in_untraced_rebuilt"].contains(&name) {
            assert_eq!(l["total"], 0, "loss: {l}");
        }
    }
    // No thread's state lost: each churned thread is in the report, and
    // its run-queue total is at least what schedstat counted up to its last
    // instruction (ours adds the exit path after that read).
    let threads: std::collections::HashMap<u64, u64> = r["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .map(|t| {
            (
                t["tid"].as_u64().unwrap(),
                t["runq_wait"]["total_ns"].as_u64().unwrap(),
            )
        })
        .collect();
    let (mut ours, mut kernel, mut missing) = (0u64, 0u64, Vec::new());
    for c in &churned {
        match threads.get(&c.tid) {
            Some(v) => {
                ours += v;
                kernel += c.run_delay;
            }
            None => missing.push(c.tid),
        }
    }
    assert!(
        missing.is_empty(),
        "threads missing from the report: {missing:?}"
    );
    let pct = ours as f64 * 100.0 / kernel as f64;
    eprintln!("run-queue total: ours {ours} ns, schedstat {kernel} ns ({pct:.2}%)");
    // Our stamps and the kernel's clock differ by microseconds per wait;
    // 0.5% below is far more than that and far less than one lost wait per
    // hundred threads.
    assert!(
        pct >= 99.5,
        "{pct:.2}% of schedstat's total: waits were lost"
    );
}
