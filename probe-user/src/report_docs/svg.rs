//! Small SVG plots, written by hand (no plotting dependency): latency CDF
//! per configuration, p95 per configuration with the spread over repeats,
//! and latency against run-queue wait. Pure.

use std::fmt::Write as _;

const W: f64 = 760.0;
const H: f64 = 420.0;
const L: f64 = 70.0;
const R: f64 = 220.0;
const T: f64 = 40.0;
const B: f64 = 50.0;
const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" upper bound for an axis.
pub fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let e = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * e >= v {
            return m * e;
        }
    }
    10.0 * e
}

struct Frame {
    s: String,
    xmax: f64,
    ymax: f64,
}

impl Frame {
    fn new(title: &str, xlabel: &str, ylabel: &str, xmax: f64, ymax: f64) -> Frame {
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>
"#,
            (L + W - R) / 2.0,
            esc(title)
        );
        let (x0, x1, y0, y1) = (L, W - R, H - B, T);
        let _ = writeln!(
            s,
            r#"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>"#
        );
        for i in 0..=5 {
            let f = i as f64 / 5.0;
            let x = x0 + f * (x1 - x0);
            let y = y0 - f * (y0 - y1);
            let _ = writeln!(
                s,
                r##"<line x1="{x}" y1="{y0}" x2="{x}" y2="{y1}" stroke="#eee"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"##,
                y0 + 16.0,
                fmt_tick(f * xmax)
            );
            let _ = writeln!(
                s,
                r##"<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
                x0 - 6.0,
                y + 4.0,
                fmt_tick(f * ymax)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (x0 + x1) / 2.0,
            H - 12.0,
            esc(xlabel),
            (y0 + y1) / 2.0,
            esc(ylabel)
        );
        Frame { s, xmax, ymax }
    }

    fn x(&self, v: f64) -> f64 {
        L + (v / self.xmax).clamp(0.0, 1.0) * (W - R - L)
    }

    fn y(&self, v: f64) -> f64 {
        (H - B) - (v / self.ymax).clamp(0.0, 1.0) * (H - B - T)
    }

    fn legend(&mut self, i: usize, label: &str) {
        let y = T + 8.0 + i as f64 * 18.0;
        let _ = writeln!(
            self.s,
            r#"<rect x="{}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            W - R + 12.0,
            y - 10.0,
            COLORS[i % COLORS.len()],
            W - R + 30.0,
            y,
            esc(&shorten(label, 30))
        );
    }

    fn finish(mut self) -> String {
        self.s.push_str("</svg>\n");
        self.s
    }
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Latency CDF per series: points are (fraction, ms). The x axis stops at
/// the largest p99.9-ish value so one outlier does not flatten the rest.
pub fn cdf(title: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let xmax = series
        .iter()
        .flat_map(|(_, p)| p.iter().filter(|(f, _)| *f <= 0.999).map(|(_, v)| *v))
        .fold(0.0, f64::max);
    let mut fr = Frame::new(
        title,
        "latency (ms, end - intended)",
        "fraction of requests",
        nice_max(xmax),
        1.0,
    );
    for (i, (label, pts)) in series.iter().enumerate() {
        let mut d = String::new();
        for (k, (f, v)) in pts.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if k == 0 { "M" } else { "L" },
                fr.x(*v),
                fr.y(*f)
            );
        }
        let _ = writeln!(
            fr.s,
            r#"<path d="{}" fill="none" stroke="{}" stroke-width="1.6"/>"#,
            d.trim_end(),
            COLORS[i % COLORS.len()]
        );
        fr.legend(i, label);
    }
    fr.finish()
}

/// One bar per row: mean, with the min..max whisker and each repeat as a dot.
pub fn bars(title: &str, ylabel: &str, rows: &[(String, f64, Vec<f64>)]) -> String {
    let ymax = rows
        .iter()
        .flat_map(|(_, m, v)| v.iter().copied().chain([*m]))
        .fold(0.0, f64::max);
    let n = rows.len().max(1) as f64;
    let mut fr = Frame::new(
        title,
        "configuration (see legend)",
        ylabel,
        n,
        nice_max(ymax * 1.1),
    );
    // Replace the numeric x ticks' meaning: bars sit at i + 0.5.
    for (i, (label, mean, vals)) in rows.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let xc = fr.x(i as f64 + 0.5);
        let bw = (W - R - L) / n * 0.6;
        let _ = writeln!(
            fr.s,
            r#"<rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="{c}" fill-opacity="0.6"/>"#,
            xc - bw / 2.0,
            fr.y(*mean),
            fr.y(0.0) - fr.y(*mean)
        );
        if let (Some(lo), Some(hi)) = (
            vals.iter().copied().reduce(f64::min),
            vals.iter().copied().reduce(f64::max),
        ) {
            let _ = writeln!(
                fr.s,
                r#"<line x1="{xc:.1}" y1="{:.1}" x2="{xc:.1}" y2="{:.1}" stroke="black"/>"#,
                fr.y(lo),
                fr.y(hi)
            );
        }
        for v in vals {
            let _ = writeln!(
                fr.s,
                r#"<circle cx="{xc:.1}" cy="{:.1}" r="3" fill="black"/>"#,
                fr.y(*v)
            );
        }
        fr.legend(i, label);
    }
    fr.finish()
}

/// Scatter per series: (x, y) points.
pub fn scatter(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    let xmax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.0))
        .fold(0.0, f64::max);
    let ymax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(0.0, f64::max);
    let mut fr = Frame::new(title, xlabel, ylabel, nice_max(xmax), nice_max(ymax));
    for (i, (label, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        for (x, y) in pts {
            let _ = writeln!(
                fr.s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.2" fill="{c}" fill-opacity="0.55"/>"#,
                fr.x(*x),
                fr.y(*y)
            );
        }
        fr.legend(i, label);
    }
    fr.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_and_shapes() {
        assert_eq!(nice_max(7.3), 10.0);
        assert_eq!(nice_max(0.42), 0.5);
        assert_eq!(nice_max(180.0), 200.0);
        let s = cdf("t", &[("a<b".into(), vec![(0.5, 1.0), (1.0, 2.0)])]);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("a&lt;b"));
        assert_eq!(s.matches("<path").count(), 1);
        let b = bars("p95", "ms", &[("x".into(), 2.0, vec![1.0, 3.0])]);
        assert_eq!(b.matches("<circle").count(), 2);
        let sc = scatter("s", "x", "y", &[("x".into(), vec![(1.0, 2.0); 3])]);
        assert_eq!(sc.matches("<circle").count(), 3);
    }
}
