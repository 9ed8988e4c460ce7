//! No file is written through another user's symlink: as the unprivileged
//! user `nobody`, plant symlinks to a file nobody owns (the victim) at every
//! name tailprobe could use beside a journal in a world-writable sticky
//! directory (the lock, the journal, the temporary file for the next few
//! thousand pids, which is what the old `.<journal>.tmp.<pid>` name allowed),
//! and a directory of nobody's own; then run journaled commands as root with
//! `--journal` there. The victim must be unchanged, and a journal in a
//! directory nobody controls must be refused.

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use tailprobe_tests::{skip_unless_root, tailprobe_bin};

const NOBODY: u32 = 65534;
const PRECIOUS: &str = "precious, owned by nobody\n";

/// A world-writable sticky directory, like /tmp.
fn sticky_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tailprobe-sym-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
    d
}

/// Run a shell line as nobody (no groups).
fn as_nobody(line: &str) {
    let st = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            line,
        ])
        .status()
        .expect("setpriv (util-linux)");
    assert!(st.success(), "as nobody: {line}");
}

/// As nobody, in one forked process (no fork per link, so the pids to come
/// stay predictable): symlinks to `target` at each of `names`.
fn symlinks_as_nobody(target: &Path, names: &[PathBuf]) {
    use std::{ffi::CString, os::unix::ffi::OsStrExt as _};
    let t = CString::new(target.as_os_str().as_bytes()).unwrap();
    let n: Vec<CString> = names
        .iter()
        .map(|p| CString::new(p.as_os_str().as_bytes()).unwrap())
        .collect();
    // SAFETY: the child only makes system calls on memory prepared before
    // the fork, then _exits; the parent waits for it.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            let ok = libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(NOBODY, NOBODY, NOBODY) == 0
                && libc::setresuid(NOBODY, NOBODY, NOBODY) == 0
                && n.iter().all(|x| libc::symlink(t.as_ptr(), x.as_ptr()) == 0);
            libc::_exit(if ok { 0 } else { 1 });
        }
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
        assert!(
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
            "planting as nobody failed"
        );
    }
}

/// As nobody: the victim; links to it at the lock and the journal
/// (`journal.json`), in a directory of nobody's own (`own/`), and at the
/// temporary names `.j2.json.tmp.<pid>` of the next 3000 pids.
fn plant(d: &Path) -> PathBuf {
    let victim = d.join("victim");
    as_nobody(&format!(
        "cd {d} && printf '{p}' > victim && mkdir own",
        d = d.display(),
        p = PRECIOUS.replace('\n', "\\n"),
    ));
    let mut names = Vec::new();
    for j in ["journal.json", "own/journal.json"] {
        names.push(d.join(format!("{j}.lock")));
        names.push(d.join(j));
    }
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    names.extend((last + 1..=last + 3000).map(|p| d.join(format!(".j2.json.tmp.{p}"))));
    symlinks_as_nobody(&victim, &names);
    let md = std::fs::metadata(&victim).unwrap();
    assert_eq!(md.uid(), NOBODY);
    victim
}

/// `tailprobe pin --pid <sleeper> --pin cpus:0 --watch 100ms --journal J`:
/// a journaled change, restored at the end.
fn pin_with_journal(journal: &Path) -> Output {
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let out = Command::new(tailprobe_bin())
        .args(["pin", "--pin", "cpus:0", "--watch", "100ms", "--pid"])
        .arg(sleeper.id().to_string())
        .arg("--journal")
        .arg(journal)
        .output()
        .unwrap();
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    out
}

#[test]
fn root_planted_symlinks_are_never_written_through() {
    skip_unless_root!("root_planted_symlinks_are_never_written_through");
    let d = sticky_dir("journal");
    let victim = plant(&d);
    // Only the temporary names are planted for j2.json: the command runs,
    // journals its change (the journal is written, replaced atomically) and
    // restores it.
    let out = pin_with_journal(&d.join("j2.json"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), PRECIOUS);
    // The lock and the journal are links: refused, nothing written.
    let out = pin_with_journal(&d.join("journal.json"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // ELOOP (a link) or, with fs.protected_regular, EACCES: refused.
    assert!(
        stderr.contains("symbolic link") || stderr.contains("Permission denied"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), PRECIOUS);
    // A directory nobody owns: refused before anything is created in it.
    let out = pin_with_journal(&d.join("own/journal.json"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("owned by uid 65534"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), PRECIOUS);
    // `restore` reads the journal: it refuses the planted one.
    let out = Command::new(tailprobe_bin())
        .arg("restore")
        .arg("--journal")
        .arg(d.join("journal.json"))
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), PRECIOUS);
    // Nothing of root's was left in the shared directory.
    for e in std::fs::read_dir(&d).unwrap().flatten() {
        let md = std::fs::symlink_metadata(e.path()).unwrap();
        assert!(
            md.uid() == NOBODY || e.file_name() == "j2.json.lock",
            "root left {} behind",
            e.path().display()
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}
