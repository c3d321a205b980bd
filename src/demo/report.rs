//! The demo's HTML report: one self-contained page (inline SVG from plotters, no
//! external assets) with demand against the forecast band, the replicas each rule and
//! the project's HPA asked for, pre-shedding, and the numbers of the summary.

use super::costs::{CpuComparison, ResourcesSeen};
use super::record::{Analysis, Sample};
use crate::plot::{self, legend, Drawn};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// Draws one chart of the run.
type PlotFn = fn(&[Sample], &Analysis, &DrawingArea<SVGBackend, Shift>) -> Drawn;
/// A line of the replicas chart: name, colour, points.
type Line = (&'static str, RGBColor, Vec<(f64, f64)>);

const DAY_MS: u64 = 86_400_000;

/// The run's settings, shown with the numbers.
pub struct Context {
    pub time_scale: u64,
    pub startup: Duration,
    pub capacity_per_replica: f64,
    pub target_utilization: f64,
    pub peak_rate: u32,
    pub seeded: Option<String>,
}

/// Writes the report to `path`.
pub fn write(
    path: &Path,
    samples: &[Sample],
    a: &Analysis,
    ctx: &Context,
    costs: Costs<'_>,
) -> std::io::Result<()> {
    std::fs::write(path, html(samples, a, ctx, costs))
}

/// What the sidecar learnt each request costs, and its CPU forecast against the shop's
/// measured CPU.
type Costs<'a> = (Option<&'a ResourcesSeen>, &'a CpuComparison);

/// Hours of the day (series time) of a sample.
fn hour(at: u64) -> f64 {
    (at % DAY_MS) as f64 / 3_600_000.0
}

fn html(samples: &[Sample], a: &Analysis, ctx: &Context, (seen, cpu): Costs<'_>) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>prescale demo report</title>\
         <style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}\
         td,th{{padding:2px 10px;text-align:left}}</style></head><body>\
         <h1>prescale demo</h1><p>Time scale {}: one wall second counted as {} s of the day. \
         Replica start-up time {} min, {:.2} busy workers per replica at {:.0} % target \
         utilisation, peak {} req/s. {}</p>",
        ctx.time_scale,
        ctx.time_scale,
        ctx.startup.as_secs() / 60,
        ctx.capacity_per_replica,
        ctx.target_utilization * 100.0,
        ctx.peak_rate,
        ctx.seeded.as_deref().unwrap_or("No history seeded."),
    );
    let min = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:+.1} min", v / 60.0));
    let clock = |t: Option<u64>| {
        t.map_or("never".into(), |t| {
            let m = (t % DAY_MS) / 60_000;
            format!("{:02}:{:02}", m / 60, m % 60)
        })
    };
    let rows = [
        ("forecast changes", a.forecast_changes.to_string()),
        (
            "predictive lead over demand (median per replica of the ramp)",
            min(a.predictive_lead_s),
        ),
        ("HPA lead over demand (same levels)", min(a.hpa_lead_s)),
        (
            "ramp's middle level first asked for: predictive / reactive / HPA",
            format!(
                "{} / {} / {}",
                clock(a.predictive_first_raise),
                clock(a.reactive_first_raise),
                clock(a.hpa_first_raise)
            ),
        ),
        (
            "minutes short of ready capacity: prescale / HPA",
            format!(
                "{:.0} / {:.0}",
                a.prescale_short_minutes, a.hpa_short_minutes
            ),
        ),
        (
            "peak pre-shed level: lunch spike / whole run",
            format!("{:.2} / {:.2}", a.spike_preshed, a.peak_preshed),
        ),
        (
            "requests pre-shed per tier: lunch spike / whole run",
            format!(
                "{} / {}",
                tiers(&a.spike_preshed_by_tier),
                tiers(&a.preshed_by_tier)
            ),
        ),
        (
            "the spike's anomaly (demand above the forecast)",
            a.spike_anomaly.as_ref().map_or("none".into(), |x| {
                format!(
                    "{} on {} ({}), from {}",
                    x.kind,
                    x.subject,
                    x.direction,
                    clock(Some(x.since))
                )
            }),
        ),
        (
            "anomalies raised: lunch spike / whole run (first)",
            format!(
                "{} / {} ({})",
                a.spike_anomalies,
                a.anomalies,
                clock(a.first_anomaly)
            ),
        ),
    ];
    h.push_str("<table>");
    for (k, v) in rows {
        let _ = write!(h, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    h.push_str("</table><h2>Ramp, replica by replica</h2><table><tr><th>replicas</th><th>offered demand needed them</th><th>predictive asked</th><th>HPA asked</th></tr>");
    for l in &a.levels {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            l.replicas,
            clock(Some(l.demand_at)),
            clock(l.predictive_at),
            clock(l.hpa_at)
        );
    }
    h.push_str("</table>");
    let plots: [(&str, PlotFn); 3] = [
        (
            "Demand and the forecast band (drawn at the time it forecast, one lead ahead)",
            demand_plot,
        ),
        (
            "Desired replicas: predictive rule, reactive rule, the sidecar's decision, the HPA",
            replicas_plot,
        ),
        (
            "Pre-shed level (share of sheddable demand refused ahead)",
            preshed_plot,
        ),
    ];
    for (title, plot) in plots {
        let _ = write!(h, "<h2>{title}</h2>{}", svg(samples, a, plot));
    }
    costs_section(&mut h, seen, cpu, ctx.time_scale);
    // The data behind the charts, for anyone who wants to plot it differently.
    let data = serde_json::json!({
        "analysis": a, "samples": samples, "resources": seen, "cpu": cpu,
    });
    let _ = write!(
        h,
        "<script type=\"application/json\" id=\"timeline\">{}</script>",
        data.to_string().replace("</", "<\\/")
    );
    h.push_str("</body></html>\n");
    h
}

/// The learnt CPU per request by signature, and the CPU forecast (one step ahead)
/// against the CPU the shop used, step by step.
fn costs_section(h: &mut String, seen: Option<&ResourcesSeen>, cpu: &CpuComparison, scale: u64) {
    h.push_str("<h2>What each kind of request costs (GET /v1/resources)</h2>");
    let Some(seen) = seen else {
        h.push_str("<p>The sidecar's /v1/resources did not answer.</p>");
        return;
    };
    let _ = write!(
        h,
        "<p>Source <code>{}</code> (the shop's own process, read from /proc), {} intervals \
         in the fit. The shop burns a known CPU time per endpoint.</p><table><tr>\
         <th>signature</th><th>top route</th><th>learnt CPU per request</th>\
         <th>identified</th><th>the endpoint burns</th></tr>",
        seen.source, seen.intervals
    );
    for g in &seen.signatures {
        let learnt = g.learnt_cpu(0, "-");
        let _ = write!(
            h,
            "<tr><td>#{}</td><td>{}</td><td>{learnt}</td><td>{}</td><td>{}</td></tr>",
            g.id,
            g.top_route.replace('<', "&lt;"),
            g.identified,
            g.burns_ms.map_or("-".into(), |b| format!("{b:.1} ms")),
        );
    }
    h.push_str("</table>");
    if cpu.steps.is_empty() {
        h.push_str("<p>No CPU forecast to compare (it needs costs and a demand forecast).</p>");
        return;
    }
    let _ = write!(
        h,
        "<h2>CPU: the forecast one step ahead against the shop's measured CPU</h2>\
         <p>{} steps: mean forecast {:.3} cores, mean measured {:.3} cores, mean absolute \
         error {:.3} cores, {:.0} % of steps inside the forecast's interval. Cores of wall \
         time (at time scale {scale}, a step lasts its length / {scale}).</p>{}",
        cpu.steps.len(),
        cpu.mean_forecast,
        cpu.mean_measured,
        cpu.mean_abs_error,
        cpu.inside * 100.0,
        cpu_svg(cpu)
    );
}

fn cpu_svg(cpu: &CpuComparison) -> String {
    plot::svg(|root| cpu_plot(cpu, root)).unwrap_or_else(|e| unavailable(&e))
}

fn cpu_plot(cpu: &CpuComparison, root: &DrawingArea<SVGBackend, Shift>) -> Drawn {
    let x0 = cpu.steps.first().map_or(0.0, |s| hour(s.step_end));
    let x1 = cpu
        .steps
        .last()
        .map_or(1.0, |s| hour(s.step_end))
        .max(x0 + 1e-3);
    let ymax = cpu
        .steps
        .iter()
        .flat_map(|s| [s.upper, s.measured])
        .fold(0.0, f64::max)
        .max(1e-3)
        * 1.05;
    let mut chart = ChartBuilder::on(root)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(x0..x1, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("hour of the day (end of the step)")
        .y_desc("CPU cores")
        .draw()?;
    if cpu.steps.len() >= 2 {
        let mut poly: Vec<(f64, f64)> = cpu
            .steps
            .iter()
            .map(|s| (hour(s.step_end), s.upper))
            .collect();
        poly.extend(cpu.steps.iter().rev().map(|s| (hour(s.step_end), s.lower)));
        chart.draw_series(std::iter::once(Polygon::new(poly, BLUE.mix(0.2))))?;
    }
    chart
        .draw_series(LineSeries::new(
            cpu.steps.iter().map(|s| (hour(s.step_end), s.point)),
            BLUE,
        ))?
        .label("CPU forecast (band: interval)")
        .legend(|(x, y)| legend(x, y, BLUE));
    chart
        .draw_series(LineSeries::new(
            cpu.steps.iter().map(|s| (hour(s.step_end), s.measured)),
            BLACK,
        ))?
        .label("the shop's CPU, measured (/proc)")
        .legend(|(x, y)| legend(x, y, BLACK));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// `tier n` for each tier, by name.
fn tiers(m: &std::collections::BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn svg(samples: &[Sample], a: &Analysis, draw: PlotFn) -> String {
    // An empty run still gets an (empty) chart.
    plot::svg(|root| draw(samples, a, root)).unwrap_or_else(|e| unavailable(&e))
}

/// An SVG in place of a chart that could not be drawn, saying why.
fn unavailable(why: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\"><text x=\"10\" y=\"20\">plot unavailable: {}</text></svg>",
        why.replace('<', "&lt;")
    )
}

fn x_range(samples: &[Sample]) -> std::ops::Range<f64> {
    let a = samples.first().map_or(0.0, |s| hour(s.at));
    let b = samples
        .iter()
        .filter_map(|s| s.forecast_at.map(hour))
        .chain(samples.last().map(|s| hour(s.at)))
        .fold(a, f64::max);
    a..b.max(a + 1e-3)
}

fn demand_plot(samples: &[Sample], _: &Analysis, root: &DrawingArea<SVGBackend, Shift>) -> Drawn {
    let ymax = samples
        .iter()
        .flat_map(|s| [Some(s.demand), Some(s.offered), s.forecast_upper])
        .flatten()
        .fold(0.0, f64::max)
        .max(1e-3)
        * 1.05;
    let mut chart = ChartBuilder::on(root)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(x_range(samples), 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("hour of the day")
        .y_desc("busy workers")
        .draw()?;
    let band: Vec<(f64, f64, f64, f64)> = samples
        .iter()
        .filter_map(|s| {
            Some((
                hour(s.forecast_at?),
                s.forecast_lower?,
                s.forecast_point?,
                s.forecast_upper?,
            ))
        })
        .collect();
    if band.len() >= 2 {
        let mut poly: Vec<(f64, f64)> = band.iter().map(|b| (b.0, b.3)).collect();
        poly.extend(band.iter().rev().map(|b| (b.0, b.1)));
        chart.draw_series(std::iter::once(Polygon::new(poly, BLUE.mix(0.2))))?;
    }
    chart
        .draw_series(LineSeries::new(band.iter().map(|b| (b.0, b.2)), BLUE))?
        .label("forecast point (band: interval)")
        .legend(|(x, y)| legend(x, y, BLUE));
    chart
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (hour(s.at), s.demand)),
            BLACK,
        ))?
        .label("demand (measured, last step)")
        .legend(|(x, y)| legend(x, y, BLACK));
    let grey = RGBColor(150, 150, 150);
    chart
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (hour(s.at), s.offered)),
            grey,
        ))?
        .label("offered (rate x mean service time)")
        .legend(move |(x, y)| legend(x, y, grey));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn replicas_plot(samples: &[Sample], a: &Analysis, root: &DrawingArea<SVGBackend, Shift>) -> Drawn {
    let ymax = samples
        .iter()
        .map(|s| s.desired.max(s.predictive).max(s.reactive))
        .chain(a.hpa_desired.iter().copied())
        .max()
        .unwrap_or(1) as f64
        + 1.0;
    let mut chart = ChartBuilder::on(root)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(x_range(samples), 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("hour of the day")
        .y_desc("replicas")
        .draw()?;
    let orange = RGBColor(230, 120, 0);
    let series: [Line; 4] = [
        (
            "predictive rule",
            BLUE,
            samples
                .iter()
                .map(|s| (hour(s.at), f64::from(s.predictive)))
                .collect(),
        ),
        (
            "reactive rule",
            RED,
            samples
                .iter()
                .map(|s| (hour(s.at), f64::from(s.reactive)))
                .collect(),
        ),
        (
            "desired (the sidecar's decision)",
            BLACK,
            samples
                .iter()
                .map(|s| (hour(s.at), f64::from(s.desired)))
                .collect(),
        ),
        (
            "HPA on the same demand",
            orange,
            samples
                .iter()
                .zip(&a.hpa_desired)
                .map(|(s, d)| (hour(s.at), f64::from(*d)))
                .collect(),
        ),
    ];
    for (name, color, pts) in series {
        chart
            .draw_series(LineSeries::new(pts, color))?
            .label(name)
            .legend(move |(x, y)| legend(x, y, color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn preshed_plot(samples: &[Sample], _: &Analysis, root: &DrawingArea<SVGBackend, Shift>) -> Drawn {
    let mut chart = ChartBuilder::on(root)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(x_range(samples), 0f64..1.0)?;
    chart
        .configure_mesh()
        .x_desc("hour of the day")
        .y_desc("level")
        .draw()?;
    chart.draw_series(LineSeries::new(
        samples.iter().map(|s| (hour(s.at), s.preshed_level)),
        RED,
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_one_page_with_inline_svg() {
        let samples: Vec<Sample> = (0..30u64)
            .map(|i| Sample {
                at: 5 * 3_600_000 + i * 60_000,
                demand: i as f64 / 10.0,
                forecast_at: Some(5 * 3_600_000 + (i + 20) * 60_000),
                forecast_point: Some(1.0),
                forecast_lower: Some(0.5),
                forecast_upper: Some(1.5),
                desired: 2,
                predictive: 2,
                reactive: 1,
                ..Sample::default()
            })
            .collect();
        let a = Analysis {
            hpa_desired: vec![1; 30],
            ..Analysis::default()
        };
        let ctx = Context {
            time_scale: 600,
            startup: Duration::from_secs(1200),
            capacity_per_replica: 0.4,
            target_utilization: 0.7,
            peak_rate: 200,
            seeded: None,
        };
        let cpu = CpuComparison {
            steps: (0..10u64)
                .map(|i| super::super::costs::StepCompared {
                    step_end: 5 * 3_600_000 + i * 300_000,
                    point: 0.2,
                    lower: 0.1,
                    upper: 0.3,
                    measured: 0.15 + i as f64 / 100.0,
                })
                .collect(),
            ..CpuComparison::default()
        };
        let page = html(&samples, &a, &ctx, (None, &cpu));
        // Without /v1/resources there is no cost table, and no CPU chart either.
        assert!(page.contains("did not answer"), "{page}");
        assert_eq!(page.matches("<svg").count(), 3, "{page}");
        let seen = ResourcesSeen {
            source: "process".into(),
            ..ResourcesSeen::default()
        };
        let page = html(&samples, &a, &ctx, (Some(&seen), &cpu));
        assert_eq!(page.matches("<svg").count(), 4, "{page}");
        assert!(!page.contains("plot unavailable"));
        assert!(!page.contains("src=\"http"));
    }
}
