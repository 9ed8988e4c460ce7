//! The load-generator and server benchmark: maximum request rate against
//! the same small handler (`tailprobe serve`'s /health) with tailprobe load,
//! oha and wrk side by side in one run, the generator's schedule lag at a
//! fixed rate, and the built-in server at saturation.
//!
//! On a machine with two or more CPUs the server is pinned to CPU 0 and
//! every generator to CPU 1, so each tool gets the same one CPU; CPU use is
//! each tool's own user + system time (from its rusage as a child).

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::cmd;

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (user + system) CPU seconds of this process's waited-for children.
fn children_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces, in parentheses).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so cutime (16) and cstime (17) are at 13, 14.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = cmd::output("getconf", &["CLK_TCK"])
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(100.0);
    (ticks(13) + ticks(14)) / hz
}

/// Run a command to completion; returns (stdout, wall seconds, CPU seconds).
fn measure(program: &str, args: &[String]) -> Result<(String, f64, f64)> {
    eprintln!("xtask bench: {program} {}", args.join(" "));
    let cpu0 = children_cpu_s();
    let t = Instant::now();
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    let wall = t.elapsed().as_secs_f64();
    let cpu = children_cpu_s() - cpu0;
    if !out.status.success() {
        bail!(
            "{program} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((String::from_utf8_lossy(&out.stdout).to_string(), wall, cpu))
}

/// The number after a sequence of keys in JSON text (each searched after
/// the previous one): enough for the reports of tailprobe and oha.
fn json_num(text: &str, keys: &[&str]) -> Option<f64> {
    let mut pos = 0;
    for k in keys {
        let pat = format!("\"{k}\"");
        pos += text[pos..].find(&pat)? + pat.len();
    }
    let rest = text[pos..].trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn wrk_rate(out: &str) -> Option<f64> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

fn ensure_peers() -> Result<()> {
    if !have("wrk") {
        eprintln!("xtask bench: installing wrk (apt-get install -y wrk)");
        let st = Command::new("apt-get")
            .args(["install", "-y", "wrk"])
            .status()
            .context("running apt-get")?;
        if !st.success() {
            bail!("apt-get install -y wrk failed; install wrk by hand");
        }
    }
    if !have("oha") {
        eprintln!("xtask bench: installing oha (cargo install oha --locked; a few minutes)");
        cmd::cargo(&["install", "oha", "--locked"])?;
    }
    Ok(())
}

fn start_serve(bin: &Path, pin: Option<&str>, args: &[&str]) -> Result<(Serve, String)> {
    let mut c = match pin {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    c.args(["serve", "--port", "0", "--duration", "600s"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().context("starting tailprobe serve")?;
    let stderr = child.stderr.take().context("serve's stderr")?;
    let serve = Serve(child);
    let mut line = String::new();
    BufReader::new(stderr)
        .read_line(&mut line)
        .context("reading serve's address")?;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .with_context(|| format!("no address in {line:?}"))?
        .to_string();
    std::thread::sleep(Duration::from_millis(200));
    Ok((serve, url))
}

fn version(program: &str, arg: &str) -> String {
    let out = Command::new(program).arg(arg).output();
    out.map(|o| {
        let s = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        s.lines().next().unwrap_or("").trim().to_string()
    })
    .unwrap_or_default()
}

struct Row {
    tool: &'static str,
    rates: Vec<f64>,
    cpu: Vec<f64>,
    wall: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        0.0
    } else {
        s[s.len() / 2]
    }
}

/// Rates, lag and saturation measured, then the section written.
pub fn run(quick: bool) -> Result<String> {
    cmd::cargo(&["build", "--release", "-p", "probe-user"])?;
    ensure_peers()?;
    let bin: PathBuf = cmd::workspace_root().join("target/release/tailprobe");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (server_cpu, client_cpu) = if cpus >= 2 {
        (Some("0"), Some("1"))
    } else {
        (None, None)
    };
    let secs = if quick { 2 } else { 5 };
    let p = Plan {
        bin_s: bin.to_string_lossy().to_string(),
        client_cpu,
        secs,
        rounds: if quick { 1 } else { 3 },
        conns: 64,
        dur: format!("{secs}s"),
    };
    // 1. Maximum request rate on the same handler.
    let (serve, base) = start_serve(&bin, server_cpu, &["--http-threads", "1", "--workers", "1"])?;
    let url = format!("{base}/health");
    let rows = max_rate(&p, &url)?;
    // 2. Schedule lag at fixed rates (the same server).
    let lag_rows = schedule_lag(&p, &url)?;
    drop(serve);
    // 3. The built-in server at saturation, default model size.
    let (serve, base) = start_serve(&bin, None, &[])?;
    let sat = saturation(&p, &base, quick)?;
    drop(serve);
    let mut o = String::new();
    section_head(&mut o, cpus, quick);
    section_rate(&mut o, &p, server_cpu.is_some(), &rows);
    section_lag(&mut o, &p, &lag_rows);
    section_saturation(&mut o, &sat);
    Ok(o)
}

/// How the tools are run: the same for every measurement.
struct Plan {
    bin_s: String,
    /// The CPU every generator is pinned to (None: not pinned).
    client_cpu: Option<&'static str>,
    secs: u64,
    rounds: usize,
    conns: usize,
    dur: String,
}

impl Plan {
    /// The program and its arguments, pinned to the client CPU with taskset.
    fn pin(&self, args: Vec<String>, program: &str) -> (String, Vec<String>) {
        match self.client_cpu {
            Some(c) => {
                let mut a = vec!["-c".to_string(), c.to_string(), program.to_string()];
                a.extend(args);
                ("taskset".to_string(), a)
            }
            None => (program.to_string(), args),
        }
    }
}

/// (rate, achieved, lag p50, p99, p99.9, max, e2e-from-intended p99, CPU s)
type LagRow = (u32, f64, f64, f64, f64, f64, f64, f64);

/// The built-in server at saturation.
struct Saturation {
    secs: u64,
    rps: f64,
    tps: f64,
    p99: f64,
    ttft: f64,
    tpot: f64,
    gen_cpu: f64,
}

/// Each tool's maximum rate on the same handler, the tools in turn in
/// each round.
fn max_rate(p: &Plan, url: &str) -> Result<Vec<Row>> {
    let (bin_s, dur, conns) = (&p.bin_s, &p.dur, p.conns);
    let mut rows = vec![
        Row {
            tool: "tailprobe load",
            rates: vec![],
            cpu: vec![],
            wall: vec![],
        },
        Row {
            tool: "tailprobe load (hyper)",
            rates: vec![],
            cpu: vec![],
            wall: vec![],
        },
        Row {
            tool: "oha",
            rates: vec![],
            cpu: vec![],
            wall: vec![],
        },
        Row {
            tool: "wrk",
            rates: vec![],
            cpu: vec![],
            wall: vec![],
        },
    ];
    for _ in 0..p.rounds {
        for row in rows.iter_mut() {
            let (program, args) = match row.tool {
                "tailprobe load" | "tailprobe load (hyper)" => p.pin(
                    [
                        "load",
                        url,
                        "--duration",
                        dur,
                        "--concurrency",
                        &conns.to_string(),
                        "--threads",
                        "1",
                        "--json",
                        "--no-progress",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                    bin_s,
                ),
                "oha" => p.pin(
                    [
                        "-z",
                        dur,
                        "-c",
                        &conns.to_string(),
                        "--no-tui",
                        "--output-format",
                        "json",
                        url,
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                    "oha",
                ),
                _ => p.pin(
                    ["-t1", &format!("-c{conns}"), &format!("-d{dur}"), url]
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                    "wrk",
                ),
            };
            // The hyper row: the same binary with its plain fast path off.
            let (program, args) = if row.tool == "tailprobe load (hyper)" {
                let mut a = vec!["TAILPROBE_LOAD_CLIENT=hyper".to_string(), program];
                a.extend(args);
                ("env".to_string(), a)
            } else {
                (program, args)
            };
            let (out, wall, cpu) = measure(&program, &args)?;
            let rate = match row.tool {
                "tailprobe load" | "tailprobe load (hyper)" => json_num(&out, &["throughput_rps"]),
                "oha" => json_num(&out, &["requestsPerSec"]),
                _ => wrk_rate(&out),
            }
            .with_context(|| format!("no rate in the output of {}: {out}", row.tool))?;
            row.rates.push(rate);
            row.cpu.push(cpu);
            row.wall.push(wall);
        }
    }

    Ok(rows)
}

/// The generator's schedule lag at fixed rates.
fn schedule_lag(p: &Plan, url: &str) -> Result<Vec<LagRow>> {
    let (bin_s, dur) = (&p.bin_s, &p.dur);
    let mut lag_rows = Vec::new();
    for rate in [1000u32, 10_000] {
        let (program, args) = p.pin(
            [
                "load",
                url,
                "--rate",
                &rate.to_string(),
                "--duration",
                dur,
                "--concurrency",
                "16",
                "--threads",
                "1",
                "--json",
                "--no-progress",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            bin_s,
        );
        let (out, _, cpu) = measure(&program, &args)?;
        let g = |k: &str, q: &str| {
            if q == "max" || q == "avg" {
                json_num(&out, &["latency_ms", k, q])
            } else {
                json_num(&out, &["latency_ms", k, q, "value"])
            }
        };
        lag_rows.push((
            rate,
            json_num(&out, &["throughput_rps"]).unwrap_or(0.0),
            g("schedule_lag", "p50").unwrap_or(f64::NAN),
            g("schedule_lag", "p99").unwrap_or(f64::NAN),
            g("schedule_lag", "p999").unwrap_or(f64::NAN),
            g("schedule_lag", "max").unwrap_or(f64::NAN),
            g("e2e_sched", "p99").unwrap_or(f64::NAN),
            cpu,
        ));
    }
    Ok(lag_rows)
}

/// The built-in server, default model size, driven to saturation.
fn saturation(p: &Plan, base: &str, quick: bool) -> Result<Saturation> {
    let bin_s = &p.bin_s;
    let sat_secs = if quick { 5 } else { 15 };
    let (out, _, _) = measure(
        bin_s,
        &[
            "load".to_string(),
            format!("{base}/v1/completions"),
            "--duration".into(),
            format!("{sat_secs}s"),
            "--concurrency".into(),
            "8".into(),
            "--warmup".into(),
            "8".into(),
            "--json".into(),
            "--no-progress".into(),
        ],
    )?;
    let num = |path: &[&str], missing: f64| json_num(&out, path).unwrap_or(missing);
    Ok(Saturation {
        secs: sat_secs,
        rps: num(&["throughput_rps"], 0.0),
        tps: num(&["output_tokens_per_s"], 0.0),
        p99: num(&["latency_ms", "e2e", "p99", "value"], f64::NAN),
        ttft: num(&["latency_ms", "ttft", "p50", "value"], f64::NAN),
        tpot: num(&["latency_ms", "tpot", "p50", "value"], f64::NAN),
        gen_cpu: num(&["generator", "cpu_user_s"], 0.0) + num(&["generator", "cpu_sys_s"], 0.0),
    })
}

/// The section's title and the machine.
fn section_head(o: &mut String, cpus: usize, quick: bool) {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let kernel = cmd::output("uname", &["-r"]).unwrap_or_default();
    let _ = writeln!(o, "## Load generator and built-in server\n");
    let _ = writeln!(
        o,
        "Machine: {cpus} CPU(s), {cpu_model}, kernel {kernel}. Loopback only. {}",
        if quick {
            "**Quick run** (`--quick`): shorter, one round."
        } else {
            ""
        }
    );
    let _ = writeln!(
        o,
        "Produced by `cargo xtask bench` (xtask/src/bench/load.rs); every number below comes from one run of it.\n"
    );
}

/// The maximum-rate table.
fn section_rate(o: &mut String, p: &Plan, server_pinned: bool, rows: &[Row]) {
    let (bin_s, secs, rounds, conns) = (&p.bin_s, p.secs, p.rounds, p.conns);
    let _ = writeln!(o, "### Maximum request rate, same handler, side by side\n");
    let _ = writeln!(
        o,
        "Target: `tailprobe serve --http-threads 1 --workers 1` `GET /health` (a 15-byte JSON answer){}. \
         Each tool: {conns} keep-alive connections, one thread, {secs} s, {} round(s) in turn; \
         the table gives the median round. CPU is the tool's own user + system time \
         (its rusage as a child); a share of 100% is one CPU fully used.\n",
        if server_pinned { ", pinned to CPU 0; every tool pinned to CPU 1 with taskset" } else { "" },
        rounds
    );
    let _ = writeln!(o, "| tool | version | requests/s (median) | best round | all rounds | CPU s (median) | CPU share | requests per CPU-second (median round) | requests per CPU-second (best round) | all rounds (requests per CPU-second) |");
    let _ = writeln!(o, "|---|---|---:|---:|---|---:|---:|---:|---:|---|");
    for r in rows {
        let ver = match r.tool {
            "tailprobe load" | "tailprobe load (hyper)" => version(bin_s, "--version"),
            "oha" => version("oha", "--version"),
            _ => version("wrk", "--version"),
        };
        let rate = median(&r.rates);
        let cpu = median(&r.cpu);
        let wall = median(&r.wall);
        let all: Vec<String> = r.rates.iter().map(|x| format!("{x:.0}")).collect();
        // Each round's efficiency: its requests over its own CPU seconds.
        let eff: Vec<f64> = r
            .rates
            .iter()
            .zip(&r.cpu)
            .map(|(rate, cpu)| rate * secs as f64 / cpu.max(1e-9))
            .collect();
        let eff_all: Vec<String> = eff.iter().map(|x| format!("{x:.0}")).collect();
        let _ = writeln!(
            o,
            "| {} | {} | {:.0} | {:.0} | {} | {:.2} | {:.0}% | {:.0} | {:.0} | {} |",
            r.tool,
            ver.split(" Copyright")
                .next()
                .unwrap_or("")
                .replace('|', "/"),
            rate,
            r.rates.iter().cloned().fold(0.0, f64::max),
            all.join(", "),
            cpu,
            100.0 * cpu / wall.max(1e-9),
            median(&eff),
            eff.iter().cloned().fold(0.0, f64::max),
            eff_all.join(", ")
        );
    }
    let _ = writeln!(
        o,
        "\nRequests per CPU-second is the generator's efficiency: a tool whose CPU share is near \
         100% was itself the limit. `tailprobe load (hyper)` is the same binary with \
         `TAILPROBE_LOAD_CLIENT=hyper`: hyper instead of the plain fast path (docs/load.md). The machine is shared (other builds and tests may run \
         beside the benchmark), so rounds vary; the tools run in turn within each round so \
         that a disturbance hits one round of each rather than one tool.\n"
    );
}

/// The schedule-lag table.
fn section_lag(o: &mut String, p: &Plan, lag_rows: &[LagRow]) {
    let secs = p.secs;
    let _ = writeln!(o, "### Generator accuracy at a fixed rate\n");
    let _ = writeln!(
        o,
        "`tailprobe load /health --rate R --duration {secs}s --threads 1` (constant arrivals), same pinning. \
         Schedule lag = send - intended.\n"
    );
    let _ = writeln!(o, "| rate (req/s) | achieved | lag p50 (ms) | lag p99 (ms) | lag p99.9 (ms) | lag max (ms) | e2e from intended p99 (ms) | generator CPU s |");
    let _ = writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (rate, got, p50, p99, p999, max, e2e99, cpu) in lag_rows {
        let _ = writeln!(
            o,
            "| {rate} | {got:.0} | {p50:.3} | {p99:.3} | {p999:.3} | {max:.3} | {e2e99:.3} | {cpu:.2} |"
        );
    }
}

/// The saturation table.
fn section_saturation(o: &mut String, s: &Saturation) {
    let Saturation {
        secs,
        rps,
        tps,
        p99,
        ttft,
        tpot,
        gen_cpu,
    } = s;
    let _ = writeln!(o, "\n### Built-in server at saturation (default model)\n");
    let _ = writeln!(
        o,
        "`tailprobe serve` with its defaults (hidden 512, layers 4, one worker per CPU), driven by \
         `tailprobe load /v1/completions --concurrency 8 --duration {secs}s` (streamed, 64-word \
         prompts, 32 output tokens, 8 warm-up requests). Server and generator share the machine's \
         CPUs (the generator used {gen_cpu:.2} CPU s).\n"
    );
    let _ = writeln!(
        o,
        "| requests/s | output tokens/s | TTFT p50 (ms) | TPOT p50 (ms) | e2e p99 (ms) |"
    );
    let _ = writeln!(o, "|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        o,
        "| {rps:.1} | {tps:.0} | {ttft:.1} | {tpot:.3} | {p99:.1} |"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numbers_from_reports() {
        let t =
            r#"{"a": {"p99": {"value": 1.5, "samples": 2}}, "throughput_rps": 123.25, "x":-3e2}"#;
        assert_eq!(json_num(t, &["a", "p99", "value"]), Some(1.5));
        assert_eq!(json_num(t, &["throughput_rps"]), Some(123.25));
        assert_eq!(json_num(t, &["x"]), Some(-300.0));
        assert_eq!(json_num(t, &["nope"]), None);
        assert_eq!(
            wrk_rate("Running 5s test\nRequests/sec:  98765.43\nTransfer/sec: 1MB"),
            Some(98765.43)
        );
    }
}
