//! The calling thread's scheduling policy through the raw system calls.
//! Linux schedules threads; musl's `sched_setscheduler()`,
//! `sched_getscheduler()` and `sched_getparam()` are stubs that fail with
//! ENOSYS (POSIX means the process), and the static packaged binary is
//! built on musl, so libc's wrappers cannot be used.

/// A `sched_param` with `prio`, the other fields (musl has more than
/// glibc, unused by Linux) zero.
fn param(prio: i32) -> libc::sched_param {
    // SAFETY: sched_param is plain integers; all zeroes is valid.
    let mut p: libc::sched_param = unsafe { std::mem::zeroed() };
    p.sched_priority = prio;
    p
}

/// Set the calling thread's policy (flags such as SCHED_RESET_ON_FORK may
/// be or-ed in) and static priority.
pub fn set(policy: i32, prio: i32) -> std::io::Result<()> {
    let p = param(prio);
    // SAFETY: a valid pointer to an initialised sched_param; pid 0 is the
    // calling thread.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setscheduler,
            0,
            policy,
            &p as *const libc::sched_param,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's (policy with its flags, static priority).
pub fn get() -> std::io::Result<(i32, i32)> {
    // SAFETY: pid 0 is the calling thread; no pointers.
    let policy = unsafe { libc::syscall(libc::SYS_sched_getscheduler, 0) };
    if policy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut p = param(0);
    // SAFETY: a valid out-pointer to a sched_param; pid 0 is the calling
    // thread.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getparam,
            0,
            &mut p as *mut libc::sched_param,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((policy as i32, p.sched_priority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_calling_threads_policy() {
        let (policy, prio) = get().unwrap();
        // Tests run at a normal or batch policy unless started real-time.
        assert!(policy >= 0);
        assert!((0..=99).contains(&prio));
        // Setting what is already set succeeds for anyone.
        set(policy, prio).unwrap();
        assert_eq!(get().unwrap(), (policy, prio));
    }
}
