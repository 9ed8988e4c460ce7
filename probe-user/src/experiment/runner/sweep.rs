//! The capacity search of one configuration on the real node: the server
//! launched in that configuration, then the rates `analysis::capacity`
//! asks for (coarse ramp, then bisection), each with the neighbour when
//! the configuration has one.

use std::time::Duration;

use super::Runner;
use crate::{
    experiment::{
        analysis::capacity::{self, CapacityRow, SearchEnd, SearchPlan, Step, SweepPoint},
        matrix::Config,
        plan::SloPlan,
    },
    load::{self, report::INCOMPLETE_THRESHOLD},
    node::{governor, journal::Journal},
    signals,
};

/// Most rates tried per configuration.
pub const MAX_STEPS: usize = 12;

/// Seconds one step of the search takes (load, settling).
pub fn step_s(sweep_s: f64) -> f64 {
    sweep_s + 0.8
}

fn pctl(r: &load::report::LoadReport, p: f64) -> Option<f64> {
    let s = r.latency_ms.e2e_sched.as_ref()?;
    Some(match p as u32 {
        50 => s.p50.value,
        90 => s.p90.value,
        99 => s.p99.value,
        _ => s.p95.value,
    })
}

impl Runner<'_> {
    pub(super) fn search_plan(&self, base_rps: f64) -> SearchPlan {
        let p = self.plan();
        let mut ramp: Vec<f64> = p.sweep.iter().map(|f| f * base_rps).collect();
        ramp.sort_by(f64::total_cmp);
        SearchPlan {
            ramp,
            growth: 1.25,
            resolution: p.capacity_resolution,
            max_steps: MAX_STEPS,
            max_incomplete: INCOMPLETE_THRESHOLD,
        }
    }

    /// Search one configuration's capacity; `deadline_s` is the experiment
    /// time by which it must end.
    pub(super) fn search(
        &self,
        cfg: &Config,
        slo: SloPlan,
        base_rps: f64,
        deadline_s: f64,
    ) -> Result<CapacityRow, String> {
        let p = self.plan();
        let roots = &self.o.roots;
        let (mut j, _) = Journal::begin(&self.o.journal, &roots.proc).map_err(|e| e.to_string())?;
        if cfg.governor != "current" {
            governor::set(roots, &mut j, &cfg.governor).map_err(|e| e.to_string())?;
        }
        let placed = self.facts.place(cfg.pinning, p)?;
        let mut srv = self
            .launch(placed.as_ref(), &format!("sweep-{}", cfg.slug()), &mut j)
            .map_err(|e| format!("{e:#}"))?;
        let server_cpus = placed
            .as_ref()
            .map(|x| x.cpus.clone())
            .unwrap_or_else(|| self.facts.online.clone());
        let mut notes = Vec::new();
        let nc = self.noise_cpus(cfg.noise, &server_cpus, &mut notes)?;
        let plan = self.search_plan(base_rps);
        let mut points: Vec<SweepPoint> = Vec::new();
        let mut refused = None;
        let end = loop {
            let step = capacity::next_step(&points, slo.e2e_ms, &plan);
            let Step::Probe { rate, phase } = step else {
                break step;
            };
            if signals::stop_requested() {
                refused = Some("stopped by Ctrl-C before the search ended".to_string());
                break step;
            }
            if self.started.elapsed().as_secs_f64() + step_s(p.sweep_s) > deadline_s {
                refused = Some("the time bound (max_total_s) came before the search ended".into());
                break step;
            }
            let nt = nc.as_ref().map(|c| self.start_noise(c, p.sweep_s + 0.4));
            let warm = (rate * 0.3).round() as u64;
            let r = self
                .load_options(&srv.url, Some(rate), p.sweep_s + 0.3, warm, None)
                .map_err(|e| e.to_string())
                .and_then(|lo| load::run(&lo).map_err(|e| e.to_string()));
            if let Some(h) = nt {
                let _ = h.join();
            }
            let r = r?;
            points.push(SweepPoint {
                offered_rps: rate,
                achieved_rps: r.throughput_rps,
                pctl_ms: pctl(&r, slo.percentile).unwrap_or(f64::INFINITY),
                errors: r.errors + r.timeouts,
                samples: r.ok,
                incomplete: r.incomplete,
                phase: phase.into(),
            });
            if let Some(why) = srv.exited() {
                refused = Some(format!("{why} during the search"));
                break step;
            }
            std::thread::sleep(Duration::from_millis(300));
        };
        srv.stop();
        let _ = j.restore();
        let (passed, failed) = capacity::bracket(&points, slo.e2e_ms);
        let refused = refused.or_else(|| match end {
            Step::Done(SearchEnd::TooIncomplete) => Some(format!(
                "answers were incomplete above {:.0}% at some rate: no capacity is built on cut answers",
                INCOMPLETE_THRESHOLD * 100.0
            )),
            Step::Done(SearchEnd::BelowLowest) => Some(format!(
                "the SLO failed even at {:.1} requests/s: the capacity is below that",
                points
                    .iter()
                    .map(|x| x.offered_rps)
                    .fold(f64::INFINITY, f64::min)
            )),
            _ if failed.is_none() => Some(format!(
                "the SLO still held at {:.1} requests/s after {} steps: the capacity is above that",
                passed.unwrap_or(0.0),
                points.len()
            )),
            _ if passed.is_none() => Some("no rate tried met the SLO".into()),
            _ => None,
        });
        let bracketed = passed.is_some() && failed.is_some();
        Ok(CapacityRow {
            label: cfg.label(),
            // A search cut short (time bound, Ctrl-C, the server gone) keeps
            // its bracket in passed_rps / failed_rps, not as a capacity.
            capacity_rps: if bracketed && refused.is_none() {
                passed
            } else {
                None
            },
            replicas: None,
            replicas_n1: None,
            saved_vs_worst: None,
            ratio_vs_baseline: None,
            points,
            passed_rps: passed,
            failed_rps: failed,
            refused,
        })
    }
}
