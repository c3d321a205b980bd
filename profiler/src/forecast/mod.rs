//! Demand forecasting: one online [`Forecaster`] per series, fed one observation per
//! step, answering a forecast with calibrated intervals.
//!
//! The same code serves the live sidecar (fed by the series buckets), `prescale
//! forecast` and `prescale replay` (fed by a file), so every accuracy number we
//! publish is a number about the shipped code.
//!
//! Model choice is prequential: every candidate forecasts at every step and is scored
//! against the actuals as they arrive (a rolling-origin backtest done online, with no
//! extra fitting), and the candidate with the lowest recent error is published. The
//! same errors calibrate the intervals (see [`conformal`]).

pub mod conformal;
pub mod eval;
pub mod model;

pub use self::model::ModelKind;

use self::conformal::Calibration;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// How a series is forecast; all counts are in steps of the series.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ForecastParams {
    /// Steps ahead to forecast (at least the lead time).
    pub horizon: usize,
    /// Central interval level, e.g. 0.9.
    pub level: f64,
    /// Seasonal periods in steps (e.g. a day and a week); each is used once the
    /// history holds two of its seasons.
    pub periods: Vec<usize>,
    /// History kept for fitting (bounded).
    pub max_history: usize,
    /// Fit the expensive models every this many steps.
    pub refit_every: usize,
    /// Recent errors kept per horizon step for calibration and model choice.
    pub calibration_window: usize,
    /// Demand and rates are never negative.
    pub non_negative: bool,
}

/// One forecast, made after `origin` observations.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Forecast {
    pub origin: usize,
    pub model: ModelKind,
    /// Whether the interval comes from the model's own past errors (else a wide
    /// fallback while errors accumulate).
    pub calibrated: bool,
    pub points: Vec<ForecastPoint>,
}

#[derive(Copy, Clone, Debug, PartialEq, Serialize)]
pub struct ForecastPoint {
    /// 1-based steps after the origin.
    pub step: usize,
    pub point: f64,
    pub lower: f64,
    pub upper: f64,
}

/// Accuracy of the published forecasts so far (the feedback loop's output).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Accuracy {
    /// MAE of published forecasts / MAE of seasonal-naive, per horizon step (1-based
    /// index 0 = step 1); below 1 beats seasonal-naive. None until both have errors.
    pub relative_mae: Vec<Option<f64>>,
    /// Share of actuals inside the published interval, over recent forecasts.
    pub coverage: Option<f64>,
}

/// The online forecaster of one series.
pub struct Forecaster {
    params: ForecastParams,
    history: VecDeque<f64>,
    observed: usize,
    candidates: Vec<Candidate>,
    /// Forecasts awaiting their actuals: origin and each candidate's points.
    pending: VecDeque<Issued>,
    since_refit: usize,
    /// Errors of what was published, and whether actuals fell inside the interval.
    published: Calibration,
    hits: VecDeque<bool>,
}

struct Candidate {
    kind: ModelKind,
    /// Fitted path for `Ets`/`Mstl`, starting right after observation `path_origin`.
    path: Vec<f64>,
    path_origin: usize,
    /// Smoothed recent residual of the path, added to its points between fits.
    offset: f64,
    calibration: Calibration,
}

struct Issued {
    origin: usize,
    /// Points per candidate (same order as `candidates`), and the published forecast.
    points: Vec<(ModelKind, Vec<f64>)>,
    published: Vec<ForecastPoint>,
}

/// Weight of the newest residual in the path correction.
const OFFSET_ALPHA: f64 = 0.3;

// === impl ForecastParams ===

impl ForecastParams {
    /// Sensible defaults for a series with `step_seconds` per step: daily and weekly
    /// seasons, ~2 weeks of history (capped at 20 160 points), refits every hour.
    pub fn for_step(step_seconds: u64, horizon: usize) -> Self {
        let step = step_seconds.max(1);
        let per = |secs: u64| (secs / step) as usize;
        Self {
            horizon: horizon.max(1),
            level: 0.9,
            periods: [per(86_400), per(7 * 86_400)]
                .into_iter()
                .filter(|p| *p >= 2)
                .collect(),
            max_history: per(15 * 86_400).clamp(64, 20_160),
            refit_every: per(3600).max(12),
            calibration_window: 1000,
            non_negative: true,
        }
    }
}

// === impl Forecaster ===

impl Forecaster {
    pub fn new(params: ForecastParams) -> Self {
        let h = params.horizon.max(1);
        Self {
            published: Calibration::new(h, params.calibration_window),
            params,
            history: VecDeque::new(),
            observed: 0,
            candidates: Vec::new(),
            pending: VecDeque::new(),
            since_refit: 0,
            hits: VecDeque::new(),
        }
    }

    pub fn params(&self) -> &ForecastParams {
        &self.params
    }

    pub fn observed(&self) -> usize {
        self.observed
    }

    /// Starts over after a confirmed level shift: forgets the models, their errors and
    /// every observation but the last `keep` (those since the shift), which are replayed
    /// as if observed live, a forecast after each, so the new models and intervals learn
    /// the new level only. `keep` is capped at the history held; 0 forgets everything.
    /// Costs up to `keep` forecasts (a model fit every `refit_every` of them).
    pub fn restart_keeping(&mut self, keep: usize) {
        let skip = self.history.len().saturating_sub(keep);
        let recent: Vec<f64> = self.history.iter().skip(skip).copied().collect();
        *self = Self::new(self.params.clone());
        for y in recent {
            self.observe(y);
            let _ = self.forecast();
        }
    }

    /// Adds the next observation; scores every forecast that predicted it. A
    /// non-finite value (a gap) repeats the previous one.
    pub fn observe(&mut self, value: f64) {
        let y = if value.is_finite() {
            value
        } else {
            self.history.back().copied().unwrap_or(0.0)
        };
        let t = self.observed;
        for issued in &self.pending {
            let Some(step) = (t + 1).checked_sub(issued.origin).filter(|s| *s >= 1) else {
                continue;
            };
            for (kind, points) in &issued.points {
                if let (Some(c), Some(p)) = (
                    self.candidates.iter_mut().find(|c| c.kind == *kind),
                    points.get(step - 1),
                ) {
                    c.calibration.record(step, y - p);
                }
            }
            if let Some(fp) = issued.published.get(step - 1) {
                self.published.record(step, y - fp.point);
                if self.hits.len() == self.params.calibration_window {
                    self.hits.pop_front();
                }
                self.hits.push_back((fp.lower..=fp.upper).contains(&y));
            }
        }
        for c in &mut self.candidates {
            if let Some(raw) = c
                .path
                .get(t.wrapping_sub(c.path_origin))
                .filter(|_| t >= c.path_origin)
            {
                c.offset = OFFSET_ALPHA * (y - raw) + (1.0 - OFFSET_ALPHA) * c.offset;
            }
        }
        self.history.push_back(y);
        while self.history.len() > self.params.max_history.max(2) {
            self.history.pop_front();
        }
        self.observed += 1;
        self.since_refit += 1;
        let h = self.params.horizon;
        while self
            .pending
            .front()
            .is_some_and(|i| i.origin + h <= self.observed)
        {
            self.pending.pop_front();
        }
    }

    /// Forecasts the next `horizon` steps. Fits the expensive models when due (tens
    /// to hundreds of milliseconds: call it off the data path). `None` before the
    /// first observation.
    pub fn forecast(&mut self) -> Option<Forecast> {
        if self.history.is_empty() {
            return None;
        }
        self.refresh_candidates();
        let h = self.params.horizon;
        let history: Vec<f64> = self.history.iter().copied().collect();
        let mut points = Vec::with_capacity(self.candidates.len());
        for c in &self.candidates {
            if let Some(p) = self.candidate_points(c, &history, h) {
                points.push((c.kind, p));
            }
        }
        let (model, chosen) = self.choose(&points)?;
        let calibrated = (1..=h).all(|s| {
            self.calibration_of(model)
                .is_some_and(|c| c.offsets(s, self.params.level).is_some())
        });
        let fallback = fallback_spread(&history);
        let published: Vec<ForecastPoint> = chosen
            .iter()
            .enumerate()
            .map(|(i, point)| {
                let step = i + 1;
                let (below, above) = self
                    .calibration_of(model)
                    .and_then(|c| c.offsets(step, self.params.level))
                    .unwrap_or_else(|| {
                        let w = fallback * (step as f64).sqrt();
                        (-w, w)
                    });
                let mut fp = ForecastPoint {
                    step,
                    point: *point,
                    lower: point + below.min(0.0),
                    upper: point + above.max(0.0),
                };
                if self.params.non_negative {
                    fp.point = fp.point.max(0.0);
                    fp.lower = fp.lower.max(0.0);
                    fp.upper = fp.upper.max(fp.point);
                }
                fp
            })
            .collect();
        self.pending.push_back(Issued {
            origin: self.observed,
            points,
            published: published.clone(),
        });
        Some(Forecast {
            origin: self.observed,
            model,
            calibrated,
            points: published,
        })
    }

    /// How the published forecasts have done.
    pub fn accuracy(&self) -> Accuracy {
        let snaive = self
            .candidates
            .iter()
            .find(|c| c.kind == ModelKind::SeasonalNaive);
        let relative_mae = (1..=self.params.horizon)
            .map(|s| {
                let ours = self.published.mae(s)?;
                let base = snaive?.calibration.mae(s)?;
                (base > 0.0).then(|| ours / base)
            })
            .collect();
        let coverage = (!self.hits.is_empty())
            .then(|| self.hits.iter().filter(|h| **h).count() as f64 / self.hits.len() as f64);
        Accuracy {
            relative_mae,
            coverage,
        }
    }

    fn calibration_of(&self, kind: ModelKind) -> Option<&Calibration> {
        self.candidates
            .iter()
            .find(|c| c.kind == kind)
            .map(|c| &c.calibration)
    }

    /// Adds candidates the history now supports and refits the expensive ones when due.
    fn refresh_candidates(&mut self) {
        let n = self.history.len();
        let available = model::candidates(n, &self.params.periods);
        let mut added = false;
        for kind in available {
            if !self.candidates.iter().any(|c| c.kind == kind) {
                self.candidates.push(Candidate {
                    kind,
                    path: Vec::new(),
                    path_origin: self.observed,
                    offset: 0.0,
                    calibration: Calibration::new(
                        self.params.horizon,
                        self.params.calibration_window,
                    ),
                });
                added = true;
            }
        }
        if !(added || self.since_refit >= self.params.refit_every) {
            return;
        }
        self.since_refit = 0;
        let history: Vec<f64> = self.history.iter().copied().collect();
        let len = self.params.refit_every + self.params.horizon + 1;
        for c in &mut self.candidates {
            if matches!(c.kind, ModelKind::Ets | ModelKind::Mstl) {
                match model::fit_path(c.kind, &history, &self.params.periods, len) {
                    Some(path) => {
                        c.path = path;
                        c.path_origin = self.observed;
                        c.offset = 0.0;
                    }
                    // Keep the old path (if any); a model that cannot fit publishes
                    // nothing until it can, and a cheaper one is chosen meanwhile.
                    None => c.path.clear(),
                }
            }
        }
    }

    fn candidate_points(&self, c: &Candidate, history: &[f64], h: usize) -> Option<Vec<f64>> {
        let last = history.last().copied()?;
        let points: Vec<f64> = match c.kind {
            ModelKind::LastValue => vec![last; h],
            ModelKind::SeasonalNaive => {
                let period = self
                    .params
                    .periods
                    .iter()
                    .copied()
                    .find(|p| *p >= 2 && history.len() >= *p)?;
                (1..=h)
                    .map(|s| model::seasonal_naive(history, period, s))
                    .collect::<Option<_>>()?
            }
            ModelKind::Ets | ModelKind::Mstl => {
                let k = self.observed.checked_sub(c.path_origin)?;
                (1..=h)
                    .map(|s| c.path.get(k + s - 1).map(|p| p + c.offset))
                    .collect::<Option<_>>()?
            }
        };
        points.iter().all(|p| p.is_finite()).then_some(points)
    }

    /// The candidate with the lowest recent error summed over horizon steps; before
    /// errors accumulate, the richest available model.
    fn choose<'a>(&self, points: &'a [(ModelKind, Vec<f64>)]) -> Option<(ModelKind, &'a Vec<f64>)> {
        let scored = points.iter().filter_map(|(kind, p)| {
            let cal = self.calibration_of(*kind)?;
            let enough = (1..=self.params.horizon).all(|s| cal.len(s) >= conformal::MIN_ERRORS);
            let score: f64 = (1..=self.params.horizon).filter_map(|s| cal.mae(s)).sum();
            enough.then_some((score, *kind, p))
        });
        let best = scored
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k, p)| (k, p));
        best.or_else(|| points.last().map(|(k, p)| (*k, p)))
    }
}

/// A deliberately wide interval half-width before calibration: 1.645 × the standard
/// deviation of recent step-to-step changes (a random-walk 90 % band).
fn fallback_spread(history: &[f64]) -> f64 {
    let tail = history
        .get(history.len().saturating_sub(61)..)
        .unwrap_or(history);
    let diffs: Vec<f64> = tail
        .windows(2)
        .filter_map(|w| Some(w.get(1)? - w.first()?))
        .collect();
    if diffs.is_empty() {
        return history.last().map_or(1.0, |v| v.abs().max(1.0));
    }
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let var = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / diffs.len() as f64;
    (1.645 * var.sqrt()).max(1e-9)
}

#[cfg(test)]
mod tests;
