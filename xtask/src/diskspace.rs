//! Free disk space where the build writes, checked before a long task so
//! that a full disk is named up front rather than as a linker's I/O error
//! twenty minutes in.

use std::{ffi::CString, os::unix::ffi::OsStrExt as _, path::Path};

/// Bytes available to an unprivileged writer on the file system holding
/// `path` (or its nearest existing ancestor); None when it cannot be read.
pub fn available(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let c = CString::new(existing.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; all-zero is a valid value to overwrite.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `s` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// The warning to print when `available` bytes are fewer than a task that
/// writes about `needed` bytes wants, None when there is room.
pub fn shortfall(task: &str, available: u64, needed: u64) -> Option<String> {
    (available < needed).then(|| {
        format!(
            "xtask: warning: {:.1} GB free for target/, and a cold `{task}` writes about \
             {:.1} GB there: it may stop with 'No space left on device' (free some space, \
             or point CARGO_TARGET_DIR at a larger disk)",
            gb(available),
            gb(needed)
        )
    })
}

fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_no_warning_and_too_little_names_both_sizes() {
        assert_eq!(
            shortfall("cargo xtask test", 10_000_000_000, 6_000_000_000),
            None
        );
        let w = shortfall("cargo xtask test", 2_500_000_000, 6_000_000_000).unwrap();
        assert!(w.contains("2.5 GB free"), "{w}");
        assert!(w.contains("about 6.0 GB"), "{w}");
    }

    #[test]
    fn reads_this_file_system() {
        let here = available(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(here > 0);
        // A path that does not exist yet is measured at its nearest parent.
        let deeper = Path::new(env!("CARGO_MANIFEST_DIR")).join("no/such/dir");
        assert!(available(&deeper).is_some());
    }
}
