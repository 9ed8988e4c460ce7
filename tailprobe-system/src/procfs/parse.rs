//! Pure parsers for `/proc/<pid>/stat`, `status` and `schedstat`.

/// Fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    /// One letter: R, S, D, Z, X, T, t, I, ...
    pub state: char,
    pub ppid: u32,
    /// `task->flags` (PF_KTHREAD = 0x00200000).
    pub flags: u64,
    pub num_threads: u64,
}

/// PF_KTHREAD from include/linux/sched.h.
pub const PF_KTHREAD: u64 = 0x0020_0000;

/// Parse `/proc/<pid>/stat`. The comm is in parentheses and may itself
/// contain spaces and parentheses, so split at the *last* `)`.
pub fn stat(s: &str) -> Option<Stat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = s.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); field N is rest[N - 3].
    let state = rest.first()?.chars().next()?;
    let ppid = rest.get(1)?.parse().ok()?;
    let flags = rest.get(6)?.parse().ok()?;
    let num_threads = rest.get(17)?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        ppid,
        flags,
        num_threads,
    })
}

/// `/proc/<pid>/task/<tid>/schedstat`: time on CPU, time waiting on a run
/// queue (both ns), and number of timeslices run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct SchedStat {
    pub run_ns: u64,
    pub wait_ns: u64,
    pub timeslices: u64,
}

pub fn schedstat(s: &str) -> Option<SchedStat> {
    let mut it = s.split_whitespace().map(|x| x.parse::<u64>().ok());
    Some(SchedStat {
        run_ns: it.next()??,
        wait_ns: it.next()??,
        timeslices: it.next()??,
    })
}

/// Fields of `/proc/<pid>/status` we use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    pub name: String,
    pub tgid: u32,
    pub voluntary_ctxt_switches: u64,
    pub nonvoluntary_ctxt_switches: u64,
    pub cpus_allowed_list: String,
}

pub fn status(s: &str) -> Option<Status> {
    let mut st = Status::default();
    let mut have_tgid = false;
    for line in s.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "Name" => st.name = v.to_string(),
            "Tgid" => {
                st.tgid = v.parse().ok()?;
                have_tgid = true;
            }
            "voluntary_ctxt_switches" => st.voluntary_ctxt_switches = v.parse().ok()?,
            "nonvoluntary_ctxt_switches" => st.nonvoluntary_ctxt_switches = v.parse().ok()?,
            "Cpus_allowed_list" => st.cpus_allowed_list = v.to_string(),
            _ => {}
        }
    }
    have_tgid.then_some(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_tricky_comm() {
        let s = "4242 (we(i)rd name) S 1 4242 4242 0 -1 4194560 120 0 0 0 5 3 0 0 20 0 7 0 123 \
                 1000 50 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let st = stat(s).unwrap();
        assert_eq!(st.comm, "we(i)rd name");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 1);
        assert_eq!(st.flags, 4194560);
        assert_eq!(st.num_threads, 7);
        assert_eq!(st.flags & PF_KTHREAD, 0);
    }

    #[test]
    fn kernel_thread_flag() {
        let s = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0 \
                 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 17 1 0 0 0 0 0";
        assert_ne!(stat(s).unwrap().flags & PF_KTHREAD, 0);
    }

    #[test]
    fn truncated_stat_is_none() {
        assert_eq!(stat("12 (x) S 1"), None);
        assert_eq!(stat(""), None);
    }

    #[test]
    fn schedstat_three_fields() {
        assert_eq!(
            schedstat("5013428 1203 42\n"),
            Some(SchedStat {
                run_ns: 5013428,
                wait_ns: 1203,
                timeslices: 42
            })
        );
        assert_eq!(schedstat("1 2"), None);
    }

    #[test]
    fn status_fields() {
        let s = "Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t77\nPid:\t78\n\
                 Cpus_allowed_list:\t0-1\nvoluntary_ctxt_switches:\t150\n\
                 nonvoluntary_ctxt_switches:\t545\n";
        let st = status(s).unwrap();
        assert_eq!(st.name, "python3");
        assert_eq!(st.tgid, 77);
        assert_eq!(st.voluntary_ctxt_switches, 150);
        assert_eq!(st.nonvoluntary_ctxt_switches, 545);
        assert_eq!(st.cpus_allowed_list, "0-1");
        assert_eq!(status("Name:\tx\n"), None);
    }
}
