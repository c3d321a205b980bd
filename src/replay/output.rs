//! What a replay writes: `summary.json`, `timeline.csv`, `decisions.csv`,
//! `signatures.json`, `report.html`, the one-screen text summary, the progress bar and
//! the sweep.

use super::engine::EngineSetup;
use super::sim::{Policy, World};
use super::{report, Replay, ReplayError};
use crate::series_csv::format_time;
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::Path;

/// One point of the cost-vs-SLO curve.
#[derive(Clone, Debug, Serialize)]
pub struct SweepPoint {
    pub policy: &'static str,
    /// `headroom` (× forecast upper bound) or `target_utilization`.
    pub knob: &'static str,
    pub value: f64,
    pub replica_hours: f64,
    pub under_provisioned_fraction: f64,
    pub overload_request_fraction: f64,
}

/// Headroom factors on the forecast's upper bound, and HPA utilisation targets.
const HEADROOMS: [f64; 8] = [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5];
const HPA_TARGETS: [f64; 7] = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

pub fn sweep(world: &World, engine: &EngineSetup) -> Vec<SweepPoint> {
    let point = |policy, knob, value, p: &Policy| {
        let o = world.run(p).outcome;
        SweepPoint {
            policy,
            knob,
            value,
            replica_hours: o.replica_hours,
            under_provisioned_fraction: o.under_provisioned_fraction,
            overload_request_fraction: o.overload_request_fraction,
        }
    };
    let mut out: Vec<SweepPoint> = HEADROOMS
        .iter()
        .map(|h| {
            point(
                "predictive",
                "headroom",
                *h,
                &Policy::Predictive {
                    engine,
                    headroom: *h,
                },
            )
        })
        .collect();
    out.extend(HPA_TARGETS.iter().map(|u| {
        point(
            "hpa",
            "target_utilization",
            *u,
            &Policy::Hpa {
                target_utilization: *u,
            },
        )
    }));
    out
}

pub fn write_all(dir: &Path, r: &Replay) -> Result<(), ReplayError> {
    let err = |p: &Path| {
        let p = p.display().to_string();
        move |e| ReplayError::Write(p, e)
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let summary = dir.join("summary.json");
    std::fs::write(&summary, pretty(&summary_json(r))).map_err(err(&summary))?;
    let signatures = dir.join("signatures.json");
    std::fs::write(&signatures, pretty(&signatures_json(r))).map_err(err(&signatures))?;
    let timeline = dir.join("timeline.csv");
    write_timeline(&timeline, r).map_err(err(&timeline))?;
    let decisions = dir.join("decisions.csv");
    write_decisions(&decisions, r).map_err(err(&decisions))?;
    let minutes = dir.join("signature_minutes.csv");
    super::reconciled::write_minutes(&minutes, r).map_err(err(&minutes))?;
    let html = dir.join("report.html");
    std::fs::write(&html, report::render(r)).map_err(err(&html))?;
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).map_err(err(&plots))?;
    for (stem, svg) in report::plots(r) {
        let path = plots.join(format!("{stem}.svg"));
        std::fs::write(&path, svg).map_err(err(&path))?;
    }
    Ok(())
}

fn pretty(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

pub fn summary_json(r: &Replay) -> serde_json::Value {
    let policies: serde_json::Map<String, serde_json::Value> = r
        .policies
        .iter()
        .map(|(name, run)| {
            (
                (*name).to_string(),
                serde_json::to_value(&run.outcome).unwrap_or_default(),
            )
        })
        .collect();
    let f = &r.forecasts;
    let lead_steps = (lead_seconds(r) + f.lag).div_ceil(f.step) as usize;
    let at_lead = f
        .summary
        .iter()
        .find(|h| h.horizon_steps >= lead_steps.max(1))
        .or(f.summary.last());
    let seconds = r.demand.len() as f64;
    let requests_per_minute = r.stats.lines as f64 / r.read_seconds.max(1e-9) * 60.0;
    serde_json::json!({
        "policies": policies,
        "forecast": {
            "mase": at_lead.map(|h| h.mase),
            "smape": at_lead.map(|h| h.smape),
            "coverage": at_lead.map(|h| h.coverage),
            "relative_to_seasonal_naive": at_lead.and_then(|h| h.relative_to_seasonal_naive),
            "horizon_steps_scored": at_lead.map(|h| h.horizon_steps),
            "level": f.level,
            "step_seconds": f.step,
            "horizon_steps": f.horizon,
            "warmup_steps": f.warmup_steps,
            "seasonal_period_steps": f.seasonal_period,
            "models_published": f.models,
            "horizons": f.summary,
            "fit_seconds": f.fit_seconds,
            "engine": engine_forecast(r),
            "reconciliation": super::reconciled::json(r),
        },
        "inputs": {
            "file": r.stats_file(),
            "format": format!("{:?}", r.stats.format),
            "gzip": r.stats.gzip,
            "lines": r.stats.lines,
            "records": r.stats.records,
            "malformed": r.stats.malformed,
            "first_malformed": r.stats.first_malformed.iter()
                .map(|(line, why)| serde_json::json!({"line": line, "reason": why}))
                .collect::<Vec<_>>(),
            "reordered": r.stats.reordered,
            "too_late": r.stats.too_late,
            "dated": r.stats.undated == 0,
            "gaps": r.trace.gaps.iter()
                .map(|g| serde_json::json!({
                    "start": format_time(r.trace.start_unix + g.start),
                    "seconds": g.seconds,
                    "missing_rows": g.missing_rows,
                }))
                .collect::<Vec<_>>(),
            "gap_seconds": r.trace.gap_seconds(),
            "missing_rows": r.trace.missing_rows(),
            "requests": r.trace.requests,
            "requests_with_logged_service_time": r.trace.timed_requests,
            "start": format_time(r.trace.start_unix),
            "end": format_time(r.trace.start_unix + r.demand.len() as u64),
            "duration_seconds": seconds,
            "peak_demand_rps": r.demand.iter().copied().fold(0.0, f64::max),
            "mean_demand_rps": r.demand.iter().sum::<f64>() / seconds.max(1.0),
            "replica_capacity_rps": r.capacity,
            "replica_capacity_source": if r.capacity_defaulted {
                "default: the peak needs 20 replicas at the target utilization"
            } else {
                "--replica-capacity"
            },
            "settings": r.args_echo,
            "read_seconds": r.read_seconds,
            "simulate_seconds": r.sim_seconds,
            "lines_per_minute": requests_per_minute,
        },
        "sweep": r.sweep,
        "costs": r.costs,
    })
}

/// The predictive engine's total forecast at the end of the trace, with its own
/// accuracy (what the sidecar exports as `prescale_forecast_error` and
/// `prescale_forecast_coverage`).
fn engine_forecast(r: &Replay) -> serde_json::Value {
    let view = r
        .policies
        .iter()
        .find(|(name, _)| *name == "predictive")
        .and_then(|(_, run)| run.forecast.as_ref());
    let Some(view) = view else {
        return serde_json::Value::Null;
    };
    let total = view.series.get("total");
    serde_json::json!({
        "step_seconds": view.step_seconds,
        "lead_steps": view.lead_steps,
        "horizon_steps": view.horizon_steps,
        "model": total.map(|s| s.model),
        "calibrated": total.map(|s| s.calibrated),
        "coverage_recent": total.and_then(|s| s.accuracy.coverage),
        "relative_mae_by_step": total.map(|s| &s.accuracy.relative_mae),
    })
}

fn lead_seconds(r: &Replay) -> u64 {
    r.args_echo
        .get("lead_time_seconds")
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

fn signatures_json(r: &Replay) -> serde_json::Value {
    match &r.trace.profile {
        None => serde_json::json!({
            "signatures": [],
            "note": "aggregated input (request counts) carries no per-request features",
        }),
        Some(p) => serde_json::json!({
            "refits": p.refits,
            "profile": p.view,
            "mix": {
                "row_seconds": p.row_seconds,
                "signature_ids": p.ids,
                "rows": p.mix,
            },
        }),
    }
}

fn write_timeline(path: &Path, r: &Replay) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    write!(w, "ts,demand,forecast_point,forecast_lower,forecast_upper")?;
    for (name, _) in &r.policies {
        write!(w, ",{name}_desired,{name}_ready")?;
    }
    writeln!(w)?;
    let lead = lead_seconds(r);
    let rows = r.policies.first().map_or(0, |(_, run)| run.rows.len());
    for i in 0..rows {
        let t = i as u64 * r.row_every;
        let d = r.demand.get(t as usize).copied().unwrap_or(0.0);
        write!(w, "{},{d:.4}", format_time(r.trace.start_unix + t))?;
        match r.forecasts.as_seen_ahead(t, lead) {
            Some((p, lo, hi)) => write!(w, ",{p:.4},{lo:.4},{hi:.4}")?,
            None => write!(w, ",,,")?,
        }
        for (_, run) in &r.policies {
            let (desired, ready) = run.rows.get(i).copied().unwrap_or_default();
            write!(w, ",{desired},{ready}")?;
        }
        writeln!(w)?;
    }
    w.flush()
}

/// Every decision of the predictive policy's engine, its inputs and its forecast, with
/// numbers in full (shortest round-trip) precision so runs compare exactly.
fn write_decisions(path: &Path, r: &Replay) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        w,
        "ts,at_ms,demand,measured_from_ms,measured_to_ms,forecast_point,forecast_upper,calibrated,desired,predictive,reactive,reason,preshed"
    )?;
    let decisions = r
        .policies
        .iter()
        .find(|(name, _)| *name == "predictive")
        .map_or(&[][..], |(_, run)| &run.decisions[..]);
    // The engine's times (`at_ms`, `measured_*_ms`) back on the trace's own clock.
    let back =
        (r.trace.start_unix as i64 - super::engine::engine_start_unix(&r.trace) as i64) * 1000;
    let back = |ms: u64| ms.saturating_add_signed(back);
    for row in decisions {
        let i = &row.intent;
        let d = &i.decision;
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        let reason = serde_json::to_value(d.reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        writeln!(
            w,
            "{},{},{},{},{},{},{},{},{},{},{},{},{}",
            format_time(r.trace.start_unix + row.t),
            back(i.at),
            i.current_demand,
            back(i.measured.start),
            back(i.measured.end),
            opt(i.forecast.map(|f| f.point)),
            opt(i.forecast.map(|f| f.upper)),
            i.forecast.is_some_and(|f| f.calibrated),
            d.desired,
            d.predictive,
            d.reactive,
            reason,
            opt(i.preshed),
        )?;
    }
    w.flush()
}

pub fn print_summary(dir: &Path, r: &Replay) {
    println!(
        "{}: {} requests over {:.1} h, peak {:.2} req/s; replica capacity {:.3} req/s{}",
        r.stats_file(),
        r.trace.requests,
        r.demand.len() as f64 / 3600.0,
        r.demand.iter().copied().fold(0.0, f64::max),
        r.capacity,
        if r.capacity_defaulted {
            " (default: peak needs 20 replicas)"
        } else {
            ""
        }
    );
    if !r.trace.gaps.is_empty() {
        let longest = r.trace.gaps.iter().map(|g| g.seconds).max().unwrap_or(0);
        println!(
            "  {} gaps in the input ({} missing rows, {:.1} h in all, longest {:.1} h): \
             not read as zero demand; the forecaster skips them",
            r.trace.gaps.len(),
            r.trace.missing_rows(),
            r.trace.gap_seconds() as f64 / 3600.0,
            longest as f64 / 3600.0,
        );
    }
    if r.stats.malformed > 0 {
        println!(
            "  {} malformed lines skipped (first: {})",
            r.stats.malformed,
            r.stats
                .first_malformed
                .first()
                .map_or(String::new(), |(l, why)| format!("line {l}: {why}"))
        );
    }
    println!(
        "{:<12} {:>12} {:>11} {:>10} {:>13} {:>8} {:>10} {:>9}",
        "policy",
        "under-prov",
        "over-target",
        "overload",
        "replica-hours",
        "actions",
        "reversals",
        "lead (s)"
    );
    for (name, run) in &r.policies {
        let o = &run.outcome;
        println!(
            "{:<12} {:>11.2}% {:>10.2}% {:>9.3}% {:>13.1} {:>8} {:>10} {:>9}",
            name,
            o.under_provisioned_fraction * 100.0,
            o.over_target_fraction * 100.0,
            o.overload_request_fraction * 100.0,
            o.replica_hours,
            o.scaling_actions,
            o.reversals,
            o.mean_lead_seconds_before_steps
                .map_or("-".to_string(), |l| format!("{l:.0}"))
        );
    }
    print!("{}", shed_table(r));
    let f = &r.forecasts;
    if let Some(h) = f.summary.last() {
        println!(
            "forecast ({}s steps, {} ahead): MASE {:.3}, sMAPE {:.1}, coverage@{:.0}% {:.3}",
            f.step,
            h.horizon_steps,
            h.mase,
            h.smape,
            f.level * 100.0,
            h.coverage
        );
    }
    print!("{}", super::reconciled::table(r));
    if let Some(c) = &r.costs {
        print!("{}", super::costs::table(c));
    }
    println!(
        "read {:.1}s, simulated {:.1}s; wrote {}/{{summary.json,timeline.csv,decisions.csv,signatures.json,signature_minutes.csv,report.html,plots/}}",
        r.read_seconds,
        r.sim_seconds,
        dir.display()
    );
}

/// Requests shed per tier and policy (the predictive policy also with pre-shedding),
/// as text: one row per tier.
pub fn shed_table(r: &Replay) -> String {
    use std::fmt::Write as _;
    let Some((_, first)) = r.policies.first() else {
        return String::new();
    };
    let mut out = String::from("requests shed by tier at ready capacity:\n");
    let _ = write!(out, "{:<14} {:>9} {:>12}", "tier", "sheddable", "requests");
    for (name, run) in &r.policies {
        let _ = write!(out, " {name:>12}");
        if run
            .outcome
            .shed_by_tier
            .iter()
            .any(|t| t.shed_with_preshed.is_some())
        {
            let _ = write!(out, " {:>12}", format!("{name}+pre"));
        }
    }
    out.push('\n');
    for (i, tier) in first.outcome.shed_by_tier.iter().enumerate() {
        let _ = write!(
            out,
            "{:<14} {:>9} {:>12.0}",
            tier.tier,
            if tier.sheddable { "yes" } else { "no" },
            tier.requests
        );
        for (_, run) in &r.policies {
            let line = run.outcome.shed_by_tier.get(i);
            let _ = write!(out, " {:>12.0}", line.map_or(0.0, |l| l.shed));
            if let Some(with) = line.and_then(|l| l.shed_with_preshed) {
                let _ = write!(out, " {with:>12.0}");
            }
        }
        out.push('\n');
    }
    out
}

impl Replay {
    fn stats_file(&self) -> String {
        self.input_name.clone()
    }
}

/// A spinner with the record count and rate; silent off a terminal or with --quiet.
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    pub fn new(input: &Path, quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {msg} {human_pos} lines ({per_sec}) {elapsed}",
        ) {
            bar.set_style(style);
        }
        bar.set_message(format!("reading {}", input.display()));
        Self(Some(bar))
    }

    pub fn update(&self, records: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(records);
        }
    }

    pub fn finish(&self, records: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(records);
            bar.finish_and_clear();
        }
    }
}
