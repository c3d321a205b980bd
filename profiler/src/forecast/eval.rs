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
}

/// Accuracy at one horizon.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HorizonSummary {
    pub horizon_steps: usize,
    pub forecasts: usize,
    pub mae: f64,
    /// MAE scaled by the in-sample one-step seasonal-naive MAE (Hyndman's MASE).
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
    let n = series.len();
    let start = start.clamp(1, n.max(1));
    let level = params.level;
    let mut f = Forecaster::new(params);
    let mut rows = Vec::new();
    let mut models: BTreeMap<String, usize> = BTreeMap::new();
    for (t, y) in series.iter().enumerate() {
        f.observe(*y);
        let origin = t + 1;
        if origin < start || origin >= n {
            continue;
        }
        let Some(fc) = f.forecast() else { continue };
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
/// seasonal-naive baseline uses the first period with a whole season before `from`.
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
    let train = series.get(..from).unwrap_or(series);
    let scale = in_sample_scale(train, period);
    let horizons = summarize(series, &scored, params.horizon, period, scale);
    (horizons, period)
}

/// In-sample one-step (seasonal-)naive MAE: the MASE denominator.
fn in_sample_scale(train: &[f64], period: Option<usize>) -> f64 {
    let m = period.unwrap_or(1);
    let diffs: Vec<f64> = train
        .iter()
        .zip(train.iter().skip(m))
        .map(|(a, b)| (b - a).abs())
        .filter(|d| d.is_finite())
        .collect();
    if diffs.is_empty() {
        return 1.0;
    }
    (diffs.iter().sum::<f64>() / diffs.len() as f64).max(1e-9)
}

fn summarize(
    series: &[f64],
    rows: &[EvalRow],
    horizon: usize,
    period: Option<usize>,
    scale: f64,
) -> Vec<HorizonSummary> {
    (1..=horizon)
        .filter_map(|h| {
            let at: Vec<&EvalRow> = rows.iter().filter(|r| r.horizon_steps == h).collect();
            if at.is_empty() {
                return None;
            }
            let k = at.len() as f64;
            let mae = at.iter().map(|r| (r.actual - r.point).abs()).sum::<f64>() / k;
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
                mase: mae / scale,
                relative_to_seasonal_naive: relative,
                smape,
                coverage,
            })
        })
        .collect()
}
