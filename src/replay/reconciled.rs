//! The engine's reconciliation of the total over a whole replay: per horizon step,
//! the error of the direct forecast, of the bottom-up sum of the signatures'
//! forecasts (plus the unclassified remainder's) and of their combination, and which
//! one the decision planned with. Only a request log has signatures; a count series
//! reports the direct forecast alone.

use super::Replay;
use prescale_engine::{RunScores, RunStepScore};
use std::fmt::Write as _;
use std::io::Write as _;

/// The predictive engine's run scores and its final view, if it ran.
fn engine(r: &Replay) -> Option<(&RunScores, &prescale_engine::ForecastView)> {
    let run = r
        .policies
        .iter()
        .find(|(name, _)| *name == "predictive")
        .map(|(_, run)| run)?;
    Some((run.reconcile.as_ref()?, run.forecast.as_ref()?))
}

/// The source planned with most often at a step (ties: direct, bottom-up, combined).
fn mostly(s: &RunStepScore) -> &'static str {
    let counts = [
        (s.chosen_direct, "direct"),
        (s.chosen_bottom_up, "bottom_up"),
        (s.chosen_combined, "combined"),
    ];
    counts
        .iter()
        .fold(
            (0, "direct"),
            |best, c| if c.0 > best.0 { *c } else { best },
        )
        .1
}

/// `summary.json`'s `forecast.reconciliation`.
pub fn json(r: &Replay) -> serde_json::Value {
    let Some((scores, view)) = engine(r) else {
        return serde_json::Value::Null;
    };
    let signatures = view.series.keys().filter(|k| *k != "total").count();
    let steps: Vec<serde_json::Value> = scores
        .steps
        .iter()
        .map(|s| {
            serde_json::json!({
                "step": s.step,
                "seconds_ahead": s.step as u64 * view.step_seconds,
                "mae": {
                    "direct": s.mae_direct,
                    "bottom_up": s.mae_bottom_up,
                    "combined": s.mae_combined,
                    "planned": s.mae_planned,
                    "direct_all_forecasts": s.mae_direct_all,
                },
                "scored": {
                    "direct": s.scored_direct,
                    "bottom_up": s.scored_bottom_up,
                    "combined": s.scored_combined,
                    "all_forecasts": s.scored_all,
                },
                "planned_coverage": s.planned_coverage,
                "planned_with": {
                    "direct": s.chosen_direct,
                    "bottom_up": s.chosen_bottom_up,
                    "combined": s.chosen_combined,
                },
                "mostly_planned_with": mostly(s),
            })
        })
        .collect();
    serde_json::json!({
        "signature_series": signatures,
        "unit": "requests per second (one second of work per request)",
        "lead_steps": view.lead_steps,
        "steps": steps,
        "planned_with_at_end": view.total.as_ref().map(|t| &t.choice.chosen),
    })
}

/// A text table: one row per horizon step.
pub fn table(r: &Replay) -> String {
    let Some((scores, view)) = engine(r) else {
        return String::new();
    };
    let signatures = view.series.keys().filter(|k| *k != "total").count();
    let mut out = format!(
        "reconciled total ({signatures} signature series; MAE in req/s over the forecasts that issued all three; coverage of the planned band over all):\n{:>6} {:>10} {:>10} {:>10} {:>10} {:>8}  {}\n",
        "ahead", "direct", "bottom-up", "combined", "planned", "coverage", "mostly planned with"
    );
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for s in &scores.steps {
        let _ = writeln!(
            out,
            "{:>5}s {:>10} {:>10} {:>10} {:>10} {:>8}  {} ({}/{}/{} direct/bottom-up/combined)",
            s.step as u64 * view.step_seconds,
            f(s.mae_direct),
            f(s.mae_bottom_up),
            f(s.mae_combined),
            f(s.mae_planned),
            s.planned_coverage
                .map_or("-".to_string(), |c| format!("{c:.3}")),
            mostly(s),
            s.chosen_direct,
            s.chosen_bottom_up,
            s.chosen_combined,
        );
    }
    out
}

/// `signature_minutes.csv`: the profiler's minute buckets the engine was fed, one row
/// per minute and signature (0: unclassified), with the requests and the service time
/// they hold. The engine counts each request as one second of work (see
/// `engine.rs`); the service seconds are the log's (or the service-time model's).
pub fn write_minutes(path: &std::path::Path, r: &Replay) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "minute_start_ms,signature,requests,service_seconds")?;
    for b in &r.trace.minutes {
        for (sig, c) in &b.by_signature {
            writeln!(
                w,
                "{},{sig},{},{}",
                b.start,
                c.requests,
                c.work_us as f64 / 1e6
            )?;
        }
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_planned_with_most_often_is_named_and_ties_go_to_direct() {
        let s = |d, b, c| RunStepScore {
            chosen_direct: d,
            chosen_bottom_up: b,
            chosen_combined: c,
            ..RunStepScore::default()
        };
        assert_eq!(mostly(&s(3, 5, 4)), "bottom_up");
        assert_eq!(mostly(&s(3, 2, 4)), "combined");
        assert_eq!(mostly(&s(4, 4, 4)), "direct");
        assert_eq!(mostly(&s(0, 0, 0)), "direct");
    }
}
