//! Putting journaled knobs back: file knobs and thread affinities, last
//! change first, and rewriting the journal with what is left.

use std::path::Path;

use serde::Serialize;

use super::store::save_or_remove;
use super::{Entry, JournalData, JournalError, Knob, Unrestorable};
use crate::{affinity, fsx};
use tailprobe_system::cpulist;

/// Outcome of putting knobs back.
#[derive(Debug, Default, Serialize)]
pub struct RestoreReport {
    /// Knobs written back to their original value.
    pub restored: Vec<Entry>,
    /// Threads that exited: nothing to put back.
    pub gone: Vec<Entry>,
    /// Knobs that could not be written back, with the error.
    pub failed: Vec<(Entry, String)>,
}

impl RestoreReport {
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }

    /// One line per knob, for stderr.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.restored {
            out.push(format!(
                "restored {} to {:?}",
                e.knob.describe(),
                e.original
            ));
        }
        for e in &self.gone {
            out.push(format!(
                "{}: the thread is gone, nothing to restore",
                e.knob.describe()
            ));
        }
        for (e, why) in &self.failed {
            out.push(format!(
                "FAILED to restore {} to {:?}: {why}",
                e.knob.describe(),
                e.original
            ));
        }
        out
    }
}

/// Put back the entries, last change first.
pub fn restore_entries(entries: &[Entry], proc: &Path) -> RestoreReport {
    let mut rep = RestoreReport::default();
    for e in entries.iter().rev() {
        match &e.knob {
            Knob::File { path, .. } => match fsx::write_knob(path, &e.original) {
                Ok(()) => rep.restored.push(e.clone()),
                Err(err) => rep.failed.push((e.clone(), err.to_string())),
            },
            Knob::ThreadAffinity {
                pid,
                tid,
                start_time,
            } => {
                if affinity::thread_start_time(proc, *pid, *tid) != Some(*start_time) {
                    rep.gone.push(e.clone());
                    continue;
                }
                let cpus = match cpulist::parse(&e.original) {
                    Ok(c) => c,
                    Err(err) => {
                        rep.failed.push((e.clone(), err.to_string()));
                        continue;
                    }
                };
                match affinity::set_thread_affinity(*tid, &cpus) {
                    Ok(()) => rep.restored.push(e.clone()),
                    Err(err) if err.raw_os_error() == Some(libc::ESRCH) => rep.gone.push(e.clone()),
                    Err(err) => rep.failed.push((e.clone(), err.to_string())),
                }
            }
        }
    }
    rep
}

/// Apply a found journal's restore and rewrite or remove the file: the
/// `keep` entries stay as they are; entries that fail move to
/// `unrestorable` with the reason (the caller reports them, once).
pub fn restore_found(
    path: &Path,
    proc: &Path,
    data: &JournalData,
    keep: impl Fn(&Entry) -> bool,
) -> Result<RestoreReport, JournalError> {
    let (to_restore, kept): (Vec<Entry>, Vec<Entry>) =
        data.entries.iter().cloned().partition(|e| !keep(e));
    let rep = restore_entries(&to_restore, proc);
    let mut d = data.clone();
    d.entries = kept;
    d.unrestorable
        .extend(rep.failed.iter().map(|(e, why)| Unrestorable {
            entry: e.clone(),
            reason: why.clone(),
        }));
    save_or_remove(path, &d)?;
    Ok(rep)
}

/// `tailprobe restore`: put back every entry, retrying the unrestorable
/// ones too. With `discard`, entries that still fail are dropped from the
/// journal (the report lists them); without, they stay for a later retry.
pub fn restore_all(
    path: &Path,
    proc: &Path,
    data: &JournalData,
    discard: bool,
) -> Result<RestoreReport, JournalError> {
    let mut all = data.entries.clone();
    all.extend(data.unrestorable.iter().map(|u| u.entry.clone()));
    let rep = restore_entries(&all, proc);
    let mut d = data.clone();
    d.entries.clear();
    d.unrestorable = if discard {
        Vec::new()
    } else {
        rep.failed
            .iter()
            .map(|(e, why)| Unrestorable {
                entry: e.clone(),
                reason: why.clone(),
            })
            .collect()
    };
    d.held = true;
    save_or_remove(path, &d)?;
    Ok(rep)
}
