//! Time to attach: from exec to the first attached eBPF program, for
//! `tailprobe record` and for libbpf-tools' `runqlat`, on an idle machine
//! and with the machine saturated by `hackbench`, ten runs each (median).
//!
//! Both tools are measured the same way from outside: the clock starts just
//! before the spawn, and a poller that reads `/proc/PID/fd` every 0.5 ms
//! stops it at the first `anon_inode:bpf_link` (an attached program). The
//! poller runs at SCHED_FIFO so that `hackbench` does not delay the
//! measurement itself (the tools run at their own priority). tailprobe's
//! own `attach_ms` (from its JSON: first and last program attached, counted
//! from the same spawn instant on CLOCK_MONOTONIC) is shown beside it.

use std::{
    fmt::Write as _,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::cmd;

const RUNQLAT: &str = "/usr/sbin/runqlat";
/// The saturating load: 10 groups of 40 processes passing messages, long
/// enough to outlast a measurement (it is stopped afterwards).
const HACKBENCH: &[&str] = &["hackbench", "-g", "10", "-l", "100000000"];
const GIVE_UP: Duration = Duration::from_secs(60);

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn has_bpf_link(pid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    dir.flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:bpf_link"))
}

/// A child that is killed when dropped.
/// A child started in a process group of its own (`process_group(0)`):
/// dropping the guard kills the whole group, so the processes it forked
/// (hackbench's 400 workers) do not outlive the bench.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: signals the process group we created for this child
            // (its pgid is its pid); no memory is touched.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One run: (ms from spawn to the first bpf_link seen, tailprobe's own
/// first/all in ms from the same spawn).
struct Run {
    first_link_ms: f64,
    own: Option<(f64, f64)>,
}

fn measure(argv: &[String], wait_for_report: bool) -> Result<Run> {
    let t0 = monotonic_ns();
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(if wait_for_report {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", argv[0]))?;
    let pid = child.id();
    let mut guard = Guard(child);
    let started = Instant::now();
    let first_link_ms = loop {
        if has_bpf_link(pid) {
            break monotonic_ns().saturating_sub(t0) as f64 / 1e6;
        }
        if let Ok(Some(st)) = guard.0.try_wait() {
            bail!("`{}` exited ({st}) before attaching", argv.join(" "));
        }
        if started.elapsed() > GIVE_UP {
            bail!("`{}` did not attach within {GIVE_UP:?}", argv.join(" "));
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    if !wait_for_report {
        return Ok(Run {
            first_link_ms,
            own: None,
        });
    }
    let mut out = String::new();
    if let Some(mut s) = guard.0.stdout.take() {
        std::io::Read::read_to_string(&mut s, &mut out)?;
    }
    let v: serde_json::Value = serde_json::from_str(&out)
        .with_context(|| format!("parsing the JSON report of `{}`", argv.join(" ")))?;
    let a = &v["attach_ms"];
    let at = |k: &str| -> Result<f64> {
        let ns = a[k]
            .as_u64()
            .with_context(|| format!("attach_ms.{k} missing from the report"))?;
        Ok(ns.saturating_sub(t0) as f64 / 1e6)
    };
    Ok(Run {
        first_link_ms,
        own: Some((
            at("first_attached_monotonic_ns")?,
            at("all_attached_monotonic_ns")?,
        )),
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A row: (tool, median first link, min, max, own first median, own all median).
type Row = (String, f64, f64, f64, Option<(f64, f64)>);

fn series(name: &str, argv: &[String], ours: bool, n: usize) -> Result<Row> {
    let mut links = Vec::new();
    let mut firsts = Vec::new();
    let mut alls = Vec::new();
    for _ in 0..n {
        let r = measure(argv, ours)?;
        links.push(r.first_link_ms);
        if let Some((f, a)) = r.own {
            firsts.push(f);
            alls.push(a);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (lo, hi) = links
        .iter()
        .fold((f64::MAX, 0f64), |(l, h), v| (l.min(*v), h.max(*v)));
    let own = ours.then(|| (median(&mut firsts), median(&mut alls)));
    Ok((name.to_string(), median(&mut links), lo, hi, own))
}

fn poller_at_fifo() {
    let p = libc::sched_param { sched_priority: 50 };
    let policy = libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK;
    // SAFETY: valid sched_param; pid 0 is this thread. Failure only makes
    // the measurement noisier, so it is reported, not fatal. Children
    // (the tools, hackbench) get the default policy back (reset on fork).
    if unsafe { libc::sched_setscheduler(0, policy, &p) } != 0 {
        eprintln!("xtask bench: could not put the poller at SCHED_FIFO; times under load are upper bounds");
    }
}

fn tools(bin: &Path, target: u32) -> Vec<(String, Vec<String>, bool)> {
    let target = target.to_string();
    let rec = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [bin.to_string_lossy().as_ref(), "record", "--pid", &target]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(["--duration", "100ms", "--json", "--no-self-stats"].map(String::from));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    vec![
        ("tailprobe record".into(), rec(&[]), true),
        (
            "tailprobe record --priority nice:-10".into(),
            rec(&["--priority", "nice:-10"]),
            true,
        ),
        (
            "tailprobe record --priority fifo:10".into(),
            rec(&["--priority", "fifo:10"]),
            true,
        ),
        (
            "runqlat (libbpf-tools)".into(),
            vec![RUNQLAT.into(), "1".into(), "1".into()],
            false,
        ),
    ]
}

pub fn run(quick: bool) -> Result<String> {
    super::probes::ensure_tools()?;
    cmd::cargo(&["build", "--release", "-p", "probe-user"])?;
    let bin = cmd::workspace_root().join("target/release/tailprobe");
    let n = if quick { 3 } else { 10 };
    let load = |s: &str| {
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| format!("? ({s})"))
    };
    poller_at_fifo();
    // The target: a process that sleeps (what is recorded does not matter).
    let target = Guard(
        Command::new("sleep")
            .arg("3600")
            .spawn()
            .context("starting sleep")?,
    );
    let pid = target.0.id();
    let load_idle = load("idle");
    let mut idle = Vec::new();
    for (name, argv, ours) in tools(&bin, pid) {
        idle.push(series(&name, &argv, ours, n)?);
    }
    let hb = Command::new(HACKBENCH[0])
        .args(&HACKBENCH[1..])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting hackbench")?;
    let hb = Guard(hb);
    std::thread::sleep(Duration::from_secs(3));
    let load_hb = load("hackbench");
    let mut busy = Vec::new();
    for (name, argv, ours) in tools(&bin, pid) {
        busy.push(series(&name, &argv, ours, n)?);
    }
    drop(hb);
    render(n, quick, &load_idle, &load_hb, &idle, &busy)
}

fn render(
    n: usize,
    quick: bool,
    load_idle: &str,
    load_hb: &str,
    idle: &[Row],
    busy: &[Row],
) -> Result<String> {
    let date = cmd::output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let kernel = cmd::output("uname", &["-r"]).unwrap_or_else(|| "?".into());
    let mut s = String::new();
    let w = &mut s;
    writeln!(w, "## Time to attach\n")?;
    writeln!(
        w,
        "Produced by `cargo xtask bench --only attach{}` (xtask/src/bench/attach.rs) on {date}, \
         kernel {kernel}, {} CPUs. Each cell: median of {n} runs (min-max), in ms from just \
         before the spawn to the first attached program (`anon_inode:bpf_link` seen in \
         `/proc/PID/fd` by a SCHED_FIFO poller every 0.5 ms). \"own\": tailprobe's \
         `attach_ms` stamps from the same spawn instant, first and last program. Saturated: \
         `{}` running (load average 1/5/15 min {load_hb}); idle: nothing of ours running \
         (load average {load_idle}: other work on the machine is in these numbers).\n",
        if quick { " --quick" } else { "" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        HACKBENCH.join(" "),
    )?;
    writeln!(
        w,
        "| tool | idle: first program | idle: own first / all | hackbench: first program | hackbench: own first / all |"
    )?;
    writeln!(w, "| --- | --- | --- | --- | --- |")?;
    let own = |o: &Option<(f64, f64)>| {
        o.map_or_else(|| "-".to_string(), |(f, a)| format!("{f:.0} / {a:.0}"))
    };
    for (i, b) in idle.iter().zip(busy) {
        writeln!(
            w,
            "| {} | {:.0} ({:.0}-{:.0}) | {} | {:.0} ({:.0}-{:.0}) | {} |",
            i.0,
            i.1,
            i.2,
            i.3,
            own(&i.4),
            b.1,
            b.2,
            b.3,
            own(&b.4)
        )?;
    }
    writeln!(
        w,
        "\nGoal (issue 17): tailprobe at most 200 ms idle and 1 s under hackbench (median).\n"
    )?;
    Ok(s)
}
