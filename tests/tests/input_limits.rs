//! Bad input is a clear error, never a panic: durations beyond the 7-day
//! limit (and ones that overflow the clock) are refused by the argument
//! parser (exit 2) before anything starts; a report written to a full disk
//! (`> /dev/full`) is an error message and exit 1. Before, these panicked
//! (exit 101 with a backtrace) or, in `workload`, exited 0 after a worker
//! panicked.

use std::process::{Command, Stdio};

use tailprobe_tests::tailprobe_bin;

const HUGE: &str = "300000000000y";

#[test]
fn huge_durations_are_refused_before_anything_starts() {
    let cases: &[&[&str]] = &[
        &["noise", "--place", "cpus:0", "--duration", HUGE],
        &["noise", "--place", "cpus:0", "--duration", "8d"],
        &["irq", "watch", "--duration", HUGE],
        &["numa", "--pid", "1", "--duration", HUGE],
        &["pin", "--pin", "cpus:0", "--pid", "1", "--watch", HUGE],
        &["workload", "--threads", "1", "--duration", HUGE],
        &["workload", "--threads", "1", "--busy", "8d"],
        &["record", "--pid", "1", "--duration", HUGE],
        &["counters", "--pid", "1", "--duration", HUGE],
    ];
    for args in cases {
        let out = Command::new(tailprobe_bin())
            .args(*args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("maximum of 7 days") || err.contains("overflow"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn a_full_disk_is_an_error_not_a_panic() {
    let cases: &[&[&str]] = &[&["topo", "--json"], &["topo"], &["irq", "show", "--json"]];
    for args in cases {
        let out = Command::new(tailprobe_bin())
            .args(*args)
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("No space left on device"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
