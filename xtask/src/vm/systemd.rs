//! A guest that boots systemd as PID 1 (`--subset unit`): what goes on the
//! kernel command line, and the boot script systemd runs.
//!
//! virtme-ng's own way (`vng --systemd --exec`) runs the script from
//! `serial-getty@ttyS0.service`, which needs udev and the whole default
//! target; it never reached the script here. What these machines add to
//! that: their root file system has `/.dockerenv`, and the guest sees the
//! host's root. systemd then takes itself for a Docker container ("Detected
//! virtualization docker.") and reads its options from PID 1's argv (vng
//! passes none) instead of /proc/cmdline, so every `systemd.*` option on
//! the kernel command line was ignored, `systemd.mask=` included.
//!
//! So the guest boots with:
//! - `container=` (empty): the kernel hands it to init as an environment
//!   variable, and systemd as PID 1 takes an empty `$container` as "not a
//!   container" before it looks for `/.dockerenv`; it then reads
//!   /proc/cmdline ("Detected virtualization qemu.").
//! - Programs that PID 1 starts still see `/.dockerenv` (and PID 1's empty
//!   `$container`, which they take for some container), generators
//!   included, and would read their options from PID 1's argv too. systemd
//!   reads `$SYSTEMD_PROC_CMDLINE` in place of the command line when it is
//!   set, and PID 1 passes `systemd.setenv=` variables to generators and
//!   units: so `systemd.setenv="SYSTEMD_PROC_CMDLINE=..."` carries the
//!   options meant for generators, `systemd.run=` (systemd-run-generator:
//!   `kernel-command-line.service` runs the boot script, and the default
//!   target becomes `kernel-command-line.target`, which needs nothing but
//!   that service after `basic.target`: no gettys, no multi-user units),
//!   `systemd.run_{success,failure}_action=poweroff` (QEMU exits when the
//!   script does) and `systemd.mask=` for the units below.
//!
//! The boot script does what virtme-ng-init does in the other lanes: makes
//! the read-only host root writable with tmpfs-backed overlays, and mounts
//! the results directory (vng's first `--rwdir`, 9p tag
//! `virtme.initmount0`); then it runs the lane's `run.sh`.

use std::{fmt::Write as _, path::Path};

use anyhow::{bail, Result};

/// Units masked in the guest. None of them matters to the test, and each
/// costs emulated CPU or fails in the guest. 6.1 guest on a quiet host,
/// 2026-12-03: the boot script started 20.5 and 23.1 s after the kernel
/// without these masks, 16.6 and 16.0 s with them (docs/vm-test.md).
pub const MASKS: &[&str] = &[
    // virtme-ng's drop-in makes it run virtme-ng-init (a second init, and
    // an interactive shell without `--exec`); nothing pulls it in under
    // kernel-command-line.target, masked so that nothing can.
    "serial-getty@ttyS0.service",
    // No network in the guest: fails and restarts five times.
    "systemd-timesyncd.service",
    // binfmt_misc (an automount plus a service): 2-3 s.
    "proc-sys-fs-binfmt_misc.automount",
    "systemd-binfmt.service",
    // modprobe@{configfs,dm_mod,drm,efi_pstore,fuse,loop}: about 1.3 s of
    // CPU each, and the guest needs none of those modules.
    "modprobe@.service",
    // Seconds each under TCG, and nothing the test needs.
    "systemd-journal-flush.service",
    "systemd-random-seed.service",
    "systemd-update-utmp.service",
];

/// Directories the boot script overlays with a tmpfs upper layer, as
/// virtme-ng-init does for its guests (`/lib` is a link into `/usr` on
/// Debian 12). dpkg writes to /usr, /var and /etc (the postinst adds a
/// group).
const OVERLAYS: &[&str] = &["/etc", "/home", "/opt", "/srv", "/usr", "/var"];

/// A path that goes on the kernel command line inside a quoted option:
/// no whitespace, no quotes.
fn plain(p: &Path) -> Result<String> {
    let s = p.to_string_lossy().to_string();
    if s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    {
        bail!(
            "the systemd guest runs {s:?} from the kernel command line: \
             the checkout's path must not contain spaces or quotes"
        );
    }
    Ok(s)
}

/// The options appended to the kernel command line (one `vng --append`
/// argument; vng splits it shell-wise and quotes each option again).
pub fn kernel_args(boot_script: &Path) -> Result<String> {
    let script = plain(boot_script)?;
    let mut generators = format!(
        "systemd.run={script} systemd.run_success_action=poweroff \
         systemd.run_failure_action=poweroff"
    );
    // `systemd-run --pipe` (the test's transient unit) talks to systemd
    // over D-Bus; nothing else pulls in the socket under
    // kernel-command-line.target (not even basic.target: the run
    // generator's service is only ordered after it).
    generators.push_str(" systemd.wants=dbus.socket");
    for m in MASKS {
        let _ = write!(generators, " systemd.mask={m}");
    }
    Ok(format!(
        "container= systemd.setenv=\"SYSTEMD_PROC_CMDLINE={generators}\""
    ))
}

/// The script `kernel-command-line.service` runs: writable overlays, the
/// results directory, then `run.sh`. Its output goes to the console
/// (`StandardOutput=journal+console`), so a step that fails shows there.
pub fn boot_script(guest_dir: &Path, run_sh: &Path) -> String {
    let g = guest_dir.display();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "#!/bin/sh\n# written by cargo xtask vm-test (--subset unit)"
    );
    let _ = writeln!(
        s,
        "say() {{ echo \"tailprobe-boot: $* (uptime $(cut -d' ' -f1 /proc/uptime) s)\"; }}"
    );
    let _ = writeln!(s, "say 'systemd reached the boot script'");
    let _ = writeln!(
        s,
        "mkdir -p /run/tailprobe-rw && mount -t tmpfs -o mode=0755 tailprobe-rw /run/tailprobe-rw \
         || {{ say 'tmpfs on /run/tailprobe-rw failed'; exit 1; }}"
    );
    let _ = writeln!(s, "for d in {}; do", OVERLAYS.join(" "));
    let _ = writeln!(
        s,
        "  n=$(echo \"$d\" | tr / _); mkdir -p /run/tailprobe-rw/$n/up /run/tailprobe-rw/$n/work\n  \
         mount -t overlay -o lowerdir=$d,upperdir=/run/tailprobe-rw/$n/up,workdir=/run/tailprobe-rw/$n/work overlay $d \
         || {{ say \"overlay on $d failed\"; exit 1; }}"
    );
    let _ = writeln!(s, "done");
    let _ = writeln!(
        s,
        "mount -t tmpfs -o mode=1777 tmp /tmp || {{ say 'tmpfs on /tmp failed'; exit 1; }}"
    );
    let _ = writeln!(
        s,
        "mount -t 9p -o trans=virtio,version=9p2000.L virtme.initmount0 '{g}' \
         || {{ say 'mounting the results directory (9p tag virtme.initmount0) on {g} failed'; exit 1; }}"
    );
    let _ = writeln!(s, "say 'file systems ready; running run.sh'");
    let _ = writeln!(s, "sh '{}' < /dev/null", run_sh.display());
    let _ = writeln!(s, "say \"run.sh exited with $?; powering off\"");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_options_travel_in_one_quoted_setenv() {
        let a = kernel_args(Path::new("/w/target/vm-test/6.1/guest/boot.sh")).expect("args");
        // PID 1 reads the real command line only with an empty $container.
        assert!(a.starts_with("container= "), "{a}");
        // Everything else is one quoted word: vng splits --append
        // shell-wise and must keep it whole.
        let words = shell_words(&a);
        assert_eq!(words.len(), 2, "{words:?}");
        let inner = words[1]
            .strip_prefix("systemd.setenv=SYSTEMD_PROC_CMDLINE=")
            .expect("setenv of SYSTEMD_PROC_CMDLINE");
        let opts: Vec<&str> = inner.split(' ').collect();
        assert_eq!(opts[0], "systemd.run=/w/target/vm-test/6.1/guest/boot.sh");
        assert!(opts.contains(&"systemd.run_success_action=poweroff"));
        assert!(opts.contains(&"systemd.run_failure_action=poweroff"));
        assert!(opts.contains(&"systemd.mask=serial-getty@ttyS0.service"));
        assert!(opts.contains(&"systemd.wants=dbus.socket"));
        assert_eq!(
            opts.iter()
                .filter(|o| o.starts_with("systemd.mask="))
                .count(),
            MASKS.len()
        );
    }

    #[test]
    fn a_path_with_spaces_is_refused() {
        let err = kernel_args(Path::new("/home/a b/guest/boot.sh")).expect_err("spaces");
        assert!(err.to_string().contains("spaces"), "{err}");
    }

    #[test]
    fn boot_script_mounts_before_it_runs_the_tests() {
        let s = boot_script(Path::new("/w/guest"), Path::new("/w/guest/run.sh"));
        let at = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle} in {s}"));
        let run = at("sh '/w/guest/run.sh'");
        assert!(at("mount -t overlay") < run);
        assert!(at("virtme.initmount0 '/w/guest'") < run);
        assert!(at("mount -t tmpfs -o mode=1777 tmp /tmp") < run);
        for d in ["/etc", "/usr", "/var"] {
            assert!(s.contains(d), "{d} not overlaid: {s}");
        }
    }

    /// Split like a POSIX shell does for the simple quoting used here
    /// (double quotes, no escapes): what vng does with `--append`.
    fn shell_words(s: &str) -> Vec<String> {
        let (mut words, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
        for c in s.chars() {
            match c {
                '"' => {
                    quoted = !quoted;
                    any = true;
                }
                c if c.is_whitespace() && !quoted => {
                    if any || !cur.is_empty() {
                        words.push(std::mem::take(&mut cur));
                    }
                    any = false;
                }
                c => cur.push(c),
            }
        }
        if any || !cur.is_empty() {
            words.push(cur);
        }
        words
    }
}
