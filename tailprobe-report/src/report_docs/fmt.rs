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

/// Configurations that did not run, one line per reason: "- Not
/// applicable on this node (18 configurations): noise on another node
/// needs a second NUMA node; this node has 1." A governor's name in front
/// of the reason is moved into the list of what it covers.
pub fn not_run_lines(configs: &[crate::experiment::results::ConfigSummary]) -> Vec<String> {
    use crate::experiment::results::CellStatus;
    let mut groups: Vec<(CellStatus, String, Vec<String>)> = Vec::new();
    for c in configs.iter().filter(|c| c.status != CellStatus::Ran) {
        let reason = c
            .reason
            .clone()
            .unwrap_or_else(|| "no reason recorded".into());
        let prefix = format!("governor {}: ", c.config.governor);
        let key = reason
            .strip_prefix(&prefix)
            .map(str::to_string)
            .unwrap_or(reason);
        match groups
            .iter_mut()
            .find(|(s, k, _)| *s == c.status && *k == key)
        {
            Some(g) => g.2.push(c.label.clone()),
            None => groups.push((c.status, key, vec![c.label.clone()])),
        }
    }
    groups
        .into_iter()
        .map(|(st, key, labels)| {
            let mut w = st.words().to_string();
            if let Some(f) = w.get_mut(0..1) {
                f.make_ascii_uppercase();
            }
            format!(
                "- {w} ({} configuration{}): {}.",
                labels.len(),
                if labels.len() == 1 { "" } else { "s" },
                key.trim_end_matches('.')
            )
        })
        .collect()
}
