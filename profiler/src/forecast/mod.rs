//! Demand forecasting: one online [`Forecaster`] per series, fed one observation per
//! step, answering a forecast with calibrated intervals.
//!
//! The same code serves the live sidecar (fed by the series buckets), `prescale
//! forecast` and `prescale replay` (fed by a file), so every accuracy number we
//! publish is a number about the shipped code.
//!
//! The models are a bank of exponential-smoothing filters updated in O(1) per
//! observation (see [`bank`]). Model choice is prequential: every member forecasts at
//! every step and is scored against the actuals as they arrive (a rolling-origin
//! backtest done online, with no refitting), and per horizon step the mean of the
//! members with the lowest recent error is published. The errors of what was published
//! calibrate the intervals (see [`conformal`]).

mod ar;
pub mod bank;
pub mod conformal;
pub mod eval;
pub mod model;
pub mod rls;

pub use self::model::ModelKind;

use self::bank::{Bank, BankConfig};
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
    /// Kept for configuration compatibility: the filter bank has no expensive fit;
    /// every member is updated and re-ranked at every step.
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
    /// The one-step point with its interval at the configured level, without the
    /// adaptive-conformal correction: the band anomaly judgements use. The adaptive
    /// level widens the published interval after misses, which would hide the very
    /// steps an anomaly is made of (NAB ELB: F1 0.67 with this band, 0.00 with the
    /// adapted one). `None` until the first step is calibrated.
    #[serde(skip)]
    pub judged: Option<ForecastPoint>,
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
    bank: Bank,
    /// Forecasts awaiting their actuals: what was published and seasonal-naive's points.
    pending: VecDeque<Issued>,
    /// Errors of what was published, and whether actuals fell inside the interval.
    published: Calibration,
    /// Errors of seasonal-naive at the same origins (the accuracy reference).
    snaive: Calibration,
    hits: VecDeque<bool>,
    /// Per horizon step, the interval level actually used (adaptive conformal).
    levels: Vec<f64>,
}

/// Step size of adaptive conformal inference (Gibbs & Candès, 2021): after each
/// scored forecast the level used moves by this times (miss − target miss rate), so
/// the long-run coverage converges to the target even when errors drift.
const ACI_RATE: f64 = 0.005;

struct Issued {
    origin: usize,
    published: Vec<ForecastPoint>,
    snaive: Vec<Option<f64>>,
}

/// Members averaged per horizon step (see [`bank`]).
pub const COMBINE: usize = 5;

// === impl ForecastParams ===

impl ForecastParams {
    /// Sensible defaults for a series with `step_seconds` per step: daily and weekly
    /// seasons, ~2 weeks of history (capped at 20 160 points).
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

    fn bank_config(&self) -> BankConfig {
        BankConfig {
            periods: self.periods.clone(),
            horizon: self.horizon.max(1),
            combine: COMBINE,
            memory: bank::memory_steps(&self.periods),
            non_negative: self.non_negative,
        }
    }
}

// === impl Forecaster ===

impl Forecaster {
    pub fn new(params: ForecastParams) -> Self {
        let h = params.horizon.max(1);
        let level = params.level;
        Self {
            published: Calibration::new(h, params.calibration_window),
            snaive: Calibration::new(h, params.calibration_window),
            bank: Bank::new(params.bank_config()),
            params,
            history: VecDeque::new(),
            observed: 0,
            pending: VecDeque::new(),
            hits: VecDeque::new(),
            levels: vec![level; h],
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
    pub fn restart_keeping(&mut self, keep: usize) {
        let skip = self.history.len().saturating_sub(keep);
        let recent: Vec<f64> = self.history.iter().skip(skip).copied().collect();
        *self = Self::new(self.params.clone());
        for y in recent {
            self.observe(y);
            let _ = self.forecast();
        }
    }

    /// Adds the next observation (O(1) work per bank member); scores every forecast
    /// that predicted it. A non-finite value (a gap) repeats the previous one.
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
            if let Some(Some(p)) = issued.snaive.get(step - 1) {
                self.snaive.record(step, y - p);
            }
            if let Some(fp) = issued.published.get(step - 1) {
                self.published.record(step, y - fp.point);
                if self.hits.len() == self.params.calibration_window {
                    self.hits.pop_front();
                }
                let hit = (fp.lower..=fp.upper).contains(&y);
                self.hits.push_back(hit);
                if self.published.len(step) >= conformal::MIN_ERRORS {
                    let target = self.params.level.clamp(0.5, 0.999);
                    if let Some(l) = self.levels.get_mut(step - 1) {
                        let miss = if hit { 0.0 } else { 1.0 };
                        *l = (*l + ACI_RATE * (miss - (1.0 - target))).clamp(0.5, 0.999);
                    }
                }
            }
        }
        self.bank.observe(y);
        self.history.push_back(y);
        while self.history.len() > self.params.max_history.max(2) {
            self.history.pop_front();
        }
        self.observed += 1;
        let h = self.params.horizon;
        while self
            .pending
            .front()
            .is_some_and(|i| i.origin + h <= self.observed)
        {
            self.pending.pop_front();
        }
    }

    /// Forecasts the next `horizon` steps (microseconds: the bank already forecast
    /// while observing). `None` before the first observation.
    pub fn forecast(&mut self) -> Option<Forecast> {
        if self.history.is_empty() {
            return None;
        }
        let h = self.params.horizon;
        let last = self.history.back().copied().unwrap_or(0.0);
        let (chosen, model) = self
            .bank
            .forecast()
            .unwrap_or_else(|| (vec![last; h], ModelKind::LastValue));
        let calibrated = (1..=h).all(|s| self.published.len(s) >= conformal::MIN_ERRORS);
        // No copy of the history per step: a contiguous view of the ring.
        let history: &[f64] = self.history.make_contiguous();
        let fallback = if calibrated {
            0.0
        } else {
            fallback_spread(history)
        };
        let period = self
            .params
            .periods
            .iter()
            .copied()
            .find(|p| *p >= 2 && history.len() >= *p);
        let snaive: Vec<Option<f64>> = (1..=h)
            .map(|s| period.and_then(|p| model::seasonal_naive(history, p, s)))
            .collect();
        let published: Vec<ForecastPoint> = chosen
            .iter()
            .enumerate()
            .map(|(i, point)| {
                let step = i + 1;
                let level = self.levels.get(i).copied().unwrap_or(self.params.level);
                let (below, above) = self.published.offsets(step, level).unwrap_or_else(|| {
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
        let judged = published.first().and_then(|p| {
            let (below, above) = self.published.offsets(p.step, self.params.level)?;
            let mut fp = ForecastPoint {
                lower: p.point + below.min(0.0),
                upper: p.point + above.max(0.0),
                ..*p
            };
            if self.params.non_negative {
                fp.lower = fp.lower.max(0.0);
                fp.upper = fp.upper.max(fp.point);
            }
            Some(fp)
        });
        self.pending.push_back(Issued {
            origin: self.observed,
            published: published.clone(),
            snaive,
        });
        Some(Forecast {
            origin: self.observed,
            model,
            calibrated,
            points: published,
            judged,
        })
    }

    /// How the published forecasts have done.
    pub fn accuracy(&self) -> Accuracy {
        let relative_mae = (1..=self.params.horizon)
            .map(|s| {
                let ours = self.published.mae(s)?;
                let base = self.snaive.mae(s)?;
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
mod bank_tests;
#[cfg(test)]
mod peers_tests;
#[cfg(test)]
mod tests;
