//! The `.deb`: a staged tree packed with `dpkg-deb --build`.
//!
//! Files: `/usr/bin/tailprobe` (static), man pages in
//! `/usr/share/man/man1/`, completions where Debian's bash-completion, zsh
//! and fish look, and `/usr/share/doc/tailprobe/`. The postinst creates a
//! system group `tailprobe`, makes the binary `root:tailprobe 0750` and
//! gives it the file capabilities in [`CAPS`]: members of the group (and
//! root) can run it; nobody else gets the capabilities through it.

use std::{os::unix::fs::PermissionsExt as _, path::Path, path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use super::{run, step, Meta};

/// File capabilities `record` needs without root, and why:
/// - cap_bpf: create maps and load the programs (kernel 5.8+);
/// - cap_perfmon: load tracing programs (tracepoint, raw and BTF
///   tracepoints) and attach them; read kernel memory from them;
/// - cap_dac_read_search: read tracefs (`/sys/kernel/tracing`, mode 0700
///   root) for the events' ids and formats, and other users' `/proc/<pid>`
///   files (schedstat, status) for the kernel's own accounting;
/// - cap_sys_resource: raise RLIMIT_MEMLOCK, which kernels before 5.11
///   charge BPF maps to;
/// - cap_sys_nice: `record --priority nice:N|fifo:N` (its own reader
///   threads) and `pin`.
///
/// Not given: cap_sys_admin (BPF_ENABLE_STATS for the probes' own cost, and
/// mounting tracefs when it is not mounted; run as root or pass
/// `--no-self-stats`), cap_dac_override (writing `/sys` knobs: the commands
/// that change the node stay root-only), cap_sys_ptrace.
///
/// Each with its bit number: the postinst sets only those in the installing
/// process's bounding set, because an exec of a file whose permitted file
/// capabilities are not all in the bounding set fails with EPERM, for root
/// too (seen on this project's machines, which lack CAP_SYS_RESOURCE).
pub const CAPS: [(&str, u32); 5] = [
    ("cap_dac_read_search", 2),
    ("cap_sys_nice", 23),
    ("cap_sys_resource", 24),
    ("cap_perfmon", 38),
    ("cap_bpf", 39),
];

/// postinst: `$DPKG_ROOT` is honoured (dpkg sets it for `--root`
/// installs; tests/tests/dist_package.rs runs the script against a scratch
/// root the same way), so the group and the file are those of that root.
fn postinst() -> String {
    format!(
        r#"#!/bin/sh
# tailprobe postinst, written by cargo xtask dist (docs/dist.md).
set -e
if [ "$1" = configure ]; then
    root="${{DPKG_ROOT:-}}"
    bin="$root/usr/bin/tailprobe"
    if ! grep -q '^tailprobe:' "$root/etc/group" 2>/dev/null; then
        if [ -n "$root" ]; then
            groupadd --prefix "$root" --system tailprobe
        else
            groupadd --system tailprobe
        fi
    fi
    gid=$(awk -F: '$1 == "tailprobe" {{ print $3 }}' "$root/etc/group")
    chown "0:$gid" "$bin"
    chmod 0750 "$bin"
    # Only capabilities in the bounding set: with one outside it every exec
    # of the file fails with EPERM (a container, a restricted machine).
    bnd=$(awk '/^CapBnd:/ {{ print $2 }}' /proc/self/status)
    caps=""
    missing=""
    for c in {list}; do
        name=${{c%%:*}}
        bit=${{c##*:}}
        if [ -n "$bnd" ] && [ $(( (0x$bnd >> bit) & 1 )) -eq 1 ]; then
            caps="$caps${{caps:+,}}$name"
        else
            missing="$missing $name"
        fi
    done
    if [ -n "$missing" ]; then
        echo "tailprobe: not in this machine's capability bounding set, so not given to $bin:$missing" >&2
    fi
    if [ -n "$caps" ] && command -v setcap >/dev/null 2>&1 && setcap "$caps=ep" "$bin"; then
        echo "tailprobe: $bin may be run by root and the members of group tailprobe (usermod -aG tailprobe USER); capabilities: $caps"
    else
        echo "tailprobe: no file capabilities set on $bin (no setcap, none in the bounding set, or a file system without extended attributes): run it as root" >&2
    fi
fi
exit 0
"#,
        list = CAPS
            .iter()
            .map(|(n, b)| format!("{n}:{b}"))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn control(meta: &Meta, installed_kib: u64) -> String {
    // Debian versions: a git build is version~gitHASH (sorts before the
    // release of the same number).
    format!(
        "Package: tailprobe\n\
         Version: {version}\n\
         Architecture: amd64\n\
         Maintainer: tailprobe developers <tailprobe@localhost>\n\
         Installed-Size: {installed_kib}\n\
         Depends: libcap2-bin, passwd\n\
         Section: admin\n\
         Priority: optional\n\
         Description: explains the tail latency of an inference server with eBPF\n \
         tailprobe watches what the kernel does to every thread of a server (run-queue\n \
         waits and who preempted it, migrations, IRQ and softirq time, page faults,\n \
         NUMA balancing) and lines it up with request latencies. One static binary;\n \
         needs a kernel with BTF (/sys/kernel/btf/vmlinux). Commit {commit}.\n",
        version = meta.version,
        commit = meta.commit,
    )
}

fn copy_mode(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(d) = to.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn du_kib(dir: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        let Ok(m) = std::fs::symlink_metadata(p) else {
            return 0;
        };
        if m.is_dir() {
            std::fs::read_dir(p)
                .map(|rd| rd.filter_map(|e| e.ok()).map(|e| walk(&e.path())).sum())
                .unwrap_or(0)
        } else {
            m.len().div_ceil(1024)
        }
    }
    walk(dir)
}

/// Stage `tree` (the tarball's tree) at Debian's places and pack it.
pub fn build(meta: &Meta, tree: &Path, work: &Path, out: &Path) -> Result<PathBuf> {
    let root = work.join("deb-root");
    let _ = std::fs::remove_dir_all(&root);
    copy_mode(
        &tree.join("bin/tailprobe"),
        &root.join("usr/bin/tailprobe"),
        0o755,
    )?;
    for e in std::fs::read_dir(tree.join("man/man1"))? {
        let p = e?.path();
        let name = p.file_name().context("man page name")?;
        copy_mode(&p, &root.join("usr/share/man/man1").join(name), 0o644)?;
    }
    let c = tree.join("completions");
    copy_mode(
        &c.join("tailprobe.bash"),
        &root.join("usr/share/bash-completion/completions/tailprobe"),
        0o644,
    )?;
    copy_mode(
        &c.join("_tailprobe"),
        &root.join("usr/share/zsh/vendor-completions/_tailprobe"),
        0o644,
    )?;
    copy_mode(
        &c.join("tailprobe.fish"),
        &root.join("usr/share/fish/vendor_completions.d/tailprobe.fish"),
        0o644,
    )?;
    let doc = root.join("usr/share/doc/tailprobe");
    for f in ["README.md", "dist.md", "security.md"] {
        copy_mode(&tree.join(f), &doc.join(f), 0o644)?;
    }
    std::fs::write(
        doc.join("copyright"),
        "tailprobe\nLicense: MIT OR Apache-2.0 (the workspace's license field)\n",
    )?;
    let installed = du_kib(&root);
    let debian = root.join("DEBIAN");
    std::fs::create_dir_all(&debian)?;
    std::fs::write(debian.join("control"), control(meta, installed))?;
    std::fs::write(debian.join("postinst"), postinst())?;
    std::fs::set_permissions(
        debian.join("postinst"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    // Every directory 0755 (umask may differ): dpkg-deb copies modes.
    set_dir_modes(&root)?;
    let deb = out.join(format!("tailprobe_{}_amd64.deb", meta.version));
    step(&format!("writing {}", deb.display()));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&root)
        .arg(&deb)
        .env("SOURCE_DATE_EPOCH", meta.epoch.to_string()))?;
    Ok(deb)
}

fn set_dir_modes(dir: &Path) -> Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            set_dir_modes(&p)?;
        }
    }
    Ok(())
}
