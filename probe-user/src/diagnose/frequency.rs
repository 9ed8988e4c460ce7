//! Detector 7b: CPU frequency scaling and deep idle states on the target's
//! CPUs.
//!
//! Rule: on the CPUs the target ran on, the cpufreq governor is not
//! `performance`, or idle states with an advertised exit latency of at least
//! [`DEEP_EXIT_US`] are enabled; and the target wakes up at least
//! [`MIN_WAKEUPS_PER_S`] times a second (a request-driven, bursty thread that
//! meets a slow or sleeping core at every wakeup). Confidence is `low` when
//! only one of the two holds and `medium` when both do. Where the
//! `cpu_idle` program ran (`power:cpu_idle`, `tailprobe diagnose`), the deep
//! states count only when the target's CPUs actually entered them: their
//! exits per second and residency are measured, and exits x the advertised
//! exit latency bounds the wake-up delay they add (an estimate: the exit
//! itself is not timed). The lost time is still not measured, so the finding
//! carries none and ranks after the measured ones. Without cpufreq and
//! without an idle state that sleeps (no cpuidle, or only `POLL`: most VMs,
//! the QEMU guests of `cargo xtask vm-test`) the detector says "not
//! available here".

use std::path::Path;

use super::finding::{Confidence, Finding, Measure};
use crate::node::{fsx, governor::CpuFreq, Roots};

pub const DEEP_EXIT_US: u64 = 100;
pub const MIN_WAKEUPS_PER_S: f64 = 100.0;

pub const RULE: &str = "on the target's CPUs: governor not `performance` or idle states with \
     exit latency >= 100 us enabled, while the target wakes >= 100 times/s";

/// An idle state of one CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleState {
    pub cpu: u32,
    /// The cpuidle state number (`stateN`).
    pub state: u32,
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
                state: s,
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
    /// Idle periods measured on the target's CPUs (`cpu_idle`); None when
    /// the program was not attached.
    pub idle_use: Option<&'a crate::report::CpuIdleReport>,
}

/// `Err(reason)` when neither cpufreq nor a real idle state is visible
/// here: no cpufreq, and cpuidle absent or only its polling state (`POLL`,
/// exit latency 0: the CPU spins, it does not sleep), as in a QEMU guest.
/// The cpufreq policies of the target's CPUs whose governor is not
/// `performance`: (CPUs, governor).
fn slow_governors(inp: &Input) -> Vec<(String, String)> {
    let in_target = |list: &str| {
        crate::cpulist::parse(list)
            .map(|v| v.iter().any(|c| inp.cpus.contains(c)))
            .unwrap_or(true)
    };
    match inp.freq {
        Ok(f) => f
            .policies
            .iter()
            .filter(|p| in_target(&p.cpus) && p.governor != "performance")
            .map(|p| (p.cpus.clone(), p.governor.clone()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Enabled idle states of the target's CPUs with an exit latency of
/// [`DEEP_EXIT_US`] or more that were entered (when that was measured).
fn deep_states<'a>(inp: &'a Input) -> Vec<&'a IdleState> {
    inp.idle
        .iter()
        .filter(|s| !s.disabled && s.exit_us >= DEEP_EXIT_US && inp.cpus.contains(&s.cpu))
        // Measured: only the states the target's CPUs entered.
        .filter(|s| exits_of(inp, s.state).is_none_or(|(n, _)| n > 0))
        .collect()
}

fn wakeups_per_s(inp: &Input) -> f64 {
    inp.wakeups as f64 / (inp.duration_ns.max(1) as f64 / 1e9)
}

/// The rule's numbers, whether it fires or not (none when neither
/// cpufreq nor a sleeping idle state is visible).
pub fn measured(inp: &Input) -> Vec<Measure> {
    if visible(inp).is_err() {
        return Vec::new();
    }
    vec![
        Measure::at_least(
            "slow_governor_policies",
            slow_governors(inp).len() as f64,
            1.0,
            "",
        ),
        Measure::at_least(
            "deep_idle_states_used",
            deep_states(inp).len() as f64,
            1.0,
            "",
        ),
        Measure::at_least(
            "target_wakeups_per_s",
            wakeups_per_s(inp),
            MIN_WAKEUPS_PER_S,
            "/s",
        ),
    ]
}

pub fn detect(inp: &Input) -> Result<Option<Finding>, String> {
    visible(inp)?;
    let slow_governors = slow_governors(inp);
    let deep = deep_states(inp);
    let per_s = wakeups_per_s(inp);
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
    if inp.idle_use.is_some() {
        deep_exit_evidence(&mut f, inp, &deep);
    }
    let measured = if inp.idle_use.is_some() {
        "deep-idle exits measured, their cost estimated"
    } else {
        "the latency cost per wakeup is not measured here (power:cpu_idle not attached)"
    };
    f.evidence(
        "wakeups_per_s",
        per_s,
        format!(
            "the target woke {per_s:.0} times/s; {measured}: ranked after the measured findings"
        ),
    );
    Ok(Some(f))
}

/// `Err(reason)` when neither cpufreq nor a real idle state is visible.
fn visible(inp: &Input) -> Result<(), String> {
    if let Err(why) = inp.freq {
        let idle = if inp.idle.is_empty() {
            "no cpuidle states".to_string()
        } else if inp.idle.iter().all(|s| s.exit_us == 0) {
            let names: std::collections::BTreeSet<&str> =
                inp.idle.iter().map(|s| s.name.as_str()).collect();
            format!(
                "cpuidle has only polling states ({}, exit latency 0 us)",
                names.into_iter().collect::<Vec<_>>().join(", ")
            )
        } else {
            String::new()
        };
        if !idle.is_empty() {
            return Err(format!(
                "no cpufreq ({why}) and {idle}: frequency and idle states are not visible here \
                 (a VM?)"
            ));
        }
    }
    Ok(())
}

/// Measured exits from `state` on the target's CPUs and the time spent in
/// it, summed: (exits, residency ns); None when not measured.
fn exits_of(inp: &Input, state: u32) -> Option<(u64, u64)> {
    inp.idle_use.map(|u| {
        u.states
            .iter()
            .filter(|x| x.state == state)
            .map(|x| (x.exits, x.residency_ns))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    })
}

/// The measured exits from the deep states, and the wake-up delay their
/// advertised exit latency bounds.
fn deep_exit_evidence(f: &mut Finding, inp: &Input, deep: &[&IdleState]) {
    // Deep states by number (one entry per state, any CPU's latency).
    let mut by_state: std::collections::BTreeMap<u32, (&str, u64)> = Default::default();
    for s in deep {
        by_state.insert(s.state, (s.name.as_str(), s.exit_us));
    }
    let secs = inp.duration_ns.max(1) as f64 / 1e9;
    let (mut exits, mut bound_us, mut resid_ns) = (0u64, 0u64, 0u64);
    for (state, (_, exit_us)) in &by_state {
        let (n, ns) = exits_of(inp, *state).unwrap_or((0, 0));
        exits += n;
        resid_ns += ns;
        bound_us += n * exit_us;
    }
    if exits > 0 {
        f.evidence(
            "deep_idle_exits_per_s",
            exits as f64 / secs,
            format!(
                "measured (power:cpu_idle): the target's CPUs left those states {:.0} times/s \
                 after {:.1} ms in them in all; at the advertised exit latency that is up to \
                 {:.1} ms of wake-up delay (an estimate: the exit is not timed)",
                exits as f64 / secs,
                resid_ns as f64 / 1e6,
                bound_us as f64 / 1e3
            ),
        );
    }
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
            state: if name == "POLL" || name == "C1" { 0 } else { 1 },
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
            idle_use: None,
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
            idle_use: None,
        };
        assert!(detect(&i).expect("applies").is_none());
        let slow = freq("powersave");
        let i = Input {
            freq: Ok(&slow),
            idle: &[],
            cpus: &[0],
            wakeups: 50,
            duration_ns: TEN_S,
            idle_use: None,
        };
        assert!(detect(&i).expect("applies").is_none(), "5 wakeups/s");
        let i = Input {
            freq: Err("no cpufreq policies"),
            idle: &[],
            cpus: &[0],
            wakeups: 5000,
            duration_ns: TEN_S,
            idle_use: None,
        };
        assert!(detect(&i).unwrap_err().contains("not visible here"));
        // A QEMU (TCG) guest: cpuidle with its polling state only.
        let poll = [state(0, "POLL", 0, false), state(1, "POLL", 0, false)];
        let i = Input {
            freq: Err("no cpufreq policies"),
            idle: &poll,
            cpus: &[0],
            wakeups: 5000,
            duration_ns: TEN_S,
            idle_use: None,
        };
        let e = detect(&i).unwrap_err();
        assert!(
            e.contains("only polling states (POLL") && e.contains("not visible here"),
            "{e}"
        );
        // A KVM guest with haltpoll (exit 1 us): evaluated, and quiet.
        let halt = [state(0, "POLL", 0, false), state(0, "haltpoll", 1, false)];
        let i = Input {
            freq: Err("no cpufreq policies"),
            idle: &halt,
            cpus: &[0],
            wakeups: 5000,
            duration_ns: TEN_S,
            idle_use: None,
        };
        assert!(detect(&i).expect("applies").is_none());
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

    /// A cpuidle tree like a bare-metal Intel node's (POLL, C1 2 us, C6
    /// 170 us on CPU 0), with what the `cpu_idle` program measured.
    #[test]
    fn measured_deep_exits_count_and_unused_deep_states_do_not() {
        let dir = std::env::temp_dir().join(format!("tp-idle-use-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (s, name, lat) in [(0, "POLL", "0"), (1, "C1", "2"), (2, "C6", "170")] {
            let d = dir.join(format!("sys/devices/system/cpu/cpu0/cpuidle/state{s}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
            std::fs::write(d.join("latency"), format!("{lat}\n")).unwrap();
            std::fs::write(d.join("disable"), "0\n").unwrap();
        }
        let roots = Roots::new(dir.join("sys"), dir.join("proc"));
        let idle = read_idle_states(&roots, &[0]);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(idle.len(), 3);
        let perf = freq("performance");
        let used = |c6_exits: u64| crate::report::CpuIdleReport {
            states: vec![
                crate::report::IdleStateUse {
                    state: 1,
                    exits: 4000,
                    residency_ns: 400_000_000,
                },
                crate::report::IdleStateUse {
                    state: 2,
                    exits: c6_exits,
                    residency_ns: c6_exits * 2_000_000,
                },
            ],
            program_runs: 2 * (4000 + c6_exits),
            program_run_time_ns: 0,
        };
        // C6 entered 3000 times in 10 s: 300/s, up to 3000 x 170 us = 510 ms.
        let u = used(3000);
        let got = detect(&Input {
            freq: Ok(&perf),
            idle: &idle,
            cpus: &[0],
            wakeups: 5000,
            duration_ns: TEN_S,
            idle_use: Some(&u),
        })
        .expect("applies")
        .expect("fires");
        let e = got
            .evidence
            .iter()
            .find(|e| e.key == "deep_idle_exits_per_s")
            .expect("measured exits");
        assert!((e.value - 300.0).abs() < 1e-9, "{}", e.value);
        assert!(e.text.contains("510.0 ms"), "{}", e.text);
        // C6 enabled but never entered: nothing deep was used, governor fine.
        let u = used(0);
        let quiet = detect(&Input {
            freq: Ok(&perf),
            idle: &idle,
            cpus: &[0],
            wakeups: 5000,
            duration_ns: TEN_S,
            idle_use: Some(&u),
        })
        .expect("applies");
        assert!(quiet.is_none(), "{quiet:?}");
    }
}
