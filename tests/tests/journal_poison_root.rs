//! A change that cannot be put back no longer poisons the journal: it is
//! reported, `tailprobe restore` keeps it (exit 6) and says how to drop it,
//! `tailprobe restore --discard` drops it; `pin` refuses a kernel thread
//! before anything is journaled.

use std::{path::PathBuf, process::Command};

use tailprobe_tests::{skip_unless_root, tailprobe_bin};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tailprobe-jp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A per-CPU kernel thread (ksoftirqd/0, else kthreadd).
fn kernel_thread() -> u32 {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "ksoftirqd/0")
        {
            return pid;
        }
    }
    2
}

#[test]
fn root_pin_refuses_a_kernel_thread() {
    skip_unless_root!("root_pin_refuses_a_kernel_thread");
    let d = scratch("kthread");
    let j = d.join("journal.json");
    let k = kernel_thread();
    let out = Command::new(tailprobe_bin())
        .args([
            "pin",
            "--pin",
            "cpus:0",
            "--pid",
            &k.to_string(),
            "--journal",
        ])
        .arg(&j)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("kernel thread"), "{stderr}");
    assert!(!j.exists(), "a refused pin left a journal");
}

#[test]
fn root_poisoned_journal_is_reported_and_discarded() {
    skip_unless_root!("root_poisoned_journal_is_reported_and_discarded");
    let d = scratch("poison");
    let j = d.join("journal.json");
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    // What a crashed run leaves after changing a knob that refuses its old
    // value: a file knob whose directory is gone.
    let knob = d.join("gone/smp_affinity_list");
    let journal = serde_json::json!({
        "version": 1, "boot_id": boot.trim(), "owner_pid": 999_999, "held": false,
        "created_unix": 0,
        "entries": [{"knob": {"kind": "file", "path": knob, "what": "affinity of IRQ 9"},
                     "original": "1"}],
    });
    std::fs::write(&j, serde_json::to_vec(&journal).unwrap()).unwrap();
    let restore = |extra: &[&str]| {
        Command::new(tailprobe_bin())
            .arg("restore")
            .args(extra)
            .arg("--journal")
            .arg(&j)
            .output()
            .unwrap()
    };
    let out = restore(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("FAILED to restore affinity of IRQ 9"),
        "{stderr}"
    );
    assert!(stderr.contains("restore --discard"), "{stderr}");
    assert!(j.exists());
    // A journaled command (re-pin a sleeper for 200 ms, then restore) is
    // not failed by it and does not report it again.
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let out = Command::new(tailprobe_bin())
        .args(["pin", "--pin", "cpus:0", "--watch", "200ms", "--pid"])
        .arg(sleeper.id().to_string())
        .arg("--journal")
        .arg(&j)
        .output()
        .unwrap();
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("IRQ 9"), "{stderr}");
    assert!(
        j.exists(),
        "the unrestorable entry must stay until discarded"
    );
    let out = restore(&["--discard"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("discarded 1 change(s)"), "{stderr}");
    assert!(!j.exists(), "the journal is still there after --discard");
    let out = restore(&[]);
    assert_eq!(out.status.code(), Some(0));
}
