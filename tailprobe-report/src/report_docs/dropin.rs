//! A systemd drop-in for the best measured placement. tailprobe writes it
//! as a file and never installs it: persistent configuration is
//! recommended, not applied. Pure.

use crate::{cpulist, experiment::matrix::Placed};

/// The drop-in text for `unit`, pinning to `p`; `evidence` is one line
/// saying what the measurement showed.
pub fn render(unit: &str, p: &Placed, evidence: &str) -> String {
    let cpus = cpulist::Display(&p.cpus).to_string();
    let mut s = format!(
        "# /etc/systemd/system/{unit}.d/50-tailprobe-placement.conf\n\
         # Written by `tailprobe experiment`; NOT installed. Placement: {}.\n\
         # Evidence: {evidence}\n\
         # To use it (as root), review it, then:\n\
         #   install -D -m 0644 THIS_FILE /etc/systemd/system/{unit}.d/50-tailprobe-placement.conf\n\
         #   systemctl daemon-reload && systemctl restart {unit}\n\
         # Check: systemctl show {unit} -p CPUAffinity -p AllowedCPUs -p NUMAPolicy -p NUMAMask\n\
         [Service]\n\
         # Threads start on these CPUs (sched_setaffinity at exec).\n\
         CPUAffinity={cpus}\n",
        p.why
    );
    if let Some(n) = p.mem_node {
        s.push_str(&format!(
            "# Memory allocated on the CPUs' node only (MPOL_BIND at exec).\n\
             NUMAPolicy=bind\n\
             NUMAMask={n}\n\
             # cgroup v2 cpuset: the kernel enforces it even if the server\n\
             # resets its own affinity (needs the cpuset controller on the slice).\n\
             AllowedCPUs={cpus}\n\
             AllowedMemoryNodes={n}\n"
        ));
    } else {
        s.push_str(&format!(
            "# The CPUs span nodes: no memory binding.\n\
             AllowedCPUs={cpus}\n"
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_to_one_node() {
        let p = Placed {
            cpus: vec![0, 1, 2, 3],
            mem_node: Some(1),
            why: "node1".into(),
        };
        let t = render("vllm.service", &p, "p95 -12%");
        assert!(t.contains("\n[Service]\n"));
        assert!(t.contains("\nCPUAffinity=0-3\n"));
        assert!(t.contains("\nNUMAPolicy=bind\nNUMAMask=1\n"));
        assert!(t.contains("\nAllowedCPUs=0-3\nAllowedMemoryNodes=1\n"));
        assert!(t.contains("NOT installed"));
        let q = Placed {
            cpus: vec![0, 8],
            mem_node: None,
            why: "x".into(),
        };
        assert!(!render("u.service", &q, "").contains("\nNUMAPolicy="));
    }
}
