//! Root integration tests of running without root: `tailprobe record` as
//! user nobody, from a copy of the binary given the file capabilities
//! cap_bpf,cap_perfmon (what the package sets), records a known workload
//! and agrees with the kernel's schedstat as record_sched.rs checks it;
//! the same copy without them (or with only one) refuses, naming exactly
//! the missing capabilities.

use std::{
    fs,
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use tailprobe_tests::{
    skip, skip_fixable, skip_unless_root, spin2_agrees_with_schedstat, tailprobe_bin, Recording,
    Workload,
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");
const NOBODY: u32 = 65534;

/// A copy of the tailprobe binary that user nobody can run, in a directory
/// removed on drop, with `caps` set as file capabilities (none: plain).
struct Copy {
    dir: PathBuf,
    bin: PathBuf,
}

impl Copy {
    fn new(tag: &str, caps: Option<&str>) -> Result<Copy, String> {
        let dir = std::env::temp_dir().join(format!("tailprobe-caps-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        if nosuid(&dir) {
            return Err(format!(
                "{} is on a nosuid mount, where the kernel ignores file capabilities",
                dir.display()
            ));
        }
        let bin = dir.join("tailprobe");
        fs::copy(tailprobe_bin(), &bin).map_err(|e| format!("copying the binary: {e}"))?;
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        let c = Copy { dir, bin };
        if let Some(caps) = caps {
            let out = Command::new("setcap")
                .arg(format!("{caps}+ep"))
                .arg(&c.bin)
                .output()
                .map_err(|e| format!("setcap: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "setcap {caps}+ep failed (file system without security xattrs?): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(c)
    }

    /// `record ... --json` as user nobody.
    fn record_as_nobody(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(["record", "--json"])
            .args(args)
            .uid(NOBODY)
            .gid(NOBODY);
        c
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Whether `dir` is on a file system mounted nosuid.
fn nosuid(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a zeroed statvfs is valid; statvfs fills it from a
    // NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::statvfs(c.as_ptr(), &mut st) == 0 && st.f_flag & libc::ST_NOSUID != 0 }
}

/// True (after printing the skip) when this machine cannot run the test.
fn cannot_run(name: &str) -> bool {
    if !Path::new("/usr/sbin/setcap").exists() && !Path::new("/sbin/setcap").exists() {
        skip_fixable(
            name,
            "setcap is not installed (Debian: libcap2-bin; `cargo xtask setup` installs it)",
        );
        return true;
    }
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let v: Vec<u32> = release
        .trim()
        .split(['.', '-'])
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() == 2 && (v[0], v[1]) < (5, 8) {
        skip(
            name,
            "kernel before 5.8: no CAP_BPF/CAP_PERFMON (tailprobe needs CAP_SYS_ADMIN there)",
        );
        return true;
    }
    false
}

#[test]
fn root_record_as_nobody_with_file_caps_agrees_with_schedstat() {
    let name = "root_record_as_nobody_with_file_caps_agrees_with_schedstat";
    skip_unless_root!(name);
    if cannot_run(name) {
        return;
    }
    let copy = match Copy::new("ok", Some("cap_bpf,cap_perfmon")) {
        Ok(c) => c,
        Err(e) => {
            skip(name, &e);
            return;
        }
    };
    // The server runs as another user than the recorder (root here).
    let spin_ms = 1500u64;
    let mut w = Workload::start(WORKLOAD, &["spin2", "0", &spin_ms.to_string()]);
    let pid = w.pid().to_string();
    let rec =
        Recording::start_command(copy.record_as_nobody(&["--duration", "60s", "--pid", &pid]));
    let report =
        spin2_agrees_with_schedstat(&mut w, rec, spin_ms, "as nobody with cap_bpf,cap_perfmon");
    // Without CAP_SYS_ADMIN the probes' cost is not measured, and says so.
    let notes = report["notes"].to_string();
    assert!(notes.contains("CAP_SYS_ADMIN"), "{notes}");
}

#[test]
fn root_record_without_caps_names_exactly_the_missing_ones() {
    let name = "root_record_without_caps_names_exactly_the_missing_ones";
    skip_unless_root!(name);
    if cannot_run(name) {
        return;
    }
    for (tag, caps, missing, not_missing) in [
        ("none", None, "lacks CAP_BPF, CAP_PERFMON", None),
        (
            "bpf",
            Some("cap_bpf"),
            "lacks CAP_PERFMON",
            Some("lacks CAP_BPF"),
        ),
    ] {
        let copy = match Copy::new(tag, caps) {
            Ok(c) => c,
            Err(e) => {
                skip(name, &e);
                return;
            }
        };
        let out = copy
            .record_as_nobody(&["--duration", "1s", "--pid", "1"])
            .output()
            .expect("run the copy");
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("{tag}: {}", err.trim());
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(missing), "{err}");
        assert!(err.contains("effective uid 65534"), "{err}");
        if let Some(n) = not_missing {
            assert!(!err.contains(n), "{err}");
        }
        assert!(out.stdout.is_empty(), "no report on a refusal");
    }
}
