//! Who took CPU time from the server in one cell. The probes record every
//! task that preempted a server thread and the run-queue wait that
//! followed; this sorts them into the server's own threads, the planned
//! neighbour, the load generator (tailprobe), kernel threads and anything
//! else, and marks the cell disturbed when "anything else" took more than
//! a threshold. Pure.

use crate::experiment::results::{Disturbance, Interference, Taker, TakerKind};

/// A preemptor as the recording reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Preemptor {
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub count: u64,
    pub wait_ns: u64,
    /// From `/proc/PID/stat` flags (PF_KTHREAD) when the task was still
    /// there; None: decide from the name.
    pub kernel: Option<bool>,
}

/// What the cell knows about the tasks it started.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    pub server_tgid: u32,
    /// tailprobe's own process (load generator, recorder, built-in
    /// neighbour threads).
    pub own_tgid: u32,
    /// A neighbour ran in this cell (its threads are tailprobe's `noise-*`).
    pub neighbour: bool,
    /// The server threads' whole run-queue wait.
    pub runq_wait_ns: u64,
    pub rule: Threshold,
}

/// Foreign wait above `max(share x run-queue wait, min_ms)` disturbs a cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub share: f64,
    pub min_ms: f64,
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold {
            share: 0.05,
            min_ms: 10.0,
        }
    }
}

impl Threshold {
    pub fn ms(&self, runq_wait_ms: f64) -> f64 {
        (self.share * runq_wait_ms).max(self.min_ms)
    }

    pub fn words(&self) -> String {
        format!(
            "{:.0}% of the server's run-queue wait, at least {} ms",
            self.share * 100.0,
            self.min_ms
        )
    }
}

/// Kernel thread names, for tasks that were gone before `/proc` was read.
pub fn looks_like_kernel_thread(comm: &str) -> bool {
    const PREFIXES: [&str; 14] = [
        "kworker/",
        "ksoftirqd/",
        "migration/",
        "rcu_",
        "rcuc/",
        "rcuog/",
        "rcuop/",
        "irq/",
        "cpuhp/",
        "watchdog/",
        "idle_inject/",
        "kcompactd",
        "kswapd",
        "khugepaged",
    ];
    comm == "kthreadd" || comm == "swapper" || PREFIXES.iter().any(|p| comm.starts_with(p))
}

pub fn classify(p: &Preemptor, cx: &Context) -> TakerKind {
    if p.tgid == cx.server_tgid {
        TakerKind::Own
    } else if p.tgid == cx.own_tgid {
        if cx.neighbour && p.comm.starts_with("noise-") {
            TakerKind::Neighbour
        } else {
            TakerKind::LoadGenerator
        }
    } else if p
        .kernel
        .unwrap_or_else(|| looks_like_kernel_thread(&p.comm))
    {
        TakerKind::Kernel
    } else {
        TakerKind::Other
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// "4242 stress-ng (312 ms), 77 rustc (40 ms) and 3 more".
fn name_them(by: &[Taker]) -> String {
    let mut s: Vec<String> = by
        .iter()
        .take(3)
        .map(|t| format!("{} {} ({:.0} ms)", t.pid, t.comm, t.ms))
        .collect();
    if by.len() > 3 {
        s.push(format!("and {} more", by.len() - 3));
    }
    s.join(", ")
}

/// Account the server's lost CPU time by who took it.
pub fn account(preemptors: &[Preemptor], cx: &Context) -> Interference {
    let mut takers: Vec<Taker> = preemptors
        .iter()
        .map(|p| Taker {
            kind: classify(p, cx),
            pid: p.pid,
            tgid: p.tgid,
            comm: p.comm.clone(),
            count: p.count,
            ms: ms(p.wait_ns),
        })
        .collect();
    takers.sort_by(|a, b| b.ms.total_cmp(&a.ms).then(a.pid.cmp(&b.pid)));
    let mut by_kind: Vec<(TakerKind, f64)> = Vec::new();
    for t in &takers {
        match by_kind.iter_mut().find(|(k, _)| *k == t.kind) {
            Some((_, v)) => *v += t.ms,
            None => by_kind.push((t.kind, t.ms)),
        }
    }
    by_kind.sort_by_key(|k| k.0);
    let runq_ms = ms(cx.runq_wait_ns);
    let preempted_ms: f64 = takers.iter().map(|t| t.ms).sum();
    let threshold_ms = cx.rule.ms(runq_ms);
    let foreign: Vec<Taker> = takers
        .iter()
        .filter(|t| t.kind == TakerKind::Other)
        .cloned()
        .collect();
    let foreign_ms: f64 = foreign.iter().map(|t| t.ms).sum();
    let disturbed = (foreign_ms > threshold_ms).then(|| Disturbance {
        text: format!("disturbed by {}", name_them(&foreign)),
        total_ms: foreign_ms,
        by: foreign,
    });
    Interference {
        runq_wait_ms: runq_ms,
        by_kind,
        after_wakeup_ms: (runq_ms - preempted_ms).max(0.0),
        takers,
        threshold_ms,
        threshold_rule: cx.rule.words(),
        disturbed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn p(pid: u32, tgid: u32, comm: &str, wait_ms: u64, kernel: Option<bool>) -> Preemptor {
        Preemptor {
            pid,
            tgid,
            comm: comm.into(),
            count: 3,
            wait_ns: wait_ms * MS,
            kernel,
        }
    }

    fn cx(runq_ms: u64, neighbour: bool) -> Context {
        Context {
            server_tgid: 100,
            own_tgid: 50,
            neighbour,
            runq_wait_ns: runq_ms * MS,
            rule: Threshold::default(),
        }
    }

    #[test]
    fn every_kind_is_told_apart() {
        let ps = [
            p(101, 100, "tp-serve-w1", 40, Some(false)),
            p(51, 50, "noise-cpu", 300, Some(false)),
            p(52, 50, "tp-load-0", 20, Some(false)),
            p(7, 7, "kworker/0:1", 5, Some(true)),
            p(8, 8, "ksoftirqd/1", 2, None),
            p(4242, 4242, "stress-ng", 120, Some(false)),
        ];
        let i = account(&ps, &cx(600, true));
        let kind = |pid| i.takers.iter().find(|t| t.pid == pid).unwrap().kind;
        assert_eq!(kind(101), TakerKind::Own);
        assert_eq!(kind(51), TakerKind::Neighbour);
        assert_eq!(kind(52), TakerKind::LoadGenerator);
        assert_eq!(kind(7), TakerKind::Kernel);
        assert_eq!(kind(8), TakerKind::Kernel);
        assert_eq!(kind(4242), TakerKind::Other);
        assert_eq!(
            i.by_kind,
            vec![
                (TakerKind::Own, 40.0),
                (TakerKind::Neighbour, 300.0),
                (TakerKind::LoadGenerator, 20.0),
                (TakerKind::Kernel, 7.0),
                (TakerKind::Other, 120.0),
            ]
        );
        assert_eq!(i.after_wakeup_ms, 600.0 - 487.0);
        // 5% of 600 ms = 30 ms: 120 ms of stress-ng disturbs the cell.
        assert_eq!(i.threshold_ms, 30.0);
        let d = i.disturbed.unwrap();
        assert_eq!(d.text, "disturbed by 4242 stress-ng (120 ms)");
        assert_eq!(d.total_ms, 120.0);
    }

    #[test]
    fn a_noise_thread_without_a_planned_neighbour_is_the_load_generator() {
        let i = account(&[p(51, 50, "noise-cpu", 300, None)], &cx(400, false));
        assert_eq!(i.takers[0].kind, TakerKind::LoadGenerator);
        assert!(i.disturbed.is_none());
    }

    #[test]
    fn below_the_threshold_is_not_disturbed() {
        // 9 ms foreign against a 10 ms floor; 40 ms against 5% of 1000 = 50.
        let i = account(&[p(9, 9, "rustc", 9, Some(false))], &cx(100, false));
        assert_eq!(i.threshold_ms, 10.0);
        assert!(i.disturbed.is_none());
        let i = account(&[p(9, 9, "rustc", 40, Some(false))], &cx(1000, false));
        assert_eq!(i.threshold_ms, 50.0);
        assert!(i.disturbed.is_none());
        // Many small foreign tasks add up, longest named first.
        let many: Vec<Preemptor> = (0..5)
            .map(|k| {
                p(
                    200 + k,
                    200 + k,
                    if k == 2 { "cc1" } else { "rustc" },
                    5 + k as u64,
                    Some(false),
                )
            })
            .collect();
        let d = account(&many, &cx(100, false)).disturbed.unwrap();
        assert_eq!(d.total_ms, 35.0);
        assert_eq!(
            d.text,
            "disturbed by 204 rustc (9 ms), 203 rustc (8 ms), 202 cc1 (7 ms), and 2 more"
        );
        assert_eq!(d.by.len(), 5);
    }

    #[test]
    fn kernel_thread_names() {
        assert!(looks_like_kernel_thread("kworker/u8:2"));
        assert!(looks_like_kernel_thread("migration/1"));
        assert!(!looks_like_kernel_thread("kworkerish"));
        assert!(!looks_like_kernel_thread("python3"));
    }
}
