//! Root integration tests of the target flags `--container`, `--pod` and
//! `--unit` on the real kernel: the test makes cgroups laid out as docker,
//! containerd and the kubelet lay them out (under a test-owned top
//! directory of the real cgroup v2 tree), moves processes it started into
//! them, and checks that `tailprobe record` follows exactly those processes
//! and that what it measures agrees with the kernel's own schedstat over
//! the same window. A process in a PID namespace of its own (`unshare
//! --pid`) checks the host-pid / namespace-pid pair in the report.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tailprobe_tests::{
    skip, skip_fixable, skip_unless_root, spin2_agrees_with_schedstat, tailprobe_bin, u, Recording,
    Workload,
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");

/// The mounted cgroup v2 tree: /sys/fs/cgroup itself, or `unified` beside
/// v1 controllers.
fn v2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.controllers").is_file())
}

/// A tree of cgroups made for one test under `<v2>/tailprobe-test-<pid>-<tag>`;
/// removed on drop (processes moved back to the v2 root first).
struct Tree {
    v2: PathBuf,
    top: PathBuf,
    made: Vec<PathBuf>,
}

impl Tree {
    fn new(test: &str, tag: &str) -> Option<Tree> {
        let Some(v2) = v2_root() else {
            skip(
                test,
                "no cgroup v2 tree mounted (/sys/fs/cgroup or /sys/fs/cgroup/unified)",
            );
            return None;
        };
        let top = v2.join(format!("tailprobe-test-{}-{tag}", std::process::id()));
        if let Err(e) = fs::create_dir(&top) {
            skip(
                test,
                &format!("cannot make a cgroup under {}: {e}", v2.display()),
            );
            return None;
        }
        Some(Tree {
            v2,
            made: vec![top.clone()],
            top,
        })
    }

    /// Make `rel` (with its parents) below the top directory.
    fn make(&mut self, rel: &str) -> PathBuf {
        let mut d = self.top.clone();
        for c in rel.split('/') {
            d = d.join(c);
            if !d.exists() {
                fs::create_dir(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
                self.made.push(d.clone());
            }
        }
        d
    }

    fn put(&self, dir: &Path, pid: u32) {
        fs::write(dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", dir.display()));
    }

    /// The path /proc/<pid>/cgroup shows for `dir`.
    fn shown(&self, dir: &Path) -> String {
        format!("/{}", dir.strip_prefix(&self.v2).unwrap().display())
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        for d in self.made.iter().rev() {
            if let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) {
                for p in procs.lines() {
                    let _ = fs::write(self.v2.join("cgroup.procs"), p);
                }
            }
            let _ = fs::remove_dir(d);
        }
    }
}

/// A container-like id unique to this run: 64 hex digits (pid, tag, clock).
fn hex_id(tag: u8) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seed = format!("{:08x}{tag:02x}{nanos:016x}", std::process::id());
    format!("{seed:0<64}")
}

/// `sleep` in a PID namespace of its own: (the unshare child, the host pid
/// of the sleep, which is pid 1 in its namespace).
fn in_pid_namespace() -> Option<(Child, u32)> {
    let child = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "sleep", "60"])
        .stdin(Stdio::null())
        .spawn()
        .ok()?;
    let parent = child.id();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let kids = fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        if let Some(pid) = kids.split_whitespace().find_map(|p| p.parse::<u32>().ok()) {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let nspid = status.lines().find(|l| l.starts_with("NSpid:"));
            if nspid.is_some_and(|l| l.split_whitespace().count() == 3) {
                return Some((child, pid));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Record `target` while the workload's two spinners share CPU 0; checks
/// the figures against schedstat (tailprobe_tests::spin2_agrees_with_schedstat).
fn record_spinners(w: &mut Workload, target: &[&str]) -> serde_json::Value {
    let rec = Recording::start_with(target, &[]);
    spin2_agrees_with_schedstat(w, rec, SPIN_MS, &format!("{target:?}"))
}

const SPIN_MS: u64 = 1500;

fn processes(report: &serde_json::Value) -> Vec<u64> {
    report["target"]["processes"]
        .as_array()
        .expect("target.processes")
        .iter()
        .map(u)
        .collect()
}

#[test]
fn root_container_by_short_id_docker_and_containerd_layouts() {
    let name = "root_container_by_short_id_docker_and_containerd_layouts";
    skip_unless_root!(name);
    let Some(mut tree) = Tree::new(name, "ct") else {
        return;
    };
    // docker's systemd driver, and an unrelated containerd (CRI) container
    // that shares no prefix with it.
    let id = hex_id(1);
    let other = format!("f{}", &hex_id(2)[1..]);
    let docker = tree.make(&format!("system.slice/docker-{id}.scope"));
    let cri = tree.make(&format!("system.slice/cri-containerd-{other}.scope"));
    let mut w = Workload::start(WORKLOAD, &["spin2", "0", &SPIN_MS.to_string()]);
    tree.put(&docker, w.pid());
    let Some((ns_parent, ns_pid)) = in_pid_namespace() else {
        skip(
            name,
            "unshare --pid --fork did not give a process in a PID namespace",
        );
        return;
    };
    tree.put(&docker, ns_pid);
    let bystander = Command::new("sleep").arg("60").spawn().expect("sleep");
    tree.put(&cri, bystander.id());
    assert!(fs::read_to_string(format!("/proc/{}/cgroup", w.pid()))
        .unwrap()
        .contains(&tree.shown(&docker)));

    let report = record_spinners(&mut w, &["--container", &id[..12]]);
    let t = &report["target"];
    assert_eq!(t["kind"], "container");
    assert_eq!(t["spec"], id.as_str(), "the full id");
    assert_eq!(t["runtime"], "docker");
    assert!(t["cgroup"]
        .as_str()
        .unwrap()
        .ends_with(&format!("docker-{id}.scope")));
    let mut want = vec![u64::from(w.pid()), u64::from(ns_pid)];
    want.sort_unstable();
    assert_eq!(
        processes(&report),
        want,
        "exactly the container's processes"
    );
    // The process in its own PID namespace is pid 1 there.
    assert_eq!(t["ns_pids"][ns_pid.to_string()], 1, "{t:#}");
    assert!(t["ns_pids"].get(w.pid().to_string()).is_none(), "{t:#}");

    // The other layout resolves too; a prefix of neither is refused with
    // the containers seen listed.
    let out = Command::new(tailprobe_bin())
        .args([
            "record",
            "--duration",
            "1s",
            "--json",
            "--no-irq",
            "--container",
            &other[..10],
        ])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["target"]["runtime"], "containerd");
    assert_eq!(processes(&report), vec![u64::from(bystander.id())]);
    let out = Command::new(tailprobe_bin())
        .args([
            "record",
            "--duration",
            "1s",
            "--container",
            "0123456789abcdef",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no container matches") && err.contains(&id) && err.contains(&other),
        "{err}"
    );
    let mut ns_parent = ns_parent;
    let _ = ns_parent.kill();
    let _ = ns_parent.wait();
    let mut bystander = bystander;
    let _ = bystander.kill();
    let _ = bystander.wait();
}

#[test]
fn root_ambiguous_container_prefix_lists_the_candidates() {
    let name = "root_ambiguous_container_prefix_lists_the_candidates";
    skip_unless_root!(name);
    let Some(mut tree) = Tree::new(name, "amb") else {
        return;
    };
    // Both start with abcd; they differ in the tag digits.
    let a = format!("abcd{}", &hex_id(3)[4..]);
    let b = format!("abcd{}", &hex_id(4)[4..]);
    let mut kids = Vec::new();
    for id in [&a, &b] {
        // docker's cgroupfs driver layout: <top>/docker/<id>.
        let d = tree.make(&format!("docker/{id}"));
        let k = Command::new("sleep").arg("60").spawn().expect("sleep");
        tree.put(&d, k.id());
        kids.push(k);
    }
    let out = Command::new(tailprobe_bin())
        .args(["record", "--duration", "1s", "--container", "abcd"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("matches 2 containers") || err.contains("containers; give more"),
        "{err}"
    );
    assert!(err.contains(&a) && err.contains(&b), "{err}");
    for mut k in kids {
        let _ = k.kill();
        let _ = k.wait();
    }
}

#[test]
fn root_pod_by_uid_kubepods_systemd_layout() {
    let name = "root_pod_by_uid_kubepods_systemd_layout";
    skip_unless_root!(name);
    let Some(mut tree) = Tree::new(name, "pod") else {
        return;
    };
    let h = hex_id(5);
    let uid = format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    );
    let under = uid.replace('-', "_");
    let pod =
        format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{under}.slice");
    let pause = tree.make(&format!("{pod}/cri-containerd-{}.scope", hex_id(6)));
    let app = tree.make(&format!("{pod}/cri-containerd-{}.scope", hex_id(7)));
    let mut w = Workload::start(WORKLOAD, &["spin2", "0", &SPIN_MS.to_string()]);
    tree.put(&app, w.pid());
    let mut sleeper = Command::new("sleep").arg("60").spawn().expect("sleep");
    tree.put(&pause, sleeper.id());
    // The UID as the API prints it (dashes), upper case: both normalised.
    let report = record_spinners(&mut w, &["--pod", &uid.to_uppercase()]);
    let t = &report["target"];
    assert_eq!(t["kind"], "pod");
    assert_eq!(t["spec"], uid.as_str());
    let mut want = vec![u64::from(w.pid()), u64::from(sleeper.id())];
    want.sort_unstable();
    assert_eq!(processes(&report), want, "both containers of the pod");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

#[test]
fn root_unit_of_a_transient_systemd_service() {
    let name = "root_unit_of_a_transient_systemd_service";
    skip_unless_root!(name);
    if !Path::new("/run/systemd/system").is_dir() {
        skip(
            name,
            "systemd is not the running init here (no /run/systemd/system)",
        );
        return;
    }
    if Command::new("systemd-run")
        .arg("--version")
        .output()
        .is_err()
    {
        skip_fixable(name, "systemd-run is not installed");
        return;
    }
    let unit = format!("tailprobe-test-{}", std::process::id());
    let st = Command::new("systemd-run")
        .args([
            "--unit", &unit, "--quiet", "--", WORKLOAD, "sleeper", "200", "20000",
        ])
        .status()
        .expect("systemd-run");
    assert!(st.success(), "systemd-run failed");
    let main_pid = || -> Option<u32> {
        let out = Command::new("systemctl")
            .args([
                "show",
                "--property",
                "MainPID",
                "--value",
                &format!("{unit}.service"),
            ])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .ok()
            .filter(|p| *p != 0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Some(p) = main_pid() {
            break p;
        }
        assert!(Instant::now() < deadline, "the unit has no main pid");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = Command::new(tailprobe_bin())
        .args(["record", "--duration", "2s", "--json", "--unit", &unit])
        .output()
        .unwrap();
    let _ = Command::new("systemctl")
        .args(["stop", &format!("{unit}.service")])
        .status();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["target"]["kind"], "unit");
    assert_eq!(report["target"]["spec"], format!("{unit}.service"));
    assert!(
        processes(&report).contains(&u64::from(pid)),
        "{:#}",
        report["target"]
    );
}

/// Cpus_allowed_list of every thread of `pid`.
fn allowed(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let s = fs::read_to_string(e.path().join("status")).unwrap_or_default();
        if let Some(l) = s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")) {
            out.push(l.trim().to_string());
        }
    }
    out
}

fn json_of(args: &[&str]) -> serde_json::Value {
    let out = Command::new(tailprobe_bin()).args(args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// pin, numa and counters act on every process of a container: pin
/// re-pins the threads of both (and --watch restores them), numa and
/// counters name both processes.
#[test]
fn root_pin_numa_counters_take_a_container() {
    let name = "root_pin_numa_counters_take_a_container";
    skip_unless_root!(name);
    let Some(mut tree) = Tree::new(name, "node") else {
        return;
    };
    let id = hex_id(8);
    let dir = tree.make(&format!("docker/{id}"));
    let w = Workload::start(WORKLOAD, &["spin2", "0", "10"]);
    let mut sleeper = Command::new("sleep").arg("60").spawn().expect("sleep");
    tree.put(&dir, w.pid());
    tree.put(&dir, sleeper.id());
    let mut want = vec![u64::from(w.pid()), u64::from(sleeper.id())];
    want.sort_unstable();
    let prefix = &id[..12];
    let c = json_of(&[
        "counters",
        "--container",
        prefix,
        "--duration",
        "300ms",
        "--json",
    ]);
    let got: Vec<u64> = c["processes"].as_array().unwrap().iter().map(u).collect();
    assert_eq!(got, want, "{c:#}");
    let threads = allowed(w.pid()).len() + allowed(sleeper.id()).len();
    assert_eq!(u(&c["threads"]), threads as u64, "{c:#}");
    let n = json_of(&[
        "numa",
        "--container",
        prefix,
        "--duration",
        "100ms",
        "--json",
    ]);
    let got: Vec<u64> = n["processes"].as_array().unwrap().iter().map(u).collect();
    assert_eq!(got, want, "{n:#}");
    // pin --watch: every thread of both processes on CPU 0 during the
    // watch, the original masks back after it.
    let before = (allowed(w.pid()), allowed(sleeper.id()));
    let journal =
        std::env::temp_dir().join(format!("tailprobe-targets-{}.json", std::process::id()));
    let child = Command::new(tailprobe_bin())
        .args([
            "pin",
            "--pin",
            "cpus:0",
            "--container",
            prefix,
            "--watch",
            "1s",
            "--json",
            "--journal",
        ])
        .arg(&journal)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen_pinned = false;
    while Instant::now() < deadline && !seen_pinned {
        seen_pinned = allowed(w.pid())
            .iter()
            .chain(allowed(sleeper.id()).iter())
            .all(|l| l == "0");
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        seen_pinned,
        "threads of both processes were pinned to CPU 0"
    );
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["threads"].as_array().unwrap().len(), threads, "{p:#}");
    assert_eq!(
        (allowed(w.pid()), allowed(sleeper.id())),
        before,
        "restored after --watch"
    );
    let _ = fs::remove_file(&journal);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// `experiment --container` takes the server's main process from the
/// container (the process whose parent is outside it), and refuses an id
/// that matches nothing before anything runs. The URL answers nothing, so
/// the run stops at calibration, after the target was resolved.
#[test]
fn root_experiment_takes_the_server_by_container() {
    let name = "root_experiment_takes_the_server_by_container";
    skip_unless_root!(name);
    let Some(mut tree) = Tree::new(name, "exp") else {
        return;
    };
    let id = hex_id(9);
    let dir = tree.make(&format!("system.slice/docker-{id}.scope"));
    // The server's init and a child of it, both in the container.
    let mut server = Command::new("sh")
        .args(["-c", "sleep 60 & wait"])
        .spawn()
        .expect("sh");
    tree.put(&dir, server.id());
    std::thread::sleep(Duration::from_millis(100));
    let kids =
        fs::read_to_string(format!("/proc/{0}/task/{0}/children", server.id())).unwrap_or_default();
    let kids: Vec<u32> = kids
        .split_whitespace()
        .filter_map(|k| k.parse().ok())
        .collect();
    for k in &kids {
        tree.put(&dir, *k);
    }
    let scratch = std::env::temp_dir().join(format!("tailprobe-exp-{}", std::process::id()));
    let arg = |f: &str| scratch.join(f).to_string_lossy().into_owned();
    let run = |container: &str| {
        Command::new(tailprobe_bin())
            .args(["experiment", "--url", "http://127.0.0.1:9/v1/completions"])
            .args(["--container", container])
            .args(["--out", &arg("out"), "--baseline-doc", &arg("b.md")])
            .args(["--summary-doc", &arg("s.md"), "--journal", &arg("j.json")])
            .output()
            .unwrap()
    };
    let out = run(&id[..12]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("recording its main process, pid {}", server.id())),
        "{err}"
    );
    let out = run("ffffffffffff");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no container matches") && err.contains(&id),
        "{err}"
    );
    assert!(!scratch.join("b.md").exists(), "nothing written");
    let _ = fs::remove_dir_all(&scratch);
    for k in kids {
        // SAFETY: a signal to the sleep this test's shell started.
        unsafe { libc::kill(k as i32, libc::SIGKILL) };
    }
    let _ = server.kill();
    let _ = server.wait();
}
