//! The change journal on fixture trees: kill -9 in the middle of a
//! multi-knob change, then restore, then compare the tree with its original;
//! recovery on the next start; a journal from another boot is not applied.

mod node_support;

use std::{
    fs,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use node_support::*;

/// Start `governor set performance` on a copy of the 64-policy intel fixture
/// with a slow change step, and kill -9 it after a few policies changed.
fn crash_midway(
    s: &Scratch,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    Vec<(std::path::PathBuf, Vec<u8>)>,
) {
    let tree = s.path().join("tree");
    copy_tree(&fixture("node-2s-8gpu-intel/sys"), &tree);
    let original = snapshot(&tree);
    let journal = s.path().join("journal.json");
    let mut child = Command::new(bin())
        .args(["governor", "--sys-root"])
        .arg(&tree)
        .arg("--journal")
        .arg(&journal)
        .args(["set", "performance", "--", "sleep", "30"])
        .env("TAILPROBE_TEST_CHANGE_DELAY_MS", "40")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until at least 3 policies are journaled (and so changed or about
    // to be), but long before all 64 are (64 x 40 ms = 2.5 s).
    let start = Instant::now();
    loop {
        let n = fs::read(&journal)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["entries"].as_array().map(|a| a.len()))
            .unwrap_or(0);
        if n >= 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "journal never filled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL: no Drop, no handler runs.
    child.wait().unwrap();
    (tree, journal, original)
}

fn governors_changed(tree: &std::path::Path) -> usize {
    (0..64)
        .filter(|c| {
            fs::read_to_string(tree.join(format!(
                "devices/system/cpu/cpufreq/policy{c}/scaling_governor"
            )))
            .unwrap()
            .trim()
                == "performance"
        })
        .count()
}

#[test]
fn kill_9_mid_change_then_restore_gives_back_the_original_tree() {
    let s = Scratch::new("journal-crash");
    let (tree, journal, original) = crash_midway(&s);
    let changed = governors_changed(&tree);
    assert!(
        (1..64).contains(&changed),
        "expected a partial change at kill time, {changed} of 64 policies changed"
    );
    assert!(journal.exists(), "the journal must survive the kill");
    let o = Command::new(bin())
        .args(["restore", "--journal"])
        .arg(&journal)
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("restored governor of policy0"), "{err}");
    assert_eq!(
        snapshot(&tree),
        original,
        "tree differs from the original after restore"
    );
    assert!(!journal.exists());
    // Nothing left: a second restore says so.
    let o = Command::new(bin())
        .args(["restore", "--journal"])
        .arg(&journal)
        .output()
        .unwrap();
    assert!(text(&o).1.contains("nothing to restore"));
}

#[test]
fn next_start_after_a_crash_restores_first() {
    let s = Scratch::new("journal-next");
    let (tree, journal, original) = crash_midway(&s);
    assert!(governors_changed(&tree) > 0);
    let o = Command::new(bin())
        .args(["governor", "--sys-root"])
        .arg(&tree)
        .arg("--journal")
        .arg(&journal)
        .args(["set", "performance", "--duration", "100ms"])
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("an earlier run left changes"), "{err}");
    assert_eq!(snapshot(&tree), original);
    assert!(!journal.exists());
}

#[test]
fn journal_from_another_boot_is_reported_not_applied() {
    let s = Scratch::new("journal-stale");
    let (tree, journal, _) = crash_midway(&s);
    let after_crash = snapshot(&tree);
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&journal).unwrap()).unwrap();
    v["boot_id"] = "00000000-0000-0000-0000-000000000000".into();
    fs::write(&journal, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = Command::new(bin())
        .args(["restore", "--journal"])
        .arg(&journal)
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(
        err.contains("another boot") && err.contains("NOT applied"),
        "{err}"
    );
    assert_eq!(
        snapshot(&tree),
        after_crash,
        "a stale journal must not be applied"
    );
    // A new session refuses to start on it rather than guess.
    let o = Command::new(bin())
        .args(["governor", "--sys-root"])
        .arg(&tree)
        .arg("--journal")
        .arg(&journal)
        .args(["set", "performance", "--duration", "10ms"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("another boot"));
    let o = Command::new(bin())
        .args(["restore", "--discard", "--journal"])
        .arg(&journal)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(!journal.exists());
}

#[test]
fn sigterm_restores_before_exit() {
    let s = Scratch::new("journal-term");
    let tree = s.path().join("tree");
    copy_tree(&fixture("node-acpi-schedutil/sys"), &tree);
    let original = snapshot(&tree);
    let journal = s.path().join("journal.json");
    let mut child = Command::new(bin())
        .args(["governor", "--sys-root"])
        .arg(&tree)
        .arg("--journal")
        .arg(&journal)
        .args(["set", "performance", "--duration", "30s"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    // The last of 8 "policyN ... -> performance" lines means all changed.
    let mut seen = 0;
    while seen < 8 {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "tailprobe exited early"
        );
        if line.contains("-> performance") {
            seen += 1;
        }
    }
    assert_eq!(
        fs::read_to_string(tree.join("devices/system/cpu/cpufreq/policy7/scaling_governor"))
            .unwrap(),
        "performance\n"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0));
    assert_eq!(snapshot(&tree), original);
}
