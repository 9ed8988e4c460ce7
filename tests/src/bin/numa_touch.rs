//! A NUMA workload for the two-node tests (tests/tests/vm_numa.rs).
//!
//! `numa_touch <cpu> <mem-node> <mib> <touch-ms>`: pins itself to <cpu>,
//! places <mib> MiB of fresh 4 KiB pages on <mem-node> (MPOL_BIND while
//! first touching them, then back to the default policy so NUMA balancing
//! may move them), prints `ready <tid>`. On a `go` line it reads and writes
//! every page again and again for <touch-ms> of wall time from <cpu>, prints
//! `done <tid>`, and waits, memory still mapped, for stdin to close.

use std::{
    io::{BufRead, Write},
    time::{Duration, Instant},
};

const PAGE: usize = 4096;
const MPOL_DEFAULT: libc::c_long = 0;
const MPOL_BIND: libc::c_long = 2;

fn arg(args: &[String], i: usize) -> u64 {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("usage: numa_touch <cpu> <mem-node> <mib> <touch-ms>; {args:?}"))
}

fn pin_self(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within its bounds
    // for cpu < CPU_SETSIZE; pid 0 means the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            panic!(
                "sched_setaffinity({cpu}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

fn set_mempolicy(mode: libc::c_long, node: Option<usize>) {
    let mask: u64 = node.map(|n| 1u64 << n).unwrap_or(0);
    let (ptr, maxnode) = match node {
        Some(_) => (&mask as *const u64, 64 as libc::c_ulong),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: the mask outlives the call; maxnode is its size in bits.
    let r = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, ptr, maxnode) };
    if r != 0 {
        panic!(
            "set_mempolicy({mode}, {node:?}): {}",
            std::io::Error::last_os_error()
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cpu, node, mib, touch_ms) = (
        arg(&args, 0) as usize,
        arg(&args, 1) as usize,
        arg(&args, 2) as usize,
        arg(&args, 3),
    );
    pin_self(cpu);
    let len = mib * 1024 * 1024;
    // SAFETY: anonymous private mapping, checked for MAP_FAILED.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED, "mmap");
    // 4 KiB pages: numa_maps and balancing then count exactly what we placed.
    // SAFETY: advice on the mapping just created.
    unsafe { libc::madvise(base, len, libc::MADV_NOHUGEPAGE) };
    let mem = base as *mut u8;
    set_mempolicy(MPOL_BIND, Some(node));
    for p in 0..len / PAGE {
        // SAFETY: within the mapping.
        unsafe { std::ptr::write_volatile(mem.add(p * PAGE), 1) };
    }
    set_mempolicy(MPOL_DEFAULT, None);

    // SAFETY: no preconditions.
    let tid = unsafe { libc::gettid() };
    let out = std::io::stdout();
    writeln!(out.lock(), "ready {tid}").unwrap();
    out.lock().flush().unwrap();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.trim() == "go" => break,
            Some(Ok(_)) => continue,
            _ => return,
        }
    }
    let end = Instant::now() + Duration::from_millis(touch_ms);
    while Instant::now() < end {
        for p in 0..len / PAGE {
            // SAFETY: within the mapping.
            unsafe {
                let a = mem.add(p * PAGE);
                std::ptr::write_volatile(a, std::ptr::read_volatile(a).wrapping_add(1));
            }
        }
    }
    writeln!(out.lock(), "done {tid}").unwrap();
    out.lock().flush().unwrap();
    for _ in lines {}
}
