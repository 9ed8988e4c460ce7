//! cpufreq policies: driver, available and current governors, and setting a
//! governor through the journal.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{fsx, journal::Journal, journal::JournalError, NotAvailable, Roots};
use tailprobe_system::cpulist;

/// One cpufreq policy (`/sys/devices/system/cpu/cpufreq/policyN`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub name: String,
    #[serde(skip)]
    pub dir: PathBuf,
    /// CPUs the policy applies to (`affected_cpus`, else `related_cpus`).
    pub cpus: String,
    pub driver: String,
    pub governor: String,
    pub available: Vec<String>,
    /// `energy_performance_preference`, where the driver has one (HWP, EPP).
    pub epp: Option<String>,
    /// Current frequency in kHz (`scaling_cur_freq`).
    pub cur_khz: Option<u64>,
}

/// The node's cpufreq state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpuFreq {
    pub driver: String,
    /// `intel_pstate/status` or `amd_pstate/status` ("active", "passive",
    /// "guided"), when that driver is present.
    pub pstate_mode: Option<String>,
    pub policies: Vec<Policy>,
}

impl CpuFreq {
    /// True for intel_pstate / amd-pstate in active mode, where only
    /// `performance` and `powersave` exist and `powersave` is the driver's
    /// own dynamic scaling (close to schedutil), not a fixed low frequency.
    pub fn active_pstate(&self) -> bool {
        self.pstate_mode.as_deref() == Some("active")
            && (self.driver.starts_with("intel_pstate") || self.driver.starts_with("amd-pstate"))
    }

    /// The driver and, for p-state drivers, its mode: `intel_pstate
    /// (active mode)`.
    pub fn driver_words(&self) -> String {
        match &self.pstate_mode {
            Some(m) => format!("{} ({m} mode)", self.driver),
            None => self.driver.clone(),
        }
    }

    /// Governors available on every policy.
    pub fn available(&self) -> Vec<String> {
        let mut it = self.policies.iter();
        let Some(first) = it.next() else {
            return Vec::new();
        };
        let mut out = first.available.clone();
        for p in it {
            out.retain(|g| p.available.contains(g));
        }
        out
    }

    /// A sentence about the active-mode p-state case, when it applies.
    pub fn pstate_note(&self) -> Option<String> {
        self.active_pstate().then(|| {
            format!(
                "{} is in active mode: only `performance` and `powersave` exist, and \
                 `powersave` is the driver's own dynamic scaling (like schedutil), not a \
                 fixed low frequency; tailprobe does not switch the driver mode (that resets \
                 every cpufreq setting)",
                self.driver
            )
        })
    }
}

/// Read every cpufreq policy; `NotAvailable` when the node has none (most
/// VMs): `/sys/devices/system/cpu/cpufreq` missing or empty.
pub fn read(roots: &Roots) -> Result<CpuFreq, NotAvailable> {
    let base = roots.sys.join("devices/system/cpu/cpufreq");
    let ids = fsx::numbered_entries(&base, "policy");
    let mut policies = Vec::new();
    for id in ids {
        let dir = base.join(format!("policy{id}"));
        let Some(governor) = fsx::read_opt(&dir.join("scaling_governor")) else {
            continue;
        };
        let cpus = fsx::read_opt(&dir.join("affected_cpus"))
            .or_else(|| fsx::read_opt(&dir.join("related_cpus")))
            .map(|s| {
                // affected_cpus is space-separated ("0 1 2"): normalise it.
                if s.contains(['-', ',']) {
                    s
                } else {
                    let v: Vec<u32> = s
                        .split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect();
                    cpulist::Display(&v).to_string()
                }
            })
            .unwrap_or_default();
        policies.push(Policy {
            name: format!("policy{id}"),
            cpus,
            driver: fsx::read_opt(&dir.join("scaling_driver")).unwrap_or_default(),
            governor,
            available: fsx::read_opt(&dir.join("scaling_available_governors"))
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            epp: fsx::read_opt(&dir.join("energy_performance_preference")),
            cur_khz: fsx::read_opt(&dir.join("scaling_cur_freq")).and_then(|s| s.parse().ok()),
            dir,
        });
    }
    if policies.is_empty() {
        return Err(NotAvailable(format!(
            "no cpufreq policies under {} (typical of a VM: the hypervisor controls \
             frequency); there is no CPU governor to read or set",
            base.display()
        )));
    }
    let driver = policies[0].driver.clone();
    let cpu = roots.sys.join("devices/system/cpu");
    let pstate_mode = fsx::read_opt(&cpu.join("intel_pstate/status"))
        .or_else(|| fsx::read_opt(&cpu.join("amd_pstate/status")));
    Ok(CpuFreq {
        driver,
        pstate_mode,
        policies,
    })
}

/// Why a governor cannot be set.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error(transparent)]
    NotAvailable(#[from] NotAvailable),
    #[error("unknown governor {name:?}: this node ({driver}) offers {}{note}", available.join(", "))]
    Unknown {
        name: String,
        driver: String,
        available: Vec<String>,
        note: String,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Check `name` against the available governors.
pub fn validate(cf: &CpuFreq, name: &str) -> Result<(), SetError> {
    let available = cf.available();
    if available.iter().any(|g| g == name) {
        return Ok(());
    }
    let note = match cf.pstate_note() {
        Some(n) => format!(". Note: {n}"),
        None => String::new(),
    };
    Err(SetError::Unknown {
        name: name.to_string(),
        driver: cf.driver.clone(),
        available,
        note,
    })
}

/// Set `name` on every policy through the journal; returns the policies as
/// they were before.
pub fn set(roots: &Roots, journal: &mut Journal, name: &str) -> Result<Vec<Policy>, SetError> {
    let cf = read(roots)?;
    validate(&cf, name)?;
    for p in &cf.policies {
        if p.governor == name {
            continue;
        }
        journal.set_file(
            &p.dir.join("scaling_governor"),
            &format!("governor of {}", p.name),
            name,
        )?;
    }
    Ok(cf.policies)
}

/// Is `path` a governor knob (for `governor restore`)?
pub fn is_governor_knob(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "scaling_governor")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn policy(root: &Path, id: u32, cpus: &str, driver: &str, gov: &str, avail: &str) {
        let d = root.join(format!("devices/system/cpu/cpufreq/policy{id}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("affected_cpus"), format!("{cpus}\n")).unwrap();
        fs::write(d.join("scaling_driver"), format!("{driver}\n")).unwrap();
        fs::write(d.join("scaling_governor"), format!("{gov}\n")).unwrap();
        fs::write(d.join("scaling_available_governors"), format!("{avail}\n")).unwrap();
    }

    #[test]
    fn vm_without_cpufreq_is_not_available() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("devices/system/cpu")).unwrap();
        let e = read(&Roots::new(d.path(), "/proc")).unwrap_err();
        assert!(
            e.to_string().starts_with("not available on this node"),
            "{e}"
        );
    }

    #[test]
    fn intel_pstate_active_explains_itself() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..2 {
            policy(
                d.path(),
                i,
                &i.to_string(),
                "intel_pstate",
                "powersave",
                "performance powersave",
            );
        }
        fs::create_dir_all(d.path().join("devices/system/cpu/intel_pstate")).unwrap();
        fs::write(
            d.path().join("devices/system/cpu/intel_pstate/status"),
            "active\n",
        )
        .unwrap();
        let cf = read(&Roots::new(d.path(), "/proc")).unwrap();
        assert!(cf.active_pstate());
        assert_eq!(cf.driver_words(), "intel_pstate (active mode)");
        assert_eq!(cf.available(), vec!["performance", "powersave"]);
        let e = validate(&cf, "schedutil").unwrap_err().to_string();
        assert!(e.contains("offers performance, powersave"), "{e}");
        assert!(e.contains("active mode"), "{e}");
        assert!(validate(&cf, "performance").is_ok());
    }

    #[test]
    fn affected_cpus_are_normalised() {
        let d = tempfile::tempdir().unwrap();
        policy(
            d.path(),
            0,
            "0 1 2 3",
            "acpi-cpufreq",
            "schedutil",
            "conservative ondemand userspace powersave performance schedutil",
        );
        let cf = read(&Roots::new(d.path(), "/proc")).unwrap();
        assert_eq!(cf.policies[0].cpus, "0-3");
        assert!(!cf.active_pstate());
        assert_eq!(cf.available().len(), 6);
    }
}
