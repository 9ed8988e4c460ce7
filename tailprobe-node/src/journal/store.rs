//! The journal file on disk: its lock (an exclusive `flock` on
//! `<journal>.lock` tells a live owner from a crashed one), reading and
//! classifying it against the boot id, atomic writes, and the temporary
//! files a killed writer left.

use std::{
    fs,
    io::{self},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use super::{Found, JournalData, JournalError};
use crate::fsx;

/// Current boot id.
pub fn boot_id(proc: &Path) -> Result<String, JournalError> {
    let p = proc.join("sys/kernel/random/boot_id");
    fsx::read_trim(&p).map_err(|e| JournalError::BootId(p, e))
}

pub(super) fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Take the journal's lock without waiting; `Ok(None)` when someone holds it.
pub(super) fn try_lock(path: &Path) -> Result<Option<fs::File>, JournalError> {
    let lp = lock_path(path);
    if let Some(dir) = lp.parent() {
        fs::create_dir_all(dir).map_err(|e| JournalError::Write(lp.clone(), e))?;
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        fsx::check_dir_trusted(dir).map_err(|e| JournalError::Write(lp.clone(), e))?;
    }
    let f = fsx::open_owned(&lp, true).map_err(|e| JournalError::Write(lp.clone(), e))?;
    // SAFETY: the descriptor is open for the lifetime of `f`; flock only
    // takes an advisory lock on it.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(Some(f))
    } else {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(JournalError::Write(lp, e))
        }
    }
}

pub(super) fn load(path: &Path) -> Result<Option<JournalData>, JournalError> {
    // A journal tells us what to write into the kernel's knobs: read it only
    // when it is a regular file owned by us (or root), never through a link.
    let read = fsx::open_owned(path, false).and_then(|mut f| {
        let mut b = Vec::new();
        io::Read::read_to_end(&mut f, &mut b).map(|_| b)
    });
    match read {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| JournalError::Corrupt(path.to_path_buf(), e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(JournalError::Read(path.to_path_buf(), e)),
    }
}

pub(super) fn classify(data: JournalData, boot: &str) -> Found {
    if data.boot_id != boot {
        Found::Stale(data)
    } else if data.held || data.entries.is_empty() {
        // Only unrestorable entries left: nothing for a new session to
        // restore, so not a crash to recover from.
        Found::Held(data)
    } else {
        Found::Crashed(data)
    }
}

/// Look at the journal without changing anything: for `tailprobe restore`.
/// Fails with `Busy` while a live tailprobe holds it.
pub fn inspect(path: &Path, proc: &Path) -> Result<(Found, Option<fs::File>), JournalError> {
    let Some(lock) = try_lock(path)? else {
        let pid = load(path).ok().flatten().map(|d| d.owner_pid).unwrap_or(0);
        return Err(JournalError::Busy {
            path: path.to_path_buf(),
            pid,
        });
    };
    let boot = boot_id(proc)?;
    let found = match load(path)? {
        None => Found::Nothing,
        Some(d) => classify(d, &boot),
    };
    Ok((found, Some(lock)))
}

/// Write `d`, or remove the file when nothing is left in it.
pub(super) fn save_or_remove(path: &Path, d: &JournalData) -> Result<(), JournalError> {
    if d.entries.is_empty() && d.unrestorable.is_empty() {
        return match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(JournalError::Write(path.to_path_buf(), e)),
        };
    }
    write(path, d)
}

/// Remove `.<journal>.tmp.*` files a killed writer left beside the journal
/// (we hold the lock, so no writer is running). Only regular files owned by
/// us are removed; a link is removed as a link, never followed.
pub(super) fn remove_stale_temp_files(path: &Path) {
    use std::os::unix::fs::MetadataExt as _;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.tmp.", name.to_string_lossy());
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    for e in rd.flatten() {
        let ours = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
            && e.metadata()
                .is_ok_and(|m| m.file_type().is_file() && m.uid() == me);
        if ours {
            let _ = fs::remove_file(e.path());
        }
    }
}

pub(super) fn write(path: &Path, d: &JournalData) -> Result<(), JournalError> {
    let bytes = serde_json::to_vec_pretty(d)
        .map_err(|e| JournalError::Write(path.to_path_buf(), io::Error::other(e)))?;
    fsx::atomic_write(path, &bytes).map_err(|e| JournalError::Write(path.to_path_buf(), e))
}

pub(super) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
