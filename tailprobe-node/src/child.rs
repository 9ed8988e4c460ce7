//! Processes tailprobe starts (the built-in server, the built-in workload,
//! `record -- CMD`, a noise command): each runs in a process group of its
//! own, and the whole group dies with us, SIGKILL included.
//!
//! How: before the command starts we fork a *guard*, a tiny copy of this
//! process that only runs async-signal-safe system calls. The guard makes a
//! new process group and the command is started in it (so the command and
//! everything it forks, e.g. the `yes` under `sh -c 'yes > /dev/null'`, share
//! that group). The guard blocks reading a pipe whose only write end we hold:
//! when tailprobe exits by any means (return, panic, SIGKILL) the kernel
//! closes it, the read returns end-of-file, and the guard kills its group
//! (itself included). While the guard lives, the group id cannot be reused by
//! another process, so killing the group never hits a stranger.
//!
//! `PR_SET_PDEATHSIG` alone is not enough: it fires when the *thread* that
//! forked exits (not the process), it is not inherited by grandchildren
//! (the `yes` under `sh`), and a shell's children outlive it.
//!
//! [`stop`] ends a group on purpose: SIGTERM to the group, a grace period
//! for the leader, then SIGKILL to whatever is left, and both are reaped.

use std::{
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::process::CommandExt as _,
    },
    process::{Child, Command, ExitStatus},
    sync::Mutex,
    time::{Duration, Instant},
};

/// A guard process: its pid is the process group id of the command.
struct Guard {
    /// The command's pid (the group's first member after the guard).
    child: u32,
    /// The guard's pid, which is also the group id.
    pgid: libc::pid_t,
    /// Our end of the pipe; closing it (or our death) fires the guard.
    _wr: OwnedFd,
}

/// Every live guard, so [`stop`] finds a child's group and reaps its guard.
static GUARDS: Mutex<Vec<Guard>> = Mutex::new(Vec::new());

fn guards() -> std::sync::MutexGuard<'static, Vec<Guard>> {
    // A panic while holding the lock leaves a valid Vec: keep using it.
    GUARDS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Close every descriptor but `keep`, in the forked guard: only raw system
/// calls (async-signal-safe after `fork` in a threaded process).
fn close_all_but(keep: libc::c_int) {
    // SAFETY: close_range/close only close descriptors of this (forked,
    // single-threaded) process; nothing here allocates or takes a lock.
    unsafe {
        let lo = if keep > 0 {
            libc::syscall(libc::SYS_close_range, 0u32, (keep - 1) as u32, 0u32)
        } else {
            0
        };
        let hi = libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
        if lo != 0 || hi != 0 {
            // No close_range (kernels before 5.9): close one by one.
            for fd in 0..4096 {
                if fd != keep {
                    libc::close(fd);
                }
            }
        }
    }
}

/// The guard's whole life, after `fork`. Never returns.
fn guard_main(rd: libc::c_int) -> ! {
    close_all_but(rd);
    // SAFETY: signal dispositions, a blocking read and kill on our own
    // process group: all async-signal-safe, no allocation, no locks.
    unsafe {
        // A terminal's Ctrl-C or a stray SIGTERM must not remove the guard:
        // tailprobe ends the group itself on those.
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let mut b = [0u8; 1];
        loop {
            let n = libc::read(rd, b.as_mut_ptr().cast(), 1);
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            if n == 1 {
                // Disarmed: the group was stopped on purpose.
                libc::_exit(0);
            }
            // End of file (tailprobe is gone) or an error: kill the group,
            // this guard included.
            libc::kill(0, libc::SIGKILL);
            libc::_exit(1);
        }
    }
}

/// Fork a guard in a new process group; its pid (= the group id) and our
/// end of its pipe.
fn fork_guard() -> io::Result<(libc::pid_t, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: a valid pointer to two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here only.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child runs only async-signal-safe calls (guard_main) and
    // never returns into Rust code that could allocate or lock.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: setpgid(0, 0) makes this process a group leader.
        unsafe { libc::setpgid(0, 0) };
        guard_main(rd.as_raw_fd());
    }
    // Also set it from this side, so the group exists before the command
    // joins it whichever process runs first (EACCES/ESRCH only if the guard
    // already did it or died; the spawn then fails loudly).
    // SAFETY: setpgid on our own child.
    unsafe { libc::setpgid(pid, pid) };
    drop(rd);
    Ok((pid, wr))
}

/// Reap guards whose group is gone (they exit when killed with it).
fn reap_dead_guards() {
    guards().retain(|g| {
        let mut st = 0;
        // SAFETY: waitpid on our own child, without blocking.
        let r = unsafe { libc::waitpid(g.pgid, &mut st, libc::WNOHANG) };
        r == 0
    });
}

/// Start `cmd` in a new process group that dies with tailprobe (see the
/// module docs). The command's own pid is `child.id()`; its group id is the
/// guard's pid ([`group_of`]).
pub fn spawn(cmd: &mut Command) -> io::Result<Child> {
    reap_dead_guards();
    let (pgid, wr) = fork_guard()?;
    cmd.process_group(pgid);
    match cmd.spawn() {
        Ok(child) => {
            guards().push(Guard {
                child: child.id(),
                pgid,
                _wr: wr,
            });
            Ok(child)
        }
        Err(e) => {
            // The guard kills its (empty) group and exits on end-of-file.
            drop(wr);
            let mut st = 0;
            // SAFETY: waitpid on our own child, which is about to exit.
            unsafe { libc::waitpid(pgid, &mut st, 0) };
            Err(e)
        }
    }
}

/// The process group of a child started by [`spawn`].
pub fn group_of(child: &Child) -> Option<i32> {
    guards()
        .iter()
        .find(|g| g.child == child.id())
        .map(|g| g.pgid)
}

/// Send `sig` to the whole group of `child` (or to the child alone when it
/// was not started by [`spawn`]).
pub fn signal(child: &Child, sig: libc::c_int) {
    let target = match group_of(child) {
        Some(pgid) => -pgid,
        None => child.id() as libc::pid_t,
    };
    // SAFETY: kill on our own child's group (held by its live guard, so the
    // id cannot have been reused) or on our own unreaped child.
    unsafe { libc::kill(target, sig) };
}

/// Stop `child` and its whole group: SIGTERM to the group, up to `grace`
/// for the child to exit, then SIGKILL to everything left in the group
/// (children it forked included); reaps the child and its guard.
pub fn stop(child: &mut Child, grace: Duration) -> io::Result<ExitStatus> {
    let mut status = child.try_wait()?;
    if status.is_none() {
        signal(child, libc::SIGTERM);
        let end = Instant::now().checked_add(grace);
        while status.is_none() && end.is_some_and(|e| Instant::now() < e) {
            std::thread::sleep(Duration::from_millis(20));
            status = child.try_wait()?;
        }
    }
    // Whatever is left of the group (and its guard) goes now.
    signal(child, libc::SIGKILL);
    let st = match status {
        Some(s) => s,
        None => child.wait()?,
    };
    release(child);
    Ok(st)
}

/// Forget a child's guard after its group was killed: reap the guard.
fn release(child: &Child) {
    let mut g = guards();
    if let Some(i) = g.iter().position(|x| x.child == child.id()) {
        let guard = g.swap_remove(i);
        drop(g);
        let mut st = 0;
        // SAFETY: waitpid on our own child (the guard), killed just before.
        unsafe { libc::waitpid(guard.pgid, &mut st, 0) };
    }
}

/// How a wait for a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The command exited by itself.
    Exited,
    /// It reached the time limit and was stopped.
    TimeLimit,
    /// Ctrl-C or SIGTERM asked us to stop, and it was stopped.
    Interrupted,
}

/// Wait for `child` up to `limit` (unbounded: `None`); at the limit or on
/// Ctrl-C/SIGTERM, [`stop`] its group (2 s grace). The group is stopped in
/// every case, so nothing it forked is left running.
pub fn wait(child: &mut Child, limit: Option<Duration>) -> io::Result<(ExitStatus, Ended)> {
    let end = limit.and_then(|l| Instant::now().checked_add(l));
    loop {
        if child.try_wait()?.is_some() {
            let st = stop(child, Duration::ZERO)?;
            return Ok((st, Ended::Exited));
        }
        let over = end.is_some_and(|e| Instant::now() >= e);
        if over || tailprobe_system::signals::stop_requested() {
            let st = stop(child, Duration::from_secs(2))?;
            let how = if over {
                Ended::TimeLimit
            } else {
                Ended::Interrupted
            };
            return Ok((st, how));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child's stderr, passed through to ours line by line while it runs and
/// its last 4 KiB kept, to quote when the command fails.
pub struct StderrTail {
    handle: std::thread::JoinHandle<Vec<u8>>,
}

impl StderrTail {
    const KEEP: usize = 4096;

    pub fn start(stderr: std::process::ChildStderr) -> StderrTail {
        let handle = std::thread::spawn(move || {
            use std::io::{BufRead as _, Write as _};
            let mut kept = Vec::new();
            let mut r = io::BufReader::new(stderr);
            let mut line = Vec::new();
            while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let _ = io::stderr().write_all(&line);
                kept.extend_from_slice(&line);
                if kept.len() > Self::KEEP {
                    kept.drain(..kept.len() - Self::KEEP);
                }
                line.clear();
            }
            kept
        });
        StderrTail { handle }
    }

    /// The kept tail, trimmed (waits for the pipe to close: call after the
    /// group was stopped).
    pub fn finish(self) -> String {
        let b = self.handle.join().unwrap_or_default();
        String::from_utf8_lossy(&b).trim().to_string()
    }
}

/// Pids of live (not zombie) processes whose process group is `pgid`, from
/// `/proc/<pid>/stat`; for checks and tests.
pub fn members(proc: &std::path::Path, pgid: i32) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(proc.join(format!("{pid}/stat"))).ok()?;
        let (state, pgrp) = stat_state_pgrp(&stat)?;
        (pgrp == pgid && state != 'Z' && state != 'X').then_some(pid)
    })
    .collect()
}

/// State and process group from a `/proc/<pid>/stat` line (the command
/// name may hold spaces and parentheses: fields follow the last `)`).
pub fn stat_state_pgrp(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn stat_fields_after_an_odd_name() {
        let s = "42 (a) b (c) S 1 77 77 0 -1 4194560 0";
        assert_eq!(stat_state_pgrp(s), Some(('S', 77)));
        assert_eq!(stat_state_pgrp("garbage"), None);
    }

    #[test]
    fn stop_kills_the_grandchildren_of_a_shell() {
        let mut c = Command::new("sh");
        // The shell forks `sleep` and waits: SIGTERM to sh alone would leave
        // the sleeps running.
        c.arg("-c").arg("sleep 300 & sleep 300 & wait");
        let mut child = spawn(&mut c).unwrap();
        let pgid = group_of(&child).unwrap();
        let t0 = Instant::now();
        while members(Path::new("/proc"), pgid).len() < 4 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // guard, sh, two sleeps
        assert_eq!(members(Path::new("/proc"), pgid).len(), 4);
        stop(&mut child, Duration::from_millis(500)).unwrap();
        assert!(members(Path::new("/proc"), pgid).is_empty());
        assert!(group_of(&child).is_none());
    }

    #[test]
    fn wait_reports_a_time_limit_and_a_plain_exit() {
        let mut c = Command::new("sleep");
        c.arg("300");
        let mut child = spawn(&mut c).unwrap();
        let (_, how) = wait(&mut child, Some(Duration::from_millis(100))).unwrap();
        assert_eq!(how, Ended::TimeLimit);
        let mut c = Command::new("sh");
        c.arg("-c").arg("exit 3");
        let mut child = spawn(&mut c).unwrap();
        let (st, how) = wait(&mut child, Some(Duration::from_secs(30))).unwrap();
        assert_eq!((st.code(), how), (Some(3), Ended::Exited));
    }

    #[test]
    fn a_failed_spawn_is_an_error() {
        let e = spawn(&mut Command::new("/nonexistent/tailprobe-test")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
