//! `cargo xtask`: set-up, build, run, test and bench orchestration.
//!
//! - `setup`: installs what building the eBPF programs needs, idempotently.
//! - `run`:   the main job (profiles the built-in target when none is given).
//! - `test`:  every test: fmt, clippy (host and eBPF), unit and root tests.
//! - `bench`: side-by-side benchmarks, written to docs/benchmarks.md.
//! - `dist`:  static binary, tarball, .deb and OCI image (docs/dist.md).
//! - `soak`:  the exporter for 30 minutes, memory written to docs/fleet.md.

mod bench;
mod cmd;
mod diskspace;
mod dist;
mod fleettools;
mod pydeps;
mod setup;
mod soak;
mod testsum;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "tailprobe's build, run, test and bench tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what the build needs (llvm-22-dev, bpf-linker 0.13.0, rust-src
    /// for nightly); seconds when everything is present.
    Setup {
        /// Only check and report; install nothing.
        #[arg(long)]
        check: bool,
    },
    /// Build the release `tailprobe` binary.
    Build,
    /// The main job: set up, build, and run the default experiment plan
    /// against the built-in server (or pass your own arguments to
    /// `tailprobe` after `--`).
    Run {
        /// Arguments for `tailprobe` [default: experiment --plan plans/default.toml].
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Every test: formatting, clippy (host crates, then the eBPF crate on
    /// nightly), unit tests, and the root integration tests against the
    /// running kernel.
    Test {
        /// Skip fmt and clippy.
        #[arg(long)]
        no_lint: bool,
    },
    /// Side-by-side benchmarks; results are written to docs/benchmarks.md.
    Bench {
        /// Shorter runs (for a quick look; the document says so).
        #[arg(long)]
        quick: bool,
        /// Run one section only.
        #[arg(long, value_parser = ["probes", "attach", "load"])]
        only: Option<String>,
    },
    /// Static (musl) binary, tarball with man pages and completions, .deb
    /// and OCI image under target/dist/; docs/dist.md.
    Dist,
    /// `tailprobe exporter` for 30 minutes with targets starting and
    /// exiting: its memory at start, after 10 and 30 minutes, into
    /// docs/fleet.md.
    Soak {
        /// Length of the run in minutes.
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        /// Use the debug build (faster to build, slower to run).
        #[arg(long)]
        debug: bool,
    },
    /// The probe and NUMA tests on Debian's 6.1 and 6.12 kernels, each in a
    /// QEMU guest (no KVM) with 2 vCPUs on 2 NUMA nodes; docs/vm-test.md.
    VmTest {
        /// Kernel series to boot (repeat for several) [default: 6.1 and 6.12].
        #[arg(long = "kernel", value_parser = ["6.1", "6.12"])]
        kernels: Vec<String>,
        /// Which tests run in each guest.
        #[arg(long, value_enum, default_value = "full")]
        subset: vm::Subset,
        /// Skip the comparison run of the same tests on the host kernel.
        #[arg(long)]
        no_host: bool,
        /// Run only this test binary of the subset, optionally only its tests
        /// whose names contain FILTER (repeat for several), e.g.
        /// `--only record_signals:root_cgroup`.
        #[arg(long, value_name = "BIN[:FILTER]")]
        only: Vec<String>,
        /// Boot the guests with QEMU's multi-threaded TCG, as before: faster,
        /// but the guest kernel can die while it patches its own code
        /// (docs/vm-test.md); for reproducing that.
        #[arg(long)]
        mttcg: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup { check } => setup::run(check).map(|_| ()),
        Task::Build => build(),
        Task::Run { args } => run(args),
        Task::Test { no_lint } => test(no_lint),
        Task::VmTest {
            kernels,
            subset,
            no_host,
            only,
            mttcg,
        } => vm::run(&vm::Options {
            kernels,
            subset,
            host: !no_host,
            only,
            mttcg,
        })
        .map(|_| ()),
        Task::Bench { quick, only } => bench::run(quick, only.as_deref()),
        Task::Dist => dist::dist().map(|_| ()),
        Task::Soak { minutes, debug } => soak::run(minutes, debug),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn build() -> Result<()> {
    setup::run(false)?;
    cmd::cargo(&["build", "--release", "-p", "probe-user"])
}

fn run(args: Vec<String>) -> Result<()> {
    build()?;
    let bin = cmd::workspace_root().join("target/release/tailprobe");
    // Default: the experiment with the default plan against the built-in
    // server; both documents, results.json and plots at their default
    // places under the repository root.
    let root = cmd::workspace_root();
    let at = |p: &str| root.join(p).to_string_lossy().into_owned();
    let args = if args.is_empty() {
        vec![
            "experiment".to_string(),
            "--plan".into(),
            at("plans/default.toml"),
            "--out".into(),
            at("benchmarks/experiment"),
            "--baseline-doc".into(),
            at("benchmarks/day05_numa_baseline.md"),
            "--summary-doc".into(),
            at("docs/os_node_os_tuning_summary_day05.md"),
        ]
    } else {
        args
    };
    cmd::run_bin(&bin, &args)
}

/// What a cold `cargo xtask test` as root writes under target/: 3.9 GB
/// measured on 2026-12-03 (dev profile with line tables only, no
/// incremental caches as in CI), with room for growth.
const TEST_WRITES_BYTES: u64 = 5_000_000_000;

fn test(no_lint: bool) -> Result<()> {
    let target = cmd::workspace_root().join("target");
    if let Some(w) = diskspace::available(&target)
        .and_then(|free| diskspace::shortfall("cargo xtask test", free, TEST_WRITES_BYTES))
    {
        eprintln!("{w}");
    }
    setup::run(false)?;
    if !no_lint {
        cmd::cargo(&["fmt", "--all", "--check"])?;
        cmd::cargo(&[
            "clippy",
            "--workspace",
            "--exclude",
            "probe-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])?;
        cmd::ebpf_clippy()?;
    }
    // The binary the root integration tests drive.
    cmd::cargo(&["build", "-p", "probe-user"])?;
    let mut lanes = Vec::new();
    let mut failed = Vec::new();
    // Output shown (--nocapture), so every SKIP line is seen, and counted.
    let (ok, out) = cmd::cargo_tee(
        &[
            "test",
            "--no-fail-fast",
            "--workspace",
            "--exclude",
            "tailprobe-tests",
            "--",
            "--nocapture",
        ],
        &[],
    )?;
    let mut unit = testsum::Lane::new("unit (host crates)");
    unit.text(&out);
    lanes.push(unit);
    if !ok {
        failed.push("unit tests");
    }
    // Root tests measure the scheduler: one at a time, so they do not
    // disturb each other's numbers. As root (CI), a skip of a test that
    // could run here is a failure (TAILPROBE_REQUIRE_ALL, tests/src/lib.rs).
    let bin = cmd::workspace_root().join("target/debug/tailprobe");
    let bin = bin.to_string_lossy().to_string();
    let mut env = vec![("TAILPROBE_BIN", bin.as_str())];
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root && std::env::var_os("TAILPROBE_REQUIRE_ALL").is_none() {
        env.push(("TAILPROBE_REQUIRE_ALL", "1"));
    }
    // The packages (static binary, tarball, .deb, OCI image), fresh from
    // this tree, so tests/tests/dist_package.rs checks what would ship: as
    // root (CI) only, since installing the .deb and setting file
    // capabilities need it. About 10 minutes cold on 2 CPUs, 3 after.
    if root {
        if let Err(e) = dist::dist() {
            eprintln!("xtask: dist: {e:#}");
            failed.push("dist (packages)");
        }
    }
    let (ok, out) = cmd::cargo_tee(
        &[
            "test",
            "--no-fail-fast",
            "-p",
            "tailprobe-tests",
            "--",
            "--test-threads=1",
            "--nocapture",
        ],
        &env,
    )?;
    let mut lane = testsum::Lane::new("root (this kernel)");
    lane.text(&out);
    lanes.push(lane);
    if !ok {
        failed.push("root tests");
    }
    // Other kernels and a real two-node topology: the NUMA tests in a QEMU
    // guest (the full lane is `cargo xtask vm-test`; docs/vm-test.md).
    match vm::ci_subset() {
        Ok(l) => lanes.push(l),
        Err(e) => {
            eprintln!("xtask: {e:#}");
            failed.push("NUMA subset in the QEMU guest");
        }
    }
    print!("{}", testsum::summary(&lanes));
    if !failed.is_empty() {
        anyhow::bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}
