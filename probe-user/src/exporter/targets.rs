//! Which processes the exporter follows, and under which target name:
//! selectors (`--unit`, `--cgroup`, `--cgroup-children`, `--comm`,
//! `--pid`) re-evaluated every rescan, so a target that exits and comes
//! back is picked up again. Names are bounded: past `max_targets`
//! distinct names, processes are counted under [`OTHER`].

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    procfs::ProcFs,
    record::target::{pids_by_comm, pids_in_cgroup, pids_in_cgroup_tree, unit},
};

/// The target name of processes past the cardinality bound.
pub const OTHER: &str = "other";

/// How the user named a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A systemd unit (`vllm` or `vllm.service`): its control group.
    Unit(String),
    /// A cgroup path (absolute or relative to the cgroup root).
    Cgroup(PathBuf),
    /// Processes whose `comm` is this.
    Comm(String),
    /// One process (named by its comm: pids are never label values).
    Pid(u32),
}

impl Selector {
    /// The `kind` label of the target info metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Selector::Unit(_) => "unit",
            Selector::Cgroup(_) => "cgroup",
            Selector::Comm(_) => "comm",
            Selector::Pid(_) => "pid",
        }
    }
}

/// One target found by a rescan: its name and processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub name: String,
    pub kind: &'static str,
    pub tgids: Vec<u32>,
}

/// Evaluates selectors against /proc and the cgroup tree.
pub struct Resolver {
    pub selectors: Vec<Selector>,
    /// Every child cgroup of a `--unit`/`--cgroup` target is its own target.
    pub children: bool,
    pub proc: ProcFs,
    pub cgroup_root: PathBuf,
    /// Unit -> its cgroup directory (systemctl is asked again only when
    /// the directory is gone, at most every [`UNIT_RETRY`]).
    units: BTreeMap<String, (Option<PathBuf>, Option<Instant>)>,
    /// Why a selector matched nothing at the last rescan (for the log).
    pub notes: BTreeMap<String, String>,
}

/// How often a unit without a control group is looked up again.
pub const UNIT_RETRY: Duration = Duration::from_secs(5);

impl Resolver {
    pub fn new(selectors: Vec<Selector>, children: bool) -> Self {
        Resolver {
            selectors,
            children,
            proc: ProcFs::default(),
            cgroup_root: PathBuf::from(crate::record::target::members::CGROUP_ROOT),
            units: BTreeMap::new(),
            notes: BTreeMap::new(),
        }
    }

    fn unit_dir(&mut self, u: &str) -> Option<PathBuf> {
        let entry = self.units.entry(u.to_string()).or_insert((None, None));
        if let Some(d) = &entry.0 {
            if d.join("cgroup.procs").exists() {
                return Some(d.clone());
            }
        }
        if entry.1.is_some_and(|t| t.elapsed() < UNIT_RETRY) {
            return None;
        }
        entry.1 = Some(Instant::now());
        match unit::resolve(&self.cgroup_root, u).map(|g| g.dir) {
            Ok(d) => {
                self.notes.remove(u);
                entry.0 = Some(d.clone());
                Some(d)
            }
            Err(e) => {
                self.notes.insert(u.to_string(), format!("{e:#}"));
                entry.0 = None;
                None
            }
        }
    }

    /// Every target the selectors name now, in selector order.
    pub fn scan(&mut self) -> Vec<Found> {
        let mut out = Vec::new();
        for sel in self.selectors.clone() {
            match &sel {
                Selector::Unit(u) => {
                    let name = unit::unit_name(u);
                    if let Some(dir) = self.unit_dir(u) {
                        self.cgroup_targets(&mut out, &name, &dir, sel.kind());
                    }
                }
                Selector::Cgroup(p) => {
                    let dir = cgroup_path(&self.cgroup_root, p);
                    let name = p.display().to_string();
                    let name = name.trim_start_matches('/').to_string();
                    if dir.join("cgroup.procs").exists() {
                        self.notes.remove(&name);
                        self.cgroup_targets(&mut out, &name, &dir, sel.kind());
                    } else {
                        self.notes
                            .insert(name, format!("{} is not a cgroup (yet)", dir.display()));
                    }
                }
                Selector::Comm(c) => out.push(Found {
                    name: c.chars().take(15).collect(),
                    kind: sel.kind(),
                    tgids: pids_by_comm(&self.proc, c),
                }),
                Selector::Pid(p) => {
                    if let Ok((_, comm)) = self.proc.check_target(*p) {
                        out.push(Found {
                            name: comm,
                            kind: sel.kind(),
                            tgids: vec![*p],
                        });
                    }
                }
            }
        }
        out
    }

    fn cgroup_targets(&self, out: &mut Vec<Found>, name: &str, dir: &Path, kind: &'static str) {
        if !self.children {
            out.push(Found {
                name: name.to_string(),
                kind,
                tgids: pids_in_cgroup_tree(dir),
            });
            return;
        }
        // The group's own processes under its name, each child group (and
        // what is below it) under `name/child`.
        out.push(Found {
            name: name.to_string(),
            kind,
            tgids: pids_in_cgroup(dir),
        });
        for child in child_dirs(dir) {
            let Some(base) = child.file_name().and_then(|b| b.to_str()) else {
                continue;
            };
            out.push(Found {
                name: format!("{name}/{base}"),
                kind,
                tgids: pids_in_cgroup_tree(&child),
            });
        }
    }
}

fn cgroup_path(root: &Path, p: &Path) -> PathBuf {
    if p.starts_with(root) {
        p.to_path_buf()
    } else {
        root.join(p.strip_prefix("/").unwrap_or(p))
    }
}

fn child_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("cgroup.procs").exists())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The followed processes and the name each is counted under. A process
/// keeps the name it was first given while it lives (counters of a name
/// never go down because a process moved).
#[derive(Debug, Default)]
pub struct Book {
    /// tgid -> target name.
    pub names: BTreeMap<u32, String>,
    /// target name -> kind (unit, cgroup, comm, pid; "other").
    pub kinds: BTreeMap<String, &'static str>,
    pub max_targets: usize,
    /// Names with no process now, and since when.
    empty_since: BTreeMap<String, Instant>,
}

/// What a rescan changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<u32>,
    pub removed: Vec<u32>,
}

impl Book {
    pub fn new(max_targets: usize) -> Self {
        Book {
            max_targets,
            ..Book::default()
        }
    }

    /// Apply one scan: processes that appeared are added under their
    /// target's name (or [`OTHER`] past the bound), processes gone or no
    /// longer selected are removed. Pure: `alive` says whether a pid lives.
    pub fn apply(&mut self, found: &[Found], alive: &dyn Fn(u32) -> bool) -> Changes {
        let mut now: BTreeMap<u32, (&str, &'static str)> = BTreeMap::new();
        for f in found {
            for t in &f.tgids {
                // First selector wins for a process two of them name.
                now.entry(*t).or_insert((f.name.as_str(), f.kind));
            }
        }
        let mut ch = Changes::default();
        let old: BTreeSet<u32> = self.names.keys().copied().collect();
        for t in old {
            if !now.contains_key(&t) || !alive(t) {
                self.names.remove(&t);
                ch.removed.push(t);
            }
        }
        for (t, (name, kind)) in now {
            if self.names.contains_key(&t) || !alive(t) {
                continue;
            }
            let name = if self.kinds.contains_key(name) || self.named() < self.max_targets {
                self.kinds.entry(name.to_string()).or_insert(kind);
                name.to_string()
            } else {
                self.kinds.entry(OTHER.to_string()).or_insert("other");
                OTHER.to_string()
            };
            self.names.insert(t, name);
            ch.added.push(t);
        }
        ch
    }

    /// Names that have had no process for `after`: forgotten (their
    /// series end; a name that comes back later starts from zero, which
    /// PromQL's rate() reads as a counter reset). Keeps a churn of pods
    /// from filling the name budget with names that are gone.
    pub fn forget_idle(&mut self, after: Duration) -> Vec<String> {
        let in_use: BTreeSet<&str> = self.names.values().map(String::as_str).collect();
        let now = Instant::now();
        let mut forgotten = Vec::new();
        for name in self.kinds.keys() {
            if in_use.contains(name.as_str()) {
                self.empty_since.remove(name);
            } else {
                let since = *self.empty_since.entry(name.clone()).or_insert(now);
                if now.duration_since(since) >= after {
                    forgotten.push(name.clone());
                }
            }
        }
        for n in &forgotten {
            self.kinds.remove(n);
            self.empty_since.remove(n);
        }
        forgotten
    }

    /// Distinct names in use, "other" not counted.
    fn named(&self) -> usize {
        self.kinds.keys().filter(|k| k.as_str() != OTHER).count()
    }

    /// Processes per target name now.
    pub fn processes(&self) -> BTreeMap<&str, Vec<u32>> {
        let mut out: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (t, n) in &self.names {
            out.entry(n.as_str()).or_default().push(*t);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, tgids: &[u32]) -> Found {
        Found {
            name: name.into(),
            kind: "comm",
            tgids: tgids.to_vec(),
        }
    }

    #[test]
    fn exit_and_return_and_other() {
        let mut b = Book::new(2);
        let all = |_| true;
        let ch = b.apply(&[f("a", &[10, 11]), f("b", &[20])], &all);
        assert_eq!(ch.added, vec![10, 11, 20]);
        assert_eq!(b.names[&10], "a");
        // A third name is past the bound: "other".
        let ch = b.apply(&[f("a", &[10, 11]), f("b", &[20]), f("c", &[30])], &all);
        assert_eq!(ch.added, vec![30]);
        assert_eq!(b.names[&30], OTHER);
        // 11 exits (gone from the scan), 10 is dead but still listed.
        let ch = b.apply(&[f("a", &[10]), f("b", &[20]), f("c", &[30])], &|p| p != 10);
        assert_eq!(ch.removed, vec![10, 11]);
        // "a" comes back with a new pid under the same name.
        let ch = b.apply(&[f("a", &[12]), f("b", &[20]), f("c", &[30])], &all);
        assert_eq!(ch.added, vec![12]);
        assert_eq!(b.names[&12], "a");
        assert_eq!(b.processes()["a"], vec![12]);
        // The first selector that names a process wins.
        let ch = b.apply(&[f("b", &[20, 12]), f("a", &[12])], &all);
        assert_eq!(ch.removed, vec![30]);
        assert_eq!(b.names[&12], "a", "a process keeps its first name");
        // "other" has no process now: forgotten once idle long enough,
        // and its place in the budget is free for a new name.
        assert!(b.forget_idle(Duration::from_secs(60)).is_empty());
        assert_eq!(b.forget_idle(Duration::ZERO), vec![OTHER.to_string()]);
        b.apply(&[f("b", &[20, 12]), f("a", &[12])], &all);
        b.names.remove(&20);
        assert_eq!(b.forget_idle(Duration::ZERO), vec!["b".to_string()]);
        let ch = b.apply(&[f("a", &[12]), f("d", &[40])], &all);
        assert_eq!(ch.added, vec![40]);
        assert_eq!(b.names[&40], "d", "the freed place goes to a new name");
    }

    #[test]
    fn cgroup_children_are_targets() {
        let dir = std::env::temp_dir().join(format!("tp-exp-cg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let grp = dir.join("inference.slice");
        for (sub, pids) in [("", "1\n"), ("a.service", "2\n3\n"), ("b.service", "")] {
            std::fs::create_dir_all(grp.join(sub)).unwrap();
            std::fs::write(grp.join(sub).join("cgroup.procs"), pids).unwrap();
        }
        std::fs::create_dir_all(grp.join("b.service/inner")).unwrap();
        std::fs::write(grp.join("b.service/inner/cgroup.procs"), "4\n").unwrap();
        let mut r = Resolver::new(vec![Selector::Cgroup("inference.slice".into())], true);
        r.cgroup_root = dir.clone();
        let got = r.scan();
        let names: Vec<(&str, Vec<u32>)> = got
            .iter()
            .map(|f| (f.name.as_str(), f.tgids.clone()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("inference.slice", vec![1]),
                ("inference.slice/a.service", vec![2, 3]),
                ("inference.slice/b.service", vec![4]),
            ]
        );
        r.children = false;
        assert_eq!(r.scan()[0].tgids, vec![1, 2, 3, 4]);
        // Absent group: no target, a note.
        r.selectors = vec![Selector::Cgroup("gone.slice".into())];
        assert!(r.scan().is_empty());
        assert!(r.notes.contains_key("gone.slice"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
