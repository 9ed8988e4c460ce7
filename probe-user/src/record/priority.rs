//! `--priority`: run the loader and the ring-buffer reader at a raised CPU
//! priority, so that a saturated machine does not starve the tool that is
//! meant to explain it.
//!
//! Trade-off: a real-time reader (`fifo:N`) preempts every normal thread on
//! its CPU whenever it is runnable, the server it observes included; it only
//! sleeps between polls, so its cost is small, but it is never zero. A
//! raised nice value (`nice:-10`) only weighs the fair scheduler in our
//! favour. The priority is set on the recording thread after the launched
//! command (`-- CMD`) or built-in workload has been started, so the target
//! keeps its own.

use std::fmt;

/// A scheduling priority for the recorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Fair scheduler with this nice value (-20..=19).
    Nice(i32),
    /// SCHED_FIFO at this real-time priority (1..=99).
    Fifo(i32),
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Priority::Nice(n) => write!(f, "nice:{n}"),
            Priority::Fifo(p) => write!(f, "fifo:{p}"),
        }
    }
}

/// Parse `nice:N` (-20..=19) or `fifo:N` (1..=99).
pub fn parse(s: &str) -> Result<Priority, String> {
    let (kind, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected nice:N (-20..19) or fifo:N (1..99)"))?;
    let n: i32 = value
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: {value:?} is not a whole number"))?;
    match kind.trim() {
        "nice" if (-20..=19).contains(&n) => Ok(Priority::Nice(n)),
        "nice" => Err(format!("{s:?}: nice values run from -20 to 19")),
        "fifo" if (1..=99).contains(&n) => Ok(Priority::Fifo(n)),
        "fifo" => Err(format!("{s:?}: SCHED_FIFO priorities run from 1 to 99")),
        other => Err(format!(
            "{s:?}: unknown policy {other:?} (use nice:N or fifo:N)"
        )),
    }
}

/// Apply `p` to the calling thread (Linux sets both per thread).
pub fn apply(p: Priority) -> std::io::Result<()> {
    match p {
        Priority::Nice(n) => {
            // SAFETY: plain setpriority(2) on the calling thread (who = 0).
            let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Priority::Fifo(prio) => super::thread_sched::set(libc::SCHED_FIFO, prio)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_policies_and_refuses_out_of_range() {
        assert_eq!(parse("nice:-10"), Ok(Priority::Nice(-10)));
        assert_eq!(parse("fifo:5"), Ok(Priority::Fifo(5)));
        assert_eq!(parse(" nice: 19"), Ok(Priority::Nice(19)));
        for bad in [
            "nice:-21", "nice:20", "fifo:0", "fifo:100", "rr:5", "nice", "fifo:x",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(Priority::Fifo(7).to_string(), "fifo:7");
        assert_eq!(
            parse(&Priority::Nice(-5).to_string()),
            Ok(Priority::Nice(-5))
        );
    }

    /// A thread may always lower its own priority: nice 5 on a fresh thread
    /// reads back as 5 (getpriority on the thread's id).
    #[test]
    fn applying_nice_changes_the_calling_thread_only() {
        let seen = std::thread::spawn(|| {
            apply(Priority::Nice(5)).expect("raising nice is always allowed");
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            // SAFETY: getpriority on our own thread id.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) }
        })
        .join()
        .expect("thread");
        assert_eq!(seen, 5);
        // SAFETY: getpriority on the calling thread.
        assert_ne!(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }, 5);
    }
}
