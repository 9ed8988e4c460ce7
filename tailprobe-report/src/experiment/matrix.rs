//! The matrix: every configuration of the plan, which of them this node can
//! run (and why not), and the order of the cells across repeats. Pure.

use serde::{Deserialize, Serialize};

use super::plan::{NoiseAxis, Pinning, Plan, PlanError};
use crate::cpulist;

/// One configuration: a governor, a placement and a neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Config {
    pub governor: String,
    pub pinning: Pinning,
    pub noise: NoiseAxis,
}

impl Config {
    pub fn label(&self) -> String {
        format!(
            "{} / {} / {}",
            if self.governor == "current" {
                "governor as found"
            } else {
                &self.governor
            },
            self.pinning.name(),
            self.noise.name()
        )
    }

    /// Short id for file names: `current-unpinned-none`.
    pub fn slug(&self) -> String {
        let p = match self.pinning {
            Pinning::Unpinned => "unpinned",
            Pinning::Local => "local",
            Pinning::Remote => "remote",
        };
        let n = match self.noise {
            NoiseAxis::None => "none",
            NoiseAxis::SameNode => "samenode",
            NoiseAxis::OtherNode => "othernode",
        };
        format!("{}-{p}-{n}", self.governor)
    }

    /// The reference every delta is taken against.
    pub fn is_baseline(&self) -> bool {
        self.governor == "current"
            && self.pinning == Pinning::Unpinned
            && self.noise == NoiseAxis::None
    }
}

/// What the node offers, as far as the matrix cares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub online: Vec<u32>,
    /// (node, its online CPUs).
    pub nodes: Vec<(u32, Vec<u32>)>,
    /// Governors the cpufreq driver offers; `Err(reason)` without cpufreq.
    pub governors: Result<Vec<String>, String>,
    /// The governor in force now (first policy), when known.
    pub current_governor: Option<String>,
    /// The node the accelerators hang off, when there are any.
    pub device_local_node: Option<u32>,
}

/// The CPUs and memory node of a placement, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placed {
    pub cpus: Vec<u32>,
    pub mem_node: Option<u32>,
    pub why: String,
}

impl NodeFacts {
    fn node_of_cpus(&self, cpus: &[u32]) -> Option<u32> {
        let ns: Vec<u32> = self
            .nodes
            .iter()
            .filter(|(_, c)| c.iter().any(|x| cpus.contains(x)))
            .map(|(n, _)| *n)
            .collect();
        (ns.len() == 1).then(|| ns[0])
    }

    /// The local node: the device-local one, else node 0 (said in `why`).
    pub fn local_node(&self) -> (u32, String) {
        match self.device_local_node {
            Some(n) => (n, format!("node{n}, the accelerators' node")),
            None => {
                let n = self.nodes.first().map(|(n, _)| *n).unwrap_or(0);
                (
                    n,
                    format!("node{n} (no accelerator here, so no device-local node: the first node stands in)"),
                )
            }
        }
    }

    /// Where a pinning puts the server; `Err` says why it cannot run here.
    pub fn place(&self, p: Pinning, plan: &Plan) -> Result<Option<Placed>, String> {
        let explicit = |l: &Option<String>, what: &str| -> Option<Placed> {
            let cpus = cpulist::parse(l.as_deref()?).ok()?;
            Some(Placed {
                mem_node: self.node_of_cpus(&cpus),
                why: format!("CPUs {} ({what} from the plan)", cpulist::Display(&cpus)),
                cpus,
            })
        };
        match p {
            Pinning::Unpinned => Ok(None),
            Pinning::Local => {
                if let Some(pl) = explicit(&plan.local_cpus, "local_cpus") {
                    return Ok(Some(pl));
                }
                let (n, why) = self.local_node();
                let cpus = self
                    .nodes
                    .iter()
                    .find(|(m, _)| *m == n)
                    .map(|(_, c)| c.clone())
                    .unwrap_or_else(|| self.online.clone());
                Ok(Some(Placed {
                    cpus,
                    mem_node: Some(n),
                    why,
                }))
            }
            Pinning::Remote => {
                if let Some(pl) = explicit(&plan.remote_cpus, "remote_cpus") {
                    return Ok(Some(pl));
                }
                if self.nodes.len() < 2 {
                    return Err(format!(
                        "pinned remote needs a second NUMA node; this node has {}",
                        self.nodes.len().max(1)
                    ));
                }
                let (local, _) = self.local_node();
                let Some((n, cpus)) = self
                    .nodes
                    .iter()
                    .find(|(m, c)| *m != local && !c.is_empty())
                else {
                    return Err("no other node has online CPUs".into());
                };
                Ok(Some(Placed {
                    cpus: cpus.clone(),
                    mem_node: Some(*n),
                    why: format!("node{n}, remote from node{local}"),
                }))
            }
        }
    }

    /// Why a configuration cannot run on this node, or `Ok`.
    pub fn applicable(&self, c: &Config, plan: &Plan) -> Result<(), String> {
        if c.governor != "current" {
            match &self.governors {
                Err(why) => {
                    return Err(format!(
                        "governor {}: no CPU frequency control on this node ({})",
                        c.governor,
                        why.trim_start_matches("not available on this node: ")
                    ))
                }
                Ok(av) if !av.contains(&c.governor) => {
                    return Err(format!(
                        "governor {}: the cpufreq driver here offers only {}",
                        c.governor,
                        av.join(", ")
                    ))
                }
                Ok(_) => {}
            }
        }
        self.place(c.pinning, plan)?;
        if c.noise == NoiseAxis::OtherNode && self.nodes.len() < 2 {
            return Err(format!(
                "noise on another node needs a second NUMA node; this node has {}",
                self.nodes.len().max(1)
            ));
        }
        Ok(())
    }

    /// Node-dependent plan checks: CPU lists must name online CPUs.
    pub fn check_plan(&self, plan: &Plan) -> Result<(), PlanError> {
        for (k, v) in [
            ("local_cpus", &plan.local_cpus),
            ("remote_cpus", &plan.remote_cpus),
        ] {
            if let Some(l) = v {
                let cpus =
                    cpulist::parse(l).map_err(|e| PlanError::Invalid(format!("{k} {l:?}: {e}")))?;
                if let Some(bad) = cpus.iter().find(|c| !self.online.contains(c)) {
                    return Err(PlanError::Invalid(format!(
                        "{k} names CPU {bad}, which does not exist here (online: {})",
                        cpulist::Display(&self.online)
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Every configuration of the plan, baseline first.
pub fn configs(plan: &Plan) -> Vec<Config> {
    let mut out = Vec::new();
    for g in &plan.governors {
        for p in &plan.pinning {
            for n in &plan.noise {
                out.push(Config {
                    governor: g.clone(),
                    pinning: *p,
                    noise: *n,
                });
            }
        }
    }
    out.sort_by_key(|c| !c.is_baseline());
    out
}

/// One run of one configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellSpec {
    /// Position in the run order (0-based).
    pub order: usize,
    pub repeat: u32,
    pub config: Config,
}

/// Cells in run order: forward on even repeats, backward on odd ones, so a
/// drift over time does not line up with one configuration.
pub fn cells(configs: &[Config], repeats: u32) -> Vec<CellSpec> {
    let mut out = Vec::new();
    for r in 0..repeats {
        let idx: Vec<usize> = if r % 2 == 0 {
            (0..configs.len()).collect()
        } else {
            (0..configs.len()).rev().collect()
        };
        for i in idx {
            out.push(CellSpec {
                order: out.len(),
                repeat: r,
                config: configs[i].clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> NodeFacts {
        NodeFacts {
            online: vec![0, 1],
            nodes: vec![(0, vec![0, 1])],
            governors: Err("no cpufreq directory".into()),
            current_governor: None,
            device_local_node: None,
        }
    }

    fn two_socket() -> NodeFacts {
        NodeFacts {
            online: (0..8).collect(),
            nodes: vec![(0, vec![0, 1, 2, 3]), (1, vec![4, 5, 6, 7])],
            governors: Ok(vec!["performance".into(), "powersave".into()]),
            current_governor: Some("powersave".into()),
            device_local_node: Some(1),
        }
    }

    #[test]
    fn order_alternates_across_repeats() {
        let plan = Plan {
            governors: vec!["current".into()],
            pinning: vec![Pinning::Unpinned, Pinning::Local],
            noise: vec![NoiseAxis::None],
            ..Plan::default()
        };
        let cs = configs(&plan);
        assert!(cs[0].is_baseline());
        let cells = cells(&cs, 3);
        let seq: Vec<Pinning> = cells.iter().map(|c| c.config.pinning).collect();
        use Pinning::*;
        assert_eq!(seq, vec![Unpinned, Local, Local, Unpinned, Unpinned, Local]);
        assert_eq!(cells[3].repeat, 1);
        assert_eq!(cells[5].order, 5);
    }

    #[test]
    fn a_vm_says_why_cells_cannot_run() {
        let plan = Plan::default();
        let f = vm();
        let all = configs(&plan);
        assert_eq!(all.len(), 27);
        let runnable: Vec<&Config> = all
            .iter()
            .filter(|c| f.applicable(c, &plan).is_ok())
            .collect();
        // governor as found x {unpinned, local} x {none, same node}
        assert_eq!(runnable.len(), 4);
        let c = Config {
            governor: "performance".into(),
            pinning: Pinning::Unpinned,
            noise: NoiseAxis::None,
        };
        let why = f.applicable(&c, &plan).unwrap_err();
        assert!(why.contains("no CPU frequency control"), "{why}");
        let c = Config {
            governor: "current".into(),
            pinning: Pinning::Remote,
            noise: NoiseAxis::None,
        };
        assert!(f
            .applicable(&c, &plan)
            .unwrap_err()
            .contains("second NUMA node"));
        let local = f.place(Pinning::Local, &plan).unwrap().unwrap();
        assert_eq!(local.cpus, vec![0, 1]);
        assert!(local.why.contains("no accelerator"), "{}", local.why);
    }

    #[test]
    fn two_sockets_place_local_on_the_device_node() {
        let plan = Plan::default();
        let f = two_socket();
        let l = f.place(Pinning::Local, &plan).unwrap().unwrap();
        assert_eq!((l.cpus.clone(), l.mem_node), (vec![4, 5, 6, 7], Some(1)));
        let r = f.place(Pinning::Remote, &plan).unwrap().unwrap();
        assert_eq!((r.cpus.clone(), r.mem_node), (vec![0, 1, 2, 3], Some(0)));
        let c = Config {
            governor: "schedutil".into(),
            pinning: Pinning::Unpinned,
            noise: NoiseAxis::OtherNode,
        };
        assert!(f
            .applicable(&c, &plan)
            .unwrap_err()
            .contains("offers only performance, powersave"));
        assert_eq!(
            configs(&plan)
                .iter()
                .filter(|c| f.applicable(c, &plan).is_ok())
                .count(),
            27
        );
    }

    #[test]
    fn plan_cpus_must_exist() {
        let plan = Plan {
            local_cpus: Some("0-3".into()),
            ..Plan::default()
        };
        let e = vm().check_plan(&plan).unwrap_err().to_string();
        assert!(
            e.contains("CPU 2, which does not exist here (online: 0-1)"),
            "{e}"
        );
        assert!(two_socket().check_plan(&plan).is_ok());
    }
}
