//! libbpf-tools' `runqlat`, the reference: its programs' run-time
//! statistics from `/proc/PID/fdinfo` of its program fds.

use super::*;

/// `prog_id`, `run_cnt`, `run_time_ns` from a bpf-prog fd's fdinfo.
pub(super) fn parse_prog_fdinfo(text: &str) -> Option<(u32, u64, u64)> {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((
        field("prog_id")? as u32,
        field("run_cnt")?,
        field("run_time_ns")?,
    ))
}

/// (bpf-prog fds, bpf_link fds) a process holds: prog counters by id.
pub(super) fn bpf_fds(pid: u32) -> (Vec<(u32, u64, u64)>, usize) {
    let mut progs = Vec::new();
    let mut links = 0;
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (progs, links);
    };
    for e in dir.flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if target == "anon_inode:bpf_link" {
            links += 1;
        } else if target == "anon_inode:bpf-prog" {
            let info = format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy());
            if let Some(p) = std::fs::read_to_string(info)
                .ok()
                .and_then(|t| parse_prog_fdinfo(&t))
            {
                progs.push(p);
            }
        }
    }
    progs.sort();
    progs.dedup_by_key(|p| p.0);
    (progs, links)
}

pub(super) fn prog_name(id: u32) -> Result<String> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string(), "--json"])
        .output()
        .context("running bpftool")?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing `bpftool prog show id {id} --json`"))?;
    Ok(v["name"].as_str().unwrap_or("?").to_string())
}

/// The BPF programs a process holds, and their counters since a starting
/// point (read from its fds' fdinfo: the same source for any tool).
pub(super) struct ProgCounters {
    pid: u32,
    names: Vec<(u32, String)>,
    before: Vec<(u32, u64, u64)>,
}

impl ProgCounters {
    /// The programs `pid` holds now; counting starts now.
    pub(super) fn of(pid: u32) -> Result<Self> {
        let (before, _) = bpf_fds(pid);
        let mut names = Vec::new();
        for (id, ..) in &before {
            names.push((*id, prog_name(*id)?));
        }
        Ok(Self { pid, names, before })
    }

    /// Count from now on (the starting point is read again).
    pub(super) fn mark(&mut self) {
        self.before = bpf_fds(self.pid).0;
    }

    /// Each program's runs and run time since the starting point.
    pub(super) fn since_mark(&self) -> Vec<ProgCost> {
        let (after, _) = bpf_fds(self.pid);
        let mut out = Vec::new();
        for (id, cnt, ns) in after {
            let (c0, n0) = self
                .before
                .iter()
                .find(|b| b.0 == id)
                .map(|b| (b.1, b.2))
                .unwrap_or((0, 0));
            let name = self
                .names
                .iter()
                .find(|n| n.0 == id)
                .map(|n| n.1.clone())
                .unwrap_or_else(|| format!("prog {id}"));
            out.push(ProgCost {
                name,
                events: cnt.saturating_sub(c0),
                run_time_ns: ns.saturating_sub(n0),
            });
        }
        out
    }
}

/// runqlat, system-wide, with the kernel's statistics on: its programs'
/// counters between `start` and `finish` (the load runs in between).
pub(super) struct Runqlat {
    proc_: Running,
    counters: ProgCounters,
    _stats: StatsOn,
}

impl Runqlat {
    pub(super) fn start() -> Result<Self> {
        let stats = StatsOn::enable()?;
        // One summary at the end of a long interval: it prints on SIGINT.
        let proc_ = spawn(&[RUNQLAT.to_string(), "3600".into(), "1".into()])?;
        let t = Instant::now();
        loop {
            check_interrupted()?;
            let (progs, links) = bpf_fds(proc_.pid());
            if links >= 3 && progs.len() >= 3 {
                break;
            }
            if t.elapsed() > Duration::from_secs(20) {
                bail!("runqlat did not attach its programs within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let counters = ProgCounters::of(proc_.pid())?;
        Ok(Self {
            proc_,
            counters,
            _stats: stats,
        })
    }

    /// Count from now on (the counters' starting point is read again).
    pub(super) fn mark(&mut self) {
        self.counters.mark();
    }

    pub(super) fn finish(mut self) -> Result<Vec<ProgCost>> {
        let out = self.counters.since_mark();
        self.proc_.stop(libc::SIGINT);
        Ok(out)
    }
}

/// runqlat names its programs after the hook, with a `handle_` prefix in
/// its raw-tracepoint variants.
pub(super) fn hook_of(name: &str) -> &str {
    name.strip_prefix("handle_").unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prog_fdinfo() {
        let t = "pos:\t0\nflags:\t02000002\nprog_type:\t26\nprog_id:\t1083\n\
                 run_time_ns:\t12345\nrun_cnt:\t67\nrecursion_misses:\t0\n";
        assert_eq!(parse_prog_fdinfo(t), Some((1083, 67, 12345)));
        assert_eq!(parse_prog_fdinfo("pos:\t0\n"), None);
    }
}
