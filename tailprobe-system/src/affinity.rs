//! Thread CPU affinity (sched_{get,set}affinity, one copy for the node
//! commands and the load generator), online CPUs, and the
//! start time that tells a thread apart from a later one with the same id.

use std::{fs, io, path::Path};

use crate::cpulist;

/// Online CPUs from `<sys>/devices/system/cpu/online`.
pub fn online_cpus(sys: &Path) -> io::Result<Vec<u32>> {
    let p = sys.join("devices/system/cpu/online");
    let s = fs::read_to_string(&p)?;
    cpulist::parse(&s).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A CPU list that names CPUs which are not online.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("CPU list {list} names CPU(s) {bad} that are not online (online CPUs: {online})")]
pub struct OutOfRange {
    pub list: String,
    pub bad: String,
    pub online: String,
}

/// Check that every CPU of `cpus` is online.
pub fn check_online(cpus: &[u32], online: &[u32]) -> Result<(), OutOfRange> {
    let bad: Vec<u32> = cpus
        .iter()
        .copied()
        .filter(|c| !online.contains(c))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(OutOfRange {
            list: cpulist::Display(cpus).to_string(),
            bad: cpulist::Display(&bad).to_string(),
            online: cpulist::Display(online).to_string(),
        })
    }
}

/// A `cpu_set_t` holding `cpus`.
pub fn cpu_set(cpus: &[u32]) -> io::Result<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let cap = 8 * std::mem::size_of::<libc::cpu_set_t>();
    for &c in cpus {
        if c as usize >= cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("CPU {c} is beyond the {cap} CPUs a cpu_set_t holds"),
            ));
        }
        // SAFETY: c is below the set's capacity (checked above).
        unsafe { libc::CPU_SET(c as usize, &mut set) };
    }
    Ok(set)
}

/// Set the CPU affinity of one thread (`tid` 0 is the calling thread).
pub fn set_thread_affinity(tid: u32, cpus: &[u32]) -> io::Result<()> {
    let set = cpu_set(cpus)?;
    // SAFETY: `set` is a valid, initialised cpu_set_t and the size passed is
    // its size; the call does not keep the pointer.
    let rc = unsafe {
        libc::sched_setaffinity(
            tid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The CPU affinity of one thread (`tid` 0 is the calling thread).
pub fn thread_affinity(tid: u32) -> io::Result<Vec<u32>> {
    // SAFETY: all-zero is a valid empty cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is writable and its size is passed; the kernel fills it.
    let rc = unsafe {
        libc::sched_getaffinity(
            tid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &mut set,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let cap = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: indices are below the set's capacity.
    Ok((0..cap)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .map(|c| c as u32)
        .collect())
}

/// Pin the calling thread (and the threads it starts later) to `cpus`.
pub fn pin_to(cpus: &[u32]) -> io::Result<()> {
    set_thread_affinity(0, cpus)
}

/// How many CPUs the calling thread may run on (at least 1).
pub fn allowed_cpus() -> usize {
    match thread_affinity(0) {
        Ok(cpus) if !cpus.is_empty() => cpus.len(),
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// The CPU the calling thread runs on now.
pub fn current_cpu() -> Option<u32> {
    // SAFETY: sched_getcpu has no preconditions.
    let c = unsafe { libc::sched_getcpu() };
    u32::try_from(c).ok()
}

/// Field 22 (start time, clock ticks since boot) of a `stat` line, and
/// field 39 (the CPU it last ran on).
pub fn stat_fields(stat: &str) -> Option<(u64, u32)> {
    let close = stat.rfind(')')?;
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3.
    let start = rest.get(22 - 3)?.parse().ok()?;
    let cpu = rest.get(39 - 3)?.parse().ok()?;
    Some((start, cpu))
}

/// Start time of a thread of a process, `None` when it is gone.
pub fn thread_start_time(proc: &Path, pid: u32, tid: u32) -> Option<u64> {
    let s = fs::read_to_string(proc.join(format!("{pid}/task/{tid}/stat"))).ok()?;
    stat_fields(&s).map(|(st, _)| st)
}

/// The CPU a thread last ran on (field 39 of its stat).
pub fn thread_last_cpu(proc: &Path, pid: u32, tid: u32) -> Option<u32> {
    let s = fs::read_to_string(proc.join(format!("{pid}/task/{tid}/stat"))).ok()?;
    stat_fields(&s).map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_of_a_real_line() {
        let s = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 120 0 0 0 5 3 0 0 20 0 7 0 \
                 98765 1000 50 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0";
        assert_eq!(stat_fields(s), Some((98765, 3)));
        assert_eq!(stat_fields("1 (x) S"), None);
    }

    #[test]
    fn out_of_range_names_the_bad_cpus() {
        let e = check_online(&[0, 1, 4, 5], &[0, 1, 2, 3]).unwrap_err();
        assert_eq!(e.bad, "4-5");
        assert!(e.to_string().contains("online CPUs: 0-3"), "{e}");
        assert!(check_online(&[1], &[0, 1]).is_ok());
    }

    #[test]
    fn own_affinity_round_trips() {
        let before = thread_affinity(0).unwrap();
        assert!(!before.is_empty());
        let one = [before[0]];
        set_thread_affinity(0, &one).unwrap();
        assert_eq!(thread_affinity(0).unwrap(), one);
        set_thread_affinity(0, &before).unwrap();
        assert_eq!(thread_affinity(0).unwrap(), before);
    }
}
