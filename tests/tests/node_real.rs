//! Root integration tests on this machine: affinity (launch pinned, re-pin
//! a pid and restore), noise placement, perf software counters for a
//! workload the test makes itself, numa_maps of memory the test touches.

mod node_support;

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use node_support::*;

fn online_cpus() -> Vec<u32> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let mut v = Vec::new();
    for part in s.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => v.extend(a.parse::<u32>().unwrap()..=b.parse().unwrap()),
            None => v.push(part.parse().unwrap()),
        }
    }
    v
}

#[test]
fn root_launch_pinned_and_repin_a_pid_then_restore() {
    if !is_root() {
        tailprobe_tests::skip_fixable(
            "root_launch_pinned_and_repin_a_pid_then_restore",
            "needs root (sched_setaffinity on other processes)",
        );
        return;
    }
    let cpus = online_cpus();
    if cpus.len() < 2 {
        tailprobe_tests::skip(
            "root_launch_pinned_and_repin_a_pid_then_restore",
            &format!("needs 2 online CPUs, this machine has {}", cpus.len()),
        );
        return;
    }
    let last = *cpus.last().unwrap();
    // Launch pinned: the child's threads are allowed on `last` only.
    let mut child = Command::new(bin())
        .args(["pin", "--pin", &format!("cpus:{last}"), "--", "sleep", "5"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let pid: u32 = line
        .split("started pid ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    let lists = allowed_lists(pid);
    assert!(!lists.is_empty());
    assert!(
        lists.iter().all(|(_, l)| *l == last.to_string()),
        "{lists:?}"
    );
    let mems = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        mems.contains("Mems_allowed_list:\t0"),
        "memory bound to node0"
    );
    // SAFETY: signalling the pinned sleep we started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = child.wait();

    // Re-pin a multi-threaded process and restore it from the journal.
    let s = Scratch::new("repin");
    let j = s.path().join("j.json");
    let mut target = Command::new(bin())
        .args(["workload", "--threads", "3", "--duration", "20s"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tpid = target.id();
    let start = Instant::now();
    while allowed_lists(tpid).len() < 4 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = allowed_lists(tpid);
    assert!(before.len() >= 4, "main + 3 workers: {before:?}");
    let all = before[0].1.clone();
    let o = Command::new(bin())
        .args([
            "pin",
            "--pin",
            "cpus:0",
            "--pid",
            &tpid.to_string(),
            "--json",
            "--journal",
        ])
        .arg(&j)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let v = json(&o);
    let threads = v["threads"].as_array().unwrap();
    assert!(threads.len() >= 4);
    for t in threads {
        assert_eq!(t["before"], all.as_str());
        assert_eq!(t["after"], "0");
    }
    assert!(allowed_lists(tpid).iter().all(|(_, l)| l == "0"));
    let o = Command::new(bin())
        .args(["restore", "--journal"])
        .arg(&j)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert_eq!(
        allowed_lists(tpid),
        before,
        "restored to the original masks"
    );

    // --watch: the test changes a thread back mid-watch; tailprobe warns.
    let w = Command::new(bin())
        .args([
            "pin",
            "--pin",
            "cpus:0",
            "--pid",
            &tpid.to_string(),
            "--watch",
            "1500ms",
            "--journal",
        ])
        .arg(&j)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !allowed_lists(tpid).iter().all(|(_, l)| l == "0")
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let victim = before[1].0;
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain bit operations on a zeroed set; setaffinity on a thread
    // of the workload this test started.
    unsafe {
        libc::CPU_SET(last as usize, &mut set);
        assert_eq!(
            libc::sched_setaffinity(victim as i32, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
    let out = w.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "warning: thread {victim} of pid {tpid} runs on CPUs {last}"
        )),
        "{err}"
    );
    assert_eq!(allowed_lists(tpid), before, "restored after --watch");
    let _ = target.kill();
    let _ = target.wait();

    // Bad input.
    let o = run(&["pin", "--pin", "cpus:0-4095", "--pid", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("not online"), "{}", text(&o).1);
    let o = run(&[
        "pin",
        "--pin",
        "cpus:0",
        "--pid",
        "999999",
        "--journal",
        j.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("no process with pid 999999"),
        "{}",
        text(&o).1
    );
}

#[test]
fn root_noise_runs_where_it_is_placed() {
    let cpus = online_cpus();
    let last = *cpus.last().unwrap();
    let child = Command::new(bin())
        .args([
            "noise",
            "--kind",
            "mixed",
            "--threads",
            "2",
            "--place",
            &format!("cpus:{last}"),
            "--duration",
            "1500ms",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Independent check: the last CPU of every noise thread, from /proc.
    let mut seen = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1200) {
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for e in rd.flatten() {
                let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                if !comm.starts_with("noise-") {
                    continue;
                }
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                if let Some(rest) = stat.rsplit_once(')').map(|x| x.1) {
                    if let Some(cpu) = rest
                        .split_whitespace()
                        .nth(36)
                        .and_then(|c| c.parse::<u32>().ok())
                    {
                        seen.push(cpu);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(seen.len() >= 5, "sampled the noise threads: {seen:?}");
    assert!(
        seen.iter().all(|&c| c == last),
        "noise left CPU {last}: {seen:?}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let threads = v["threads"].as_array().unwrap();
    assert_eq!(threads.len(), 2);
    for t in threads {
        assert_eq!(t["cpus_seen"], last.to_string());
        assert!(t["volume"].as_f64().unwrap() > 0.0, "{t}");
    }
    assert!(v["buffer_bytes"].as_u64().unwrap() >= 64 << 20);
    // One node here: other-node is "not available", exit code 4.
    let o = run(&[
        "noise",
        "--place",
        "other-node",
        "--target-cpus",
        "0",
        "--duration",
        "1s",
    ]);
    if std::path::Path::new("/sys/devices/system/node/node1").exists() {
        tailprobe_tests::skip(
            "root_noise_runs_where_it_is_placed (other-node part)",
            "this machine has a second node",
        );
    } else {
        assert_eq!(o.status.code(), Some(4), "{}", text(&o).1);
        assert!(text(&o).1.contains("not available on this node"));
    }
}

#[test]
fn root_counters_see_the_faults_and_sleeps_we_make() {
    if !is_root() {
        tailprobe_tests::skip_fixable(
            "root_counters_see_the_faults_and_sleeps_we_make",
            "needs root to count another process",
        );
        return;
    }
    const PAGES: usize = 2000;
    const SLEEPS: u64 = 50;
    let me = std::process::id();
    let mut child = Command::new(bin())
        .args([
            "counters",
            "--pid",
            &me.to_string(),
            "--duration",
            "3s",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("counting"), "{line}");
    let len = PAGES * 4096;
    // SAFETY: a fresh private anonymous mapping, touched once per page and
    // unmapped below; MADV_NOHUGEPAGE keeps one fault per 4 KiB page.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        libc::madvise(p, len, libc::MADV_NOHUGEPAGE);
        for i in 0..PAGES {
            *(p as *mut u8).add(i * 4096) = 1;
        }
        libc::munmap(p, len);
    }
    for _ in 0..SLEEPS {
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let get = |n: &str| {
        v["counters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["event"] == n)
            .unwrap()
            .clone()
    };
    let pf = get("page-faults")["value"].as_u64().unwrap();
    // Tolerance: our own touches plus what the harness and the sleeps fault
    // in meanwhile (a few hundred at most).
    assert!(
        pf >= PAGES as u64 && pf < PAGES as u64 + 1500,
        "page-faults {pf}, expected {PAGES}..+1500"
    );
    let cs = get("context-switches")["value"].as_u64().unwrap();
    assert!(
        cs >= SLEEPS,
        "context-switches {cs}, expected at least {SLEEPS}"
    );
    // Hardware counters: a value, or "not supported here", never a bare zero.
    let ins = get("instructions");
    match ins["value"].as_u64() {
        Some(n) => assert!(n > 0),
        None => assert!(
            ins["note"].as_str().unwrap().contains("not supported here"),
            "{ins}"
        ),
    }
    eprintln!(
        "measured: page-faults {pf} for {PAGES} pages, context-switches {cs} for {SLEEPS} sleeps"
    );
}

#[test]
fn root_numa_maps_show_the_memory_we_touch() {
    if !std::path::Path::new("/proc/self/numa_maps").exists() {
        tailprobe_tests::skip(
            "root_numa_maps_show_the_memory_we_touch",
            "kernel without NUMA (no /proc/self/numa_maps)",
        );
        return;
    }
    const MIB: usize = 64;
    let mut buf = vec![0u8; MIB << 20];
    for i in (0..buf.len()).step_by(4096) {
        buf[i] = 1;
    }
    std::hint::black_box(&buf);
    let o = run(&[
        "numa",
        "--pid",
        &std::process::id().to_string(),
        "--duration",
        "200ms",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let v = json(&o);
    let total: u64 = v["kib_per_node"]
        .as_object()
        .unwrap()
        .values()
        .map(|x| x.as_u64().unwrap())
        .sum();
    assert!(
        total >= (MIB as u64) << 10,
        "numa_maps shows {total} KiB, we touched {MIB} MiB"
    );
    if v["nodes"] == 1 {
        assert_eq!(v["remote_share"].as_f64(), Some(0.0));
        assert!(v["note"].as_str().unwrap().contains("single NUMA node"));
    }
    assert!(v["numastat_delta"]["0"]["numa_hit"].is_u64());
    drop(buf);
}
