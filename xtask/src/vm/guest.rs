//! One boot: a shell script that runs the host-built test binaries inside
//! the guest, the `vng` command that boots it, and reading back what
//! happened. The guest sees the host's filesystem read-only (writes go to an
//! overlay); one directory, `<out>/guest`, is shared read-write for results.
//!
//! A boot failure (the script never started: panic, hang before init, QEMU
//! error) is told apart from a test failure (the script started; a test
//! binary failed, or the guest stopped or ran out of time mid-run).

use std::{
    fmt::Write as _,
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{kernels::Kernel, systemd};

/// A test binary and how long it may run in a TCG guest.
#[derive(Debug, Clone)]
pub struct TestBin {
    pub name: String,
    pub path: PathBuf,
    pub timeout_s: u64,
    /// Run only the tests whose names contain this.
    pub filter: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct BinResult {
    pub name: String,
    /// Exit status in the guest (124: the guest's `timeout` stopped it).
    pub rc: i32,
    pub secs: u64,
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
    /// The SKIP lines, shown again in `cargo xtask test`'s summary.
    pub skip_lines: Vec<String>,
    pub failed_names: Vec<String>,
}

#[derive(Debug)]
pub enum Outcome {
    /// The guest never reached the script.
    BootFailed(String),
    /// The script started, but did not finish (a hang, a crash, the host's
    /// time limit): the binaries that did finish are in `tests`.
    Stopped(String),
    Finished,
}

#[derive(Debug)]
pub struct Boot {
    pub outcome: Outcome,
    /// From starting `vng` to the script's first line.
    pub boot_secs: f64,
    /// From the script's first line to its last (or to the stop).
    pub run_secs: f64,
    pub tests: Vec<BinResult>,
    pub console: PathBuf,
}

/// How a guest boots.
#[derive(Debug, Clone, Default)]
pub struct How {
    /// QEMU's multi-threaded TCG instead of one thread for both vCPUs.
    pub mttcg: bool,
    /// systemd as PID 1 instead of virtme-ng's own init.
    pub systemd: bool,
    /// A `.deb` the script installs with `dpkg -i` before the tests.
    pub deb: Option<PathBuf>,
}

/// The script the guest runs: each binary one test at a time, with its own
/// time limit, output to `<guest>/<name>.log`, a result line per binary.
fn script(
    guest_dir: &Path,
    tailprobe: &Path,
    bins: &[TestBin],
    time_scale: u32,
    deb: Option<&Path>,
) -> String {
    let g = guest_dir.display();
    let mut s = String::new();
    let _ = writeln!(s, "#!/bin/sh\n# written by cargo xtask vm-test");
    let _ = writeln!(s, "out='{g}'");
    let _ = writeln!(s, "echo \"booted $(uname -r)\" > \"$out/booted\"");
    let _ = writeln!(s, "export TAILPROBE_BIN='{}'", tailprobe.display());
    let _ = writeln!(s, "export RUST_BACKTRACE=1");
    // Emulated CPU: absolute time tolerances in the tests scale by this
    // (tests/src/lib.rs `time_scale`); the host row runs with 1.
    let _ = writeln!(s, "export TAILPROBE_TEST_TIME_SCALE={time_scale}");
    // tailprobe mounts tracefs itself; the test binaries read /proc and sysfs.
    let _ = writeln!(s, "cd /tmp");
    // A heartbeat every 10 s, so that a stopped run tells a wedged guest
    // (the heartbeat stops too) from a stuck test (it goes on, and shows
    // the processes, their scheduling class and state, and the kernel
    // stacks of those in uninterruptible sleep).
    if time_scale > 1 {
        let _ = writeln!(
            s,
            "( while :; do {{ echo \"up $(cut -d' ' -f1 /proc/uptime) load $(cut -d' ' -f1-4 /proc/loadavg)\"; \
             ps -eo pid,ppid,cls,rtprio,stat,pcpu,etimes,wchan:24,comm --sort=-pcpu | head -12; \
             for p in $(ps -eo pid=,stat= | awk '$2 ~ /^D/ {{print $1}}'); do echo \"stack of $p:\"; cat /proc/$p/stack; done; \
             }} > \"$out/heartbeat.tmp\" 2>&1; mv \"$out/heartbeat.tmp\" \"$out/heartbeat\"; \
             head -1 \"$out/heartbeat\" >> \"$out/heartbeats\"; sleep 10; done ) < /dev/null > /dev/null 2>&1 &"
        );
    }
    if bins.iter().any(|b| b.name == "dist_package") && time_scale > 1 {
        // Only in a guest (time_scale > 1; never in the host row): the
        // packaged binary runs where no Rust, cargo or LLVM can be found,
        // so the host's toolchains (visible read-only) are hidden under
        // empty file systems; the test also strips PATH itself.
        let _ = writeln!(
            s,
            "for d in /root/.cargo /root/.rustup /usr/lib/llvm-*; do \
             [ -d \"$d\" ] && mount -t tmpfs -o ro,size=4k none \"$d\"; done"
        );
        // dist_package checks that they are gone.
        let _ = writeln!(
            s,
            "export TAILPROBE_DIST_TEST=1 TAILPROBE_EXPECT_NO_TOOLCHAIN=1"
        );
        if let Some(deb) = deb {
            // man-db's dpkg trigger rebuilds the whole manual page index
            // (over 9p, on an emulated CPU: dpkg -i took about 160 s with
            // it); without /var/lib/man-db/auto-update (Debian's switch,
            // removed in the guest's overlay only) the trigger does nothing.
            let _ = writeln!(s, "rm -f /var/lib/man-db/auto-update");
            // Installed as an operator would, into the guest's overlay (the
            // host's own /usr is untouched); its postinst runs. dist_package's
            // --unit test uses the installed binary, and skips visibly when
            // the install failed (dpkg.log says why; the unit lane then
            // fails).
            let _ = writeln!(
                s,
                "s=$(date +%s); if dpkg -i '{}' > \"$out/dpkg.log\" 2>&1; then \
                 export TAILPROBE_INSTALLED_BIN=/usr/bin/tailprobe; \
                 else echo \"dpkg -i failed: $?\" >> \"$out/dpkg.log\"; fi; \
                 echo \"dpkg -i took $(( $(date +%s) - s )) s\" >> \"$out/dpkg.log\"",
                deb.display()
            );
        }
    }
    for b in bins {
        let _ = writeln!(
            s,
            "s=$(date +%s); timeout -k 10 {t} '{p}' {f} --test-threads=1 --nocapture < /dev/null > \"$out/{n}.log\" 2>&1; \
             rc=$?; echo \"{n} $rc $(( $(date +%s) - s ))\" >> \"$out/results\"",
            t = b.timeout_s,
            p = b.path.display(),
            f = b.filter.as_deref().unwrap_or(""),
            n = b.name
        );
    }
    let _ = writeln!(s, "echo finished > \"$out/finished\"");
    s
}

/// Counts from libtest's output with `--nocapture`.
fn parse_log(name: &str, rc: i32, secs: u64, log: &str) -> BinResult {
    let mut r = BinResult {
        name: name.to_string(),
        rc,
        secs,
        ..Default::default()
    };
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("test result: ") {
            // "ok. 4 passed; 0 failed; 0 ignored; ..."
            for part in rest.split(';') {
                let mut w = part.split_whitespace().rev();
                let (Some(what), Some(n)) = (w.next(), w.next()) else {
                    continue;
                };
                let n: u32 = n.parse().unwrap_or(0);
                match what {
                    "passed" => r.passed += n,
                    "failed" => r.failed += n,
                    _ => {}
                }
            }
        }
        if let Some(t) = line.strip_prefix("test ") {
            if let Some(n) = t.strip_suffix(" ... FAILED") {
                r.failed_names.push(n.to_string());
            }
        }
        if let Some(i) = line.find("SKIP") {
            let s = &line[i..];
            if s.starts_with("SKIP:") || s.starts_with("SKIP ") {
                r.skipped += 1;
                r.skip_lines.push(s.trim_end().to_string());
            }
        }
    }
    if rc != 0 && r.failed == 0 {
        // Killed by its time limit or crashed before libtest's summary.
        r.failed = 1;
        r.failed_names.push(match rc {
            124 | 137 => "(time limit in the guest)".to_string(),
            _ => format!("(exit status {rc} without a test summary)"),
        });
    }
    r
}

fn read_results(guest_dir: &Path) -> Vec<BinResult> {
    let list = std::fs::read_to_string(guest_dir.join("results")).unwrap_or_default();
    list.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (name, rc, secs) = (w.next()?, w.next()?.parse().ok()?, w.next()?.parse().ok()?);
            let log =
                std::fs::read_to_string(guest_dir.join(format!("{name}.log"))).unwrap_or_default();
            Some(parse_log(name, rc, secs, &log))
        })
        .collect()
}

/// The interesting end of a console log: a panic line if there is one, else
/// the systemd guest's boot script's last word (`tailprobe-boot:`), else
/// the last lines.
fn console_reason(console: &Path) -> String {
    let text = plain_console(&std::fs::read_to_string(console).unwrap_or_default());
    if let Some(l) = text
        .lines()
        .find(|l| l.contains("Kernel panic") || l.contains("BUG:") || l.contains("Oops"))
    {
        return l.trim().to_string();
    }
    if let Some(l) = text.lines().rev().find(|l| l.contains("tailprobe-boot:")) {
        return l.trim().to_string();
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

/// A console log without terminal escapes (systemd's coloured status
/// lines) and carriage returns, for quoting in a one-line reason.
fn plain_console(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ parameters, ended by a letter.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for d in chars.by_ref() {
                        if d.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// How long before `end` the guest's heartbeat was last written, and what
/// it said: a guest whose heartbeat stopped long before was wedged as a
/// whole; one whose heartbeat went on had a stuck test (the heartbeat file
/// lists the processes and the stacks of those in uninterruptible sleep).
fn heartbeat_note(guest_dir: &Path, end: Instant) -> String {
    let path = guest_dir.join("heartbeat");
    let age = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| m.elapsed().ok())
        .map(|a| a.saturating_sub(end.elapsed()));
    match age {
        Some(a) => {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            format!(
                "last guest heartbeat {:.0} s before the stop ({}; see {})",
                a.as_secs_f64(),
                text.lines().next().unwrap_or("").trim(),
                path.display()
            )
        }
        None => "no guest heartbeat was written".to_string(),
    }
}

/// Boot `kernel` with 2 vCPUs on 2 NUMA nodes and run `bins` inside.
pub fn boot(
    kernel: &Kernel,
    out_dir: &Path,
    tailprobe: &Path,
    bins: &[TestBin],
    boot_limit: Duration,
    how: &How,
) -> Result<Boot> {
    let guest_dir = out_dir.join("guest");
    let _ = std::fs::remove_dir_all(&guest_dir);
    std::fs::create_dir_all(&guest_dir)
        .with_context(|| format!("creating {}", guest_dir.display()))?;
    let script_path = guest_dir.join("run.sh");
    std::fs::write(
        &script_path,
        script(&guest_dir, tailprobe, bins, 10, how.deb.as_deref()),
    )?;
    let console = out_dir.join("console.log");
    let log = std::fs::File::create(&console)?;
    let total_limit = boot_limit + Duration::from_secs(bins.iter().map(|b| b.timeout_s + 15).sum());

    let mut cmd = Command::new("vng");
    cmd.args(["--verbose", "--disable-kvm", "--run"])
        .arg(&kernel.vmlinuz)
        .args(["--cpus", "2", "--memory", "2G"])
        .args(["--numa", "1G,cpus=0", "--numa", "1G,cpus=1"]);
    if how.systemd {
        // systemd as PID 1, what `--unit` needs; it runs the script itself
        // (`systemd.run=`, see systemd.rs), not through vng's `--exec`.
        let boot_sh = guest_dir.join("boot.sh");
        std::fs::write(&boot_sh, systemd::boot_script(&guest_dir, &script_path))?;
        std::fs::set_permissions(&boot_sh, std::fs::Permissions::from_mode(0o755))?;
        cmd.arg("--systemd")
            .arg("--append")
            .arg(systemd::kernel_args(&boot_sh)?);
    }
    if !how.mttcg {
        // One host thread runs both vCPUs in turn. With QEMU's default
        // multi-threaded TCG the guest kernel dies ("Oops: int3") when one
        // vCPU runs code that the other is patching live (a static key
        // flipped as a tracepoint or perf event is turned on or off): a
        // stale int3 after text_poke_bp has finished. Reproduced without
        // tailprobe by static_key_check.py; docs/vm-test.md.
        cmd.arg("--qemu-opts=-accel tcg,thread=single");
    }
    cmd.arg("--rwdir").arg(&guest_dir);
    if !how.systemd {
        cmd.arg("--exec")
            .arg(format!("sh {}", script_path.display()));
    }
    cmd.current_dir(crate::cmd::workspace_root())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Own process group, so a time-out takes QEMU down with vng.
    // SAFETY: setpgid is async-signal-safe; no allocation after fork.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpgid(0, 0);
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().context("starting vng")?;
    let mut booted_at: Option<Instant> = None;
    let mut limit_hit = None;
    // Progress: the script starts, then a result line per binary. A binary
    // that makes no progress for its own limit + 60 s means the guest is
    // wedged (its in-guest `timeout` did not fire either).
    let (mut last_progress, mut done_bins) = (start, 0usize);
    loop {
        if booted_at.is_none() && guest_dir.join("booted").exists() {
            booted_at = Some(Instant::now());
            last_progress = Instant::now();
        }
        let n = std::fs::read_to_string(guest_dir.join("results"))
            .map(|r| r.lines().count())
            .unwrap_or(0);
        if n != done_bins {
            done_bins = n;
            last_progress = Instant::now();
        }
        if child.try_wait()?.is_some() {
            break;
        }
        let stalled = bins
            .get(done_bins)
            .is_some_and(|b| last_progress.elapsed() > Duration::from_secs(b.timeout_s + 60));
        let over = match booted_at {
            None => start.elapsed() > boot_limit,
            Some(_) => start.elapsed() > total_limit || stalled,
        };
        if over {
            limit_hit = Some(start.elapsed());
            // SAFETY: signalling the process group we created.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let end = Instant::now();
    if booted_at.is_none() && guest_dir.join("booted").exists() {
        booted_at = Some(end);
    }
    let tests = read_results(&guest_dir);
    let (outcome, boot_secs, run_secs) = match booted_at {
        None => {
            let why = match limit_hit {
                Some(t) => format!(
                    "no shell after {:.0} s; the console ended with: {}",
                    t.as_secs_f64(),
                    console_reason(&console)
                ),
                None => console_reason(&console),
            };
            (
                Outcome::BootFailed(why),
                end.duration_since(start).as_secs_f64(),
                0.0,
            )
        }
        Some(b) => {
            let outcome = if guest_dir.join("finished").exists() {
                Outcome::Finished
            } else {
                let ran: Vec<&str> = tests.iter().map(|t| t.name.as_str()).collect();
                let next = bins
                    .iter()
                    .find(|b| !ran.contains(&b.name.as_str()))
                    .map(|b| b.name.as_str())
                    .unwrap_or("?");
                Outcome::Stopped(match limit_hit {
                    Some(t) => format!(
                        "host time limit ({:.0} s) reached while {next} ran; {}",
                        t.as_secs_f64(),
                        heartbeat_note(&guest_dir, end)
                    ),
                    None => format!(
                        "the guest stopped while {next} ran: {}",
                        console_reason(&console)
                    ),
                })
            };
            (
                outcome,
                b.duration_since(start).as_secs_f64(),
                end.duration_since(b).as_secs_f64(),
            )
        }
    };
    Ok(Boot {
        outcome,
        boot_secs,
        run_secs,
        tests,
        console,
    })
}

/// The same script on the host kernel, for the comparison row.
pub fn host(out_dir: &Path, tailprobe: &Path, bins: &[TestBin]) -> Result<(f64, Vec<BinResult>)> {
    let guest_dir = out_dir.join("guest");
    let _ = std::fs::remove_dir_all(&guest_dir);
    std::fs::create_dir_all(&guest_dir)?;
    let script_path = guest_dir.join("run.sh");
    std::fs::write(&script_path, script(&guest_dir, tailprobe, bins, 1, None))?;
    let start = Instant::now();
    Command::new("sh")
        .arg(&script_path)
        .stdin(Stdio::null())
        .status()
        .context("running the host script")?;
    Ok((start.elapsed().as_secs_f64(), read_results(&guest_dir)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_output() {
        let log = "running 3 tests\ntest a ... ok\ntest b ... SKIP b: needs root\nok\ntest c ... FAILED\n\nfailures:\n\ntest result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n";
        let r = parse_log("x", 101, 3, log);
        assert_eq!((r.passed, r.failed, r.skipped), (2, 1, 1));
        assert_eq!(r.failed_names, vec!["c".to_string()]);
        let r = parse_log("y", 124, 300, "running 2 tests\ntest a ... ok\n");
        assert_eq!((r.passed, r.failed), (0, 1));
    }

    #[test]
    fn console_reason_names_the_boot_scripts_last_word_without_escapes() {
        let dir = std::env::temp_dir().join(format!("tp-console-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("console.log");
        std::fs::write(
            &log,
            "[   52.6] boot.sh[203]: tailprobe-boot: systemd reached the boot script (uptime 52.64 s)\n\
             [   63.5] boot.sh[203]: tailprobe-boot: overlay on /usr failed (uptime 63.51 s)\n\
             \x1b[0;32m  OK  \x1b[0m] Reached target \x1b[0;1;39mpoweroff.target\x1b[0m\r\n\
             [  102.6] reboot: Power down\n",
        )
        .expect("write");
        let why = console_reason(&log);
        assert!(why.contains("overlay on /usr failed"), "{why}");
        std::fs::write(
            &log,
            "[\x1b[0;32m  OK  \x1b[0m] Reached target \x1b[0;1;39mbasic.target\x1b[0m\r\n",
        )
        .expect("write");
        assert_eq!(console_reason(&log), "[  OK  ] Reached target basic.target");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
