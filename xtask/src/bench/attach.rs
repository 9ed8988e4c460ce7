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
//! from the same spawn instant on CLOCK_MONOTONIC) is shown beside it, and
//! for its default row the median of each start-up phase (`attach_ms.phases`).

use std::{
    fmt::Write as _,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::stats::median;
use crate::cmd;

const RUNQLAT: &str = "/usr/sbin/runqlat";
/// The saturating load: 10 groups of 40 processes passing messages, long
/// enough to outlast a measurement (it is stopped afterwards).
const HACKBENCH: &[&str] = &["hackbench", "-g", "10", "-l", "100000000"];
const GIVE_UP: Duration = Duration::from_secs(60);
/// `attach_ms.phases` of the report, in the order they happen.
const PHASES: [&str; 8] = [
    "before_setup",
    "target",
    "btf_read",
    "btf_offsets",
    "btf_parse",
    "config",
    "load",
    "attach",
];

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
    own: Option<Own>,
}

/// What tailprobe's report says of one start-up.
struct Own {
    first_ms: f64,
    all_ms: f64,
    /// `attach_ms.phases`: (name, ms), in report order.
    phases: Vec<(String, f64)>,
    loader_parsed_btf: bool,
    startup_priority: String,
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
    let phases = PHASES
        .iter()
        .map(|k| {
            let v = a["phases"][k]
                .as_f64()
                .with_context(|| format!("attach_ms.phases.{k} missing from the report"))?;
            Ok((k.to_string(), v))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Run {
        first_link_ms,
        own: Some(Own {
            first_ms: at("first_attached_monotonic_ns")?,
            all_ms: at("all_attached_monotonic_ns")?,
            phases,
            loader_parsed_btf: a["loader_parsed_btf"].as_bool().unwrap_or(true),
            startup_priority: a["startup_priority"].as_str().unwrap_or("?").to_string(),
        }),
    })
}

/// A row: (tool, median first link, min, max, own first median, own all median).
type Row = (String, f64, f64, f64, Option<(f64, f64)>);

/// tailprobe's own view of a series: median of each phase, how many runs
/// had the loader parse the BTF again, the start-up priorities seen.
#[derive(Default)]
struct OwnSummary {
    phases: Vec<(String, f64)>,
    loader_parsed: usize,
    runs: usize,
    priorities: Vec<String>,
}

fn summarise(owns: &[Own]) -> OwnSummary {
    let mut s = OwnSummary {
        runs: owns.len(),
        ..OwnSummary::default()
    };
    if let Some(first) = owns.first() {
        for (i, (name, _)) in first.phases.iter().enumerate() {
            let v: Vec<f64> = owns
                .iter()
                .filter_map(|o| o.phases.get(i))
                .map(|p| p.1)
                .collect();
            s.phases.push((name.clone(), median(&v)));
        }
    }
    s.loader_parsed = owns.iter().filter(|o| o.loader_parsed_btf).count();
    for o in owns {
        if !s.priorities.contains(&o.startup_priority) {
            s.priorities.push(o.startup_priority.clone());
        }
    }
    s
}

fn series(name: &str, argv: &[String], ours: bool, n: usize) -> Result<(Row, OwnSummary)> {
    let mut links = Vec::new();
    let mut owns = Vec::new();
    for _ in 0..n {
        let r = measure(argv, ours)?;
        links.push(r.first_link_ms);
        owns.extend(r.own);
        std::thread::sleep(Duration::from_millis(200));
    }
    let (lo, hi) = links
        .iter()
        .fold((f64::MAX, 0f64), |(l, h), v| (l.min(*v), h.max(*v)));
    let firsts: Vec<f64> = owns.iter().map(|o| o.first_ms).collect();
    let alls: Vec<f64> = owns.iter().map(|o| o.all_ms).collect();
    let own = ours.then(|| (median(&firsts), median(&alls)));
    Ok((
        (name.to_string(), median(&links), lo, hi, own),
        summarise(&owns),
    ))
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
            "tailprobe record --no-startup-boost".into(),
            rec(&["--no-startup-boost"]),
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
    // Every tool's series, the first (tailprobe's default) row's own
    // summary, and the load average at the start and at the end.
    let condition = |what: &str| -> Result<(Vec<Row>, OwnSummary, String)> {
        let at_start = load(what);
        let mut rows = Vec::new();
        let mut first_own = OwnSummary::default();
        for (i, (name, argv, ours)) in tools(&bin, pid).into_iter().enumerate() {
            let (row, own) = series(&name, &argv, ours, n)?;
            rows.push(row);
            if i == 0 {
                first_own = own;
            }
        }
        Ok((
            rows,
            first_own,
            format!("{at_start} at the start, {} at the end", load(what)),
        ))
    };
    let (idle, idle_own, load_idle) = condition("idle")?;
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
    let (busy, busy_own, load_hb) = condition("hackbench")?;
    drop(hb);
    let mut s = render(n, quick, &load_idle, &load_hb, &idle, &busy)?;
    s.push_str(&render_phases(&idle_own, &busy_own)?);
    Ok(s)
}

/// The default row's start-up, phase by phase (medians), idle and busy.
fn render_phases(idle: &OwnSummary, busy: &OwnSummary) -> Result<String> {
    let mut s = String::new();
    let w = &mut s;
    writeln!(
        w,
        "Where `tailprobe record`'s start-up went (`attach_ms.phases`, median ms of the same runs; \
         `before_setup` is from the first line of `main`):\n"
    )?;
    writeln!(w, "| phase | idle | hackbench |")?;
    writeln!(w, "| --- | --- | --- |")?;
    for (i, (name, v)) in idle.phases.iter().enumerate() {
        let b = busy.phases.get(i).map_or(f64::NAN, |p| p.1);
        writeln!(w, "| {name} | {v:.1} | {b:.1} |")?;
    }
    writeln!(
        w,
        "\nStart-up priority reported: idle {}; hackbench {}. aya's loader parsed the kernel's \
         BTF again in {} of {} idle and {} of {} hackbench runs (the BTF is otherwise parsed once).\n",
        idle.priorities.join(", "),
        busy.priorities.join(", "),
        idle.loader_parsed,
        idle.runs,
        busy.loader_parsed,
        busy.runs
    )?;
    Ok(s)
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
         `attach_ms` stamps from the same spawn instant, first and last program. \
         `tailprobe record` runs its start-up at SCHED_FIFO 1 by default \
         (`--no-startup-boost`: at its own priority). Saturated: `{}` running (load \
         average 1/5/15 min {load_hb}); idle: nothing of ours running (load average \
         {load_idle}: other work on the machine is in these numbers).\n",
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
