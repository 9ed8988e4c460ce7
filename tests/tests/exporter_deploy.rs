//! The deploy/ files are checked with the tools that consume them, offline:
//! `promtool` (rules, rule unit tests, scrape configuration),
//! `systemd-analyze verify` (the unit), `kubernetes-validate` (the
//! DaemonSet, strict, against its pinned schemas). Each check is also run
//! on a broken copy, so a checker that accepts anything fails the test.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use tailprobe_tests::skip_fixable;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// (success, stdout + stderr)
fn run(cmd: &mut Command) -> (bool, String) {
    let o = cmd.output().expect("run checker");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tp-deploy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn prometheus_rules_config_and_rule_tests() {
    if !have("promtool", "--version") {
        skip_fixable(
            "prometheus_rules_config_and_rule_tests",
            "promtool missing (Debian package prometheus; cargo xtask setup)",
        );
        return;
    }
    let dir = deploy().join("prometheus");
    let (ok, out) = run(Command::new("promtool").current_dir(&dir).args([
        "check",
        "rules",
        "tailprobe-rules.yml",
    ]));
    assert!(ok && out.contains("SUCCESS: 9 rules found"), "{out}");
    let (ok, out) = run(Command::new("promtool").current_dir(&dir).args([
        "test",
        "rules",
        "tailprobe-rules.test.yml",
    ]));
    assert!(ok && out.contains("SUCCESS"), "{out}");
    let (ok, out) =
        run(Command::new("promtool")
            .current_dir(&dir)
            .args(["check", "config", "prometheus.yml"]));
    assert!(ok, "{out}");
    // A threshold changed in a copy of the rules: the rule tests fail.
    let d = scratch("rules");
    let rules = std::fs::read_to_string(dir.join("tailprobe-rules.yml")).unwrap();
    let broken = rules.replace("> 0.010", "> 0.020");
    assert_ne!(broken, rules);
    std::fs::write(d.join("tailprobe-rules.yml"), broken).unwrap();
    std::fs::copy(
        dir.join("tailprobe-rules.test.yml"),
        d.join("tailprobe-rules.test.yml"),
    )
    .unwrap();
    let (ok, out) = run(Command::new("promtool").current_dir(&d).args([
        "test",
        "rules",
        "tailprobe-rules.test.yml",
    ]));
    assert!(!ok, "rule tests passed on a changed threshold: {out}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn systemd_unit_verifies() {
    if !have("systemd-analyze", "--version") {
        skip_fixable("systemd_unit_verifies", "systemd-analyze missing");
        return;
    }
    // The unit names /usr/local/bin/tailprobe; verify checks that the
    // command exists, so the copy names the binary built here.
    let bin = tailprobe_tests::tailprobe_bin();
    let unit =
        std::fs::read_to_string(deploy().join("systemd/tailprobe-exporter.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/tailprobe exporter"));
    let d = scratch("unit");
    let path = d.join("tailprobe-exporter.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/tailprobe", &bin.to_string_lossy()),
    )
    .unwrap();
    let (ok, out) = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    assert!(ok && out.trim().is_empty(), "systemd-analyze verify: {out}");
    // A misspelt directive is reported.
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/tailprobe", &bin.to_string_lossy())
            .replace("NoNewPrivileges=", "NoNewPrivilege="),
    )
    .unwrap();
    let (_, out) = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    assert!(out.contains("NoNewPrivilege"), "typo not reported: {out}");
    // Capabilities, not a blanket root: the bounding set is the list.
    assert!(unit.contains("CapabilityBoundingSet=CAP_BPF CAP_PERFMON"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn kubernetes_daemonset_validates_offline() {
    if !have("kubernetes-validate", "--version") {
        skip_fixable(
            "kubernetes_daemonset_validates_offline",
            "kubernetes-validate missing (PyPI, pinned; cargo xtask setup)",
        );
        return;
    }
    let path = deploy().join("kubernetes/daemonset.yaml");
    let (ok, out) = run(Command::new("kubernetes-validate")
        .arg("--strict")
        .arg(&path));
    assert!(ok, "{out}");
    assert!(
        out.contains("passed for resource daemonset/tailprobe-exporter"),
        "{out}"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("privileged: false"));
    assert!(text.contains("\"BPF\", \"PERFMON\""));
    assert!(!text.contains("privileged: true"));
    // An unknown field is refused in strict mode.
    let d = scratch("k8s");
    let bad = d.join("daemonset.yaml");
    std::fs::write(&bad, text.replace("hostPID: true", "hostPid: true")).unwrap();
    let (ok, out) = run(Command::new("kubernetes-validate")
        .arg("--strict")
        .arg(&bad));
    assert!(!ok, "a misspelt field passed: {out}");
    let _ = std::fs::remove_dir_all(&d);
}
