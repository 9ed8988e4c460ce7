//! Detector 7b: CPU frequency scaling and deep idle states on the target's
//! CPUs.
//!
//! Rule: on the CPUs the target ran on, the cpufreq governor is not
//! `performance`, or idle states with an advertised exit latency of at least
//! [`DEEP_EXIT_US`] are enabled; and the target wakes up at least
//! [`MIN_WAKEUPS_PER_S`] times a second (a request-driven, bursty thread that
//! meets a slow or sleeping core at every wakeup). Confidence is `low` when
//! only one of the two holds and `medium` when both do: the effect on
//! latency is not measured here (C-state exit on wakeup would need the
//! `power:cpu_idle` tracepoint, not used yet), so the finding carries no lost
//! time and ranks after the measured ones. Without cpufreq and cpuidle (most
//! VMs) the detector says "not available here".

use std::path::Path;

use super::finding::{Confidence, Finding};
use crate::node::{fsx, governor::CpuFreq, Roots};

pub const DEEP_EXIT_US: u64 = 100;
pub const MIN_WAKEUPS_PER_S: f64 = 100.0;

pub const RULE: &str = "on the target's CPUs: governor not `performance` or idle states with \
     exit latency >= 100 us enabled, while the target wakes >= 100 times/s";

/// An idle state of one CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleState {
    pub cpu: u32,
    pub name: String,
    pub exit_us: u64,
    pub disabled: bool,
}

/// cpuidle states of the given CPUs, from sysfs under `roots`.
pub fn read_idle_states(roots: &Roots, cpus: &[u32]) -> Vec<IdleState> {
    let mut out = Vec::new();
    for cpu in cpus {
        let base = roots
            .sys
            .join(format!("devices/system/cpu/cpu{cpu}/cpuidle"));
        for s in fsx::numbered_entries(&base, "state") {
            let d = base.join(format!("state{s}"));
            let read = |f: &str| fsx::read_opt(&Path::new(&d).join(f));
            let Some(exit_us) = read("latency").and_then(|v| v.parse().ok()) else {
                continue;
            };
            out.push(IdleState {
                cpu: *cpu,
                name: read("name").unwrap_or_default(),
                exit_us,
                disabled: read("disable").is_some_and(|v| v == "1"),
            });
        }
    }
    out
}

pub struct Input<'a> {
    /// cpufreq, or why it is not there.
    pub freq: Result<&'a CpuFreq, &'a str>,
    pub idle: &'a [IdleState],
    /// CPUs the target ran on.
    pub cpus: &'a [u32],
    pub wakeups: u64,
    pub duration_ns: u64,
}

/// `Err(reason)` when neither cpufreq nor cpuidle is visible here.
pub fn detect(inp: &Input) -> Result<Option<Finding>, String> {
    if inp.freq.is_err() && inp.idle.is_empty() {
        return Err(format!(
            "no cpufreq ({}) and no cpuidle states: frequency and idle states are not visible \
             here (a VM?)",
            inp.freq.err().unwrap_or_default()
        ));
    }
    let in_target = |list: &str| {
        crate::cpulist::parse(list)
            .map(|v| v.iter().any(|c| inp.cpus.contains(c)))
            .unwrap_or(true)
    };
    let slow_governors: Vec<(String, String)> = match inp.freq {
        Ok(f) => f
            .policies
            .iter()
            .filter(|p| in_target(&p.cpus) && p.governor != "performance")
            .map(|p| (p.cpus.clone(), p.governor.clone()))
            .collect(),
        Err(_) => Vec::new(),
    };
    let deep: Vec<&IdleState> = inp
        .idle
        .iter()
        .filter(|s| !s.disabled && s.exit_us >= DEEP_EXIT_US && inp.cpus.contains(&s.cpu))
        .collect();
    let per_s = inp.wakeups as f64 / (inp.duration_ns.max(1) as f64 / 1e9);
    if (slow_governors.is_empty() && deep.is_empty()) || per_s < MIN_WAKEUPS_PER_S {
        return Ok(None);
    }
    let both = !slow_governors.is_empty() && !deep.is_empty();
    let mut what = Vec::new();
    if let Some((_, g)) = slow_governors.first() {
        what.push(format!("governor `{g}`"));
    }
    if let Some(max) = deep.iter().map(|s| s.exit_us).max() {
        what.push(format!("idle states with exit latency up to {max} us"));
    }
    let mut f = Finding {
        detector: "frequency_idle",
        what: format!(
            "the target's CPUs save power between its wakeups: {}",
            what.join(" and ")
        ),
        confidence: if both {
            Confidence::Medium
        } else {
            Confidence::Low
        },
        impact_ns: 0,
        evidence: Vec::new(),
        advice: "for latency-critical serving CPUs: governor `performance` (tailprobe governor), \
                 and cap deep idle states (hold /dev/cpu_dma_latency open, or disable states with \
                 exit latency above your budget); then measure p99 again, since the saving costs \
                 power"
            .into(),
    };
    for (cpus, g) in &slow_governors {
        f.evidence(
            "governor_not_performance",
            1.0,
            format!("CPUs {cpus}: cpufreq governor `{g}`"),
        );
    }
    if let Some(max) = deep.iter().map(|s| s.exit_us).max() {
        let names: std::collections::BTreeSet<&str> =
            deep.iter().map(|s| s.name.as_str()).collect();
        f.evidence(
            "deep_idle_exit_us",
            max as f64,
            format!(
                "enabled idle states with exit latency >= {DEEP_EXIT_US} us: {} (up to {max} us)",
                names.into_iter().collect::<Vec<_>>().join(", ")
            ),
        );
    }
    f.evidence(
        "wakeups_per_s",
        per_s,
        format!(
            "the target woke {per_s:.0} times/s; the latency cost per wakeup is not measured \
             here (power:cpu_idle not used): ranked after the measured findings"
        ),
    );
    Ok(Some(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::governor::Policy;

    fn freq(governor: &str) -> CpuFreq {
        CpuFreq {
            driver: "acpi-cpufreq".into(),
            pstate_mode: None,
            policies: vec![Policy {
                name: "policy0".into(),
                dir: Default::default(),
                cpus: "0-3".into(),
                driver: "acpi-cpufreq".into(),
                governor: governor.into(),
                available: vec!["performance".into(), "schedutil".into()],
                epp: None,
                cur_khz: None,
            }],
        }
    }

    fn state(cpu: u32, name: &str, exit_us: u64, disabled: bool) -> IdleState {
        IdleState {
            cpu,
            name: name.into(),
            exit_us,
            disabled,
        }
    }

    const TEN_S: u64 = 10_000_000_000;

    #[test]
    fn governor_and_deep_states_with_a_bursty_target() {
        let f = freq("schedutil");
        let idle = [state(0, "C1", 2, false), state(0, "C6", 170, false)];
        let got = detect(&Input {
            freq: Ok(&f),
            idle: &idle,
            cpus: &[0],
            wakeups: 5000,
            duration_ns: TEN_S,
        })
        .expect("applies")
        .expect("fires");
        assert_eq!(got.confidence, Confidence::Medium);
        assert!(
            got.what.contains("schedutil") && got.what.contains("170 us"),
            "{}",
            got.what
        );
    }

    #[test]
    fn quiet_when_tuned_or_not_bursty_and_na_on_a_vm() {
        let perf = freq("performance");
        let shallow = [state(0, "C1", 2, false), state(0, "C6", 170, true)];
        let i = Input {
            freq: Ok(&perf),
            idle: &shallow,
            cpus: &[0],
            wakeups: 5000,
            duration_ns: TEN_S,
        };
        assert!(detect(&i).expect("applies").is_none());
        let slow = freq("powersave");
        let i = Input {
            freq: Ok(&slow),
            idle: &[],
            cpus: &[0],
            wakeups: 50,
            duration_ns: TEN_S,
        };
        assert!(detect(&i).expect("applies").is_none(), "5 wakeups/s");
        let i = Input {
            freq: Err("no cpufreq policies"),
            idle: &[],
            cpus: &[0],
            wakeups: 5000,
            duration_ns: TEN_S,
        };
        assert!(detect(&i).unwrap_err().contains("not visible here"));
    }

    #[test]
    fn reads_idle_states_from_a_fixture_tree() {
        let dir = std::env::temp_dir().join(format!("tp-idle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (s, name, lat, dis) in [(0, "POLL", "0", "0"), (1, "C6", "133", "1")] {
            let d = dir.join(format!("sys/devices/system/cpu/cpu1/cpuidle/state{s}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
            std::fs::write(d.join("latency"), format!("{lat}\n")).unwrap();
            std::fs::write(d.join("disable"), format!("{dis}\n")).unwrap();
        }
        let roots = Roots::new(dir.join("sys"), dir.join("proc"));
        let got = read_idle_states(&roots, &[0, 1]);
        assert_eq!(got, [state(1, "POLL", 0, false), state(1, "C6", 133, true)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
