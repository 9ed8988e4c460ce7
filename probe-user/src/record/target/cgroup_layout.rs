//! Which container and which Kubernetes pod a cgroup path belongs to, from
//! the layouts the runtimes create (pure: no I/O, tested on the paths of
//! the fixture trees in `tests/fixtures/cgroups/`).
//!
//! Container layouts (the last path component that matches wins, so a
//! container inside a pod is found under the pod's directory):
//! - docker, cgroupfs driver: `/docker/<64 hex>` (also nested, as in
//!   `/kubepods/burstable/pod<uid>/<64 hex>` with dockershim);
//! - docker, systemd driver: `docker-<64 hex>.scope`;
//! - containerd under Kubernetes: `cri-containerd-<64 hex>.scope` (systemd
//!   driver) or a bare `<64 hex>` under `pod<uid>` (cgroupfs driver);
//!   containerd's own clients (`ctr`, nerdctl): `/<namespace>/<id>` for the
//!   namespaces `default`, `k8s.io` and `moby`, `nerdctl-<64 hex>.scope`;
//! - CRI-O: `crio-<64 hex>.scope` (systemd) or `crio-<64 hex>` (cgroupfs);
//!   its monitor `crio-conmon-<id>.scope` is not the container;
//! - podman: `libpod-<64 hex>.scope` and `libpod-<64 hex>` (cgroupfs).
//!
//! Pod layouts: a component `pod<uid>` (cgroupfs driver:
//! `/kubepods/<qos>/pod<uid-with-dashes>`) or `...-pod<uid_with_underscores>.slice`
//! (systemd driver: `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice`),
//! below a component that names `kubepods`.

/// One line of `/proc/<pid>/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    /// 0 for the v2 (unified) hierarchy.
    pub hierarchy: u32,
    /// Comma-separated controllers (v1), `name=systemd`, or empty (v2).
    pub controllers: String,
    /// Path inside that hierarchy, starting with `/`.
    pub path: String,
}

/// Parse `/proc/<pid>/cgroup`. Malformed lines are left out.
pub fn parse_proc_cgroup(text: &str) -> Vec<CgroupLine> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let hierarchy = it.next()?.trim().parse().ok()?;
            let controllers = it.next()?.to_string();
            let path = it.next()?.to_string();
            path.starts_with('/').then_some(CgroupLine {
                hierarchy,
                controllers,
                path,
            })
        })
        .collect()
}

/// The line to classify, in order of preference: the v2 hierarchy when the
/// process is placed in it (not `/`), then v1 `name=systemd`, then the
/// first v1 controller line with a non-root path.
pub fn primary_line(lines: &[CgroupLine]) -> Option<&CgroupLine> {
    let placed = |l: &&CgroupLine| l.path != "/";
    lines
        .iter()
        .filter(placed)
        .find(|l| l.hierarchy == 0 && l.controllers.is_empty())
        .or_else(|| {
            lines
                .iter()
                .filter(placed)
                .find(|l| l.controllers == "name=systemd")
        })
        .or_else(|| lines.iter().find(placed))
}

/// Directory names, under the cgroup mount root, that may hold `line`'s
/// hierarchy: `""` and `unified` for v2; `systemd` for v1 `name=systemd`;
/// the controller list itself (`cpu,cpuacct`) and each controller for v1.
pub fn trees_for(line: &CgroupLine) -> Vec<String> {
    if line.hierarchy == 0 && line.controllers.is_empty() {
        return vec![String::new(), "unified".into()];
    }
    if let Some(name) = line.controllers.strip_prefix("name=") {
        return vec![name.to_string()];
    }
    let mut out = vec![line.controllers.clone()];
    out.extend(
        line.controllers
            .split(',')
            .filter(|c| *c != line.controllers)
            .map(str::to_string),
    );
    out
}

/// The container runtime whose layout a path component matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
    /// A bare 64-hex-digit component under a pod (cgroupfs driver): the
    /// runtime does not say which it is.
    Kubernetes,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Kubernetes => "kubernetes (cgroupfs)",
        }
    }
}

/// A container found in a cgroup path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    pub runtime: Runtime,
    /// The id as the runtime names it (64 hex digits, or a `ctr` name).
    pub id: String,
    /// The path up to and including the container's own component.
    pub path: String,
}

/// A Kubernetes pod found in a cgroup path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// The pod UID with dashes, lower case (as `kubectl get pod -o
    /// jsonpath={.metadata.uid}` prints it).
    pub uid: String,
    /// The path up to and including the pod's own component.
    pub path: String,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// containerd namespaces whose `/<namespace>/<id>` layout is recognised.
const CONTAINERD_NAMESPACES: [&str; 3] = ["default", "k8s.io", "moby"];

fn container_in(
    component: &str,
    parent: Option<&str>,
    under_pod: bool,
) -> Option<(Runtime, String)> {
    let scope = component.strip_suffix(".scope").unwrap_or(component);
    let prefixed = [
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("nerdctl-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("libpod-", Runtime::Podman),
    ];
    for (prefix, rt) in prefixed {
        if let Some(id) = scope.strip_prefix(prefix) {
            // `crio-conmon-<id>` is CRI-O's monitor, not the container.
            return is_hex64(id).then(|| (rt, id.to_ascii_lowercase()));
        }
    }
    match parent {
        Some("docker") if is_hex64(component) => {
            Some((Runtime::Docker, component.to_ascii_lowercase()))
        }
        Some(ns) if CONTAINERD_NAMESPACES.contains(&ns) && !component.is_empty() => {
            Some((Runtime::Containerd, component.to_string()))
        }
        _ if under_pod && is_hex64(component) => {
            Some((Runtime::Kubernetes, component.to_ascii_lowercase()))
        }
        _ => None,
    }
}

/// A pod UID in a path component, with dashes, lower case.
fn pod_in(component: &str) -> Option<String> {
    let c = component.strip_suffix(".slice").unwrap_or(component);
    let at = c.rfind("pod")?;
    // `pod<uid>` itself, or `...-pod<uid>` (systemd driver).
    if at != 0 && !c[..at].ends_with('-') {
        return None;
    }
    normalize_pod_uid(&c[at + 3..])
}

/// A pod UID (or a prefix of one) with dashes for the systemd driver's
/// underscores, lower case, trimmed.
pub fn pod_uid_chars(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// A pod UID in canonical form (8-4-4-4-12 hex digits with dashes, lower
/// case), from either the API's form or the systemd driver's underscores.
pub fn normalize_pod_uid(s: &str) -> Option<String> {
    let u = pod_uid_chars(s);
    let groups: Vec<&str> = u.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    (groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit())))
    .then_some(u)
}

/// The container and the pod that `path` (a cgroup path from
/// `/proc/<pid>/cgroup`) belongs to, when its layout is one of the known ones.
pub fn classify(path: &str) -> (Option<ContainerRef>, Option<PodRef>) {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut pod: Option<PodRef> = None;
    let mut container: Option<ContainerRef> = None;
    let mut kube = false;
    for (i, c) in comps.iter().enumerate() {
        let upto = || format!("/{}", comps[..=i].join("/"));
        if c.contains("kubepods") && pod.is_none() {
            kube = true;
            if let Some(uid) = pod_in(c) {
                pod = Some(PodRef { uid, path: upto() });
            }
            continue;
        }
        if kube && pod.is_none() {
            if let Some(uid) = pod_in(c) {
                pod = Some(PodRef { uid, path: upto() });
                continue;
            }
        }
        let parent = i.checked_sub(1).map(|p| comps[p]);
        // A containerd namespace only at the top (`/default/<id>`), not
        // any directory that happens to be called `default`.
        let parent = parent.filter(|p| *p == "docker" || i == 1);
        if let Some((runtime, id)) = container_in(c, parent, pod.is_some()) {
            container = Some(ContainerRef {
                runtime,
                id,
                path: upto(),
            });
        }
    }
    (container, pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c0d1e7b4a5f8c6d2e1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a10";
    const UID: &str = "0b7e6a1c-2d3f-4e5a-8b9c-1d2e3f4a5b6c";

    fn c(path: &str) -> Option<(Runtime, String, String)> {
        classify(path).0.map(|c| (c.runtime, c.id, c.path))
    }

    #[test]
    fn proc_cgroup_lines() {
        let v1 = "12:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/\nbroken\n";
        let l = parse_proc_cgroup(v1);
        assert_eq!(l.len(), 3);
        assert_eq!(primary_line(&l).unwrap().controllers, "name=systemd");
        assert_eq!(trees_for(&l[0]), ["cpu,cpuacct", "cpu", "cpuacct"]);
        assert_eq!(trees_for(&l[1]), ["systemd"]);
        assert_eq!(trees_for(&l[2]), ["", "unified"]);
        let hybrid = "1:name=systemd:/user.slice\n0::/system.slice/docker-x.scope\n";
        let l = parse_proc_cgroup(hybrid);
        assert_eq!(primary_line(&l).unwrap().hierarchy, 0);
        // A path with a colon in it stays whole.
        let l = parse_proc_cgroup("0::/a:b/c\n");
        assert_eq!(l[0].path, "/a:b/c");
        assert_eq!(primary_line(&parse_proc_cgroup("0::/\n")), None);
    }

    #[test]
    fn container_layouts() {
        assert_eq!(
            c(&format!("/docker/{ID}")),
            Some((Runtime::Docker, ID.into(), format!("/docker/{ID}")))
        );
        let p = format!("/system.slice/docker-{ID}.scope");
        assert_eq!(c(&p), Some((Runtime::Docker, ID.into(), p.clone())));
        let p = format!("/machine.slice/libpod-{ID}.scope/container");
        assert_eq!(
            c(&p).map(|x| x.2),
            Some(format!("/machine.slice/libpod-{ID}.scope"))
        );
        assert_eq!(
            c("/default/my-app").map(|x| (x.0, x.1)),
            Some((Runtime::Containerd, "my-app".into()))
        );
        // Not containers: a service, a slice, a directory named default deeper down,
        // CRI-O's monitor, a short hex name.
        assert_eq!(c("/system.slice/vllm.service"), None);
        assert_eq!(c("/user.slice/default/x"), None);
        assert_eq!(c(&format!("/system.slice/crio-conmon-{ID}.scope")), None);
        assert_eq!(c("/docker/abc123"), None);
    }

    #[test]
    fn pods_and_their_containers() {
        let under = UID.replace('-', "_");
        let sd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{under}.slice/cri-containerd-{ID}.scope"
        );
        let (ct, pod) = classify(&sd);
        let pod = pod.unwrap();
        assert_eq!(pod.uid, UID);
        assert_eq!(
            pod.path,
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{under}.slice")
        );
        assert_eq!(ct.unwrap().runtime, Runtime::Containerd);
        // Guaranteed QoS sits directly under kubepods.
        let (_, pod) = classify(&format!(
            "/kubepods.slice/kubepods-pod{under}.slice/crio-{ID}.scope"
        ));
        assert_eq!(pod.unwrap().uid, UID);
        // cgroupfs driver: dashes, bare container id.
        let fs = format!("/kubepods/besteffort/pod{UID}/{ID}");
        let (ct, pod) = classify(&fs);
        assert_eq!(pod.unwrap().path, format!("/kubepods/besteffort/pod{UID}"));
        let ct = ct.unwrap();
        assert_eq!((ct.runtime, ct.id.as_str()), (Runtime::Kubernetes, ID));
        let (ct, _) = classify(&format!("/kubepods/burstable/pod{UID}/crio-{ID}"));
        assert_eq!(ct.unwrap().runtime, Runtime::CriO);
        // A kubelet under its own slice (kind, k3s).
        let (_, pod) = classify(&format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{under}.slice"
        ));
        assert_eq!(pod.unwrap().uid, UID);
        // No kubepods above: not a pod.
        assert_eq!(classify(&format!("/pod{UID}")).1, None);
        assert_eq!(classify("/kubepods/burstable/podnot-a-uid").1, None);
    }

    #[test]
    fn pod_uid_forms() {
        assert_eq!(normalize_pod_uid(&UID.to_uppercase()).as_deref(), Some(UID));
        assert_eq!(
            normalize_pod_uid(&UID.replace('-', "_")).as_deref(),
            Some(UID)
        );
        assert_eq!(normalize_pod_uid("0b7e6a1c"), None);
        assert_eq!(normalize_pod_uid(""), None);
    }
}
