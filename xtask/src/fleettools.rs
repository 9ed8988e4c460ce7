//! Tools the exporter's tests and the deploy checks use, installed
//! idempotently: Debian's `prometheus` package (the server and `promtool`)
//! and the PyPI package `kubernetes-validate` (offline Kubernetes schema
//! validation of deploy/kubernetes/). Two quick checks when both are there.

use std::process::Command;

use anyhow::{bail, Result};

/// Pinned so the schemas the DaemonSet is checked against do not change
/// under the tests.
pub const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

fn has_prometheus() -> bool {
    ["promtool", "prometheus"].iter().all(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn has_kubernetes_validate() -> bool {
    Command::new("python3")
        .args(["-m", "pip", "show", "-q", "kubernetes-validate"])
        .output()
        .is_ok_and(|o| o.status.success())
        && Command::new("kubernetes-validate")
            .arg("--version")
            .output()
            .is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout).contains(KUBERNETES_VALIDATE_VERSION)
                    || String::from_utf8_lossy(&o.stderr).contains(KUBERNETES_VALIDATE_VERSION)
            })
}

/// Returns true when everything was already installed.
pub fn ensure(check_only: bool) -> Result<bool> {
    let prom = has_prometheus();
    let kv = has_kubernetes_validate();
    if prom && kv {
        return Ok(true);
    }
    if check_only {
        let mut missing = Vec::new();
        if !prom {
            missing.push("Debian package prometheus (promtool)".to_string());
        }
        if !kv {
            missing.push(format!(
                "python3 package kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"
            ));
        }
        bail!("missing: {}; run `cargo xtask setup`", missing.join(", "));
    }
    if !prom {
        eprintln!("xtask setup: installing Debian's prometheus package (server and promtool)");
        let st = Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "prometheus"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        if !st.is_ok_and(|s| s.success()) || !has_prometheus() {
            bail!(
                "apt-get could not install prometheus (the exporter tests run a real \
                 Prometheus server and promtool): run `apt-get update` and try again"
            );
        }
    }
    if !kv {
        eprintln!(
            "xtask setup: installing python3 package \
             kubernetes-validate=={KUBERNETES_VALIDATE_VERSION} (pip)"
        );
        let st = Command::new("python3")
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .arg(format!(
                "kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"
            ))
            .env("PIP_ROOT_USER_ACTION", "ignore")
            .status();
        if !st.is_ok_and(|s| s.success()) || !has_kubernetes_validate() {
            bail!(
                "pip could not install kubernetes-validate=={KUBERNETES_VALIDATE_VERSION} \
                 (validates deploy/kubernetes/ offline): check that PyPI is reachable"
            );
        }
    }
    Ok(false)
}
