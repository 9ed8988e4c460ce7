//! topo, governor and IRQ placement on fixture trees shaped like real
//! machines (tests/fixtures/make_fixtures.py says what each one is).

mod node_support;

use std::process::Command;

use node_support::*;

fn topo_json(name: &str) -> serde_json::Value {
    let f = fixture(name);
    let o = Command::new(bin())
        .args(["topo", "--json", "--sys-root"])
        .arg(f.join("sys"))
        .arg("--proc-root")
        .arg(f.join("proc"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    json(&o)
}

#[test]
fn two_socket_gpu_node_topology() {
    let v = topo_json("node-2s-8gpu-intel");
    assert_eq!(v["cpus_online"], "0-63");
    assert_eq!(v["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(v["nodes"][1]["cpus"], "16-31,48-63");
    assert_eq!(v["smt_groups"].as_array().unwrap().len(), 32);
    assert_eq!(v["smt_groups"][0], "0,32");
    assert_eq!(v["llc_groups"].as_array().unwrap().len(), 2);
    let acc = v["accelerators"].as_array().unwrap();
    assert_eq!(acc.len(), 8, "8 GPUs, NVSwitches excluded");
    assert_eq!(acc.iter().filter(|a| a["numa_node"] == 0).count(), 4);
    assert_eq!(acc.iter().filter(|a| a["numa_node"] == 1).count(), 4);
    assert_eq!(acc[4]["bdf"], "0000:9a:00.0");
    assert_eq!(acc[4]["local_cpus"], "16-31,48-63");
    // A 4/4 tie goes to the lowest node.
    assert_eq!(v["device_local_node"], 0);
    let nics = v["nics"].as_array().unwrap();
    assert_eq!(nics.len(), 2, "lo has no device and is skipped");
    assert_eq!(nics[0]["name"], "ens1f0np0");
    assert_eq!(nics[0]["bdf"], "0000:29:00.0");
    assert_eq!(nics[0]["irqs"].as_array().unwrap().len(), 8);
    assert_eq!(nics[0]["irqs"][3]["effective"], "3");
    assert_eq!(nics[1]["numa_node"], 1);
    assert_eq!(v["cpufreq"]["driver"], "intel_pstate");
    assert_eq!(v["cpufreq"]["pstate_mode"], "active");
    assert_eq!(v["cpufreq"]["policies"].as_array().unwrap().len(), 64);
    assert!(v["cpufreq_note"].as_str().unwrap().contains("active mode"));
    assert_eq!(v["thp"]["enabled"], "always");
    assert_eq!(v["numa_balancing"], 1);
    assert_eq!(v["nohz_full"], "", "(null) means none");
}

#[test]
fn acpi_node_and_vm() {
    let v = topo_json("node-acpi-schedutil");
    assert_eq!(v["cpufreq"]["driver"], "acpi-cpufreq");
    assert_eq!(v["cpufreq"]["policies"][0]["governor"], "schedutil");
    assert_eq!(v["accelerators"][0]["vendor_name"], "AMD");
    assert!(
        v["accelerators"][0]["numa_node"].is_null(),
        "-1 is unknown, not node 0"
    );
    assert!(v["device_local_node"].is_null());
    let v = topo_json("vm-no-cpufreq");
    assert!(v["cpufreq"].is_null());
    assert!(v["cpufreq_note"]
        .as_str()
        .unwrap()
        .starts_with("not available on this node"));
    assert_eq!(v["nics"][0]["irqs"].as_array().unwrap().len(), 2);
}

#[test]
fn markdown_block() {
    let f = fixture("node-2s-8gpu-intel");
    let o = Command::new(bin())
        .args(["topo", "--markdown", "--sys-root"])
        .arg(f.join("sys"))
        .arg("--proc-root")
        .arg(f.join("proc"))
        .output()
        .unwrap();
    let (out, _) = text(&o);
    assert!(out.starts_with("## Node topology\n"), "{out}");
    assert!(
        out.contains("| node1 | CPUs 16-31,48-63, 503.7 GiB |"),
        "{out}"
    );
    assert!(
        out.contains("| 0000:db:00.0 | NVIDIA accelerator | 1 | 16-31,48-63 |"),
        "{out}"
    );
    assert!(
        out.contains("| cpufreq | intel_pstate (active), governor powersave |"),
        "{out}"
    );
}

fn governor(tree: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(["governor", "--sys-root"])
        .arg(tree)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn governor_on_fixtures() {
    // VM: plain "not available", exit code 4.
    let o = governor(&fixture("vm-no-cpufreq/sys"), &["get"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(text(&o).1.contains("not available on this node"));
    let o = governor(&fixture("vm-no-cpufreq/sys"), &["set", "performance"]);
    assert_eq!(o.status.code(), Some(4));
    // intel_pstate active: an unknown name lists the two that exist.
    let o = governor(&fixture("node-2s-8gpu-intel/sys"), &["set", "schedutil"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("unknown governor \"schedutil\""), "{err}");
    assert!(err.contains("offers performance, powersave"), "{err}");
    assert!(err.contains("active mode"), "{err}");
    let o = governor(&fixture("node-2s-8gpu-intel/sys"), &["get", "--json"]);
    let v = json(&o);
    assert_eq!(
        v["available"],
        serde_json::json!(["performance", "powersave"])
    );
    // acpi-cpufreq: set held, then `governor restore`.
    let s = Scratch::new("gov-acpi");
    let tree = s.path().join("sys");
    copy_tree(&fixture("node-acpi-schedutil/sys"), &tree);
    let original = snapshot(&tree);
    let j = s.path().join("j.json");
    let js = j.to_str().unwrap();
    let o = governor(&tree, &["--journal", js, "set", "performance"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    for c in 0..8 {
        let g = std::fs::read_to_string(tree.join(format!(
            "devices/system/cpu/cpufreq/policy{c}/scaling_governor"
        )))
        .unwrap();
        assert_eq!(g, "performance\n");
    }
    let o = governor(&tree, &["--journal", js, "restore"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert_eq!(snapshot(&tree), original);
    // With a command: set for its lifetime, restored after, its exit code kept.
    let o = governor(&tree, &["--journal", js, "set", "powersave", "--", "sh", "-c", "grep -q powersave devices/system/cpu/cpufreq/policy3/scaling_governor 2>/dev/null; exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(snapshot(&tree), original);
}

#[test]
fn irq_move_off_on_fixture_moves_movable_reports_managed_and_restores() {
    let s = Scratch::new("irq-fixture");
    copy_tree(&fixture("node-2s-8gpu-intel"), s.path());
    let original = snapshot(s.path());
    let j = s.path().join("j.json");
    let o = Command::new(bin())
        .args(["irq", "--sys-root"])
        .arg(s.path().join("sys"))
        .arg("--proc-root")
        .arg(s.path().join("proc"))
        .arg("--journal")
        .arg(&j)
        .args([
            "watch",
            "--duration",
            "100ms",
            "--cpus",
            "16-23",
            "--irq-move-off",
            "16-31,48-63",
            "--json",
        ])
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let v = json(&o);
    let moved: Vec<u64> = v["moved"]["moved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[0].as_u64().unwrap())
        .collect();
    assert_eq!(moved, vec![200, 201, 202, 203], "the node1 NIC IRQs move");
    assert_eq!(v["moved"]["moved"][0][2], "0-15,32-47");
    let unmovable: Vec<u64> = v["moved"]["unmovable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[0].as_u64().unwrap())
        .collect();
    assert_eq!(
        unmovable,
        vec![300, 301, 302, 303],
        "managed NVMe IRQs are reported, not errors"
    );
    assert!(err.contains("IRQ 200: 16-31,48-63 -> 0-15,32-47"), "{err}");
    // Restored at the end of the run; the journal is gone.
    let after: Vec<_> = snapshot(s.path())
        .into_iter()
        .filter(|(p, _)| p.to_str() != Some("j.json.lock"))
        .collect();
    assert_eq!(after, original);
    // An absent IRQ is a clear error.
    let o = Command::new(bin())
        .args(["irq", "--proc-root"])
        .arg(s.path().join("proc"))
        .args(["show", "--irq", "999"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("IRQ 999 does not exist"),
        "{}",
        text(&o).1
    );
}
