//! Arguments and helpers shared by the node commands (topo, governor, pin,
//! noise, irq, counters, numa, restore).

use std::{
    path::PathBuf,
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use clap::Args;

use crate::{
    node::{
        exit,
        journal::{self, Journal, JournalError, Recovered},
        NotAvailable, Roots,
    },
    signals,
};

/// Where sysfs, procfs and the journal are.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// The change journal [default: $TAILPROBE_JOURNAL, else
    /// /run/tailprobe/journal.json].
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// Root of sysfs (a fixture tree in tests).
    #[arg(long, default_value = "/sys", hide = true)]
    pub sys_root: PathBuf,
    /// Root of procfs (a fixture tree in tests).
    #[arg(long, default_value = "/proc", hide = true)]
    pub proc_root: PathBuf,
}

impl NodeArgs {
    pub fn roots(&self) -> Roots {
        Roots::new(&self.sys_root, &self.proc_root)
    }

    pub fn journal_path(&self) -> PathBuf {
        journal::resolve_path(self.journal.as_deref())
    }

    /// Start a journaled session: restores what a crashed run left, adopts
    /// held changes, refuses a journal from another boot. The journal always
    /// uses the real /proc for the boot id (it is about this boot).
    pub fn begin_journal(&self) -> Result<Journal> {
        signals::install().context("installing the SIGINT/SIGTERM handlers")?;
        let path = self.journal_path();
        let (j, rec) = match Journal::begin(&path, std::path::Path::new("/proc")) {
            Ok(x) => x,
            Err(e @ JournalError::Stale { .. }) => {
                return Err(anyhow::Error::new(e)).context("starting the change journal")
            }
            Err(e) => return Err(e).context("starting the change journal"),
        };
        match rec {
            Recovered::Nothing => {}
            Recovered::Crash(rep) => {
                eprintln!(
                    "tailprobe: an earlier run left changes in {} (it crashed or was killed); restored them first:",
                    path.display()
                );
                for l in rep.lines() {
                    eprintln!("tailprobe:   {l}");
                }
            }
            Recovered::Adopted(0) => {}
            Recovered::Adopted(n) => eprintln!(
                "tailprobe: {n} change(s) held from an earlier command are kept and will be restored with this run's"
            ),
        }
        Ok(j)
    }
}

/// Print a plain "not available on this node" and give its exit code.
pub fn not_available(na: &NotAvailable) -> i32 {
    eprintln!("tailprobe: {na}");
    exit::NOT_AVAILABLE
}

/// Sleep for `d` in short slices; false when Ctrl-C/SIGTERM cut it short.
pub fn sleep_unless_stopped(d: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < d {
        if signals::stop_requested() {
            return false;
        }
        std::thread::sleep(
            d.saturating_sub(start.elapsed())
                .min(Duration::from_millis(50)),
        );
    }
    !signals::stop_requested()
}

/// Build a command from `argv`.
pub fn command(argv: &[String]) -> Result<Command> {
    let (prog, args) = argv.split_first().context("no command given after `--`")?;
    let mut c = Command::new(prog);
    c.args(args);
    Ok(c)
}

/// Wait for a child, up to `limit`; on Ctrl-C/SIGTERM or at the limit it is
/// sent SIGTERM, then SIGKILL after 2 s. Returns its status.
pub fn wait_child(child: &mut Child, limit: Option<Duration>) -> Result<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().context("waiting for the command")? {
            return Ok(st);
        }
        let over = limit.is_some_and(|l| start.elapsed() >= l);
        if over || signals::stop_requested() {
            terminate(child);
            return child.wait().context("waiting for the command to stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then SIGKILL after 2 s.
pub fn terminate(child: &mut Child) {
    // SAFETY: kill on our own child's pid; it has not been reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
}

/// Report a restore on stderr; the exit code it calls for.
pub fn report_restore(rep: &journal::RestoreReport) -> i32 {
    for l in rep.lines() {
        eprintln!("tailprobe: {l}");
    }
    if rep.is_complete() {
        crate::cli::exit::OK
    } else {
        exit::RESTORE_INCOMPLETE
    }
}

/// Print JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    crate::out::print_json(v)
}

/// A CPU list argument (`0-3,8`), kept as one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuArg(pub Vec<u32>);

impl std::str::FromStr for CpuArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        crate::cpulist::parse(s)
            .map(CpuArg)
            .map_err(|e| e.to_string())
    }
}
