//! Kernel knobs under `/proc/sys`, named by their path below it
//! (`kernel/numa_balancing` for `kernel.numa_balancing`).

use std::{fs, io, path::Path, str::FromStr};

/// The knob's value with surrounding whitespace (the kernel's trailing
/// newline) removed. `proc_root` is the procfs mount (`/proc`).
pub fn sysctl(proc_root: &Path, key: &str) -> io::Result<String> {
    let text = fs::read_to_string(proc_root.join("sys").join(key))?;
    Ok(text.trim().to_string())
}

/// The knob parsed as a number (or anything `FromStr`); `None` when it is
/// missing, unreadable or not of that type.
pub fn sysctl_parsed<T: FromStr>(proc_root: &Path, key: &str) -> Option<T> {
    sysctl(proc_root, key).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("sys/kernel");
        fs::create_dir_all(&k).unwrap();
        fs::write(k.join("numa_balancing"), "1\n").unwrap();
        fs::write(k.join("osrelease"), "6.1.0-18-amd64\n").unwrap();
        fs::write(k.join("pid_max"), "not a number\n").unwrap();
        d
    }

    #[test]
    fn reads_trimmed_values() {
        let d = fixture();
        assert_eq!(
            sysctl(d.path(), "kernel/osrelease").unwrap(),
            "6.1.0-18-amd64"
        );
        assert_eq!(sysctl(d.path(), "kernel/numa_balancing").unwrap(), "1");
    }

    #[test]
    fn parsed_values_and_failures() {
        let d = fixture();
        assert_eq!(
            sysctl_parsed::<u64>(d.path(), "kernel/numa_balancing"),
            Some(1)
        );
        assert_eq!(sysctl_parsed::<u32>(d.path(), "kernel/pid_max"), None);
        assert_eq!(
            sysctl_parsed::<u64>(d.path(), "kernel/bpf_stats_enabled"),
            None
        );
        let e = sysctl(d.path(), "kernel/bpf_stats_enabled").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
