//! The probe benchmark: what our eBPF programs cost, measured on this
//! machine in one run.
//!
//! 1. Per-event cost of our `sched_switch` and `sched_wakeup` programs beside
//!    libbpf-tools' `runqlat` under the same loads, from the kernel's BPF
//!    run-time statistics (`run_cnt`, `run_time_ns`). Ours come from
//!    `tailprobe record --json` (it turns the statistics on for itself with
//!    `BPF_ENABLE_STATS`); runqlat's are read from its program fds'
//!    `/proc/PID/fdinfo` while `kernel.bpf_stats_enabled` is on, and that
//!    sysctl is put back on every way out (error, Ctrl-C, SIGTERM; a value
//!    left behind by a killed run is restored at the next start).
//! 2. Slowdown of a CPU-bound multi-threaded workload (stress-ng matrixprod
//!    bogo-ops/s) with every probe attached vs none, A/B alternated.
//! 3. Events per second sustained under heavy scheduler load, and whether
//!    anything was lost.
//!
//! Every command runs under a time limit; Ctrl-C stops the section cleanly.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::cmd;

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// The sysctl's value before we changed it, kept while it is changed so that
/// a run killed outright (SIGKILL) is repaired by the next one. /run is a
/// tmpfs, cleared on reboot, as the sysctl itself is.
const STATS_SAVED: &str = "/run/tailprobe-bench-bpf-stats-enabled.orig";
const RUNQLAT: &str = "/usr/sbin/runqlat";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catch SIGINT/SIGTERM/SIGHUP so that the section can clean up (children
/// get the default dispositions back at exec).
fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------
// kernel.bpf_stats_enabled, restored on every exit path

fn read_stats_sysctl() -> Result<String> {
    Ok(std::fs::read_to_string(STATS_SYSCTL)
        .with_context(|| format!("reading {STATS_SYSCTL}"))?
        .trim()
        .to_string())
}

fn write_stats_sysctl(v: &str) -> Result<()> {
    std::fs::write(STATS_SYSCTL, v).with_context(|| format!("writing {v} to {STATS_SYSCTL}"))
}

/// A value saved by a run that was killed before it could restore it.
fn restore_stale_stats_sysctl() -> Result<()> {
    if let Ok(old) = std::fs::read_to_string(STATS_SAVED) {
        let old = old.trim();
        if old == "0" || old == "1" {
            eprintln!(
                "xtask bench: restoring kernel.bpf_stats_enabled={old} left by an earlier run"
            );
            write_stats_sysctl(old)?;
        }
        let _ = std::fs::remove_file(STATS_SAVED);
    }
    Ok(())
}

/// `kernel.bpf_stats_enabled=1` while alive; the old value comes back on drop.
struct StatsOn {
    old: String,
}

impl StatsOn {
    fn enable() -> Result<Self> {
        let old = read_stats_sysctl()?;
        std::fs::write(STATS_SAVED, &old).with_context(|| format!("writing {STATS_SAVED}"))?;
        write_stats_sysctl("1")?;
        Ok(Self { old })
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        match write_stats_sysctl(&self.old) {
            Ok(()) => {
                let _ = std::fs::remove_file(STATS_SAVED);
            }
            Err(e) => eprintln!(
                "xtask bench: could not restore kernel.bpf_stats_enabled={} ({e:#}); \
                 run `sysctl kernel.bpf_stats_enabled={}`",
                self.old, self.old
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// Bounded child processes

/// A child that is stopped (SIGTERM, then SIGKILL) if it is still running
/// when dropped.
struct Running {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    what: String,
}

struct Finished {
    stdout: String,
    stderr: String,
    wall_s: f64,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

static SCRATCH: std::sync::Mutex<Option<tempfile::TempDir>> = std::sync::Mutex::new(None);

/// A private scratch directory (random name, mode 0700, ours), made on first
/// use; `scratch_cleanup` removes it.
fn scratch_dir() -> Result<PathBuf> {
    let mut g = SCRATCH
        .lock()
        .map_err(|_| anyhow::anyhow!("scratch directory lock poisoned"))?;
    if g.is_none() {
        *g = Some(
            tempfile::Builder::new()
                .prefix("tailprobe-bench-probes-")
                .tempdir()
                .context("creating a private scratch directory")?,
        );
    }
    Ok(g.as_ref()
        .map(|d| d.path().to_path_buf())
        .unwrap_or_default())
}

fn scratch_cleanup() {
    if let Ok(mut g) = SCRATCH.lock() {
        g.take();
    }
}

fn spawn(argv: &[String]) -> Result<Running> {
    let what = argv.join(" ");
    eprintln!("xtask bench: {what}");
    let dir = scratch_dir()?;
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let out = dir.join(format!("{n}.out"));
    let err = dir.join(format!("{n}.err"));
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(&err)?)
        .spawn()
        .with_context(|| format!("starting {}", argv[0]))?;
    Ok(Running {
        child,
        out,
        err,
        what,
    })
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self, sig: libc::c_int) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, sig);
            }
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Wait for the child to exit within `limit`; it must succeed.
    fn finish(mut self, started: Instant, limit: Duration) -> Result<Finished> {
        let status = loop {
            if let Some(st) = self.child.try_wait()? {
                break st;
            }
            check_interrupted()?;
            if started.elapsed() > limit {
                bail!(
                    "`{}` ran past its limit of {limit:?}; stopped it",
                    self.what
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let wall_s = started.elapsed().as_secs_f64();
        let stdout = std::fs::read_to_string(&self.out).unwrap_or_default();
        let stderr = std::fs::read_to_string(&self.err).unwrap_or_default();
        if !status.success() {
            let tail: String = stderr
                .lines()
                .rev()
                .take(8)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            bail!("`{}` failed ({status}):\n{tail}", self.what);
        }
        Ok(Finished {
            stdout,
            stderr,
            wall_s,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop(libc::SIGTERM);
    }
}

fn run_bounded(argv: &[String], limit: Duration) -> Result<Finished> {
    let t = Instant::now();
    spawn(argv)?.finish(t, limit)
}

fn argv(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

// ---------------------------------------------------------------------------
// Tools

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

/// Install the Debian packages whose programs are missing, idempotently.
pub(super) fn ensure_tools() -> Result<()> {
    let wanted = [
        (RUNQLAT, "libbpf-tools"),
        ("bpftool", "bpftool"),
        ("hackbench", "rt-tests"),
        ("stress-ng", "stress-ng"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(p, _)| !have(p))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "xtask bench: installing {} (apt-get install -y)",
        missing.join(" ")
    );
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        eprintln!("xtask bench: apt-get install failed; running apt-get update and retrying");
        let _ = Command::new("apt-get").arg("update").status();
        if !install() {
            bail!(
                "could not install {}: run `apt-get update && apt-get install -y {}`",
                missing.join(" "),
                missing.join(" ")
            );
        }
    }
    for (p, pkg) in wanted {
        if !have(p) {
            bail!("{p} is still missing after installing {pkg}");
        }
    }
    Ok(())
}

fn first_line_of(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output();
    match out {
        Ok(o) => {
            let mut s = String::from_utf8_lossy(&o.stdout).to_string();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("?")
                .trim()
                .to_string()
        }
        Err(_) => "?".into(),
    }
}

// ---------------------------------------------------------------------------
// BPF run-time statistics

/// One program's counters.
#[derive(Clone, Debug, Default, PartialEq)]
struct ProgCost {
    name: String,
    events: u64,
    run_time_ns: u64,
}

impl ProgCost {
    fn ns_per_event(&self) -> Option<f64> {
        (self.events > 0).then(|| self.run_time_ns as f64 / self.events as f64)
    }
}

/// Issue 13's goal: our hot-path programs at most this fraction of runqlat's
/// cost per event.
const HOT_PATH_GOAL: f64 = 0.5;

/// One verdict line: ours as a multiple of runqlat's ns per event, PASS or
/// FAIL against `HOT_PATH_GOAL`; no verdict without runs on both sides.
fn verdict(label: &str, hook: &str, ours: Option<&ProgCost>, theirs: Option<&ProgCost>) -> String {
    let on = ours.and_then(ProgCost::ns_per_event);
    let tn = theirs.and_then(ProgCost::ns_per_event);
    match (on, tn) {
        (Some(a), Some(b)) if b > 0.0 => {
            let x = a / b;
            format!(
                "{label}, `{hook}`: {x:.2}x of runqlat ({a:.0} vs {b:.0} ns/run, {} vs {} \
                 runs): **{}**",
                ours.map_or(0, |p| p.events),
                theirs.map_or(0, |p| p.events),
                if x <= HOT_PATH_GOAL { "PASS" } else { "FAIL" }
            )
        }
        _ => format!("{label}, `{hook}`: no verdict (no runs measured on one side)"),
    }
}

/// `prog_id`, `run_cnt`, `run_time_ns` from a bpf-prog fd's fdinfo.
fn parse_prog_fdinfo(text: &str) -> Option<(u32, u64, u64)> {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((
        field("prog_id")? as u32,
        field("run_cnt")?,
        field("run_time_ns")?,
    ))
}

/// (bpf-prog fds, bpf_link fds) a process holds: prog counters by id.
fn bpf_fds(pid: u32) -> (Vec<(u32, u64, u64)>, usize) {
    let mut progs = Vec::new();
    let mut links = 0;
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (progs, links);
    };
    for e in dir.flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if target == "anon_inode:bpf_link" {
            links += 1;
        } else if target == "anon_inode:bpf-prog" {
            let info = format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy());
            if let Some(p) = std::fs::read_to_string(info)
                .ok()
                .and_then(|t| parse_prog_fdinfo(&t))
            {
                progs.push(p);
            }
        }
    }
    progs.sort();
    progs.dedup_by_key(|p| p.0);
    (progs, links)
}

fn prog_name(id: u32) -> Result<String> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string(), "--json"])
        .output()
        .context("running bpftool")?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing `bpftool prog show id {id} --json`"))?;
    Ok(v["name"].as_str().unwrap_or("?").to_string())
}

/// runqlat, system-wide, with the kernel's statistics on: its programs'
/// counters between `start` and `finish` (the load runs in between).
struct Runqlat {
    proc_: Running,
    names: Vec<(u32, String)>,
    before: Vec<(u32, u64, u64)>,
    _stats: StatsOn,
}

impl Runqlat {
    fn start() -> Result<Self> {
        let stats = StatsOn::enable()?;
        // One summary at the end of a long interval: it prints on SIGINT.
        let proc_ = spawn(&[RUNQLAT.to_string(), "3600".into(), "1".into()])?;
        let t = Instant::now();
        let progs = loop {
            check_interrupted()?;
            let (progs, links) = bpf_fds(proc_.pid());
            if links >= 3 && progs.len() >= 3 {
                break progs;
            }
            if t.elapsed() > Duration::from_secs(20) {
                bail!("runqlat did not attach its programs within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut names = Vec::new();
        for (id, ..) in &progs {
            names.push((*id, prog_name(*id)?));
        }
        let (before, _) = bpf_fds(proc_.pid());
        Ok(Self {
            proc_,
            names,
            before,
            _stats: stats,
        })
    }

    fn finish(mut self) -> Result<Vec<ProgCost>> {
        let (after, _) = bpf_fds(self.proc_.pid());
        self.proc_.stop(libc::SIGINT);
        let mut out = Vec::new();
        for (id, cnt, ns) in after {
            let (c0, n0) = self
                .before
                .iter()
                .find(|b| b.0 == id)
                .map(|b| (b.1, b.2))
                .unwrap_or((0, 0));
            let name = self
                .names
                .iter()
                .find(|n| n.0 == id)
                .map(|n| n.1.clone())
                .unwrap_or_else(|| format!("prog {id}"));
            out.push(ProgCost {
                name,
                events: cnt.saturating_sub(c0),
                run_time_ns: ns.saturating_sub(n0),
            });
        }
        Ok(out)
    }
}

/// runqlat names its programs after the hook, with a `handle_` prefix in
/// its raw-tracepoint variants.
fn hook_of(name: &str) -> &str {
    name.strip_prefix("handle_").unwrap_or(name)
}

// ---------------------------------------------------------------------------
// tailprobe's report

/// The figures we use from one `tailprobe record --json` report.
#[derive(Debug, Default, Clone)]
struct Report {
    duration_s: f64,
    programs: Vec<ProgCost>,
    total_events: u64,
    total_run_time_ns: u64,
    cpu_share_pct: Option<f64>,
    events_per_second: Option<f64>,
    switches: u64,
    wakeups: u64,
    threads: u64,
    lossy: bool,
    losses: Vec<(String, u64)>,
    outliers_not_kept: u64,
}

fn parse_report(text: &str) -> Result<Report> {
    let v: Value = serde_json::from_str(text).context("parsing tailprobe's JSON report")?;
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    let o = &v["overhead"];
    let programs = o["programs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| ProgCost {
                    name: p["name"].as_str().unwrap_or("?").to_string(),
                    events: u(&p["events"]),
                    run_time_ns: u(&p["run_time_ns"]),
                })
                .collect()
        })
        .unwrap_or_default();
    let p = &v["process"];
    let losses = v["losses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|l| u(&l["total"]) > 0)
                .map(|l| {
                    (
                        l["name"].as_str().unwrap_or("?").to_string(),
                        u(&l["total"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Report {
        duration_s: u(&v["duration_ns"]) as f64 / 1e9,
        programs,
        total_events: u(&o["total_events"]),
        total_run_time_ns: u(&o["total_run_time_ns"]),
        cpu_share_pct: o["cpu_share_pct"].as_f64(),
        events_per_second: o["events_per_second"].as_f64(),
        switches: u(&p["voluntary_switches"]) + u(&p["involuntary_switches"]),
        wakeups: u(&p["wakeups"]),
        threads: u(&p["threads_seen"]),
        lossy: v["lossy"].as_bool().unwrap_or(true),
        losses,
        outliers_not_kept: u(&v["outliers_not_kept"]),
    })
}

/// Add `b`'s counters into `a`, program by program (matched by name).
fn add_costs(a: &mut Vec<ProgCost>, b: &[ProgCost]) {
    for p in b {
        match a.iter_mut().find(|q| q.name == p.name) {
            Some(q) => {
                q.events += p.events;
                q.run_time_ns += p.run_time_ns;
            }
            None => a.push(p.clone()),
        }
    }
}

fn cost_of<'a>(v: &'a [ProgCost], hook: &str) -> Option<&'a ProgCost> {
    v.iter().find(|p| hook_of(&p.name) == hook)
}

// ---------------------------------------------------------------------------
// Numbers

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

fn stdev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

fn ns(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "–".into())
}

/// A stress-ng metric (e.g. `bogo-ops-per-second-real-time`) for one
/// stressor from its `--yaml` file.
fn stress_ng_metric(yaml: &str, stressor: &str, key: &str) -> Option<f64> {
    let mut in_it = false;
    for l in yaml.lines() {
        let t = l.trim();
        if let Some(s) = t.strip_prefix("- stressor:") {
            in_it = s.trim() == stressor;
        } else if in_it {
            if let Some(r) = t.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
                return r.trim().parse().ok();
            }
        }
    }
    None
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

// ---------------------------------------------------------------------------
// The section

struct Plan {
    cost_rounds: usize,
    loads: Vec<(&'static str, String)>,
    ab_pairs: usize,
    ab_secs: u32,
    sustained: Vec<String>,
}

fn plan(quick: bool) -> Plan {
    if quick {
        Plan {
            cost_rounds: 1,
            loads: vec![
                ("hackbench, threads", "hackbench -T -g 4 -l 600".into()),
                ("hackbench, processes", "hackbench -g 4 -l 600".into()),
                (
                    "CPU-bound mix",
                    "stress-ng --cpu 3 --cpu-method matrixprod --sleep 1 --sleep-max 16 -t 2s"
                        .into(),
                ),
            ],
            ab_pairs: 3,
            ab_secs: 3,
            sustained: vec!["stress-ng --switch 2 -t 4s".into()],
        }
    } else {
        Plan {
            cost_rounds: 2,
            loads: vec![
                // One process with many threads (the shape of an inference
                // server): our filter is a compare.
                ("hackbench, threads", "hackbench -T -g 4 -l 1000".into()),
                // 160 processes: our filter is the followed-process set.
                ("hackbench, processes", "hackbench -g 4 -l 1000".into()),
                (
                    "CPU-bound mix",
                    "stress-ng --cpu 3 --cpu-method matrixprod --sleep 1 --sleep-max 16 -t 4s"
                        .into(),
                ),
            ],
            ab_pairs: 8,
            ab_secs: 4,
            sustained: vec![
                "stress-ng --switch 2 -t 8s".into(),
                "hackbench -g 8 -l 1500".into(),
            ],
        }
    }
}

/// `tailprobe record ... --json -- CMD`, bounded.
fn record(bin: &Path, extra: &[&str], load: &str, bound_s: u32) -> Result<Report> {
    let mut a = vec![
        bin.to_string_lossy().to_string(),
        "record".into(),
        "--follow-children".into(),
        "--duration".into(),
        format!("{bound_s}s"),
        "--json".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a.push("--".into());
    a.extend(argv(load));
    let f = run_bounded(&a, Duration::from_secs(bound_s as u64 + 30))?;
    let r = parse_report(&f.stdout).with_context(|| {
        format!(
            "tailprobe's stderr:\n{}",
            f.stderr.lines().take(20).collect::<Vec<_>>().join("\n")
        )
    })?;
    Ok(r)
}

struct CostResult {
    label: &'static str,
    load: String,
    ours: Vec<ProgCost>,
    ours_total_ns: u64,
    ours_total_events: u64,
    ours_cpu_share: Vec<f64>,
    target_switches: u64,
    target_wakeups: u64,
    target_threads: u64,
    theirs: Vec<ProgCost>,
    ours_wall_s: f64,
    theirs_wall_s: f64,
}

fn measure_costs(bin: &Path, plan: &Plan) -> Result<Vec<CostResult>> {
    let mut results = Vec::new();
    for (label, load) in &plan.loads {
        let mut r = CostResult {
            label,
            load: load.clone(),
            ours: Vec::new(),
            ours_total_ns: 0,
            ours_total_events: 0,
            ours_cpu_share: Vec::new(),
            target_switches: 0,
            target_wakeups: 0,
            target_threads: 0,
            theirs: Vec::new(),
            ours_wall_s: 0.0,
            theirs_wall_s: 0.0,
        };
        for round in 0..plan.cost_rounds {
            // Alternate which tool goes first.
            for ours_turn in [round % 2 == 0, round % 2 != 0] {
                check_interrupted()?;
                if ours_turn {
                    let rep = record(bin, &[], load, 60)?;
                    add_costs(&mut r.ours, &rep.programs);
                    r.ours_total_ns += rep.total_run_time_ns;
                    r.ours_total_events += rep.total_events;
                    r.ours_cpu_share.extend(rep.cpu_share_pct);
                    r.target_switches += rep.switches;
                    r.target_wakeups += rep.wakeups;
                    r.target_threads = r.target_threads.max(rep.threads);
                    r.ours_wall_s += rep.duration_s;
                } else {
                    let rq = Runqlat::start()?;
                    let f = run_bounded(&argv(load), Duration::from_secs(60))?;
                    let costs = rq.finish()?;
                    add_costs(&mut r.theirs, &costs);
                    r.theirs_wall_s += f.wall_s;
                }
            }
        }
        results.push(r);
    }
    Ok(results)
}

struct AbResult {
    cmd: String,
    /// bogo-ops/s over wall-clock time, without and with probes.
    plain: Vec<f64>,
    probed: Vec<f64>,
    /// bogo-ops per CPU second the workload itself used.
    plain_cpu: Vec<f64>,
    probed_cpu: Vec<f64>,
}

fn measure_slowdown(bin: &Path, plan: &Plan) -> Result<AbResult> {
    let yaml = scratch_dir()?.join("stress-ng.yaml");
    let yaml_s = yaml.to_string_lossy().to_string();
    let cmd = format!(
        "stress-ng --cpu 2 --cpu-method matrixprod --metrics-brief -t {}s --yaml {yaml_s}",
        plan.ab_secs
    );
    let mut plain = Vec::new();
    let mut probed = Vec::new();
    let mut plain_cpu = Vec::new();
    let mut probed_cpu = Vec::new();
    for _ in 0..plan.ab_pairs {
        for with_probes in [false, true] {
            check_interrupted()?;
            let _ = std::fs::remove_file(&yaml);
            if with_probes {
                record(bin, &["--no-self-stats"], &cmd, plan.ab_secs + 30)?;
            } else {
                run_bounded(&argv(&cmd), Duration::from_secs(plan.ab_secs as u64 + 30))?;
            }
            let text = std::fs::read_to_string(&yaml)
                .with_context(|| format!("reading stress-ng's {yaml_s}"))?;
            let metric = |k: &str| {
                stress_ng_metric(&text, "cpu", k).with_context(|| format!("no cpu {k} in {yaml_s}"))
            };
            let rate = metric("bogo-ops-per-second-real-time")?;
            let cpu_rate = metric("bogo-ops-per-second-usr-sys-time")?;
            if with_probes {
                probed.push(rate);
                probed_cpu.push(cpu_rate);
            } else {
                plain.push(rate);
                plain_cpu.push(cpu_rate);
            }
        }
    }
    Ok(AbResult {
        cmd: cmd.replace(&yaml_s, "FILE"),
        plain,
        probed,
        plain_cpu,
        probed_cpu,
    })
}

fn machine() -> (String, usize, String) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = cmd::output("uname", &["-r"]).unwrap_or_else(|| "?".into());
    (cpu, n, kernel)
}

pub fn run(quick: bool) -> Result<String> {
    if !is_root() {
        bail!(
            "the probes benchmark needs root: it loads eBPF programs (tailprobe, runqlat) and \
             switches kernel.bpf_stats_enabled; run `cargo xtask bench --only probes` as root"
        );
    }
    install_signal_handlers();
    restore_stale_stats_sysctl()?;
    ensure_tools()?;
    crate::setup::run(false)?;
    cmd::cargo(&["build", "--release", "-p", "probe-user"])?;
    let bin = cmd::workspace_root().join("target/release/tailprobe");
    let result = section(&bin, quick);
    scratch_cleanup();
    result
}

fn section(bin: &Path, quick: bool) -> Result<String> {
    let t0 = Instant::now();
    let plan = plan(quick);
    let load_costs = load_average();
    let date = cmd::output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let stats_default = read_stats_sysctl()?;

    let costs = measure_costs(bin, &plan)?;
    let load_ab = load_average();
    let ab = measure_slowdown(bin, &plan)?;
    let load_sustained = load_average();
    let mut sustained = Vec::new();
    for load in &plan.sustained {
        check_interrupted()?;
        sustained.push((load.clone(), record(bin, &[], load, 60)?));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    if read_stats_sysctl()? != stats_default {
        bail!("kernel.bpf_stats_enabled was not restored to {stats_default}");
    }

    let (cpu, ncpu, kernel) = machine();
    let mut s = String::new();
    let w = &mut s;
    writeln!(w, "## Probe cost\n")?;
    writeln!(
        w,
        "Produced by `cargo xtask bench --only probes{}` (xtask/src/bench/probes.rs) on {date}, \
         in {elapsed:.0} s{}. Machine: {cpu}, {ncpu} CPUs, kernel {kernel}. Load average \
         (1/5/15 min) before each part: {load_costs}, {load_ab}, {load_sustained} (it \
         includes our own loads of the part before; other work on the machine perturbs \
         these numbers).\n",
        if quick { " --quick" } else { "" },
        if quick {
            " (**--quick**: shorter and fewer runs)"
        } else {
            ""
        },
    )?;
    writeln!(
        w,
        "Versions: {}; {}; {}; {}.\n",
        first_line_of(&bin.to_string_lossy(), &["--version"]),
        first_line_of(RUNQLAT, &["--version"]),
        first_line_of("stress-ng", &["--version"]),
        first_line_of("bpftool", &["version"]),
    )?;

    // 1. Per-event cost.
    writeln!(w, "### Per-event cost: ours vs libbpf-tools runqlat\n")?;
    writeln!(
        w,
        "Each load ran {} time(s) under `tailprobe record --follow-children --json -- LOAD` \
         and as often alone while `runqlat 3600 1` traced the whole system, alternating which \
         went first. Costs are the kernel's BPF run-time statistics, summed over the runs: \
         ours from the report's `overhead.programs[]` (tailprobe holds `BPF_ENABLE_STATS` \
         itself), runqlat's from its program fds' `/proc/PID/fdinfo` (`run_cnt`, \
         `run_time_ns`) with `kernel.bpf_stats_enabled=1` just for those runs (restored to \
         {stats_default} after). Both pay the same ~20 ns per run for the statistics.\n",
        plan.cost_rounds
    )?;
    writeln!(
        w,
        "\"Runs\" are program invocations: the tracepoints fire for every task on the \
         machine, so both tools run on every scheduler event; runqlat does its work for all \
         of them, ours returns early unless a target thread is involved. \"Target events\" \
         are what ours recorded for the load's own threads.\n"
    )?;
    writeln!(
        w,
        "| load | hook | ours: runs | ours: ns/run | runqlat: runs | runqlat: ns/run | ours / runqlat |"
    )?;
    writeln!(w, "| --- | --- | ---: | ---: | ---: | ---: | ---: |")?;
    for r in &costs {
        for hook in ["sched_switch", "sched_wakeup", "sched_wakeup_new"] {
            let o = cost_of(&r.ours, hook);
            let t = cost_of(&r.theirs, hook);
            let on = o.and_then(ProgCost::ns_per_event);
            let tn = t.and_then(ProgCost::ns_per_event);
            let ratio = match (on, tn) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "–".into(),
            };
            writeln!(
                w,
                "| {} | `{hook}` | {} | {} | {} | {} | {ratio} |",
                r.label,
                o.map_or(0, |p| p.events),
                ns(on),
                t.map_or(0, |p| p.events),
                ns(tn),
            )?;
        }
    }
    writeln!(w)?;
    for r in &costs {
        let secs = r.ours_wall_s.max(1e-9);
        writeln!(
            w,
            "- {} (`{}`): ours recorded {} switches and {} wakeups of {} target threads \
             ({:.0} switches/s); all {} of our programs together ran {} times for {:.1} ms \
             ({:.0} ns/run, {} of one CPU over the recording); runqlat's runs cover {:.1} s \
             of load, ours {:.1} s.",
            r.label,
            r.load,
            r.target_switches,
            r.target_wakeups,
            r.target_threads,
            r.target_switches as f64 / secs,
            r.ours.len(),
            r.ours_total_events,
            r.ours_total_ns as f64 / 1e6,
            r.ours_total_ns as f64 / r.ours_total_events.max(1) as f64,
            if r.ours_cpu_share.is_empty() {
                "–".to_string()
            } else {
                format!("{:.2}%", mean(&r.ours_cpu_share))
            },
            r.theirs_wall_s,
            secs,
        )?;
        let mut top = r.ours.clone();
        top.sort_by_key(|p| std::cmp::Reverse(p.run_time_ns));
        let list: Vec<String> = top
            .iter()
            .filter(|p| p.run_time_ns > 0)
            .take(5)
            .map(|p| {
                format!(
                    "`{}` {:.1} ms ({} runs, {} ns/run)",
                    p.name,
                    p.run_time_ns as f64 / 1e6,
                    p.events,
                    ns(p.ns_per_event())
                )
            })
            .collect();
        writeln!(w, "  Our most expensive programs: {}.", list.join(", "))?;
    }
    writeln!(
        w,
        "\nGoal (issue 3): ours at or below runqlat's ns per event, ideally half of it.\n"
    )?;
    writeln!(
        w,
        "Verdict (issue 13: the hot path at most {HOT_PATH_GOAL}x runqlat's ns per event, \
         both measured in this run):\n"
    )?;
    for r in costs.iter().filter(|r| r.label.starts_with("hackbench")) {
        for hook in ["sched_switch", "sched_wakeup"] {
            writeln!(
                w,
                "- {}",
                verdict(
                    r.label,
                    hook,
                    cost_of(&r.ours, hook),
                    cost_of(&r.theirs, hook)
                )
            )?;
        }
    }
    writeln!(w)?;

    // 2. Slowdown.
    writeln!(w, "### Workload slowdown, all probes attached vs none\n")?;
    writeln!(
        w,
        "`{}`, {} A/B pairs in A, B, A, B order; B ran it under `tailprobe record \
         --follow-children --no-self-stats --json -- ...` (every probe attached, default \
         settings, no run-time statistics). Throughput is stress-ng's bogo-ops/s over wall \
         time; \"per CPU s\" is bogo-ops per CPU second the workload itself was charged \
         (less sensitive to other work on the machine; probe time spent in the workload's \
         context is charged to it).\n",
        ab.cmd,
        ab.ab_pairs_len()
    )?;
    writeln!(
        w,
        "| pair | A: ops/s | B: ops/s | B / A | A: ops per CPU s | B: ops per CPU s | B / A |"
    )?;
    writeln!(w, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")?;
    for i in 0..ab.ab_pairs_len() {
        let (a, b) = (ab.plain[i], ab.probed[i]);
        let (ac, bc) = (ab.plain_cpu[i], ab.probed_cpu[i]);
        writeln!(
            w,
            "| {} | {a:.1} | {b:.1} | {:.4} | {ac:.1} | {bc:.1} | {:.4} |",
            i + 1,
            b / a,
            bc / ac
        )?;
    }
    writeln!(w)?;
    for (what, plain, probed) in [
        ("ops/s", &ab.plain, &ab.probed),
        ("ops per CPU s", &ab.plain_cpu, &ab.probed_cpu),
    ] {
        let ratio = mean(probed) / mean(plain);
        let pair: Vec<f64> = plain.iter().zip(probed).map(|(a, b)| b / a).collect();
        let (plo, phi) = min_max(&pair);
        let mut sorted = pair.clone();
        sorted.sort_by(f64::total_cmp);
        let pmed = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
        let se = stdev(&pair) / (pair.len() as f64).sqrt();
        writeln!(
            w,
            "- {what}: mean A {:.1} ± {:.1} (sd), mean B {:.1} ± {:.1}; ratio of means B/A \
             **{ratio:.4}** ({:+.2}%); per-pair ratios {plo:.4} to {phi:.4}, median {pmed:.4}, \
             mean {:.4} ± {se:.4} (standard error).",
            mean(plain),
            stdev(plain),
            mean(probed),
            stdev(probed),
            (ratio - 1.0) * 100.0,
            mean(&pair),
        )?;
    }
    writeln!(
        w,
        "\nGoal: under 1% loss. A difference smaller than the run-to-run spread of A alone \
         is noise, not a measured cost.\n"
    )?;

    // 3. Sustained events.
    writeln!(w, "### Events sustained without loss\n")?;
    writeln!(
        w,
        "`tailprobe record --follow-children --json -- LOAD`. \"Program runs/s\" counts every \
         invocation of every one of our programs (the report's `overhead.events_per_second`); \
         \"target sched events/s\" is the load's own switches + wakeups that were recorded.\n"
    )?;
    writeln!(
        w,
        "| load | seconds | program runs/s | target sched events/s | threads | lossy | losses | our CPU share |"
    )?;
    writeln!(w, "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |")?;
    for (load, r) in &sustained {
        let losses = if r.losses.is_empty() {
            "none".to_string()
        } else {
            r.losses
                .iter()
                .map(|(n, c)| format!("{n} {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            w,
            "| `{load}` | {:.1} | {} | {:.0} | {} | {} | {losses} | {} |",
            r.duration_s,
            ns(r.events_per_second),
            (r.switches + r.wakeups) as f64 / r.duration_s.max(1e-9),
            r.threads,
            r.lossy,
            r.cpu_share_pct
                .map(|c| format!("{c:.1}%"))
                .unwrap_or_else(|| "–".into()),
        )?;
        if r.outliers_not_kept > 0 {
            writeln!(
                w,
                "|  |  |  | ({} run-queue outliers counted beyond the kept ones: not a loss) |  |  |  |  |",
                r.outliers_not_kept
            )?;
        }
    }
    writeln!(w)?;
    Ok(s)
}

impl AbResult {
    fn ab_pairs_len(&self) -> usize {
        self.plain.len().min(self.probed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prog_fdinfo() {
        let t = "pos:\t0\nflags:\t02000002\nprog_type:\t26\nprog_id:\t1083\n\
                 run_time_ns:\t12345\nrun_cnt:\t67\nrecursion_misses:\t0\n";
        assert_eq!(parse_prog_fdinfo(t), Some((1083, 67, 12345)));
        assert_eq!(parse_prog_fdinfo("pos:\t0\n"), None);
    }

    #[test]
    fn reads_stress_ng_yaml() {
        let y = "metrics:\n    - stressor: switch\n      bogo-ops-per-second-real-time: 5.0\n\
                 \x20   - stressor: cpu\n      bogo-ops: 3195\n      \
                 bogo-ops-per-second-real-time: 1062.270563\n";
        let rt = "bogo-ops-per-second-real-time";
        assert_eq!(stress_ng_metric(y, "cpu", rt), Some(1062.270563));
        assert_eq!(stress_ng_metric(y, "cpu", "bogo-ops"), Some(3195.0));
        assert_eq!(stress_ng_metric(y, "switch", rt), Some(5.0));
        assert_eq!(stress_ng_metric(y, "vm", rt), None);
    }

    #[test]
    fn reads_report_and_adds_costs() {
        let j = r#"{"duration_ns": 2000000000,
            "process": {"voluntary_switches": 10, "involuntary_switches": 5, "wakeups": 7, "threads_seen": 3},
            "overhead": {"programs": [{"name": "sched_switch", "events": 100, "run_time_ns": 50000, "ns_per_event": 500.0}],
                         "total_events": 100, "total_run_time_ns": 50000, "cpu_share_pct": 0.0025, "events_per_second": 50.0},
            "losses": [{"name": "a", "total": 0, "per_cpu": [0]}, {"name": "b", "total": 2, "per_cpu": [2]}],
            "lossy": true, "outliers_not_kept": 4}"#;
        let r = parse_report(j).unwrap();
        assert_eq!(r.switches, 15);
        assert_eq!(r.wakeups, 7);
        assert_eq!(r.losses, vec![("b".to_string(), 2)]);
        assert!(r.lossy);
        assert_eq!(r.duration_s, 2.0);
        let mut acc = r.programs.clone();
        add_costs(&mut acc, &r.programs);
        add_costs(
            &mut acc,
            &[ProgCost {
                name: "handle_sched_wakeup".into(),
                events: 1,
                run_time_ns: 9,
            }],
        );
        assert_eq!(acc[0].events, 200);
        assert_eq!(acc[0].ns_per_event(), Some(500.0));
        assert_eq!(cost_of(&acc, "sched_wakeup").map(|p| p.events), Some(1));
        assert!(cost_of(&acc, "sched_wakeup_new").is_none());
    }

    #[test]
    fn verdict_lines() {
        let c = |events, run_time_ns| ProgCost {
            name: "sched_switch".into(),
            events,
            run_time_ns,
        };
        let pass = verdict(
            "hb",
            "sched_switch",
            Some(&c(100, 20_000)),
            Some(&c(50, 25_000)),
        );
        assert!(
            pass.contains("0.40x") && pass.ends_with("**PASS**"),
            "{pass}"
        );
        let fail = verdict(
            "hb",
            "sched_switch",
            Some(&c(100, 30_000)),
            Some(&c(100, 50_000)),
        );
        assert!(
            fail.contains("0.60x") && fail.ends_with("**FAIL**"),
            "{fail}"
        );
        let edge = verdict(
            "hb",
            "sched_switch",
            Some(&c(10, 2_500)),
            Some(&c(10, 5_000)),
        );
        assert!(edge.ends_with("**PASS**"), "{edge}");
        let none = verdict("hb", "sched_wakeup", None, Some(&c(1, 1)));
        assert!(none.contains("no verdict"), "{none}");
        let zero = verdict("hb", "sched_wakeup", Some(&c(0, 0)), Some(&c(1, 1)));
        assert!(zero.contains("no verdict"), "{zero}");
    }

    #[test]
    fn spread_helpers() {
        assert_eq!(min_max(&[3.0, 1.0, 2.0]), (1.0, 3.0));
        assert!((mean(&[1.0, 2.0, 3.0]) - 2.0).abs() < 1e-12);
        assert!((stdev(&[1.0, 2.0, 3.0]) - 1.0).abs() < 1e-12);
    }
}
