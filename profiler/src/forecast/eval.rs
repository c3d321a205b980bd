//! Rolling-origin evaluation: feeds a series through a [`Forecaster`] one step at a
//! time, exactly as the sidecar does, and scores every forecast against what followed.

use super::model::{self, ModelKind};
use super::{ForecastParams, Forecaster};
use serde::Serialize;
use std::collections::BTreeMap;

/// One forecast point and the value that came.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalRow {
    /// Observations seen when the forecast was made.
    pub origin: usize,
    /// Index of the predicted observation.
    pub target: usize,
    pub horizon_steps: usize,
    pub actual: f64,
    pub point: f64,
    pub lower: f64,
    pub upper: f64,
    pub model: ModelKind,
    /// Whether the interval came from the forecaster's own past errors.
    pub calibrated: bool,
}

/// Accuracy at one horizon.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HorizonSummary {
    pub horizon_steps: usize,
    pub forecasts: usize,
    pub mae: f64,
    /// Mean of each error over its origin's scale, the in-sample MAE of daily
    /// seasonal-naive on that origin's last 14 days (the peers' harness's MASE; see
    /// [`origin_scale`]).
    pub mase: f64,
    /// MAE divided by seasonal-naive's MAE at the same horizon and origins: below 1
    /// beats seasonal-naive.
    pub relative_to_seasonal_naive: Option<f64>,
    pub smape: f64,
    /// Share of actuals inside the interval.
    pub coverage: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    #[serde(skip)]
    pub rows: Vec<EvalRow>,
    pub horizons: Vec<HorizonSummary>,
    /// How often each model was published.
    pub models: BTreeMap<String, usize>,
    pub level: f64,
    pub seasonal_period: Option<usize>,
}

/// Evaluates forecasts made at every origin from `start` on (origins are observation
/// counts). `start` should leave enough history to warm up; it is clamped to 1..n.
pub fn evaluate(series: &[f64], params: ForecastParams, start: usize) -> Evaluation {
    evaluate_at(series, params, start, None)
}

/// Like [`evaluate`], but keeps only the forecasts made at `only` (origins as
/// observation counts, e.g. an external harness's origins); the forecaster still sees
/// and forecasts every step, exactly as live.
pub fn evaluate_at(
    series: &[f64],
    params: ForecastParams,
    start: usize,
    only: Option<&std::collections::BTreeSet<usize>>,
) -> Evaluation {
    let n = series.len();
    let start = start.clamp(1, n.max(1));
    let level = params.level;
    let mut f = Forecaster::new(params);
    let mut rows = Vec::new();
    let mut models: BTreeMap<String, usize> = BTreeMap::new();
    for (t, y) in series.iter().enumerate() {
        f.observe(*y);
        let origin = t + 1;
        // Forecast at every step, as the sidecar does (the intervals calibrate on
        // those errors from the start); keep rows from `start` on.
        let Some(fc) = f.forecast() else { continue };
        if origin < start || origin >= n || only.is_some_and(|o| !o.contains(&origin)) {
            continue;
        }
        *models.entry(format!("{:?}", fc.model)).or_default() += 1;
        for p in &fc.points {
            let target = t + p.step;
            let Some(actual) = series.get(target) else {
                break;
            };
            // A gap has no actual to score against.
            if !actual.is_finite() {
                continue;
            }
            rows.push(EvalRow {
                origin,
                target,
                horizon_steps: p.step,
                actual: *actual,
                point: p.point,
                lower: p.lower,
                upper: p.upper,
                model: fc.model,
                calibrated: fc.calibrated,
            });
        }
    }
    let (horizons, period) = score(series, &rows, f.params(), start);
    Evaluation {
        rows,
        horizons,
        models,
        level,
        seasonal_period: period,
    }
}

/// Scores the rows whose origin is at least `from` (rows may start earlier, e.g. when
/// `prescale replay` forecasts from the first step but scores after a warm-up). The
/// seasonal-naive baseline and the MASE scale use the first period with a whole season
/// before `from` (normally a day).
pub fn score(
    series: &[f64],
    rows: &[EvalRow],
    params: &ForecastParams,
    from: usize,
) -> (Vec<HorizonSummary>, Option<usize>) {
    let from = from.clamp(1, series.len().max(1));
    let period = params
        .periods
        .iter()
        .copied()
        .find(|p| *p >= 2 && *p < from);
    let scored: Vec<EvalRow> = rows.iter().filter(|r| r.origin >= from).cloned().collect();
    // Without a whole season before `from`, MASE falls back to the one-step naive
    // scale over the same history cap (14 days when the first period is a day).
    let cap = params
        .periods
        .first()
        .map_or(usize::MAX, |d| d.saturating_mul(SCALE_DAYS));
    let horizons = summarize(series, &scored, params.horizon, period, cap);
    (horizons, period)
}

/// Days of history an origin's MASE scale looks back over (the peers' training cap).
pub const SCALE_DAYS: usize = 14;

/// The MASE scale of a forecast made after `origin` observations, as the peers'
/// harness defines it: the in-sample MAE of the seasonal-naive forecast (lag
/// `period`, normally a day) over that origin's training window, the last
/// `SCALE_DAYS` periods cut after the latest gap (NaN). None when the window is
/// shorter than a period or the MAE is zero.
pub fn origin_scale(series: &[f64], origin: usize, period: usize) -> Option<f64> {
    naive_scale(series, origin, period, period.checked_mul(SCALE_DAYS)?)
}

/// The in-sample MAE of the lag-`period` naive forecast over the last `cap` points up
/// to `origin`, cut after the latest gap; None when the window is shorter than a
/// period or the MAE is zero.
fn naive_scale(series: &[f64], origin: usize, period: usize, cap: usize) -> Option<f64> {
    let end = origin.min(series.len());
    let mut a = end.saturating_sub(cap);
    let window = series.get(a..end)?;
    if let Some(last_gap) = window.iter().rposition(|v| !v.is_finite()) {
        a += last_gap + 1;
    }
    let window = series.get(a..end)?;
    if period == 0 || window.len() <= period {
        return None;
    }
    let diffs = window.iter().zip(window.iter().skip(period));
    let n = window.len() - period;
    let mae = diffs.map(|(x, y)| (y - x).abs()).sum::<f64>() / n as f64;
    (mae.is_finite() && mae > 0.0).then_some(mae)
}

fn summarize(
    series: &[f64],
    rows: &[EvalRow],
    horizon: usize,
    period: Option<usize>,
    fallback_cap: usize,
) -> Vec<HorizonSummary> {
    let mut scales: BTreeMap<usize, Option<f64>> = BTreeMap::new();
    (1..=horizon)
        .filter_map(|h| {
            let at: Vec<&EvalRow> = rows.iter().filter(|r| r.horizon_steps == h).collect();
            if at.is_empty() {
                return None;
            }
            let k = at.len() as f64;
            let mae = at.iter().map(|r| (r.actual - r.point).abs()).sum::<f64>() / k;
            // MASE: each error over its own origin's scale (without a period, the
            // one-step naive MAE), averaged over the forecasts that have one.
            let scaled: Vec<f64> = at
                .iter()
                .filter_map(|r| {
                    let s = *scales.entry(r.origin).or_insert_with(|| match period {
                        Some(p) => origin_scale(series, r.origin, p),
                        None => naive_scale(series, r.origin, 1, fallback_cap),
                    });
                    Some((r.actual - r.point).abs() / s?)
                })
                .collect();
            let mase = scaled.iter().sum::<f64>() / scaled.len().max(1) as f64;
            let smape = at
                .iter()
                .map(|r| {
                    let d = r.actual.abs() + r.point.abs();
                    if d == 0.0 {
                        0.0
                    } else {
                        200.0 * (r.actual - r.point).abs() / d
                    }
                })
                .sum::<f64>()
                / k;
            let coverage = at
                .iter()
                .filter(|r| (r.lower..=r.upper).contains(&r.actual))
                .count() as f64
                / k;
            let relative = period.and_then(|m| {
                let errs: Vec<f64> = at
                    .iter()
                    .filter_map(|r| {
                        let hist = series.get(..r.origin)?;
                        let e = (r.actual - model::seasonal_naive(hist, m, h)?).abs();
                        e.is_finite().then_some(e)
                    })
                    .collect();
                let base = errs.iter().sum::<f64>() / errs.len().max(1) as f64;
                (!errs.is_empty() && base > 0.0).then(|| mae / base)
            });
            Some(HorizonSummary {
                horizon_steps: h,
                forecasts: at.len(),
                mae,
                mase,
                relative_to_seasonal_naive: relative,
                smape,
                coverage,
            })
        })
        .collect()
}
