//! The report's plots, as SVG.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::suite::{Results, Step};
use super::tradeoff::Scenario;

const P50: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const P90: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
const P99: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const P50_LIGHT: RGBColor = RGBColor(0x8f, 0xbb, 0xd9);
const P99_LIGHT: RGBColor = RGBColor(0xea, 0x93, 0x93);
const SYNC: RGBColor = RGBColor(0xd6, 0x60, 0x4d);
const REPLICA: RGBColor = RGBColor(0x43, 0x93, 0xc3);

/// Latency percentiles of checkout (and of the hello baseline) against offered load,
/// log-log, with the checkout p99 target.
pub fn latency_vs_load(path: &Path, r: &Results) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let steps: Vec<&Step> = r.checkout.iter().chain(&r.hello).collect();
    anyhow::ensure!(!steps.is_empty(), "no step to plot");
    let xmin = steps.iter().map(|s| s.rate).fold(f64::MAX, f64::min) * 0.7;
    let xmax = steps.iter().map(|s| s.rate).fold(0.0, f64::max) * 1.4;
    let ymin = steps
        .iter()
        .map(|s| s.summary.p50_ms)
        .fold(f64::MAX, f64::min)
        .max(0.01)
        * 0.5;
    let ymax = steps.iter().map(|s| s.summary.p99_ms).fold(10.0, f64::max) * 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Latency vs. offered load — open loop, from each request's due instant ({}, {} cores)",
                r.build, r.machine.cores
            ),
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((xmin..xmax).log_scale(), (ymin..ymax).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("offered rate (requests/s)")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| {
            if *y >= 1.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        })
        .draw()?;

    type Series<'a> = (&'a str, &'a [Step], RGBColor, fn(&Step) -> f64);
    let series: [Series; 5] = [
        ("checkout p50", &r.checkout, P50, |s| s.summary.p50_ms),
        ("checkout p90", &r.checkout, P90, |s| s.summary.p90_ms),
        ("checkout p99", &r.checkout, P99, |s| s.summary.p99_ms),
        ("axum hello p50 (baseline)", &r.hello, P50_LIGHT, |s| {
            s.summary.p50_ms
        }),
        ("axum hello p99 (baseline)", &r.hello, P99_LIGHT, |s| {
            s.summary.p99_ms
        }),
    ];
    for (name, steps, color, value) in series {
        if steps.is_empty() {
            continue;
        }
        let points: Vec<(f64, f64)> = steps.iter().map(|s| (s.rate, value(s).max(ymin))).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        // Filled: sustained (≥ 99% success, p99 within the bound); hollow: not.
        chart.draw_series(steps.iter().zip(points).map(|(s, p)| {
            let style = if s.sustained {
                color.filled()
            } else {
                color.stroke_width(2)
            };
            Circle::new(p, 4, style)
        }))?;
    }
    let target = BLACK.mix(0.5);
    chart
        .draw_series(LineSeries::new(
            vec![(xmin, 10.0), (xmax, 10.0)],
            target.stroke_width(1),
        ))?
        .label("target: checkout p99 ≤ 10 ms at 1,000 orders/s")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], target));
    chart.draw_series(std::iter::once(Circle::new(
        (1_000.0, 10.0),
        6,
        BLACK.stroke_width(2),
    )))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Success, p99 and staleness of each mode under each fault, as bars.
pub fn tradeoff(path: &Path, title: &str, scenarios: &[Scenario]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 960)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let mut bars: Vec<&Scenario> = scenarios.iter().collect();
    // Grouped by fault, sync first.
    bars.sort_by_key(|s| (s.fault.rank(), s.mode != "sync"));
    let labels: Vec<String> = bars
        .iter()
        .map(|s| {
            format!(
                "{}: {}",
                if s.mode == "sync" { "S" } else { "R" },
                s.fault.short()
            )
        })
        .collect();
    let colors: Vec<RGBColor> = bars
        .iter()
        .map(|s| if s.mode == "sync" { SYNC } else { REPLICA })
        .collect();
    let panels = root.split_evenly((3, 1));
    let success: Vec<f64> = bars
        .iter()
        .map(|s| s.summary.success_rate * 100.0)
        .collect();
    let p99: Vec<f64> = bars.iter().map(|s| s.summary.p99_ms).collect();
    let stale: Vec<f64> = bars.iter().map(|s| s.stale_fraction * 100.0).collect();
    let ages: Vec<f64> = bars.iter().map(|s| s.age.max_ms).collect();
    panel(
        &panels[0],
        "checkout success (%)",
        &labels,
        &colors,
        &success,
        &|v, _| format!("{v:.1}%"),
    )?;
    panel(
        &panels[1],
        "checkout p99 latency (ms), failed checkouts included",
        &labels,
        &colors,
        &p99,
        &|v, _| format!("{v:.1}"),
    )?;
    panel(
        &panels[2],
        "orders placed with a stale address (%) — label: max age",
        &labels,
        &colors,
        &stale,
        &|v, i| {
            if v > 0.0 {
                format!("{v:.0}%, ≤{:.1} s", ages[i] / 1e3)
            } else {
                "0".into()
            }
        },
    )?;
    root.present()?;
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    labels: &[String],
    colors: &[RGBColor],
    values: &[f64],
    label_of: &dyn Fn(f64, usize) -> String,
) -> anyhow::Result<()> {
    let n = values.len() as u32;
    let ymax = values.iter().copied().fold(1.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d((0u32..n).into_segmented(), 0.0..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n as usize + 1)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    chart.draw_series(
        Histogram::vertical(&chart)
            .margin(14)
            .style_func(|x, _| match x {
                SegmentValue::Exact(i) | SegmentValue::CenterOf(i) => {
                    colors.get(*i as usize).copied().unwrap_or(BLACK).filled()
                }
                SegmentValue::Last => BLACK.filled(),
            })
            .data(values.iter().enumerate().map(|(i, v)| (i as u32, *v))),
    )?;
    let style = TextStyle::from(("sans-serif", 13)).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(values.iter().enumerate().map(|(i, v)| {
        Text::new(
            label_of(*v, i),
            (SegmentValue::CenterOf(i as u32), v + ymax * 0.02),
            style.clone(),
        )
    }))?;
    Ok(())
}
