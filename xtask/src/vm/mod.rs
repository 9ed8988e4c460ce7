//! `cargo xtask vm-test`: the same host-built `tailprobe` and root
//! integration tests on Debian's 6.1 and 6.12 kernels, each booted under
//! QEMU (software emulation, no KVM) with 2 vCPUs on 2 NUMA nodes through
//! virtme-ng. Two subsets test what ships instead (`cargo xtask dist`, in
//! guests with the host's toolchains hidden): `packaged`, the static binary
//! under virtme-ng's own init, and `unit`, the `.deb` installed with dpkg
//! in a guest that boots systemd as PID 1 (systemd.rs) and
//! `tailprobe record --unit` on a transient unit. See docs/vm-test.md.

mod guest;
mod kernels;
mod systemd;
mod tools;

use std::{path::PathBuf, time::Duration, time::Instant};

use anyhow::{bail, Context as _, Result};

use crate::cmd::{self, workspace_root};
use guest::{BinResult, Outcome, TestBin};

/// Which tests run in each guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Subset {
    /// record_sched, record_signals, record_errors and vm_numa.
    Full,
    /// vm_numa, and from record_signals only the page-fault test (it loads
    /// every probe, `--trace-events` included): what `cargo xtask test`
    /// runs in CI.
    Numa,
    /// The packaged static binary (`cargo xtask dist`, built first) in a
    /// guest with no Rust or LLVM: tests/tests/dist_package.rs, which
    /// records a known workload against schedstat. docs/dist.md.
    Packaged,
    /// The `.deb` installed with dpkg in a guest that boots systemd as PID 1
    /// and has no Rust or LLVM; `tailprobe record --unit` on a transient
    /// unit against schedstat (dist_package's --unit test). About 50-80 s
    /// per kernel once the packages are built (docs/vm-test.md); a SKIP
    /// there fails the lane.
    Unit,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Kernel series to boot ("6.1", "6.12"); empty: all.
    pub kernels: Vec<String>,
    pub subset: Subset,
    /// Also run the same binaries on the host kernel for the summary.
    pub host: bool,
    /// `BIN[:FILTER]`: run only these binaries of the subset (and in each,
    /// only the tests whose names contain FILTER); empty: the whole subset.
    pub only: Vec<String>,
    /// Boot with QEMU's multi-threaded TCG (the old default: faster, but
    /// the guest kernel can die patching its own code; docs/vm-test.md).
    pub mttcg: bool,
}

/// The subset's binaries narrowed by `--only BIN[:FILTER]` (repeatable):
/// a binary not in the subset is an error, so a typo does not turn into
/// an empty run that passes.
fn select(subset: Subset, only: &[String]) -> Result<Vec<(String, u64, Option<String>)>> {
    let all = bins_for(subset);
    if only.is_empty() {
        return Ok(all
            .iter()
            .map(|(n, t, f)| (n.to_string(), *t, f.map(str::to_string)))
            .collect());
    }
    let mut picked = Vec::new();
    for o in only {
        let (name, filter) = match o.split_once(':') {
            Some((n, f)) if !f.is_empty() => (n, Some(f.to_string())),
            Some((n, _)) => (n, None),
            None => (o.as_str(), None),
        };
        let Some((n, t, f)) = all.iter().find(|(n, _, _)| *n == name) else {
            let known: Vec<&str> = all.iter().map(|(n, _, _)| *n).collect();
            bail!(
                "--only {o}: {name} is not in subset {subset:?} (it has: {})",
                known.join(", ")
            );
        };
        picked.push((n.to_string(), *t, filter.or(f.map(str::to_string))));
    }
    Ok(picked)
}

/// Time limits in a TCG guest, per test binary (generous: a stuck test is
/// reported as such, it does not hold the lane forever): about 2.5 x the
/// longest run measured on 6.1 / 6.12 while other builds shared the host
/// (2026-12-02: vm_numa 98 s, record_sched 134 s, record_signals 306 s,
/// record_errors 84 s; docs/vm-test.md), so a slow host still fits.
/// (test binary, time limit in seconds, test-name filter).
type Wanted = (&'static str, u64, Option<&'static str>);

fn bins_for(subset: Subset) -> &'static [Wanted] {
    match subset {
        Subset::Full => &[
            ("vm_numa", 250, None),
            ("record_sched", 340, None),
            ("record_signals", 770, None),
            ("record_errors", 210, None),
            ("diagnose_numa", 330, None),
            // The exporter's per-target scheduler programs against
            // schedstat, verified by each guest's kernel.
            (
                "exporter_root",
                200,
                Some("root_exporter_per_target_totals_match_schedstat"),
            ),
        ],
        Subset::Numa => &[
            ("vm_numa", 300, None),
            (
                "record_signals",
                120,
                Some("root_page_faults_match_the_kernel"),
            ),
            ("diagnose_numa", 330, None),
        ],
        Subset::Packaged => &[("dist_package", 400, None)],
        Subset::Unit => &[(
            "dist_package",
            400,
            Some("root_installed_deb_records_a_systemd_unit"),
        )],
    }
}

/// How long a guest may take to reach its script (about 10-30 s is usual).
const BOOT_LIMIT: Duration = Duration::from_secs(150);

/// The same for a guest that boots systemd (`--subset unit`): about 4 x
/// the slowest of its boots measured (2026-12-03: 26-43 s from starting
/// vng to the script, 22 boots; docs/vm-test.md). More margin than the
/// plain guest's 3 x: systemd's boot is more emulated work for a busy
/// host to slow down (before the masks, one boot on a loaded host reached
/// the script 82 s after the kernel started).
const SYSTEMD_BOOT_LIMIT: Duration = Duration::from_secs(180);

/// Build `tailprobe` and the test binaries; return the tests' executables.
fn build(wanted: &[(String, u64, Option<String>)]) -> Result<Vec<TestBin>> {
    cmd::cargo(&["build", "-p", "probe-user"])?;
    eprintln!("xtask: cargo test -p tailprobe-tests --no-run --message-format=json");
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "test",
            "-p",
            "tailprobe-tests",
            "--no-run",
            "--message-format=json",
        ])
        .current_dir(workspace_root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("starting cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(m) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if m["reason"] != "compiler-artifact" || m["profile"]["test"] != true {
            continue;
        }
        let (Some(name), Some(exe)) = (m["target"]["name"].as_str(), m["executable"].as_str())
        else {
            continue;
        };
        if let Some((_, t, filter)) = wanted.iter().find(|(n, _, _)| *n == name) {
            found.push(TestBin {
                name: name.to_string(),
                path: PathBuf::from(exe),
                timeout_s: *t,
                filter: filter.clone(),
            });
        }
    }
    for (n, _, _) in wanted {
        if !found.iter().any(|b| b.name == *n) {
            bail!("test binary {n} was not built");
        }
    }
    // In the order asked for.
    found.sort_by_key(|b| wanted.iter().position(|(n, _, _)| *n == b.name));
    Ok(found)
}

pub struct Row {
    label: String,
    boots: u32,
    status: String,
    boot_secs: f64,
    run_secs: f64,
    pub tests: Vec<BinResult>,
    ok: bool,
}

fn print_summary(rows: &[Row]) {
    println!("\nvm-test summary (2 vCPUs on 2 NUMA nodes under QEMU TCG; host: this machine)");
    println!(
        "{:<34} {:>5} {:>7} {:>7} {:>6} {:>6} {:>7}  result",
        "kernel", "boots", "boot s", "run s", "passed", "failed", "skipped"
    );
    for r in rows {
        let sum = |f: fn(&BinResult) -> u32| r.tests.iter().map(f).sum::<u32>();
        println!(
            "{:<34} {:>5} {:>7.1} {:>7.1} {:>6} {:>6} {:>7}  {}",
            r.label,
            r.boots,
            r.boot_secs,
            r.run_secs,
            sum(|t| t.passed),
            sum(|t| t.failed),
            sum(|t| t.skipped),
            r.status
        );
        for t in &r.tests {
            let failed = if t.failed_names.is_empty() {
                String::new()
            } else {
                format!("; FAILED: {}", t.failed_names.join(", "))
            };
            println!(
                "    {:<30} {:>4} s  {} passed, {} failed, {} skipped (exit {}){failed}",
                t.name, t.secs, t.passed, t.failed, t.skipped, t.rc
            );
        }
    }
}

/// One lane at a time on a machine: two TCG guests on 2 CPUs would slow
/// each other (and share `/lib/modules/<release>` links). The lock file is
/// machine-wide, not per checkout, so lanes from several worktrees queue
/// too. Held until exit.
fn lock() -> Result<std::fs::File> {
    use std::os::fd::AsRawFd as _;
    std::fs::create_dir_all(workspace_root().join("target/vm-test"))?;
    let path = std::env::temp_dir().join("tailprobe-vm-test.lock");
    let f = std::fs::File::create(&path)
        .with_context(|| format!("creating the lane lock {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!("vm-test: another vm-test is running here; waiting for it");
        // SAFETY: as above.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("flock: {}", std::io::Error::last_os_error());
        }
    }
    Ok(f)
}

pub fn run(opts: &Options) -> Result<Vec<Row>> {
    let _lock = lock()?;
    let started = Instant::now();
    let vng = tools::ensure()?;
    let mut how = guest::How {
        mttcg: opts.mttcg,
        ..Default::default()
    };
    if matches!(opts.subset, Subset::Packaged | Subset::Unit) {
        let files = crate::dist::dist()?;
        if opts.subset == Subset::Unit {
            how.deb = files
                .into_iter()
                .find(|f| f.to_string_lossy().ends_with("_amd64.deb"));
            if how.deb.is_none() {
                bail!("cargo xtask dist made no .deb");
            }
            // `--unit` needs systemd as PID 1.
            how.systemd = true;
        }
    }
    eprintln!("vm-test: {vng}");
    let bins = build(&select(opts.subset, &opts.only)?)?;
    let tailprobe = workspace_root().join("target/debug/tailprobe");
    let series: Vec<&kernels::Series> = kernels::SERIES
        .iter()
        .filter(|s| opts.kernels.is_empty() || opts.kernels.iter().any(|k| k == s.name))
        .collect();
    if series.is_empty() {
        bail!("no such kernel series {:?}; known: 6.1, 6.12", opts.kernels);
    }
    let out_root = workspace_root().join("target/vm-test");
    let boot_limit = if how.systemd {
        SYSTEMD_BOOT_LIMIT
    } else {
        BOOT_LIMIT
    };
    let mut rows = Vec::new();
    for s in series {
        let k = kernels::ensure(s)?;
        let out = out_root.join(&k.release);
        std::fs::create_dir_all(&out)?;
        let mut boots = 0;
        let b = loop {
            boots += 1;
            eprintln!(
                "vm-test: booting {} ({}), try {boots}; console: {}",
                k.release,
                k.package,
                out.join("console.log").display()
            );
            let b = guest::boot(&k, &out, &tailprobe, &bins, boot_limit, &how)?;
            match &b.outcome {
                Outcome::BootFailed(why) if boots < 2 => {
                    eprintln!("vm-test: {} did not boot ({why}); retrying once", k.release);
                }
                _ => break b,
            }
        };
        let (status, ok) = verdict(&b, opts.subset);
        eprintln!(
            "vm-test: {}: {status} (boot {:.1} s, tests {:.1} s; logs in {})",
            k.release,
            b.boot_secs,
            b.run_secs,
            out.join("guest").display()
        );
        rows.push(Row {
            label: format!("{} (Debian {})", k.release, k.series),
            boots,
            status,
            boot_secs: b.boot_secs,
            run_secs: b.run_secs,
            tests: b.tests,
            ok,
        });
        let _ = b.console;
    }
    // The packaged lane is about the guest without a toolchain; the host
    // has one (and the script must not hide it there).
    if opts.host && !matches!(opts.subset, Subset::Packaged | Subset::Unit) {
        let release = cmd::output("uname", &["-r"]).unwrap_or_default();
        eprintln!("vm-test: the same binaries on the host kernel {release}");
        let (secs, tests) = guest::host(&out_root.join("host"), &tailprobe, &bins)?;
        let failed: u32 = tests.iter().map(|t| t.failed).sum();
        rows.push(Row {
            label: format!("{release} (host, 1 node)"),
            boots: 0,
            status: if failed == 0 { "ok" } else { "TESTS FAILED" }.to_string(),
            boot_secs: 0.0,
            run_secs: secs,
            ok: failed == 0,
            tests,
        });
    }
    print_summary(&rows);
    println!("total {:.0} s", started.elapsed().as_secs_f64());
    let bad: Vec<&str> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.label.as_str())
        .collect();
    if !bad.is_empty() {
        bail!("vm-test failed on: {}", bad.join(", "));
    }
    Ok(rows)
}

/// One guest's line in the summary, and whether it passed.
fn verdict(b: &guest::Boot, subset: Subset) -> (String, bool) {
    let failed: u32 = b.tests.iter().map(|t| t.failed).sum();
    // The unit lane exists for its one test: a skip there (the .deb did
    // not install, systemd was not PID 1) proves nothing.
    let skip = b
        .tests
        .iter()
        .flat_map(|t| t.skip_lines.iter())
        .next()
        .filter(|_| subset == Subset::Unit);
    match &b.outcome {
        Outcome::BootFailed(why) => (format!("BOOT FAILED twice: {why}"), false),
        Outcome::Stopped(why) => (format!("TESTS STOPPED: {why}"), false),
        Outcome::Finished if failed > 0 => ("TESTS FAILED".to_string(), false),
        Outcome::Finished if skip.is_some() => (
            format!("TEST SKIPPED, not run: {}", skip.map_or("", |s| s.as_str())),
            false,
        ),
        Outcome::Finished => ("ok".to_string(), true),
    }
}

/// What `cargo xtask test` runs: the NUMA tests in one two-node guest.
pub fn ci_subset() -> Result<crate::testsum::Lane> {
    let mut lane = crate::testsum::Lane::new("NUMA subset (QEMU 6.1 guest)");
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        lane.line(
            "SKIP: vm-test: needs root (apt-get, /lib/modules, BPF in the guest); CI runs it as root",
        );
        eprintln!("{}", lane.skips.join("\n"));
        return Ok(lane);
    }
    let rows = run(&Options {
        kernels: vec!["6.1".to_string()],
        subset: Subset::Numa,
        host: false,
        only: Vec::new(),
        mttcg: false,
    })?;
    for r in &rows {
        for t in &r.tests {
            lane.passed += t.passed;
            lane.failed += t.failed;
            lane.skipped += t.skipped;
            lane.skips.extend(t.skip_lines.iter().cloned());
        }
    }
    Ok(lane)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_narrows_the_subset_and_refuses_unknown_binaries() {
        let all = select(Subset::Full, &[]).expect("whole subset");
        assert_eq!(all.len(), bins_for(Subset::Full).len());
        let one =
            select(Subset::Full, &["record_signals:root_cgroup".to_string()]).expect("one binary");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].0, "record_signals");
        assert_eq!(one[0].2.as_deref(), Some("root_cgroup"));
        // The subset's own filter stays when --only names none.
        let numa = select(Subset::Numa, &["record_signals".to_string()]).expect("numa");
        assert_eq!(
            numa[0].2.as_deref(),
            Some("root_page_faults_match_the_kernel")
        );
        let err =
            select(Subset::Full, &["record_signal".to_string()]).expect_err("a typo is an error");
        assert!(err.to_string().contains("not in subset"), "{err}");
    }
}
