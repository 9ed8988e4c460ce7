//! The change journal: every knob tailprobe turns is written here, with its
//! original value, *before* it is changed; the journal is restored on normal
//! exit, on Ctrl-C/SIGTERM (the command loops stop and return), on panic
//! (the guard's `Drop` runs while unwinding), and on the next start after a
//! crash (`Journal::begin` finds the dead owner's journal and restores it).
//!
//! The file is JSON, replaced atomically (temp file, fsync, rename, fsync of
//! the directory) and records the boot id: a journal from another boot is
//! reported and never applied, since every knob here (cpufreq, IRQ and
//! thread affinity, sysctls) is reset by a reboot. An exclusive `flock` on
//! `<journal>.lock` tells a live owner from a crashed one.
//!
//! `store`: the file (lock, read, classify, atomic write); `restore`:
//! putting knobs back; this module: the types and the [`Journal`] guard.

use std::{
    fs,
    io::{self},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{affinity, fsx};
use tailprobe_system::cpulist;

mod restore;
mod store;

pub use restore::{restore_all, restore_entries, restore_found, RestoreReport};
pub use store::{boot_id, inspect};
use store::{now_unix, remove_stale_temp_files, write};

/// Default journal location: under `/run`, so it never outlives the boot it
/// belongs to on a normal system; `TAILPROBE_JOURNAL` or `--journal` move it.
pub const DEFAULT_PATH: &str = "/run/tailprobe/journal.json";

/// Environment variable naming the journal file.
pub const ENV_PATH: &str = "TAILPROBE_JOURNAL";

/// Test hook: milliseconds to sleep after each change, so a test can kill
/// the process in the middle of a multi-knob change.
pub const ENV_TEST_DELAY: &str = "TAILPROBE_TEST_CHANGE_DELAY_MS";

const VERSION: u32 = 1;

/// The journal path: `explicit`, else `$TAILPROBE_JOURNAL`, else the default.
pub fn resolve_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os(ENV_PATH) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

/// One knob tailprobe may change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Knob {
    /// A sysfs or procfs file (governor, IRQ affinity, sysctl); `what` says
    /// which in words (e.g. "governor of policy0").
    File { path: PathBuf, what: String },
    /// The CPU affinity of one thread; `start_time` (field 22 of its stat)
    /// keeps a later thread that reuses the id from being touched.
    ThreadAffinity { pid: u32, tid: u32, start_time: u64 },
}

impl Knob {
    pub fn describe(&self) -> String {
        match self {
            Knob::File { path, what } => format!("{what} ({})", path.display()),
            Knob::ThreadAffinity { pid, tid, .. } => {
                format!("CPU affinity of thread {tid} of pid {pid}")
            }
        }
    }
}

/// A knob and the value it had before tailprobe first changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub knob: Knob,
    pub original: String,
}

/// The journal file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalData {
    pub version: u32,
    /// `/proc/sys/kernel/random/boot_id` of the boot that made the changes.
    pub boot_id: String,
    /// The tailprobe process that wrote it last.
    pub owner_pid: u32,
    /// True when a command finished and deliberately left its changes in
    /// place (`governor set` without a command); false while a command runs,
    /// so a journal found with no live owner and `held` false is a crash.
    pub held: bool,
    /// Seconds since the epoch when the first change was journaled.
    pub created_unix: u64,
    pub entries: Vec<Entry>,
    /// Changes that could not be put back, with the reason: reported once
    /// when the restore failed, kept out of later sessions' restores (so
    /// they do not fail every later command), retried by `tailprobe restore`
    /// and dropped by `tailprobe restore --discard`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unrestorable: Vec<Unrestorable>,
}

/// A journaled change whose restore failed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unrestorable {
    pub entry: Entry,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "the journal {path} is held by another running tailprobe (pid {pid}); \
         wait for it to finish (it restores its changes on exit) or stop it"
    )]
    Busy { path: PathBuf, pid: u32 },
    #[error(
        "the journal {path} comes from another boot (boot id {theirs}, now {ours}); \
         its {count} change(s) were reset by the reboot and are not applied: \
         look at it with `tailprobe restore --journal {path}` and remove it with \
         `tailprobe restore --discard`"
    )]
    Stale {
        path: PathBuf,
        theirs: String,
        ours: String,
        count: usize,
    },
    #[error("cannot read the journal {0}: {1}")]
    Read(PathBuf, io::Error),
    #[error(
        "the journal {0} is not valid JSON ({1}); move it away after checking the knobs it names"
    )]
    Corrupt(PathBuf, serde_json::Error),
    #[error("cannot write the journal {0}: {1} (use --journal or TAILPROBE_JOURNAL to put it elsewhere)")]
    Write(PathBuf, io::Error),
    #[error("cannot read the boot id from {0}: {1}")]
    BootId(PathBuf, io::Error),
    #[error("cannot read {what} from {path}: {source}")]
    ReadKnob {
        what: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot change {what}: writing {value:?} to {path} failed: {source}")]
    WriteKnob {
        what: String,
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("cannot change the CPU affinity of thread {tid} of pid {pid}: {source}")]
    Affinity {
        pid: u32,
        tid: u32,
        source: io::Error,
    },
}

/// What a journal file on disk means for a new session.
#[derive(Debug)]
pub enum Found {
    /// No journal.
    Nothing,
    /// Its owner died without restoring (crash, kill -9).
    Crashed(JournalData),
    /// Changes deliberately left in place by an earlier command.
    Held(JournalData),
    /// From another boot.
    Stale(JournalData),
}

/// A session's journal: changes go through it; dropped, it restores them
/// unless [`Journal::hold`] kept them on purpose.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    proc: PathBuf,
    data: JournalData,
    armed: bool,
    delay: Option<Duration>,
    _lock: fs::File,
}

/// What `Journal::begin` found and did before the session started.
#[derive(Debug)]
pub enum Recovered {
    Nothing,
    /// A crashed session's changes, restored now.
    Crash(RestoreReport),
    /// Changes held by an earlier command, adopted (restored with ours).
    Adopted(usize),
}

impl Journal {
    /// Start a session: take the lock, restore a crashed session's journal,
    /// adopt held changes, refuse a journal from another boot.
    pub fn begin(path: &Path, proc: &Path) -> Result<(Journal, Recovered), JournalError> {
        let (found, lock) = inspect(path, proc)?;
        let Some(lock) = lock else {
            return Err(JournalError::Busy {
                path: path.to_path_buf(),
                pid: 0,
            });
        };
        remove_stale_temp_files(path);
        let boot = boot_id(proc)?;
        let mut data = JournalData {
            version: VERSION,
            boot_id: boot.clone(),
            owner_pid: std::process::id(),
            held: false,
            created_unix: now_unix(),
            entries: Vec::new(),
            unrestorable: Vec::new(),
        };
        let recovered = match found {
            Found::Nothing => Recovered::Nothing,
            Found::Stale(d) => {
                return Err(JournalError::Stale {
                    path: path.to_path_buf(),
                    theirs: d.boot_id,
                    ours: boot,
                    count: d.entries.len(),
                })
            }
            Found::Crashed(d) => {
                let rep = restore_found(path, proc, &d, |_| false)?;
                // What could not be restored is reported now (once) and
                // kept aside for `tailprobe restore` / `--discard`.
                data.unrestorable = d.unrestorable;
                data.unrestorable
                    .extend(rep.failed.iter().map(|(e, why)| Unrestorable {
                        entry: e.clone(),
                        reason: why.clone(),
                    }));
                Recovered::Crash(rep)
            }
            Found::Held(d) => {
                let n = d.entries.len();
                data.created_unix = d.created_unix;
                data.entries = d.entries;
                data.unrestorable = d.unrestorable;
                Recovered::Adopted(n)
            }
        };
        let delay = std::env::var(ENV_TEST_DELAY)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_millis);
        let j = Journal {
            path: path.to_path_buf(),
            proc: proc.to_path_buf(),
            data,
            armed: true,
            delay,
            _lock: lock,
        };
        if !j.data.entries.is_empty() {
            j.persist()?;
        }
        Ok((j, recovered))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entries(&self) -> &[Entry] {
        &self.data.entries
    }

    fn persist(&self) -> Result<(), JournalError> {
        write(&self.path, &self.data)
    }

    /// Journal `knob` with its current value `original`, durably, unless it
    /// is journaled already (the first original wins). Call before changing.
    pub fn record(&mut self, knob: Knob, original: String) -> Result<(), JournalError> {
        if self.data.entries.iter().any(|e| e.knob == knob) {
            return Ok(());
        }
        self.data.entries.push(Entry { knob, original });
        self.data.held = false;
        self.data.owner_pid = std::process::id();
        self.persist()
    }

    fn after_change(&self) {
        if let Some(d) = self.delay {
            std::thread::sleep(d);
        }
    }

    /// Change a file knob: journal its current value, then write `value`.
    pub fn set_file(&mut self, path: &Path, what: &str, value: &str) -> Result<(), JournalError> {
        let original = fsx::read_trim(path).map_err(|source| JournalError::ReadKnob {
            what: what.to_string(),
            path: path.to_path_buf(),
            source,
        })?;
        let knob = Knob::File {
            path: path.to_path_buf(),
            what: what.to_string(),
        };
        let fresh = !self.data.entries.iter().any(|e| e.knob == knob);
        self.record(knob, original)?;
        if let Err(source) = fsx::write_knob(path, value) {
            // A refused write changed nothing: drop the entry again, so a
            // restore does not try to write a knob the kernel refuses.
            if fresh {
                self.data.entries.pop();
                self.persist()?;
            }
            return Err(JournalError::WriteKnob {
                what: what.to_string(),
                path: path.to_path_buf(),
                value: value.to_string(),
                source,
            });
        }
        self.after_change();
        Ok(())
    }

    /// Change one thread's CPU affinity: journal the current mask, then set.
    pub fn set_thread_affinity(
        &mut self,
        pid: u32,
        tid: u32,
        cpus: &[u32],
    ) -> Result<(), JournalError> {
        let before = affinity::thread_affinity(tid).map_err(|source| JournalError::Affinity {
            pid,
            tid,
            source,
        })?;
        let start_time = affinity::thread_start_time(&self.proc, pid, tid).ok_or_else(|| {
            JournalError::Affinity {
                pid,
                tid,
                source: io::Error::from_raw_os_error(libc::ESRCH),
            }
        })?;
        let knob = Knob::ThreadAffinity {
            pid,
            tid,
            start_time,
        };
        let fresh = !self.data.entries.iter().any(|e| e.knob == knob);
        self.record(knob, cpulist::Display(&before).to_string())?;
        if let Err(source) = affinity::set_thread_affinity(tid, cpus) {
            // Refused (a per-CPU kernel thread: EINVAL): nothing changed, so
            // nothing to restore; a kept entry would fail every restore.
            if fresh {
                self.data.entries.pop();
                self.persist()?;
            }
            return Err(JournalError::Affinity { pid, tid, source });
        }
        self.after_change();
        Ok(())
    }

    /// Keep the changes in place after this process exits; `tailprobe
    /// restore` (or the matching `... restore` command) puts them back.
    pub fn hold(mut self) -> Result<usize, JournalError> {
        self.armed = false;
        let n = self.data.entries.len();
        if n > 0 {
            self.data.held = true;
            self.persist()?;
        }
        Ok(n)
    }

    /// Restore everything now and remove the journal (failed entries stay).
    pub fn restore(mut self) -> Result<RestoreReport, JournalError> {
        self.armed = false;
        self.restore_now()
    }

    fn restore_now(&mut self) -> Result<RestoreReport, JournalError> {
        let d = self.data.clone();
        let rep = restore_found(&self.path, &self.proc, &d, |_| false)?;
        self.data.entries.clear();
        self.data
            .unrestorable
            .extend(rep.failed.iter().map(|(e, why)| Unrestorable {
                entry: e.clone(),
                reason: why.clone(),
            }));
        Ok(rep)
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        match self.restore_now() {
            Ok(rep) => {
                for l in rep.lines() {
                    eprintln!("tailprobe: {l}");
                }
            }
            Err(e) => eprintln!("tailprobe: error while restoring: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
