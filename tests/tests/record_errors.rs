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
    assert!(err.contains("needs root"), "{err}");
}

#[test]
fn bad_duration_is_a_usage_error() {
    let (code, err) = run(&["record", "--pid", "1", "--duration", "soon"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--duration"), "{err}");
}
