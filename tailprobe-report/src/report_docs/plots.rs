//! The plots, drawn with plotters' SVG backend: the latency CDF on a
//! logarithmic latency axis, the SLO percentile per configuration as
//! horizontal bars (full configuration names on the category axis, each
//! repeat as a dot), and server time against run-queue wait. Pure: each
//! function returns the SVG text.

use plotters::{coord::ranged1d::SegmentValue, prelude::*};
use thiserror::Error;

#[derive(Debug, Error)]
#[error("drawing the plot \"{plot}\": {detail}")]
pub struct PlotError {
    plot: String,
    detail: String,
}

fn err<E: std::fmt::Debug>(plot: &str) -> impl Fn(E) -> PlotError + '_ {
    move |e| PlotError {
        plot: plot.to_string(),
        detail: format!("{e:?}"),
    }
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Axis bounds for a log axis: whole decades around the data, so every
/// decade gets its ticks (plotters labels from the first power of ten).
fn log_bounds(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = vals
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(l, h), v| (l.min(v), h.max(v)));
    if !lo.is_finite() || hi <= 0.0 {
        return (0.1, 1000.0);
    }
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil());
    (lo, if hi > lo { hi } else { lo * 10.0 })
}

/// Latency CDF per series, (fraction, ms) points; x logarithmic so the
/// tail is as wide as the body.
pub fn cdf(title: &str, series: &[(String, Vec<(f64, f64)>)]) -> Result<String, PlotError> {
    let e = err(title);
    let mut out = String::new();
    {
        let rows = series.len() as u32;
        let root = SVGBackend::with_string(&mut out, (900, 480 + 18 * rows)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let (lo, hi) = log_bounds(series.iter().flat_map(|(_, p)| p.iter().map(|x| x.1)));
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..1f64)
            .map_err(&e)?;
        chart
            .configure_mesh()
            .x_desc("latency, ms (end of answer - intended send; log scale)")
            // Enough key points for plotters to tick 1..9 inside each decade.
            .x_labels(30)
            .light_line_style(WHITE)
            .y_desc("fraction of requests")
            .x_label_formatter(&|v| tick(*v))
            .draw()
            .map_err(&e)?;
        for (i, (label, pts)) in series.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(LineSeries::new(
                    pts.iter().filter(|p| p.1 > 0.0).map(|(f, v)| (*v, *f)),
                    c.stroke_width(2),
                ))
                .map_err(&e)?
                .label(label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(&e)?;
        root.present().map_err(&e)?;
    }
    Ok(out)
}

fn tick(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One horizontal bar per configuration (the mean) with each repeat as a
/// dot; the category axis carries the full configuration names.
pub fn bars(
    title: &str,
    xlabel: &str,
    rows: &[(String, f64, Vec<f64>)],
) -> Result<String, PlotError> {
    let e = err(title);
    let mut out = String::new();
    {
        let n = rows.len().max(1);
        let root =
            SVGBackend::with_string(&mut out, (980, 120 + 46 * n as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let xmax = rows
            .iter()
            .flat_map(|(_, m, v)| v.iter().copied().chain([*m]))
            .fold(0.0, f64::max)
            * 1.1;
        let longest = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(10) as u32;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(longest * 7 + 16)
            // A discrete usize range includes its end: 0..n-1 is n bands.
            .build_cartesian_2d(0f64..xmax.max(1e-9), (0..n - 1).into_segmented())
            .map_err(&e)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(xlabel)
            .y_labels(n)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => rows.get(*i).map(|r| r.0.clone()).unwrap_or_default(),
                _ => String::new(),
            })
            .draw()
            .map_err(&e)?;
        chart
            .draw_series(
                // One rectangle per band, in row order (deterministic SVG).
                rows.iter().enumerate().map(|(i, r)| {
                    let mut b = Rectangle::new(
                        [
                            (0.0, SegmentValue::Exact(i)),
                            (r.1, SegmentValue::Exact(i + 1)),
                        ],
                        color(0).mix(0.55).filled(),
                    );
                    b.set_margin(10, 10, 0, 0);
                    b
                }),
            )
            .map_err(&e)?;
        chart
            .draw_series(rows.iter().enumerate().flat_map(|(i, r)| {
                r.2.iter()
                    .map(move |v| Circle::new((*v, SegmentValue::CenterOf(i)), 4, BLACK.filled()))
            }))
            .map_err(&e)?;
        root.present().map_err(&e)?;
    }
    Ok(out)
}

/// Scatter per series: (x, y) points, both axes linear from 0.
pub fn scatter(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<String, PlotError> {
    let e = err(title);
    let mut out = String::new();
    {
        let rows = series.len() as u32;
        let root = SVGBackend::with_string(&mut out, (900, 480 + 18 * rows)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let xmax = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|x| x.0))
            .fold(0.0, f64::max);
        let ymax = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|x| x.1))
            .fold(0.0, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..(xmax * 1.05).max(1e-3), 0f64..(ymax * 1.05).max(1e-3))
            .map_err(&e)?;
        chart
            .configure_mesh()
            .x_desc(xlabel)
            .y_desc(ylabel)
            .draw()
            .map_err(&e)?;
        for (i, (label, pts)) in series.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(
                    pts.iter()
                        .map(move |(x, y)| Circle::new((*x, *y), 3, c.mix(0.6).filled())),
                )
                .map_err(&e)?
                .label(label.clone())
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(&e)?;
        root.present().map_err(&e)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: &str = "governor as found / pinned local / noise same node";

    #[test]
    fn cdf_has_a_log_axis_and_full_legends() {
        let a = "governor as found / unpinned / noise same node".to_string();
        let b = "governor as found / unpinned / noise other node".to_string();
        let s = cdf(
            "Latency CDF",
            &[
                (a.clone(), vec![(0.5, 1.0), (0.99, 10.0), (1.0, 400.0)]),
                (b.clone(), vec![(0.5, 2.0), (1.0, 20.0)]),
            ],
        )
        .unwrap();
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        // Two series whose names differ only at the end keep distinct legends.
        assert!(s.contains(&a) && s.contains(&b), "legend cut");
        assert!(s.contains("log scale"));
        // Decade ticks on the latency axis (1, 10, 100 ms all readable).
        for t in ["\n1.0\n", "\n10\n", "\n100\n"] {
            assert!(s.contains(t), "tick {t} missing");
        }
    }

    #[test]
    fn bars_label_categories_by_name() {
        let s = bars(
            "p95",
            "p95 ms",
            &[
                (
                    "governor as found / unpinned / no noise".into(),
                    10.5,
                    vec![10.0, 11.0],
                ),
                (LONG.into(), 40.7, vec![39.0, 41.0, 42.0]),
            ],
        )
        .unwrap();
        assert!(s.contains("governor as found / unpinned / no noise"));
        assert!(s.contains(LONG));
        // The category axis shows names, not 0, 0.80, 1.6.
        assert!(!s.contains("\n0.80\n") && !s.contains("\n1.6\n"));
        assert_eq!(s.matches("<circle").count(), 5);
    }

    #[test]
    fn scatter_draws_every_point() {
        let s = scatter(
            "s",
            "x",
            "y",
            &[("a".into(), vec![(1.0, 2.0), (2.0, 3.0), (3.0, 1.0)])],
        )
        .unwrap();
        assert!(s.matches("<circle").count() >= 3);
    }
}
