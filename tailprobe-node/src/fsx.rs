//! Small file helpers: trimmed reads, knob writes, atomic replacement.

use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

/// Read a sysfs/procfs file, trimmed of surrounding whitespace.
pub fn read_trim(path: &Path) -> io::Result<String> {
    Ok(fs::read_to_string(path)?.trim().to_string())
}

/// Like [`read_trim`], `None` when the file is absent or unreadable.
pub fn read_opt(path: &Path) -> Option<String> {
    read_trim(path).ok()
}

/// Write a knob value the way `echo value > knob` does: one write of the
/// value and a newline, the error of that write returned as is (sysfs reports
/// a refused value from `write`, e.g. EINVAL, EIO for a managed IRQ).
pub fn write_knob(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    let mut line = value.trim().to_string();
    line.push('\n');
    f.write_all(line.as_bytes())?;
    f.flush()
}

/// Replace `path` atomically: write a temporary file beside it, fsync it,
/// rename it over `path`, then fsync the directory, so a crash leaves either
/// the old or the new content, never a torn file.
///
/// The temporary file is created exclusively (`O_CREAT | O_EXCL`, random
/// name, mode 0600), so a file or symlink planted beside `path` by another
/// user is never opened or written through; it is removed if anything fails
/// before the rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "journal".into());
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp."))
        .tempfile_in(&dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    fs::File::open(&dir)?.sync_all()
}

/// Create a new file for writing that did not exist before: `O_CREAT |
/// O_EXCL | O_NOFOLLOW`, mode 0600. Fails with `AlreadyExists` on anything
/// already at `path`, a symlink included, so it never writes through a link.
pub fn create_new_private(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Open (creating if absent) a file we own for a lock or a state file,
/// without following a symlink, and refuse one that another user owns or
/// that is not a regular file: in a world-writable directory such a file
/// could have been planted to be written or trusted by us.
pub fn open_owned(path: &Path, create: bool) -> io::Result<fs::File> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let f = fs::OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is a symbolic link; refusing to follow it",
                        path.display()
                    ),
                )
            } else {
                e
            }
        })?;
    let md = f.metadata()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !md.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a regular file", path.display()),
        ));
    }
    if md.uid() != me && md.uid() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is owned by uid {}, not by us (uid {me}); refusing to use it",
                path.display(),
                md.uid()
            ),
        ));
    }
    Ok(f)
}

/// Refuse a directory another user controls: it must be owned by us or
/// root, and if others may write to it, have the sticky bit (like /tmp), so
/// nobody else can rename or replace what we create in it. `dir` is
/// resolved through links (a link to another user's directory is refused
/// for what it points to).
pub fn check_dir_trusted(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let md = fs::metadata(dir)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let mode = md.permissions().mode();
    let why = if !md.is_dir() {
        Some("is not a directory".to_string())
    } else if md.uid() != me && md.uid() != 0 {
        Some(format!(
            "is owned by uid {}, not by us (uid {me}) or root",
            md.uid()
        ))
    } else if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        Some(format!(
            "is writable by other users (mode {:o}) without the sticky bit",
            mode & 0o7777
        ))
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} {why}; refusing to keep files there (choose another directory)",
                dir.display()
            ),
        )),
    }
}

/// A fresh private directory under the system temporary directory
/// (`mkdtemp`: random name, mode 0700, created by us), removed when the
/// returned guard drops. Nothing another user created can be taken for it.
///
/// It holds an owner file (`.tailprobe-owner`: our pid and its start time),
/// and directories with the same prefix that a killed run left behind (ours,
/// mode 0700, owner no longer running) are removed first.
pub fn private_temp_dir(prefix: &str) -> io::Result<tempfile::TempDir> {
    remove_stale_temp_dirs(&std::env::temp_dir(), prefix);
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()?;
    let me = std::process::id();
    let start = own_start_time(me).unwrap_or(0);
    let mut f = create_new_private(&d.path().join(OWNER_FILE))?;
    f.write_all(format!("{me} {start}\n").as_bytes())?;
    Ok(d)
}

const OWNER_FILE: &str = ".tailprobe-owner";

/// Start time (field 22 of `/proc/<pid>/stat`) of a live, non-zombie process.
fn own_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    if matches!(f.next()?, "Z" | "X") {
        return None;
    }
    f.nth(18)?.parse().ok()
}

/// Remove `<tmp>/<prefix>*` directories that are ours (uid, mode 0700, not
/// a link) and whose owner file names a process that is no longer running.
pub fn remove_stale_temp_dirs(tmp: &Path, prefix: &str) {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let Ok(rd) = fs::read_dir(tmp) else {
        return;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    for e in rd.flatten() {
        let named = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(prefix));
        // DirEntry::metadata does not follow a symlink.
        let ours = e.metadata().is_ok_and(|m| {
            m.file_type().is_dir() && m.uid() == me && m.permissions().mode() & 0o777 == 0o700
        });
        if !(named && ours) {
            continue;
        }
        let Ok(mut f) = open_owned(&e.path().join(OWNER_FILE), false) else {
            continue;
        };
        let mut text = String::new();
        if io::Read::read_to_string(&mut f, &mut text).is_err() {
            continue;
        }
        let mut it = text.split_whitespace().map(|x| x.parse::<u64>().ok());
        let (Some(Some(pid)), Some(Some(start))) = (it.next(), it.next()) else {
            continue;
        };
        let alive = u32::try_from(pid)
            .ok()
            .and_then(own_start_time)
            .is_some_and(|s| s == start);
        if !alive {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Numbered entries of a directory whose names are `<prefix><n>`, sorted.
pub fn numbered_entries(dir: &Path, prefix: &str) -> Vec<u32> {
    let mut out: Vec<u32> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| {
                let name = e.ok()?.file_name();
                name.to_str()?.strip_prefix(prefix)?.parse().ok()
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/j.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn atomic_write_never_writes_through_a_planted_symlink() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let p = d.path().join("j.json");
        // The names the old code used, and a spread of others: all links.
        let pid = std::process::id();
        for n in [pid, pid + 1, 0, 1] {
            std::os::unix::fs::symlink(&victim, d.path().join(format!(".j.json.tmp.{n}"))).unwrap();
        }
        atomic_write(&p, b"new").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
    }

    #[test]
    fn create_new_private_refuses_links_and_existing_files() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(create_new_private(&link).is_err());
        assert!(create_new_private(&victim).is_err());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        let fresh = d.path().join("fresh");
        create_new_private(&fresh).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn open_owned_refuses_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let link = d.path().join("j.lock");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = open_owned(&link, true).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(open_owned(&d.path().join("new.lock"), true).is_ok());
    }

    #[test]
    fn private_temp_dir_is_fresh_and_0700() {
        use std::os::unix::fs::PermissionsExt as _;
        let a = private_temp_dir("tailprobe-test-").unwrap();
        let b = private_temp_dir("tailprobe-test-").unwrap();
        assert_ne!(a.path(), b.path());
        let m = fs::metadata(a.path()).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_directory_others_control_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().unwrap();
        assert!(check_dir_trusted(d.path()).is_ok());
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_dir_trusted(d.path()).unwrap_err();
        assert!(e.to_string().contains("without the sticky bit"), "{e}");
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(check_dir_trusted(d.path()).is_ok());
    }

    #[test]
    fn a_dead_runs_temp_dir_is_removed_and_a_live_ones_kept() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let mk = |name: &str, owner: &str| {
            let d = tmp.path().join(name);
            fs::create_dir(&d).unwrap();
            fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
            fs::write(d.join(OWNER_FILE), owner).unwrap();
            d
        };
        let me = std::process::id();
        let live = mk(
            "tp-x-live",
            &format!("{me} {}", own_start_time(me).unwrap()),
        );
        // Our pid with another start time: a dead run whose pid was reused.
        let dead = mk("tp-x-dead", &format!("{me} 1"));
        let other = mk("other-dead", "4000000 1");
        remove_stale_temp_dirs(tmp.path(), "tp-x-");
        assert!(live.exists());
        assert!(!dead.exists());
        assert!(other.exists(), "another prefix is not ours to clean");
    }

    #[test]
    fn numbered() {
        let d = tempfile::tempdir().unwrap();
        for n in ["node1", "node0", "nodeX", "other"] {
            fs::create_dir(d.path().join(n)).unwrap();
        }
        assert_eq!(numbered_entries(d.path(), "node"), vec![0, 1]);
    }
}
