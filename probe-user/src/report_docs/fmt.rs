//! Number formatting shared by the documents. Pure.

use crate::experiment::analysis::stats::{Delta, Estimate};

/// "12.34 ± 0.56" (95% interval over repeats) or "12.34 (n=1)".
pub fn est(e: &Option<Estimate>, digits: usize) -> String {
    match e {
        None => "–".into(),
        Some(e) => match e.ci95 {
            Some(c) => format!("{:.*} ± {:.*}", digits, e.mean, digits, c),
            None => format!("{:.*} (n=1)", digits, e.mean),
        },
    }
}

pub fn mean(e: &Option<Estimate>) -> Option<f64> {
    e.map(|e| e.mean)
}

/// "+1.23 ms (+4.5%, ± 0.8, significant)".
pub fn delta(d: &Option<Delta>, unit: &str) -> String {
    match d {
        None => "–".into(),
        Some(d) => {
            let pct = d.pct.map(|p| format!("{p:+.1}%")).unwrap_or_default();
            let ci = d.ci95.map(|c| format!(" ± {c:.2}")).unwrap_or_default();
            let sig = match d.ci95 {
                None => " (one run: no interval)",
                Some(_) if d.significant => " (significant)",
                Some(_) => " (within noise)",
            };
            format!("{:+.2}{unit} ({pct}{ci}){sig}", d.diff)
        }
    }
}

pub fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "–".into())
}
