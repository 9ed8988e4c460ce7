//! Workloads with one known CPU-side cause each (or none), for the
//! `tailprobe diagnose` root tests. Each prints `ready` and then runs until
//! it is killed; placement (taskset), priority (nice) and cgroups are set by
//! the test from outside.
//!
//! Modes:
//! - `spin`: one thread spinning (a CPU-bound server thread).
//! - `pipeline PROD_SPIN_US PROD_SLEEP_US CONS_SPIN_US CONSUMERS`: a
//!   producer thread that spins PROD_SPIN_US (then sleeps PROD_SLEEP_US) per
//!   item and hands each item to one of CONSUMERS threads, which spin
//!   CONS_SPIN_US on it.
//! - `duty THREADS SPIN_US PERIOD_US`: threads that each spin SPIN_US in
//!   every PERIOD_US.
//! - `sleeper PERIOD_US SPIN_US`: one thread waking every PERIOD_US to
//!   spin SPIN_US (a quiet, lightly loaded server).
//! - `mutex THREADS HOLD_US OUTSIDE_US`: threads taking one mutex, holding
//!   it HOLD_US (spinning) and spinning OUTSIDE_US between (a lock convoy);
//!   `mutexes` with the same arguments gives each thread its own mutex.
//! - `udp-flood`: sends UDP datagrams over loopback to itself as fast as it
//!   can (softirq load; where it is processed is up to RPS).

use std::{
    io::Write as _,
    net::UdpSocket,
    sync::mpsc,
    time::{Duration, Instant},
};

fn spin(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

fn arg(args: &[String], i: usize) -> u64 {
    args.get(i)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("argument {i} missing or not a number: {args:?}"))
}

fn named(name: &str, f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawn thread");
}

fn pipeline(prod_spin: u64, prod_sleep: u64, cons_spin: u64, consumers: u64) {
    let mut senders = Vec::new();
    for i in 0..consumers {
        let (tx, rx) = mpsc::channel::<u64>();
        senders.push(tx);
        named(&format!("consumer{i}"), move || {
            while rx.recv().is_ok() {
                spin(Duration::from_micros(cons_spin));
            }
        });
    }
    named("producer", move || {
        let mut n = 0u64;
        loop {
            spin(Duration::from_micros(prod_spin));
            if prod_sleep > 0 {
                std::thread::sleep(Duration::from_micros(prod_sleep));
            }
            let i = (n % senders.len() as u64) as usize;
            if senders[i].send(n).is_err() {
                return;
            }
            n += 1;
        }
    });
}

fn duty(threads: u64, spin_us: u64, period_us: u64) {
    for i in 0..threads {
        named(&format!("duty{i}"), move || loop {
            let start = Instant::now();
            spin(Duration::from_micros(spin_us));
            let left = Duration::from_micros(period_us).saturating_sub(start.elapsed());
            std::thread::sleep(left);
        });
    }
}

fn mutex(threads: u64, hold_us: u64, outside_us: u64, shared: bool) {
    let one = std::sync::Arc::new(std::sync::Mutex::new(0u64));
    for i in 0..threads {
        let m = if shared {
            one.clone()
        } else {
            std::sync::Arc::new(std::sync::Mutex::new(0u64))
        };
        named(&format!("locker{i}"), move || loop {
            if let Ok(mut g) = m.lock() {
                spin(Duration::from_micros(hold_us));
                *g += 1;
            }
            spin(Duration::from_micros(outside_us));
        });
    }
}

fn udp_flood() {
    use std::os::fd::AsRawFd as _;
    // To a loopback port nobody listens on: each datagram's receive softirq
    // also answers with an ICMP port-unreachable (not rate-limited on
    // loopback), which is received in softirq again.
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free loopback port")
        .port();
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
    // SAFETY: sockaddr_in is plain data; all-zero is valid.
    let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    to.sin_family = libc::AF_INET as libc::sa_family_t;
    to.sin_port = port.to_be();
    to.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
    // Small datagrams, 64 per sendmmsg: the receive path (softirq) costs
    // per packet, the sender's syscalls are amortised.
    const BATCH: usize = 64;
    let mut payload = [7u8; 64];
    let mut iov = [libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    }; BATCH];
    // SAFETY: mmsghdr is plain data; all-zero is a valid value.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
        m.msg_hdr.msg_name = (&raw mut to).cast();
        m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
    }
    loop {
        // SAFETY: msgs points at BATCH valid headers whose iovecs and
        // addresses point at `payload` and `to`, alive for the call.
        unsafe { libc::sendmmsg(tx.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().cloned().unwrap_or_default();
    match mode.as_str() {
        "spin" => named("spinner", || loop {
            spin(Duration::from_millis(100));
        }),
        "pipeline" => pipeline(arg(&args, 1), arg(&args, 2), arg(&args, 3), arg(&args, 4)),
        "duty" => duty(arg(&args, 1), arg(&args, 2), arg(&args, 3)),
        "sleeper" => {
            let (period, work) = (arg(&args, 1), arg(&args, 2));
            named("sleeper", move || loop {
                std::thread::sleep(Duration::from_micros(period));
                spin(Duration::from_micros(work));
            })
        }
        "mutex" | "mutexes" => mutex(arg(&args, 1), arg(&args, 2), arg(&args, 3), mode == "mutex"),
        "udp-flood" => named("flood", udp_flood),
        other => panic!("unknown mode {other:?}"),
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
