//! Bad input to `tailprobe record` gets a clear message and the documented
//! exit code, never a stack trace.

use std::process::Command;

use tailprobe_tests::{skip_unless_root, tailprobe_bin};

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(tailprobe_bin())
        .args(args)
        .output()
        .expect("run tailprobe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn root_pid_that_does_not_exist() {
    skip_unless_root!("root_pid_that_does_not_exist");
    let (code, err) = run(&["record", "--pid", "2147483646", "--duration", "1s"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no process with pid 2147483646"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn root_kernel_thread_is_refused() {
    skip_unless_root!("root_kernel_thread_is_refused");
    // pid 2 is kthreadd on every Linux system.
    let (code, err) = run(&["record", "--pid", "2", "--duration", "1s"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("kernel thread"), "{err}");
}

#[test]
fn root_not_root_is_refused_plainly() {
    skip_unless_root!("root_not_root_is_refused_plainly");
    use std::os::unix::process::CommandExt as _;
    let out = Command::new(tailprobe_bin())
        .args(["record", "--pid", "1", "--duration", "1s"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run as nobody");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // Capabilities are checked, not the uid: the message names the missing ones.
    assert!(
        err.contains("lacks CAP_BPF, CAP_PERFMON (effective uid 65534)"),
        "{err}"
    );
}

#[test]
fn bad_duration_is_a_usage_error() {
    let (code, err) = run(&["record", "--pid", "1", "--duration", "soon"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--duration"), "{err}");
}

/// When no tracefs is mounted, `record` mounts it to attach the classic
/// `mm_migrate_pages` tracepoint, and takes it away again right after
/// attaching, so that even a SIGKILL later in the run leaves no mount
/// behind. Run in a private mount namespace (`unshare -m`) with both tracefs
/// places unmounted, so the machine's own mounts are not touched.
#[test]
fn root_tracefs_mounted_by_us_is_gone_while_the_run_is_still_going() {
    skip_unless_root!("root_tracefs_mounted_by_us_is_gone_while_the_run_is_still_going");
    if Command::new("unshare").arg("--version").output().is_err() {
        tailprobe_tests::skip_fixable(
            "root_tracefs_mounted_by_us_is_gone_while_the_run_is_still_going",
            "no unshare(1) (util-linux)",
        );
        return;
    }
    let bin = tailprobe_bin();
    // Inside the namespace: unmount tracefs (and debugfs, whose tracing
    // directory automounts it), start a 3 s recording of a sleeper, look at
    // the mounts after 1.5 s (attached, still running), then let it finish.
    let script = format!(
        "set -e; umount -l /sys/kernel/tracing 2>/dev/null || true; \
         umount -l /sys/kernel/debug 2>/dev/null || true; \
         if grep -q ' tracefs ' /proc/self/mountinfo; then echo STILL-MOUNTED-BEFORE; fi; \
         sleep 30 & s=$!; \
         '{bin}' record --pid $s --duration 3s --json > \"$TMP/r.json\" & r=$!; \
         sleep 1.5; \
         if grep -q ' tracefs ' /proc/self/mountinfo; then echo MOUNTED-DURING; else echo GONE-DURING; fi; \
         wait $r; echo rc=$?; kill $s",
        bin = bin.display()
    );
    let tmp = tempfile_dir();
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("TMP", &tmp)
        .output()
        .expect("run unshare");
    let so = String::from_utf8_lossy(&out.stdout).into_owned();
    let se = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!so.contains("STILL-MOUNTED-BEFORE"), "{so}\n{se}");
    assert!(
        so.contains("GONE-DURING"),
        "tracefs still mounted during the run:\n{so}\n{se}"
    );
    assert!(so.contains("rc=0"), "{so}\n{se}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{tmp}/r.json")).expect("report"))
            .expect("report JSON");
    let programs = report["overhead"]["programs"].to_string();
    assert!(
        programs.contains("\"mm_migrate_pages\""),
        "the classic tracepoint is attached through the short-lived mount: {programs}"
    );
    let unavailable = report["unavailable"].to_string();
    assert!(!unavailable.contains("mm_migrate_pages"), "{unavailable}");
    let _ = std::fs::remove_dir_all(&tmp);
}

fn tempfile_dir() -> String {
    let d = std::env::temp_dir().join(format!("tailprobe-tracefs-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d.to_string_lossy().into_owned()
}
