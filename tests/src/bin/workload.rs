//! Workloads with a known answer for the root integration tests.
//!
//! Protocol on stdin/stdout: the workload creates its threads, which block;
//! it prints `ready <tid> <tid> ...`. On a `go` line, the threads run their
//! phase; when all are finished it prints `done <tid> ...` (threads created
//! during the phase included) and then waits for stdin to close, threads
//! still alive and blocked, so their /proc counters can be read afterwards.
//!
//! Modes:
//!   spin2 <cpu> <ms>          two threads pinned to <cpu>, spinning <ms> each
//!   spin-n <cpu> <threads> <ms>  <threads> threads pinned to <cpu>, spinning <ms> (wall) each
//!   churn <cpu> <k> <ms> <total_ms>  one thread that, for <total_ms>, starts <k> threads
//!                             pinned to <cpu> spinning <ms> (wall) each, waits for them
//!                             to exit, and starts <k> more (threads that come and go);
//!                             before `done` it prints, per thread, `churn-thread <tid>
//!                             <life_ns> <cpu_ns> <run_delay_ns> <t1> <t2>`: its lifetime
//!                             (from just before its creation to its last instruction),
//!                             CPU time, and the kernel's run-queue total (schedstat) read
//!                             as its last act between CLOCK_MONOTONIC stamps t1 and t2;
//!                             then `churn <threads> <life_ns> <cpu_ns>` (sums)
//!   bounce <n>                one thread moved to the other CPU <n> times
//!   pingpong <n>              two threads passing a byte back and forth <n> times over a
//!                             Unix socket pair: each blocks in its read until the other
//!                             writes, so each is woken by the other about <n> times
//!   sleeper <n> <us>          one thread sleeping <n> times for <us>
//!   spawn <threads> <n>       after `go`, create <threads> threads that sleep <n> times
//!   pagefault <pages>         one thread touching <pages> fresh pages (own mmap)
//!   udp <packets>             one thread sending <packets> UDP datagrams to itself on loopback
//!   fork-child <n>            after `go`, start a child process that sleeps <n> times, wait for it
//!   auto-sleep <n> <us>       no protocol: sleep <n> times for <us>, then exit 0
//!   exit-after <ms>           after `go`, spin <ms> of CPU time, then exit the process

use std::{
    io::{BufRead, Write},
    sync::{Arc, Barrier, Mutex},
    time::{Duration, Instant},
};

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
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

/// CLOCK_MONOTONIC in ns (the clock of the probes' timestamps).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer; the per-thread CPU clock always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn current_cpu() -> usize {
    // SAFETY: no preconditions.
    unsafe { libc::sched_getcpu() as usize }
}

fn spin(d: Duration) {
    let end = Instant::now() + d;
    let mut x = 0u64;
    while Instant::now() < end {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

/// Spin until this thread has used `d` of CPU time (not wall time: the
/// machine may be busy).
fn spin_cpu(d: Duration) {
    let cpu_now = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid pointer; the clock exists on Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    };
    let end = cpu_now() + d;
    let mut x = 0u64;
    while cpu_now() < end {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

fn arg(args: &[String], i: usize) -> u64 {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("missing numeric argument {i}: {args:?}"))
}

fn touch_fresh_pages(pages: usize) {
    // SAFETY: anonymous private mapping, checked for MAP_FAILED.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            pages * 4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED, "mmap");
    // No huge pages: every 4 KiB page faults once.
    // SAFETY: advice on the mapping just created.
    unsafe { libc::madvise(base, pages * 4096, libc::MADV_NOHUGEPAGE) };
    for p in 0..pages {
        // SAFETY: within the mapping.
        unsafe { std::ptr::write_volatile((base as *mut u8).add(p * 4096), 1) };
    }
    // Left mapped: the pages stay resident for the test to look at.
}

fn udp_to_self(packets: u64) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
    let addr = sock.local_addr().expect("addr");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let payload = [7u8; 512];
    let mut buf = [0u8; 1024];
    for _ in 0..packets {
        sock.send_to(&payload, addr).expect("send");
        let _ = sock.recv_from(&mut buf);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().cloned().unwrap_or_default();
    if mode == "auto-sleep" {
        for _ in 0..arg(&args, 1) {
            std::thread::sleep(Duration::from_micros(arg(&args, 2)));
        }
        return;
    }
    let start = Arc::new(Barrier::new(1 + start_count(&mode, &args)));
    let done = Arc::new(Barrier::new(start_count(&mode, &args) + 1));
    let tids = Arc::new(Mutex::new(Vec::new()));
    let churn_sums = Arc::new(Mutex::new((0u64, 0u64, 0u64, Vec::new())));
    let spawn_worker = |f: Box<dyn FnOnce() + Send>| {
        let (start, done, tids) = (start.clone(), done.clone(), tids.clone());
        std::thread::spawn(move || {
            tids.lock().unwrap().push(gettid());
            start.wait();
            f();
            done.wait();
            // Stay alive (blocked) until the process ends.
            loop {
                std::thread::park();
            }
        })
    };
    let handles = workers(&mode, &args, &spawn_worker, &churn_sums);
    // Wait until the workers registered their tids.
    while tids.lock().unwrap().len() < handles.len() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let out = std::io::stdout();
    let list = |v: &[u32]| {
        v.iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    writeln!(out.lock(), "ready {}", list(&tids.lock().unwrap())).unwrap();
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
    after_go(&mode, &args, &tids, &start, &done);
    if mode == "churn" {
        let s = churn_sums.lock().unwrap();
        for (tid, life, cpu, delay, t1, t2) in &s.3 {
            writeln!(
                out.lock(),
                "churn-thread {tid} {life} {cpu} {delay} {t1} {t2}"
            )
            .unwrap();
        }
        writeln!(out.lock(), "churn {} {} {}", s.0, s.1, s.2).unwrap();
    }
    writeln!(out.lock(), "done {}", list(&tids.lock().unwrap())).unwrap();
    out.lock().flush().unwrap();
    // Wait for stdin to close.
    for _ in lines {}
}

/// A worker thread running the closure between the start and done
/// barriers, its tid registered first.
type Spawn<'a> = &'a dyn Fn(Box<dyn FnOnce() + Send>) -> std::thread::JoinHandle<()>;

/// The mode's worker threads.
fn workers(
    mode: &str,
    args: &[String],
    spawn_worker: Spawn<'_>,
    churn_sums: &Arc<Mutex<ChurnSums>>,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut handles = Vec::new();
    match mode {
        "spin2" => {
            let (cpu, ms) = (arg(args, 1) as usize, arg(args, 2));
            for _ in 0..2 {
                handles.push(spawn_worker(Box::new(move || {
                    pin_self(cpu);
                    spin(Duration::from_millis(ms));
                })));
            }
        }
        "spin-n" => {
            let (cpu, n, ms) = (arg(args, 1) as usize, arg(args, 2), arg(args, 3));
            for _ in 0..n {
                handles.push(spawn_worker(Box::new(move || {
                    pin_self(cpu);
                    spin(Duration::from_millis(ms));
                })));
            }
        }
        "churn" => {
            let (cpu, k, ms, total) = (
                arg(args, 1) as usize,
                arg(args, 2),
                arg(args, 3),
                arg(args, 4),
            );
            let sums = churn_sums.clone();
            handles.push(spawn_worker(Box::new(move || {
                churn(cpu, k, ms, total, &sums)
            })));
        }
        "pingpong" => {
            let n = arg(args, 1);
            let (a, b) = std::os::unix::net::UnixStream::pair().expect("socket pair");
            handles.push(spawn_worker(Box::new(move || {
                use std::io::Read as _;
                let (mut a, mut buf) = (a, [0u8; 1]);
                for _ in 0..n {
                    a.write_all(&[1]).expect("ping");
                    a.read_exact(&mut buf).expect("pong");
                }
            })));
            handles.push(spawn_worker(Box::new(move || {
                use std::io::Read as _;
                let (mut b, mut buf) = (b, [0u8; 1]);
                for _ in 0..n {
                    b.read_exact(&mut buf).expect("ping");
                    b.write_all(&[1]).expect("pong");
                }
            })));
        }
        "bounce" => {
            let n = arg(args, 1);
            handles.push(spawn_worker(Box::new(move || {
                for _ in 0..n {
                    let other = 1 - (current_cpu() % 2);
                    pin_self(other);
                    spin(Duration::from_micros(200));
                }
            })));
        }
        "sleeper" => {
            let (n, us) = (arg(args, 1), arg(args, 2));
            handles.push(spawn_worker(Box::new(move || {
                for _ in 0..n {
                    std::thread::sleep(Duration::from_micros(us));
                }
            })));
        }
        "pagefault" => {
            let pages = arg(args, 1) as usize;
            handles.push(spawn_worker(Box::new(move || touch_fresh_pages(pages))));
        }
        "udp" => {
            let n = arg(args, 1);
            handles.push(spawn_worker(Box::new(move || udp_to_self(n))));
        }
        "spawn" | "exit-after" | "fork-child" => {}
        other => panic!("unknown mode {other:?}"),
    }
    handles
}

/// What a churn thread reports: (tid, life ns, CPU ns, the kernel's
/// run-queue total, and the two clock stamps around reading it).
type ChurnThread = (u32, u64, u64, u64, u64, u64);

/// (threads, life ns, CPU ns) summed, and each thread's report.
type ChurnSums = (u64, u64, u64, Vec<ChurnThread>);

/// Start `k` threads pinned to `cpu`, each spinning `ms`, again and again
/// for `total` ms; add up what each saw.
fn churn(cpu: usize, k: u64, ms: u64, total: u64, sums: &Mutex<ChurnSums>) {
    let end = Instant::now() + Duration::from_millis(total);
    while Instant::now() < end {
        let batch: Vec<_> = (0..k)
            .map(|_| {
                let born = Instant::now();
                std::thread::spawn(move || {
                    pin_self(cpu);
                    spin(Duration::from_millis(ms));
                    let life = born.elapsed();
                    let cpu = thread_cpu();
                    // The kernel's own run-queue total for this
                    // thread, read between two clock stamps.
                    let t1 = monotonic_ns();
                    let delay = std::fs::read_to_string("/proc/thread-self/schedstat")
                        .ok()
                        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
                        .unwrap_or(u64::MAX);
                    (life, cpu, gettid(), delay, (t1, monotonic_ns()))
                })
            })
            .collect();
        for t in batch {
            let (life, cpu, tid, delay, (t1, t2)) = t.join().expect("churn thread");
            let mut s = sums.lock().unwrap();
            s.0 += 1;
            s.1 += life.as_nanos() as u64;
            s.2 += cpu.as_nanos() as u64;
            s.3.push((
                tid,
                life.as_nanos() as u64,
                cpu.as_nanos() as u64,
                delay,
                t1,
                t2,
            ));
        }
    }
}

/// The part after `go`: the modes that act then, or the workers' barriers.
fn after_go(
    mode: &str,
    args: &[String],
    tids: &Arc<Mutex<Vec<u32>>>,
    start: &Barrier,
    done: &Barrier,
) {
    match mode {
        "spawn" => {
            let (threads, n) = (arg(args, 1), arg(args, 2));
            let mut hs = Vec::new();
            for _ in 0..threads {
                let tids = tids.clone();
                hs.push(std::thread::spawn(move || {
                    tids.lock().unwrap().push(gettid());
                    for _ in 0..n {
                        std::thread::sleep(Duration::from_micros(500));
                    }
                }));
            }
            for h in hs {
                h.join().unwrap();
            }
        }
        "fork-child" => {
            let exe = std::env::current_exe().expect("own path");
            let mut child = std::process::Command::new(exe)
                .args(["auto-sleep", &arg(args, 1).to_string(), "500"])
                .spawn()
                .expect("spawn child");
            tids.lock().unwrap().push(child.id());
            child.wait().expect("wait child");
        }
        "exit-after" => {
            spin_cpu(Duration::from_millis(arg(args, 1)));
            std::process::exit(0);
        }
        _ => {
            start.wait();
            done.wait();
        }
    }
}

fn start_count(mode: &str, args: &[String]) -> usize {
    match mode {
        "spin2" | "pingpong" => 2,
        "spin-n" => arg(args, 2) as usize,
        "bounce" | "sleeper" | "pagefault" | "udp" | "churn" => 1,
        _ => 0,
    }
}
