//! The per-thread and per-process maps of the hot path, sized and read here.
//!
//! - `TID_SLOT` (array indexed by tid, sized from `pid_max`): slot number + 1
//!   of the thread in `THREADS`, 0 when it has none. The kernel claims a slot
//!   on a thread's first event (an atomic bump of `THREADS_USED`, then a
//!   compare-and-swap of the tid's entry). A harvested thread's slot is
//!   emptied, unlinked and pushed on `FREE_SLOTS` (a queue map), from which
//!   the kernel takes slots once all have been handed out once.
//! - `THREADS` (array, `max_threads` slots): each thread's `ThreadSlot`.
//! - `SLOTS` (hash, `max_threads` entries): the fallback for threads whose tid
//!   is beyond `TID_SLOT` or that came after `THREADS` filled up.
//! - `TGID_BITS` (mmap-able array of u64 words, one bit per tgid below
//!   `pid_max`): the followed processes, tested with one array lookup;
//!   `TGIDS` (hash) holds them too and answers for tgids beyond the bitmap.
//!
//! Array lookups are inlined by the verifier; hash lookups are a helper call
//! that hashes the key and walks a bucket.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{Array, HashMap, MapData, Queue},
    Ebpf,
};
use probe_common::{hotpath, slot_use, ThreadSlot};

use super::{map, Probes, ThreadCounters};

/// The largest `pid_max` Linux allows on 64-bit (PID_MAX_LIMIT).
pub const PID_MAX_LIMIT: u32 = 4 * 1024 * 1024;

/// `kernel.pid_max` under `proc_root` (normally `/proc`): tids and tgids are
/// below it. The array maps are sized from it at load; a later increase sends
/// the larger ids to the hash fallbacks.
pub fn read_pid_max(proc_root: &Path) -> Result<u32> {
    let path = proc_root.join("sys/kernel/pid_max");
    let text = crate::procfs::sysctl(proc_root, "kernel/pid_max")
        .with_context(|| format!("reading {}", path.display()))?;
    parse_pid_max(&text).with_context(|| format!("parsing {} ({text:?})", path.display()))
}

fn parse_pid_max(text: &str) -> Result<u32> {
    let v: u32 = text.trim().parse().context("not a number")?;
    if v == 0 {
        bail!("pid_max is 0");
    }
    Ok(v.min(PID_MAX_LIMIT))
}

/// Entries of `TID_SLOT` (one per possible tid) and words of `TGID_BITS`.
pub fn map_sizes(pid_max: u32) -> (u32, u32) {
    (pid_max.max(1), pid_max.div_ceil(64).max(1))
}

/// Set `tgid`'s bit in `TGID_BITS` with an atomic OR through a shared
/// mapping of the map, so a bit the kernel sets meanwhile (a followed fork)
/// is not lost. Returns false when `tgid` is beyond the bitmap (the `TGIDS`
/// hash answers for it).
fn set_tgid_bit(ebpf: &Ebpf, tgid: u32, on: bool) -> Result<bool> {
    let aya::maps::Map::Array(data) = map(ebpf, "TGID_BITS")? else {
        bail!("map TGID_BITS is not an array");
    };
    let info = data.info().context("reading TGID_BITS's map info")?;
    let words = info.max_entries() as usize;
    let word = (tgid / 64) as usize;
    if word >= words {
        return Ok(false);
    }
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|p| *p > 0)
        .unwrap_or(4096);
    let len = (words * 8).div_ceil(page) * page;
    let fd = data.fd().as_fd().as_raw_fd();
    // SAFETY: a shared read-write mapping of a BPF_F_MMAPABLE array map's
    // values (the kernel allows up to the page-rounded value area); checked
    // for MAP_FAILED below, unmapped before returning.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error())
            .context("mapping TGID_BITS into memory (needs BPF_F_MMAPABLE, Linux 5.5+)");
    }
    // SAFETY: `word < words`, so the u64 lies inside the mapping; the map's
    // values are 8-byte aligned and the page is shared with the kernel, which
    // writes it with atomic ORs too.
    unsafe {
        let w = &*(base as *const AtomicU64).add(word);
        let bit = 1u64 << (tgid % 64);
        if on {
            w.fetch_or(bit, Ordering::SeqCst);
        } else {
            w.fetch_and(!bit, Ordering::SeqCst);
        }
        libc::munmap(base, len);
    }
    Ok(true)
}

/// Follow `tgid`: its bit in `TGID_BITS` and its key in `TGIDS`, whose
/// value is 1 (per-thread mode) or the target byte (per-target mode).
pub(super) fn follow_tgid(ebpf: &mut Ebpf, tgid: u32, value: u32) -> Result<()> {
    {
        let mut m: HashMap<&mut MapData, u32, u32> = HashMap::try_from(
            ebpf.map_mut("TGIDS")
                .ok_or_else(|| anyhow!("map TGIDS missing"))?,
        )?;
        m.insert(tgid, value, 0)
            .with_context(|| format!("adding pid {tgid} to the followed set"))?;
    }
    set_tgid_bit(ebpf, tgid, true)
        .with_context(|| format!("adding pid {tgid} to the followed bitmap"))?;
    Ok(())
}

/// Stop following `tgid`: its bit cleared and its key removed. Absent is
/// not an error.
pub(super) fn unfollow_tgid(ebpf: &mut Ebpf, tgid: u32) -> Result<()> {
    set_tgid_bit(ebpf, tgid, false)
        .with_context(|| format!("removing pid {tgid} from the followed bitmap"))?;
    let mut m: HashMap<&mut MapData, u32, u32> = HashMap::try_from(
        ebpf.map_mut("TGIDS")
            .ok_or_else(|| anyhow!("map TGIDS missing"))?,
    )?;
    match m.remove(&tgid) {
        Ok(()) => Ok(()),
        // Not there (never added, or removed already): nothing to do.
        Err(_) if m.get(&tgid, 0).is_err() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing pid {tgid} from the followed set")),
    }
}

/// The benchmark switch `TAILPROBE_HOTPATH_OFF`: comma-separated names of
/// hot-path changes (`probe_common::hotpath::NAMES`) to turn back to the way
/// before them, for measuring what each bought (docs/benchmarks.md). Unset
/// or empty: all on.
pub fn hotpath_off_from_env() -> Result<u32> {
    match std::env::var("TAILPROBE_HOTPATH_OFF") {
        Ok(v) => parse_hotpath_off(&v).context("in TAILPROBE_HOTPATH_OFF"),
        Err(std::env::VarError::NotPresent) => Ok(0),
        Err(e) => Err(e).context("reading TAILPROBE_HOTPATH_OFF"),
    }
}

fn parse_hotpath_off(v: &str) -> Result<u32> {
    let mut bits = 0;
    for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some((_, b)) = hotpath::NAMES.iter().find(|(n, _)| *n == name) else {
            let known: Vec<&str> = hotpath::NAMES.iter().map(|(n, _)| *n).collect();
            bail!(
                "unknown hot-path change {name:?}; known: {}",
                known.join(", ")
            );
        };
        bits |= b;
    }
    Ok(bits)
}

/// `THREADS`'s slot number of `tid`, if it has one.
fn slot_of(ebpf: &Ebpf, tid: u32) -> Result<Option<u32>> {
    let ids: Array<&MapData, u64> = Array::try_from(map(ebpf, "TID_SLOT")?)?;
    if tid >= ids.len() {
        return Ok(None);
    }
    let v = ids
        .get(&tid, 0)
        .with_context(|| format!("reading TID_SLOT[{tid}]"))?;
    Ok(v.checked_sub(1).and_then(|i| u32::try_from(i).ok()))
}

impl Probes {
    /// Every thread the programs have seen (both stores).
    pub fn read_threads(&self) -> Result<BTreeMap<u32, ThreadCounters>> {
        let mut out = BTreeMap::new();
        let slots: HashMap<&MapData, u32, ThreadSlot> =
            HashMap::try_from(map(&self.ebpf, "SLOTS")?)?;
        for item in slots.iter() {
            let (tid, slot) = item.context("reading the SLOTS map")?;
            out.insert(tid, ThreadCounters::from(&slot));
        }
        let used: Array<&MapData, u64> = Array::try_from(map(&self.ebpf, "THREADS_USED")?)?;
        let used = used
            .get(&slot_use::FRESH, 0)
            .context("reading THREADS_USED")?;
        let threads: Array<&MapData, ThreadSlot> = Array::try_from(map(&self.ebpf, "THREADS")?)?;
        let n = u32::try_from(used).unwrap_or(u32::MAX).min(threads.len());
        for i in 0..n {
            let slot = threads
                .get(&i, 0)
                .with_context(|| format!("reading THREADS[{i}]"))?;
            // tid 0: a slot lost in a race, or harvested already.
            if slot.tid != 0 {
                out.insert(slot.tid, ThreadCounters::from(&slot));
            }
        }
        Ok(out)
    }

    /// Where threads got their slots (`probe_common::slot_use`).
    pub fn slot_use(&self) -> Result<crate::report::model::ThreadSlotUse> {
        let used: Array<&MapData, u64> = Array::try_from(map(&self.ebpf, "THREADS_USED")?)?;
        let threads: Array<&MapData, ThreadSlot> = Array::try_from(map(&self.ebpf, "THREADS")?)?;
        let get = |i: u32| {
            used.get(&i, 0)
                .with_context(|| format!("reading THREADS_USED[{i}]"))
        };
        let capacity = threads.len();
        Ok(crate::report::model::ThreadSlotUse {
            capacity,
            // The counter runs past the capacity when CPUs race for the
            // last slots; only `capacity` were handed out.
            fresh: get(slot_use::FRESH)?.min(u64::from(capacity)),
            reused: get(slot_use::REUSED)?,
            hash_fallback: get(slot_use::HASH)?,
        })
    }

    /// One thread's run-queue total so far: 0 when it has no slot yet,
    /// None when the maps cannot be read.
    pub fn thread_runq_total(&self, tid: u32) -> Option<u64> {
        if let Some(i) = slot_of(&self.ebpf, tid).ok()? {
            let threads: Array<&MapData, ThreadSlot> =
                Array::try_from(map(&self.ebpf, "THREADS").ok()?).ok()?;
            return threads.get(&i, 0).ok().map(|s| s.stats.runq_total_ns);
        }
        let slots: HashMap<&MapData, u32, ThreadSlot> =
            HashMap::try_from(map(&self.ebpf, "SLOTS").ok()?).ok()?;
        match slots.get(&tid, 0) {
            Ok(s) => Some(s.stats.runq_total_ns),
            Err(aya::maps::MapError::KeyNotFound) => Some(0),
            Err(_) => None,
        }
    }

    /// Read one exited thread's counters and free its slot (an array slot
    /// is emptied, its tid entry cleared for the next thread to get that
    /// tid, and the slot queued for reuse).
    pub fn harvest_thread(&mut self, tid: u32) -> Result<Option<ThreadCounters>> {
        if let Some(i) = slot_of(&self.ebpf, tid)? {
            let slot = {
                let mut threads: Array<&mut MapData, ThreadSlot> = Array::try_from(
                    self.ebpf
                        .map_mut("THREADS")
                        .ok_or_else(|| anyhow!("map THREADS missing"))?,
                )?;
                let slot = threads
                    .get(&i, 0)
                    .with_context(|| format!("reading THREADS[{i}]"))?;
                threads
                    .set(i, ThreadSlot::ZERO, 0)
                    .with_context(|| format!("emptying THREADS[{i}]"))?;
                slot
            };
            let mut ids: Array<&mut MapData, u64> = Array::try_from(
                self.ebpf
                    .map_mut("TID_SLOT")
                    .ok_or_else(|| anyhow!("map TID_SLOT missing"))?,
            )?;
            ids.set(tid, 0, 0)
                .with_context(|| format!("clearing TID_SLOT[{tid}]"))?;
            // Only now, emptied and unlinked, may the kernel hand it out again.
            let mut free: Queue<&mut MapData, u32> = Queue::try_from(
                self.ebpf
                    .map_mut("FREE_SLOTS")
                    .ok_or_else(|| anyhow!("map FREE_SLOTS missing"))?,
            )?;
            free.push(i, 0)
                .with_context(|| format!("returning THREADS[{i}] to FREE_SLOTS"))?;
            return Ok(Some(ThreadCounters::from(&slot)));
        }
        let mut slots: HashMap<&mut MapData, u32, ThreadSlot> = HashMap::try_from(
            self.ebpf
                .map_mut("SLOTS")
                .ok_or_else(|| anyhow!("map SLOTS missing"))?,
        )?;
        let Ok(slot) = slots.get(&tid, 0) else {
            return Ok(None);
        };
        let _ = slots.remove(&tid);
        Ok(Some(ThreadCounters::from(&slot)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_max_parsing_and_sizes() {
        assert_eq!(parse_pid_max("32768\n").unwrap(), 32768);
        assert_eq!(parse_pid_max("4194304").unwrap(), PID_MAX_LIMIT);
        assert_eq!(parse_pid_max("99999999").unwrap(), PID_MAX_LIMIT);
        assert!(parse_pid_max("0").is_err());
        assert!(parse_pid_max("lots").is_err());
        assert_eq!(map_sizes(32768), (32768, 512));
        assert_eq!(map_sizes(32769), (32769, 513));
        assert_eq!(map_sizes(1), (1, 1));
    }

    #[test]
    fn pid_max_from_a_fixture_tree() {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("sys/kernel");
        std::fs::create_dir_all(&k).unwrap();
        std::fs::write(k.join("pid_max"), "4194304\n").unwrap();
        assert_eq!(read_pid_max(d.path()).unwrap(), PID_MAX_LIMIT);
        std::fs::write(k.join("pid_max"), "0\n").unwrap();
        assert!(read_pid_max(d.path()).is_err());
        let empty = tempfile::tempdir().unwrap();
        let e = read_pid_max(empty.path()).unwrap_err();
        assert!(format!("{e:#}").contains("sys/kernel/pid_max"), "{e:#}");
    }

    #[test]
    fn hotpath_switch_names() {
        assert_eq!(parse_hotpath_off("").unwrap(), 0);
        assert_eq!(
            parse_hotpath_off("direct-reads, tgid-bitmap").unwrap(),
            hotpath::DIRECT_READS | hotpath::TGID_BITMAP
        );
        assert_eq!(
            parse_hotpath_off("tid-arrays,").unwrap(),
            hotpath::TID_ARRAYS
        );
        let e = parse_hotpath_off("direct,bogus").unwrap_err();
        assert!(format!("{e:#}").contains("\"direct\""), "{e:#}");
    }
}
