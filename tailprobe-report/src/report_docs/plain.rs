//! "In plain words": why the tail, not the average, told with this run's
//! own numbers. A paragraph whose case did not happen (no capacity, no
//! neighbour effect, an average that did not hide anything) is left out.
//! Pure.

use std::fmt::Write as _;

use super::verdict::{self, ms, slo_percentile, Effect};
use crate::experiment::results::Results;

fn intro(r: &Results) -> String {
    let rate = r
        .calibration
        .as_ref()
        .map(|c| format!(", about {:.0} a second in this test", c.offered_rps))
        .unwrap_or_default();
    let promise = match r.plan.slo {
        Some(slo) => format!(
            "{:.0} in 100 customers must be done within {} ms",
            slo.percentile,
            ms(slo.e2e_ms)
        ),
        None => "most customers must be done quickly (no SLO was set for this run)".into(),
    };
    format!(
        "Think of one server as a shop counter whose clerks are its CPUs. Customers arrive at random{rate}. Most are served at once; some arrive just after a crowd and wait. The promise we make is about those unlucky ones: {promise}.\n"
    )
}

fn capacity(r: &Results) -> Option<String> {
    let c = r.capacity.as_ref()?;
    let base = &r.baseline()?.label;
    let row = c.rows.iter().find(|x| &x.label == base)?;
    let cap = row.capacity_rps?;
    let mut s = format!(
        "This run measured how fast customers can arrive before that promise breaks: **{cap:.0} per second per server**."
    );
    if let (Some(f), Some(n), Some(n1)) = (c.fleet_load_rps, row.replicas, row.replicas_n1) {
        let _ = write!(
            s,
            " For the stated peak of {f:.0} per second, using {:.0}% of each server so a burst still fits, you need **N = {n}** servers, and **N+1 = {n1}** so that one can fail or be updated without breaking the promise.",
            c.headroom * 100.0
        );
    }
    s.push('\n');
    Some(s)
}

fn neighbour(r: &Results, e: &Effect) -> Option<String> {
    if !e.material_slowdown() {
        return None;
    }
    let c = r.capacity.as_ref();
    let row = |l: &str| c.and_then(|c| c.rows.iter().find(|x| x.label == l));
    let cap = match (row(&e.reference).and_then(|x| x.capacity_rps), row(&e.label)) {
        (Some(q), Some(n)) => match n.capacity_rps {
            Some(nc) if nc < q => format!(
                " The promise now breaks at **{nc:.0} per second** instead of {q:.0}: each server carries {:.0}% less.",
                100.0 * (1.0 - nc / q)
            ),
            Some(_) => String::new(),
            None => " The promise broke at every rate tried.".into(),
        },
        _ => String::new(),
    };
    Some(format!(
        "Now put a busy neighbour on the same machine (`{}`). The clerks are the same; they just get interrupted: it {}.{cap}\n",
        e.label,
        e.sentence()
    ))
}

fn average(r: &Results, e: &Effect) -> Option<String> {
    let (avg, p99) = verdict::average_hides_tail(r, e)?;
    Some(format!(
        "Why not look at the average? With that neighbour the average went from {} to {} ms ({}), but the slowest 1 in 100 went from {} to {} ms ({}). The promise is written about the slow customers, and capacity is the rate at which *they* break it; a user who sends ten requests to render one page waits for the slowest of the ten.\n",
        ms(avg.from_ms),
        ms(avg.to_ms),
        avg.pct_words(),
        ms(p99.from_ms),
        ms(p99.to_ms),
        p99.pct_words()
    ))
}

pub fn feynman(r: &Results) -> String {
    let mut s = String::from("## In plain words: why the tail, not the average\n\n");
    let _ = writeln!(s, "{}", intro(r));
    if let Some(c) = capacity(r) {
        let _ = writeln!(s, "{c}");
    }
    let worst = verdict::worst_neighbour(r);
    if r.baseline().is_none() {
        let _ = writeln!(
            s,
            "This run has no baseline measurement that counts, so it cannot yet say what moves the tail on this machine."
        );
        return s;
    }
    let mut told = false;
    if let Some(e) = &worst {
        if let Some(n) = neighbour(r, e) {
            told = true;
            let _ = writeln!(s, "{n}");
            if let Some(a) = average(r, e) {
                let _ = writeln!(s, "{a}");
            }
        }
    }
    let p = slo_percentile(r);
    if told {
        let _ = writeln!(s, "So the work is not to make the average faster; it is to keep the clerks uninterrupted (the right CPUs, the right memory, no neighbours), because that is what moves the number of servers you pay for.");
    } else if verdict::best_gain(r).is_none()
        && !(verdict::neighbour_effects(r).is_empty() && verdict::tuning_effects(r).is_empty())
    {
        let _ = writeln!(
            s,
            "In this run no neighbour or setting measurably moved {}{}.",
            verdict::tail_words(p),
            if capacity(r).is_some() {
                "; the capacity above is the number to plan with"
            } else {
                ""
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report_docs::testkit::{all_within_noise, recorded};

    #[test]
    fn recorded_run_tells_the_neighbour_and_the_average() {
        let r = recorded();
        let s = feynman(&r);
        assert!(s.contains("**452 per second per server**"), "{s}");
        assert!(
            s.contains(
                "it slows the slowest 5% of answers from 10.5 to 40.7 ms (+288%, significant)"
            ),
            "{s}"
        );
        assert!(s.contains("**251 per second** instead of 452"), "{s}");
        assert!(
            s.contains("the average went from 5.74 to 16.7 ms (+191%)"),
            "{s}"
        );
    }

    #[test]
    fn no_neighbour_story_when_nothing_moved() {
        let mut r = recorded();
        all_within_noise(&mut r);
        let s = feynman(&r);
        assert!(!s.contains("busy neighbour"), "{s}");
        assert!(!s.contains("Why not look at the average"), "{s}");
        assert!(s.contains("no neighbour or setting measurably moved"));
    }

    #[test]
    fn no_fleet_without_a_stated_peak() {
        let mut r = recorded();
        if let Some(c) = r.capacity.as_mut() {
            c.fleet_load_rps = None;
        }
        let s = feynman(&r);
        assert!(!s.contains("N+1"), "{s}");
        assert!(s.contains("per second per server"));
    }
}
