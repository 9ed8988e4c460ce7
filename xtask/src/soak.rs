//! `cargo xtask soak`: `tailprobe exporter` for 30 minutes while target
//! processes start and exit (up to four at a time, each living 5-40 s, two
//! threads each), scraped every 5 s like Prometheus would. Reports the
//! exporter's resident memory at start, after 10 and after 30 minutes (and
//! every minute), its CPU time, and checks that counters never went down
//! and nothing was lost; writes the result into docs/fleet.md between the
//! `soak` markers.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::cmd;

const COMM: &str = "tpsoak";
const BEGIN: &str = "<!-- soak:begin -->";
const END: &str = "<!-- soak:end -->";

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| {
        l.strip_prefix("VmRSS:")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(t as f64 / 100.0)
}

/// The body of `GET /metrics` from an exporter on loopback `port`.
pub(crate) fn scrape(port: u16) -> Result<String> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).context("connecting to the exporter")?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut r = String::new();
    c.read_to_string(&mut r)?;
    Ok(r.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// A small xorshift so the schedule is the same every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo + 1)
    }
}

pub fn run(minutes: u64, debug: bool) -> Result<()> {
    if minutes == 0 {
        bail!("--minutes must be at least 1");
    }
    let root = cmd::workspace_root();
    let bin = if debug {
        cmd::cargo(&["build", "-p", "probe-user"])?;
        root.join("target/debug/tailprobe")
    } else {
        crate::setup::run(false)?;
        cmd::cargo(&["build", "--release", "-p", "probe-user"])?;
        root.join("target/release/tailprobe")
    };
    // Targets: tailprobe's built-in workload under a command name of its own.
    let dir = std::env::temp_dir().join(format!("tp-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let target_bin: PathBuf = dir.join(COMM);
    std::fs::copy(&bin, &target_bin).context("copying the target binary")?;
    let port = 19466u16;
    let mut exporter = Command::new(&bin)
        .args(["exporter", "--comm", COMM, "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting tailprobe exporter")?;
    let pid = exporter.id();
    let result = soak(
        pid,
        port,
        &target_bin,
        minutes,
        if debug { "debug" } else { "release" },
    );
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = exporter.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let text = result?;
    print!("{text}");
    let doc = root.join("docs/fleet.md");
    let old = std::fs::read_to_string(&doc).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{BEGIN}\n{text}{}", &old[..a], &old[b..])
        }
        _ => format!("{old}\n{BEGIN}\n{text}{END}\n"),
    };
    std::fs::write(&doc, new).with_context(|| format!("writing {}", doc.display()))?;
    eprintln!("xtask soak: written to {}", doc.display());
    Ok(())
}

/// One short-lived target: the built-in workload for 5 to 40 s.
fn start_target(target_bin: &Path, rng: &mut Rng) -> Result<Child> {
    let life = rng.next(5, 40);
    Command::new(target_bin)
        .args([
            "workload",
            "--threads",
            "2",
            "--busy",
            "1ms",
            "--sleep",
            "20ms",
        ])
        .arg("--duration")
        .arg(format!("{life}s"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting a target")
}

/// The exporter's lost-event counters that are not zero, or "none".
fn lost_events(body: &str) -> String {
    let lost: Vec<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("tailprobe_lost_events_total{reason=\""))
        .filter_map(|l| {
            let (reason, v) = l.split_once("\"} ")?;
            let v: f64 = v.trim().parse().ok()?;
            (v > 0.0).then(|| format!("{reason} {v}"))
        })
        .collect();
    if lost.is_empty() {
        "none".to_string()
    } else {
        lost.join(", ")
    }
}

fn soak(pid: u32, port: u16, target_bin: &Path, minutes: u64, profile: &str) -> Result<String> {
    // Ready when /metrics answers.
    let t0 = Instant::now();
    while scrape(port).is_err() {
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("the exporter did not serve /metrics within 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let total = Duration::from_secs(minutes * 60);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut live: Vec<(Child, Instant)> = Vec::new();
    let mut started = 0u64;
    let mut next_start = Instant::now();
    let mut next_scrape = Instant::now();
    let mut next_sample = Instant::now();
    let mut rss: Vec<(u64, u64)> = Vec::new();
    let mut last_waits = 0f64;
    let mut scrapes = 0u64;
    let mut problems: Vec<String> = Vec::new();
    let begin = Instant::now();
    let mut body = String::new();
    while begin.elapsed() < total {
        live.retain_mut(|(c, _)| !matches!(c.try_wait(), Ok(Some(_))));
        if Instant::now() >= next_start && live.len() < 4 {
            let c = start_target(target_bin, &mut rng)?;
            live.push((c, Instant::now()));
            started += 1;
            next_start = Instant::now() + Duration::from_secs(rng.next(2, 15));
        }
        if Instant::now() >= next_scrape {
            body = scrape(port).context("scraping the exporter")?;
            scrapes += 1;
            let w = value(
                &body,
                &format!("tailprobe_runqueue_wait_seconds_count{{target=\"{COMM}\"}}"),
            )
            .unwrap_or(0.0);
            if w < last_waits {
                problems.push(format!("wait count went down: {last_waits} -> {w}"));
            }
            last_waits = w;
            next_scrape = Instant::now() + Duration::from_secs(5);
        }
        if Instant::now() >= next_sample {
            let m = begin.elapsed().as_secs() / 60;
            let kib = rss_kib(pid).context("the exporter exited during the soak")?;
            rss.push((m, kib));
            eprintln!("xtask soak: minute {m}: exporter RSS {kib} KiB, {started} targets started");
            next_sample = Instant::now() + Duration::from_secs(60);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for (c, _) in live.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let end_kib = rss_kib(pid).context("the exporter exited during the soak")?;
    rss.push((minutes, end_kib));
    let cpu = cpu_seconds(pid).unwrap_or(f64::NAN);
    let lost = lost_events(&body);
    let at = |m: u64| {
        if m > minutes {
            // The run was shorter: no sample at that minute.
            return "-".to_string();
        }
        rss.iter()
            .rfind(|(mm, _)| *mm <= m)
            .map_or("-".to_string(), |(_, k)| format!("{k}"))
    };
    let first = rss.first().map_or(0, |r| r.1);
    let max = rss.iter().map(|r| r.1).max().unwrap_or(0);
    let mut s = String::new();
    s.push_str(&format!(
        "Soak run ({minutes} min, {profile} build): {started} target processes started and \
         exited (up to 4 at a time, 5-40 s each, 2 threads), {scrapes} scrapes.\n\n"
    ));
    s.push_str(
        "| | start | 10 min | 30 min | end | max |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    s.push_str(&format!(
        "| exporter RSS (KiB) | {first} | {} | {} | {end_kib} | {max} |\n\n",
        at(10),
        at(30)
    ));
    s.push_str(&format!(
        "Exporter CPU time over the run: {cpu:.1} s ({:.3}% of one CPU). Run-queue waits \
         counted: {last_waits}. Lost events: {lost}. Problems: {}.\n",
        cpu / (minutes as f64 * 60.0) * 100.0,
        if problems.is_empty() {
            "none".to_string()
        } else {
            problems.join("; ")
        }
    ));
    s.push_str(&format!(
        "\nRSS every minute (KiB): {}\n",
        rss.iter()
            .map(|(m, k)| format!("{m}:{k}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    Ok(s)
}
