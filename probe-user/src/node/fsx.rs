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
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(&dir)?.sync_all()
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
    fn numbered() {
        let d = tempfile::tempdir().unwrap();
        for n in ["node1", "node0", "nodeX", "other"] {
            fs::create_dir(d.path().join(n)).unwrap();
        }
        assert_eq!(numbered_entries(d.path(), "node"), vec![0, 1]);
    }
}
