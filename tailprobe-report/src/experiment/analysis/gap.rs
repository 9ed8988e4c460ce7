//! Attribution before correlation: how many milliseconds of the gap between
//! the slow requests (above p95) and the typical ones (at or below p50)
//! each component explains. Pure.

use crate::experiment::results::{GapAttribution, GapComponent, GapPart};

use super::attribution::TailSplit;

/// A component below this share of the gap is not named.
pub const MIN_SHARE_PCT: f64 = 10.0;

/// The gap of a tail split, component by component.
pub fn of(split: &TailSplit, exact: bool, min_share_pct: f64) -> Option<GapAttribution> {
    let (s, t) = (&split.tail, &split.typical);
    if s.requests == 0 || t.requests == 0 {
        return None;
    }
    let gap = s.total_ms - t.total_ms;
    let timed = [
        (GapComponent::RunqWait, s.runq_ms, t.runq_ms),
        (
            GapComponent::IrqTime,
            s.hardirq_ms + s.softirq_ms,
            t.hardirq_ms + t.softirq_ms,
        ),
        (GapComponent::ServerQueue, s.queue_ms, t.queue_ms),
        (GapComponent::Service, s.service_ms, t.service_ms),
    ];
    let mut parts: Vec<GapPart> = timed
        .iter()
        .map(|(c, a, b)| {
            let g = a - b;
            let share = (gap > 0.0).then(|| 100.0 * g / gap);
            GapPart {
                component: *c,
                slow: *a,
                typical: *b,
                gap_ms: Some(g),
                share_pct: share,
                named: share.is_some_and(|x| x >= min_share_pct),
            }
        })
        .collect();
    // Counts: the probes do not time a fault or a migration (their time is
    // inside service); they are shown, never named as a share of the gap.
    for (c, a, b) in [
        (GapComponent::PageFaults, s.page_faults, t.page_faults),
        (GapComponent::Migrations, s.migrations, t.migrations),
    ] {
        parts.push(GapPart {
            component: c,
            slow: a,
            typical: b,
            gap_ms: None,
            share_pct: None,
            named: false,
        });
    }
    Some(GapAttribution {
        method: split.method.clone(),
        exact,
        percentile: 95.0,
        threshold_ms: split.p95_ms,
        slow_requests: s.requests,
        typical_requests: t.requests,
        slow_ms: s.total_ms,
        typical_ms: t.total_ms,
        gap_ms: gap,
        parts,
        min_share_pct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::analysis::attribution::GroupMeans;

    fn g(n: usize, total: f64, queue: f64, runq: f64, irq: f64, faults: f64) -> GroupMeans {
        GroupMeans {
            requests: n,
            total_ms: total,
            queue_ms: queue,
            runq_ms: runq,
            hardirq_ms: irq,
            softirq_ms: 0.0,
            service_ms: total - queue - runq - irq,
            page_faults: faults,
            migrations: 0.0,
            cross_numa_migrations: 0.0,
        }
    }

    #[test]
    fn the_gap_splits_into_its_components_in_ms() {
        // Slow: 40 ms (5 queue, 20 run-queue, 1 IRQ, 14 service); typical:
        // 10 ms (1 queue, 0.5 run-queue, 0.5 IRQ, 8 service). Gap 30 ms.
        let split = TailSplit {
            method: "exact (serving thread)".into(),
            p95_ms: 30.0,
            tail: g(5, 40.0, 5.0, 20.0, 1.0, 3.0),
            typical: g(50, 10.0, 1.0, 0.5, 0.5, 1.0),
        };
        let a = of(&split, true, MIN_SHARE_PCT).unwrap();
        assert_eq!(a.gap_ms, 30.0);
        let part = |c| *a.parts.iter().find(|p| p.component == c).unwrap();
        assert_eq!(part(GapComponent::RunqWait).gap_ms, Some(19.5));
        assert_eq!(part(GapComponent::ServerQueue).gap_ms, Some(4.0));
        assert_eq!(part(GapComponent::IrqTime).gap_ms, Some(0.5));
        assert_eq!(part(GapComponent::Service).gap_ms, Some(6.0));
        let sum: f64 = a.parts.iter().filter_map(|p| p.gap_ms).sum();
        assert!((sum - 30.0).abs() < 1e-9, "parts add up to the gap");
        assert!(part(GapComponent::RunqWait).named);
        assert!(part(GapComponent::Service).named); // 20%
        assert!(part(GapComponent::ServerQueue).named); // 13.3%
        assert!(!part(GapComponent::IrqTime).named); // 1.7%: below 10%
        let pf = part(GapComponent::PageFaults);
        assert_eq!(
            (pf.slow, pf.typical, pf.gap_ms, pf.named),
            (3.0, 1.0, None, false)
        );
    }

    #[test]
    fn no_gap_names_nothing_and_empty_groups_give_none() {
        let split = TailSplit {
            method: "x".into(),
            p95_ms: 10.0,
            tail: g(5, 10.0, 0.0, 5.0, 0.0, 0.0),
            typical: g(50, 10.0, 0.0, 0.0, 0.0, 0.0),
        };
        let a = of(&split, false, MIN_SHARE_PCT).unwrap();
        assert!(a.parts.iter().all(|p| !p.named));
        let empty = TailSplit {
            tail: GroupMeans::default(),
            ..split
        };
        assert!(of(&empty, false, MIN_SHARE_PCT).is_none());
    }
}
