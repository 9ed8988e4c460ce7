//! What the VM lane needs on the host, installed idempotently: QEMU, kmod
//! (depmod), a static busybox (virtme-ng's initramfs), numactl, and
//! virtme-ng (`vng`) from PyPI.

use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::cmd::output;

fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn apt_install(pkgs: &[&str]) -> Result<()> {
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if install() {
        return Ok(());
    }
    eprintln!("vm-test: apt-get update, then retrying");
    let st = Command::new("apt-get")
        .args(["update", "-q"])
        .status()
        .context("apt-get update")?;
    if !st.success() || !install() {
        bail!(
            "apt-get install -y {} failed: check that Debian's package servers are reachable",
            pkgs.join(" ")
        );
    }
    Ok(())
}

/// `vng --version`, installing what is missing first.
pub fn ensure() -> Result<String> {
    let mut missing = Vec::new();
    if !have("qemu-system-x86_64", "--version") {
        missing.push("qemu-system-x86");
    }
    if !have("depmod", "--version") {
        missing.push("kmod");
    }
    if !have("busybox", "--help") {
        missing.push("busybox-static");
    }
    if !have("numactl", "--show") {
        missing.push("numactl");
    }
    if !missing.is_empty() {
        eprintln!("vm-test: installing {} (apt-get)", missing.join(" "));
        apt_install(&missing)?;
    }
    if let Some(v) = output("vng", &["--version"]) {
        return Ok(v);
    }
    eprintln!("vm-test: installing virtme-ng (pip)");
    let pip = if have("pip", "--version") {
        "pip"
    } else {
        "pip3"
    };
    let st = Command::new(pip)
        .args(["install", "-q", "virtme-ng"])
        .status()
        .with_context(|| format!("starting {pip}"))?;
    if !st.success() {
        bail!("`{pip} install virtme-ng` failed: PyPI must be reachable");
    }
    // pyenv installs console scripts behind shims that need a rehash.
    let _ = Command::new("pyenv").arg("rehash").status();
    output("vng", &["--version"])
        .context("virtme-ng installed but `vng` is not on PATH: add pip's script directory to PATH")
}
