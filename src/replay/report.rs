//! `report.html`: one self-contained page with inline SVG plots (plotters) of demand
//! vs the forecast band, replicas per policy with under-provisioning shaded, the
//! signature mix over time, and the cost-vs-SLO sweep.

use super::forecasts::Band;
use super::Replay;
use crate::plot::{self, Drawn};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::fmt::Write;

/// Plots keep at most this many points per series (a week at 1 min is 10 080 rows).
const MAX_POINTS: usize = 1500;

/// The plots: file stem, title, drawing function.
type Plot = (
    &'static str,
    &'static str,
    fn(&Replay, &DrawingArea<SVGBackend, Shift>) -> Drawn,
);

const PLOTS: [Plot; 4] = [
    (
        "demand",
        "Demand and the forecast band (as forecast one lead time ahead)",
        demand_plot,
    ),
    (
        "replicas",
        "Ready replicas per policy; shaded: predictive (red) and HPA (orange) under-provisioned",
        replicas_plot,
    ),
    ("mix", "Signature mix (share of requests)", mix_plot),
    (
        "sweep",
        "Cost vs SLO (--sweep): replica-hours against under-provisioned time",
        sweep_plot,
    ),
];

/// Each plot as a standalone SVG document: (file stem, svg).
pub fn plots(r: &Replay) -> Vec<(&'static str, String)> {
    PLOTS
        .iter()
        .map(|(stem, _, plot)| (*stem, svg(r, *plot)))
        .collect()
}

pub fn render(r: &Replay) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>prescale replay: {name}</title>\
         <style>body{{font-family:sans-serif;max-width:1000px;margin:auto}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
         th:first-child,td:first-child{{text-align:left}}</style></head><body>\
         <h1>prescale replay</h1><p><code>{name}</code>: {req} requests over {hours:.1} h{from}; \
         replica capacity {cap:.3} req/s; start-up delay {delay} s; metric lag {lag} s; sync {sync} s.</p>",
        name = escape(&r.input_name),
        req = r.trace.requests,
        hours = r.demand.len() as f64 / 3600.0,
        from = if dated(r) {
            format!(" from {}", crate::series_csv::format_time(r.trace.start_unix))
        } else {
            String::new()
        },
        cap = r.capacity,
        delay = r.args_echo["start_delay_seconds"],
        lag = r.args_echo["metric_lag_seconds"],
        sync = r.args_echo["sync_period_seconds"],
    );
    html.push_str(&table(r));
    let _ = write!(
        html,
        "<h2>Requests shed by tier</h2><p>At ready capacity each second, least important \
         tier first; <em>+pre</em>: the predictive policy with the engine's pre-shed level \
         (a fluid model of admission, see docs/replay.md).</p><pre>{}</pre>",
        escape(&super::output::shed_table(r))
    );
    let reconciled = super::reconciled::table(r);
    if !reconciled.is_empty() {
        let _ = write!(
            html,
            "<h2>Total forecast: direct, bottom-up, combined</h2><p>The engine's \
             reconciliation over the trace: the direct forecast of the total, the sum of the \
             signatures' forecasts and the unclassified remainder's, their error-weighted \
             combination, and what the decisions planned with (per horizon step, the source \
             in force until another's error on the same forecasts is lower by more than its \
             noise).</p><pre>{}</pre>",
            escape(&reconciled)
        );
    }
    if let Some(c) = &r.costs {
        let _ = write!(
            html,
            "<h2>Resource costs and forecasts</h2><p>The sidecar's per-signature cost \
             model on what the log implies (CPU: logged service time; network: request \
             plus response bytes), the resource forecast scored against it, and what the \
             resize bridge would have covered (see docs/replay.md).</p><pre>{}</pre>",
            escape(&super::costs::table(c))
        );
    }
    for (_, title, plot) in PLOTS {
        let _ = write!(html, "<h2>{}</h2>", escape(title));
        html.push_str(&svg(r, plot));
    }
    html.push_str(
        "<h2>Definitions</h2><ul>\
         <li>under-provisioned: demand above ready replicas × replica capacity (true overload)</li>\
         <li>over-target: demand above ready replicas × capacity × target utilisation</li>\
         <li>replica-hours: from the moment a replica is requested until it is removed</li>\
         <li>oracle: perfect foresight with the same start-up delay, sized at 100 % (the cost floor)</li>\
         <li>lead: seconds by which ready capacity met a demand step before it arrived (negative: late)</li>\
         </ul></body></html>",
    );
    html
}

fn table(r: &Replay) -> String {
    let mut t = String::from(
        "<table><tr><th>policy</th><th>under-provisioned</th><th>over-target</th>\
         <th>overload requests</th><th>replica-hours</th><th>actions</th><th>reversals</th>\
         <th>mean lead (s)</th></tr>",
    );
    for (name, run) in &r.policies {
        let o = &run.outcome;
        let _ = write!(
            t,
            "<tr><td>{name}</td><td>{:.2} %</td><td>{:.2} %</td><td>{:.3} %</td><td>{:.1}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            o.under_provisioned_fraction * 100.0,
            o.over_target_fraction * 100.0,
            o.overload_request_fraction * 100.0,
            o.replica_hours,
            o.scaling_actions,
            o.reversals,
            o.mean_lead_seconds_before_steps
                .map_or("-".into(), |l| format!("{l:.0}")),
        );
    }
    t.push_str("</table>");
    t
}

fn svg(r: &Replay, draw: fn(&Replay, &DrawingArea<SVGBackend, Shift>) -> Drawn) -> String {
    plot::svg(|root| draw(r, root))
        .unwrap_or_else(|e| format!("<p>(plot unavailable: {})</p>", escape(&e)))
}

/// Row indices to plot: every k-th row so at most MAX_POINTS remain.
fn sampled(rows: usize) -> impl Iterator<Item = usize> {
    let k = rows.div_ceil(MAX_POINTS).max(1);
    (0..rows).step_by(k)
}

fn hours(r: &Replay, row: usize) -> f64 {
    (row as u64 * r.row_every) as f64 / 3600.0
}

fn rows(r: &Replay) -> usize {
    r.policies.first().map_or(0, |(_, run)| run.rows.len())
}

fn demand_at(r: &Replay, row: usize) -> f64 {
    r.demand
        .get(row * r.row_every as usize)
        .copied()
        .unwrap_or(0.0)
}

fn demand_plot(r: &Replay, root: &DrawingArea<SVGBackend, Shift>) -> Drawn {
    let n = rows(r);
    let lead = r.args_echo["lead_time_seconds"].as_u64().unwrap_or(0);
    let band: Vec<(f64, Option<Band>)> = sampled(n)
        .map(|i| {
            let t = i as u64 * r.row_every;
            (hours(r, i), r.forecasts.as_seen_ahead(t, lead))
        })
        .collect();
    let ymax = sampled(n)
        .map(|i| demand_at(r, i))
        .chain(band.iter().filter_map(|(_, b)| b.map(|b| b.2)))
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.05;
    let mut chart = ChartBuilder::on(root)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..hours(r, n).max(1e-3), 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc(x_desc(r))
        .x_label_formatter(&|h| x_label(r, *h))
        .y_desc("req/s")
        .draw()?;
    // One polygon per run of rows that had a forecast.
    for segment in band.split(|(_, b)| b.is_none()) {
        let mut poly: Vec<(f64, f64)> = segment
            .iter()
            .filter_map(|(x, b)| b.map(|b| (*x, b.2)))
            .collect();
        poly.extend(
            segment
                .iter()
                .rev()
                .filter_map(|(x, b)| b.map(|b| (*x, b.1))),
        );
        if poly.len() >= 3 {
            chart.draw_series(std::iter::once(Polygon::new(poly, BLUE.mix(0.2))))?;
        }
    }
    chart
        .draw_series(LineSeries::new(
            band.iter().filter_map(|(x, b)| b.map(|b| (*x, b.0))),
            BLUE,
        ))?
        .label("forecast point")
        .legend(|(x, y)| plot::legend(x, y, BLUE));
    chart
        .draw_series(LineSeries::new(
            sampled(n).map(|i| (hours(r, i), demand_at(r, i))),
            BLACK,
        ))?
        .label("demand")
        .legend(|(x, y)| plot::legend(x, y, BLACK));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn replicas_plot(r: &Replay, root: &DrawingArea<SVGBackend, Shift>) -> Drawn {
    let n = rows(r);
    let needed = |i: usize| demand_at(r, i) / r.capacity;
    let ymax = r
        .policies
        .iter()
        .flat_map(|(_, run)| {
            run.rows
                .iter()
                .map(|(d, ready)| f64::from((*d).max(*ready)))
        })
        .chain(sampled(n).map(needed))
        .fold(1.0, f64::max)
        * 1.05;
    let xmax = hours(r, n).max(1e-3);
    let mut chart = ChartBuilder::on(root)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc(x_desc(r))
        .x_label_formatter(&|h| x_label(r, *h))
        .y_desc("replicas")
        .draw()?;
    let width = r.row_every as f64 / 3600.0;
    for (name, color) in [
        ("predictive", RED.mix(0.25)),
        ("hpa", RGBColor(255, 165, 0).mix(0.25)),
    ] {
        let Some((_, run)) = r.policies.iter().find(|(p, _)| *p == name) else {
            continue;
        };
        let short = run
            .rows
            .iter()
            .enumerate()
            .filter(|(i, (_, ready))| needed(*i) > f64::from(*ready) + 1e-9)
            .map(|(i, _)| {
                let x = hours(r, i);
                Rectangle::new([(x, 0.0), (x + width, ymax)], color.filled())
            });
        chart.draw_series(short)?;
    }
    chart
        .draw_series(LineSeries::new(
            sampled(n).map(|i| (hours(r, i), needed(i))),
            BLACK.mix(0.6),
        ))?
        .label("needed at 100 %")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.6)));
    for (k, (name, run)) in r.policies.iter().enumerate() {
        let color = Palette99::pick(k + 1).to_rgba();
        chart
            .draw_series(LineSeries::new(
                sampled(n).map(|i| {
                    let ready = run.rows.get(i).map_or(0, |(_, ready)| *ready);
                    (hours(r, i), f64::from(ready))
                }),
                color,
            ))?
            .label(format!("{name} ready"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn mix_plot(r: &Replay, root: &DrawingArea<SVGBackend, Shift>) -> Drawn {
    let Some(p) = &r.trace.profile else {
        root.draw(&Text::new(
            "aggregated input: no per-request features, no signatures",
            (20, 40),
            ("sans-serif", 16),
        ))?;
        return Ok(());
    };
    // Sum rows into at most MAX_POINTS / 5 buckets: shares need enough requests.
    let k = p.mix.len().div_ceil(MAX_POINTS / 5).max(1);
    let buckets: Vec<Vec<f64>> = p
        .mix
        .chunks(k)
        .map(|c| {
            let mut sum = vec![0.0; p.ids.len()];
            for row in c {
                for (s, v) in sum.iter_mut().zip(row) {
                    *s += f64::from(*v);
                }
            }
            let total: f64 = sum.iter().sum();
            sum.iter()
                .map(|v| if total > 0.0 { v / total } else { 0.0 })
                .collect()
        })
        .collect();
    let x = |b: usize| (b * k) as f64 * p.row_seconds as f64 / 3600.0;
    let mut chart = ChartBuilder::on(root)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x(buckets.len()).max(1e-3), 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc(x_desc(r))
        .x_label_formatter(&|h| x_label(r, *h))
        .y_desc("share")
        .draw()?;
    let mut below = vec![0.0; buckets.len()];
    for (col, id) in p.ids.iter().enumerate() {
        let above: Vec<f64> = buckets
            .iter()
            .zip(&below)
            .map(|(b, lo)| lo + b.get(col).copied().unwrap_or(0.0))
            .collect();
        if above.iter().zip(&below).all(|(a, b)| a - b <= 0.0) {
            continue;
        }
        let mut poly: Vec<(f64, f64)> = above.iter().enumerate().map(|(i, y)| (x(i), *y)).collect();
        poly.extend(below.iter().enumerate().rev().map(|(i, y)| (x(i), *y)));
        let color = Palette99::pick(*id as usize).to_rgba();
        let label = if *id == 0 {
            "unclassified".to_string()
        } else {
            format!("signature {id}")
        };
        chart
            .draw_series(std::iter::once(Polygon::new(poly, color.mix(0.6).filled())))?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
        below = above;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn sweep_plot(r: &Replay, root: &DrawingArea<SVGBackend, Shift>) -> Drawn {
    if r.sweep.is_empty() {
        root.draw(&Text::new(
            "run with --sweep for the cost-vs-SLO curve",
            (20, 40),
            ("sans-serif", 16),
        ))?;
        return Ok(());
    }
    let fixed: Vec<(&str, f64, f64)> = r
        .policies
        .iter()
        .filter(|(n, _)| matches!(*n, "oracle" | "static-peak"))
        .map(|(n, run)| {
            (
                *n,
                run.outcome.replica_hours,
                run.outcome.under_provisioned_fraction * 100.0,
            )
        })
        .collect();
    let xs = r
        .sweep
        .iter()
        .map(|p| p.replica_hours)
        .chain(fixed.iter().map(|f| f.1));
    let xmax = xs.clone().fold(0.0, f64::max) * 1.05 + 1e-9;
    let xmin = xs.fold(f64::MAX, f64::min) * 0.95;
    let ymax = r
        .sweep
        .iter()
        .map(|p| p.under_provisioned_fraction * 100.0)
        .fold(0.1, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(root)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(xmin.min(xmax - 1e-9)..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("replica-hours")
        .y_desc("under-provisioned %")
        .draw()?;
    for (k, policy) in ["predictive", "hpa"].iter().enumerate() {
        let pts: Vec<(f64, f64)> = r
            .sweep
            .iter()
            .filter(|p| p.policy == *policy)
            .map(|p| (p.replica_hours, p.under_provisioned_fraction * 100.0))
            .collect();
        let color = Palette99::pick(k + 1).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.clone(), color))?
            .label(*policy)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    for (name, x, y) in fixed {
        chart.draw_series(std::iter::once(Cross::new((x, y), 5, BLACK)))?;
        chart.draw_series(std::iter::once(Text::new(
            name.to_string(),
            (x, y),
            ("sans-serif", 12),
        )))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Whether the input's times are dates (not the `[DD:HH:MM:SS]` variant's day and
/// clock): the axes then show dates.
fn dated(r: &Replay) -> bool {
    r.stats.undated == 0
}

fn x_desc(r: &Replay) -> &'static str {
    if dated(r) {
        "time (UTC)"
    } else {
        "hours from start"
    }
}

/// An x-axis label for `hours` after the start: `MM-DD HH:MM` (UTC) when dated.
fn x_label(r: &Replay, hours: f64) -> String {
    if !dated(r) {
        return format!("{hours:.0}");
    }
    let at = r.trace.start_unix + (hours * 3600.0).max(0.0).round() as u64;
    let stamp = crate::series_csv::format_time(at);
    stamp
        .get(5..16)
        .map_or(stamp.clone(), |s| s.replace('T', " "))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
