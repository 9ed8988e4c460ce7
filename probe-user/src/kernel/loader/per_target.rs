//! The per-target mode's maps (`probe_common::per_target`), from
//! userspace: which target index a process counts under (`TGID_TARGET`,
//! and the `TGIDS` value beyond it), the per-CPU totals of each index
//! (`TARGET_SCHED`), and the wait stamps of a process's threads
//! (`WAIT_STAMPS`), cleared when it stops being followed.

use anyhow::{anyhow, bail, Context as _, Result};
use aya::maps::{Array, MapData, PerCpuArray};
use probe_common::per_target::{index, TargetSched, WaitStamp};

use super::{map, Probes};

/// Map sizes in this mode: `WAIT_STAMPS` entries (one per possible tid)
/// and `TGID_TARGET` words (eight tgids each).
pub fn map_sizes(pid_max: u32) -> (u32, u32) {
    (pid_max.max(1), pid_max.div_ceil(8).max(1))
}

/// The stored byte of target index `i` (index + 1).
fn stored(i: u8) -> Result<u8> {
    i.checked_add(1)
        .filter(|s| u32::from(*s) <= index::MAX_TARGETS)
        .ok_or_else(|| anyhow!("target index {i} beyond {}", index::MAX_TARGETS - 1))
}

impl Probes {
    /// Follow `tgid` counted under target index `i` (per-target mode).
    pub fn follow_as(&mut self, tgid: u32, i: u8) -> Result<()> {
        let s = stored(i)?;
        // The scheduler programs filter on the byte, the others on the
        // set; beyond TGID_TARGET, the set's TGIDS value is the byte.
        set_byte(&mut self.ebpf, tgid, s)?;
        self.follow_with(tgid, u32::from(s))
    }

    /// Stop following `tgid` (per-target mode): its byte cleared, and the
    /// wait stamps of the threads it still has (a wait left pending would
    /// otherwise be counted, long, if the process were followed again).
    pub fn unfollow_as(&mut self, tgid: u32, tids: &[u32]) -> Result<()> {
        set_byte(&mut self.ebpf, tgid, 0)?;
        self.unfollow(tgid)?;
        let mut m: Array<&mut MapData, WaitStamp> = Array::try_from(
            self.ebpf
                .map_mut("WAIT_STAMPS")
                .ok_or_else(|| anyhow!("map WAIT_STAMPS missing"))?,
        )?;
        for t in tids {
            if *t < m.len() {
                m.set(*t, WaitStamp::ZERO, 0)
                    .with_context(|| format!("clearing the wait stamp of thread {t}"))?;
            }
        }
        Ok(())
    }

    /// Target index `i`'s totals, CPUs summed.
    pub fn read_target_sched(&self, i: u8) -> Result<TargetSched> {
        let m: PerCpuArray<&MapData, TargetSched> =
            PerCpuArray::try_from(map(&self.ebpf, "TARGET_SCHED")?)?;
        let vals = m
            .get(&u32::from(i), 0)
            .with_context(|| format!("reading TARGET_SCHED[{i}]"))?;
        let mut sum = TargetSched::ZERO;
        for v in vals.iter() {
            sum.add(v);
        }
        Ok(sum)
    }

    /// Zero target index `i` on every CPU (before it names another target).
    pub fn clear_target_sched(&mut self, i: u8) -> Result<()> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| e)
            .context("counting possible CPUs")?;
        let mut m: PerCpuArray<&mut MapData, TargetSched> = PerCpuArray::try_from(
            self.ebpf
                .map_mut("TARGET_SCHED")
                .ok_or_else(|| anyhow!("map TARGET_SCHED missing"))?,
        )?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![TargetSched::ZERO; cpus])
            .context("building zeroed per-CPU values")?;
        m.set(u32::from(i), zeros, 0)
            .with_context(|| format!("zeroing TARGET_SCHED[{i}]"))
    }
}

/// Write `tgid`'s byte of `TGID_TARGET` (userspace is its only writer).
/// Beyond the array (a tgid above `pid_max` at load) nothing is written.
fn set_byte(ebpf: &mut aya::Ebpf, tgid: u32, s: u8) -> Result<()> {
    let mut m: Array<&mut MapData, u64> = Array::try_from(
        ebpf.map_mut("TGID_TARGET")
            .ok_or_else(|| anyhow!("map TGID_TARGET missing"))?,
    )?;
    let w = index::word_of(tgid);
    if w >= m.len() {
        return Ok(());
    }
    let old = m
        .get(&w, 0)
        .with_context(|| format!("reading TGID_TARGET[{w}]"))?;
    m.set(w, index::with_byte(old, tgid, s), 0)
        .with_context(|| format!("writing TGID_TARGET[{w}]"))
}

/// The loader's check of a per-target configuration.
pub fn check_targets(n: u32) -> Result<()> {
    if n == 0 || n > index::MAX_TARGETS {
        bail!(
            "per-target mode holds 1 to {} targets, {n} asked",
            index::MAX_TARGETS
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_pid_max() {
        assert_eq!(map_sizes(32768), (32768, 4096));
        assert_eq!(map_sizes(4_194_304), (4_194_304, 524_288));
        assert_eq!(map_sizes(9), (9, 2));
    }

    #[test]
    fn indices_fit_a_byte() {
        assert_eq!(stored(0).unwrap(), 1);
        assert_eq!(stored(254).unwrap(), 255);
        assert!(stored(255).is_err());
        assert!(check_targets(255).is_ok());
        assert!(check_targets(256).is_err());
        assert!(check_targets(0).is_err());
    }
}
