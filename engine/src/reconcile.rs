//! Reconciliation of the total: the direct forecast of the total series against the
//! bottom-up sum of the per-signature forecasts, each scored on its own realised
//! errors, and the better one (or their error-weighted combination) planned with.
//!
//! Forecasting work per signature is the product (Little's law: each signature's
//! concurrency is its rate × service time), but a sum of noisy per-signature
//! forecasts can be worse than forecasting the smooth total directly, and the reverse
//! when the total mixes signatures with different daily shapes. Neither is known in
//! advance, so both are issued at every step, scored on the steps they predicted over
//! a bounded rolling window per horizon step (the same errors calibrate their
//! intervals), and per horizon step the source with the lowest mean absolute error
//! is planned with. The combination weights the two by inverse squared MAE
//! (Bates–Granger); at any step its error is at most the larger of the two, so no
//! choice among the three can do worse than the worse of direct and bottom-up.
//!
//! The bottom-up sum covers all work: the signatures' forecasts plus a forecast of
//! the unclassified remainder (total minus the signatures), so that it forecasts the
//! same quantity as the direct one. Pure: time (step starts, Unix or trace ms) is an
//! argument.

use crate::Millis;
use prescale_profiler::forecast::conformal::{Calibration, MIN_ERRORS};
use prescale_profiler::forecast::{Forecast, ForecastParams, ForecastPoint, Forecaster};
use serde::Serialize;
use std::collections::VecDeque;

/// Where the total forecast planned with at one horizon step comes from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The forecaster of the total series.
    Direct,
    /// The sum of the signatures' forecasts and the unclassified remainder's.
    BottomUp,
    /// Direct and bottom-up weighted by their inverse squared MAE.
    Combined,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Direct, Source::BottomUp, Source::Combined];

    /// Its label in `/v1/forecast` and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Source::Direct => "direct",
            Source::BottomUp => "bottom_up",
            Source::Combined => "combined",
        }
    }
}

/// The candidates' points issued at one origin, awaiting the steps they predict.
struct Issued {
    /// Start of the last step fed when they were issued.
    origin: Millis,
    direct: Vec<f64>,
    bottom_up: Option<Vec<f64>>,
    combined: Option<Vec<f64>>,
    planned: Vec<f64>,
}

/// Scores of one source, per horizon step (index 0 = step 1).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SourceScore {
    /// Mean absolute error over the window; None before any error.
    pub mae: Vec<Option<f64>>,
    /// Errors scored, per horizon step (the window bounds them).
    pub scored: Vec<usize>,
}

/// The reconciled total, as `/v1/forecast` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Reconciliation {
    /// Per horizon step, the source planned with.
    pub chosen: Vec<Source>,
    /// Per horizon step, the direct forecast's weight in the combination.
    pub direct_weight: Vec<f64>,
    /// Errors kept per horizon step and source.
    pub window: usize,
    pub errors: Errors,
}

/// Each source's scores, and those of what was planned with.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Errors {
    pub direct: SourceScore,
    pub bottom_up: SourceScore,
    pub combined: SourceScore,
    /// What was planned with (the chosen source at each step), scored the same way.
    pub planned: SourceScore,
}

/// The latest reconciled total.
#[derive(Clone, Debug, PartialEq)]
pub struct Reconciled {
    /// The forecast planned with: per horizon step the chosen source's point, with
    /// the direct forecast's own band where it is chosen and the source's own
    /// conformal band elsewhere.
    pub planned: Forecast,
    /// The bottom-up forecast (None without signatures), its band from its own errors
    /// (the point alone before it has enough).
    pub bottom_up: Option<Vec<ForecastPoint>>,
    pub choice: Reconciliation,
}

/// Every source's errors since start (not only the rolling window the choice reads),
/// and how often each was chosen: what `prescale replay` reports for a whole trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunScores {
    /// Per horizon step (index 0 = step 1).
    pub steps: Vec<RunStepScore>,
}

/// One horizon step of [`RunScores`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunStepScore {
    pub step: usize,
    /// Mean absolute error of each source, and of what was planned with (None: never
    /// scored).
    pub mae_direct: Option<f64>,
    pub mae_bottom_up: Option<f64>,
    pub mae_combined: Option<f64>,
    pub mae_planned: Option<f64>,
    /// Steps each MAE is over.
    pub scored_direct: u64,
    pub scored_bottom_up: u64,
    pub scored_combined: u64,
    /// Forecasts issued that planned with each source at this step.
    pub chosen_direct: u64,
    pub chosen_bottom_up: u64,
    pub chosen_combined: u64,
}

/// Σ |error| and count per horizon step, over a whole run.
#[derive(Clone, Debug, Default)]
struct Running {
    abs: Vec<f64>,
    n: Vec<u64>,
}

impl Running {
    fn new(h: usize) -> Self {
        Self {
            abs: vec![0.0; h],
            n: vec![0; h],
        }
    }

    fn record(&mut self, step: usize, e: f64) {
        let i = step.saturating_sub(1);
        if let (Some(a), Some(n)) = (self.abs.get_mut(i), self.n.get_mut(i)) {
            *a += e.abs();
            *n += 1;
        }
    }

    fn mae(&self, i: usize) -> Option<f64> {
        let n = *self.n.get(i)?;
        (n > 0).then(|| self.abs.get(i).copied().unwrap_or(0.0) / n as f64)
    }

    fn count(&self, i: usize) -> u64 {
        self.n.get(i).copied().unwrap_or(0)
    }
}

/// The direct and bottom-up forecasts of the total, scored and reconciled.
pub struct Reconciler {
    step_ms: Millis,
    horizon: usize,
    level: f64,
    non_negative: bool,
    window: usize,
    /// The unclassified remainder (total minus the signatures).
    remainder: Forecaster,
    pending: VecDeque<Issued>,
    errors: [Calibration; 4],
    latest: Option<Reconciled>,
    /// The same errors as `errors`, over the whole run.
    run: [Running; 4],
    /// Per horizon step, issues that planned with direct, bottom-up, combined.
    chosen: Vec<[u64; 3]>,
}

const DIRECT: usize = 0;
const BOTTOM_UP: usize = 1;
const COMBINED: usize = 2;
const PLANNED: usize = 3;

impl Reconciler {
    /// `window`: errors kept per horizon step and source.
    pub fn new(params: &ForecastParams, step_ms: Millis, window: usize) -> Self {
        let h = params.horizon.max(1);
        let window = window.max(MIN_ERRORS);
        Self {
            step_ms: step_ms.max(1),
            horizon: h,
            level: params.level,
            non_negative: params.non_negative,
            window,
            remainder: Forecaster::new(params.clone()),
            pending: VecDeque::new(),
            errors: std::array::from_fn(|_| Calibration::new(h, window)),
            latest: None,
            run: std::array::from_fn(|_| Running::new(h)),
            chosen: vec![[0; 3]; h],
        }
    }

    /// The step starting at `start` is complete: `total` is its demand and
    /// `remainder` the part no signature holds (None: the step is a gap, its value
    /// unknown). Scores every candidate that predicted it and trains the remainder.
    pub fn observe(&mut self, start: Millis, total: Option<f64>, remainder: Option<f64>) {
        self.remainder.observe(remainder.unwrap_or(f64::NAN));
        if let Some(y) = total.filter(|y| y.is_finite()) {
            for issued in &self.pending {
                let Some(ahead) = start.checked_sub(issued.origin) else {
                    continue;
                };
                if ahead == 0 || ahead % self.step_ms != 0 {
                    continue;
                }
                let step = (ahead / self.step_ms) as usize;
                let Some(i) = step.checked_sub(1) else {
                    continue;
                };
                let err = |points: Option<&Vec<f64>>| points.and_then(|p| p.get(i)).map(|p| y - p);
                let errors = [
                    err(Some(&issued.direct)),
                    err(issued.bottom_up.as_ref()),
                    err(issued.combined.as_ref()),
                    err(Some(&issued.planned)),
                ];
                for ((cal, run), e) in self.errors.iter_mut().zip(&mut self.run).zip(errors) {
                    if let Some(e) = e {
                        cal.record(step, e);
                        run.record(step, e);
                    }
                }
            }
        }
        let horizon_ms = self.horizon as Millis * self.step_ms;
        while self
            .pending
            .front()
            .is_some_and(|i| i.origin + horizon_ms <= start)
        {
            self.pending.pop_front();
        }
    }

    /// Issues the candidates at `origin` (the start of the last step fed) from the
    /// direct forecast and the signatures' (all made after that step); returns the
    /// forecast to plan with. Without signatures it is the direct forecast as is.
    pub fn issue<'a>(
        &mut self,
        origin: Millis,
        direct: &Forecast,
        signatures: impl IntoIterator<Item = &'a Forecast>,
    ) -> &Forecast {
        let h = self.horizon;
        let direct_points: Vec<f64> = (0..h)
            .map(|i| direct.points.get(i).map_or(0.0, |p| p.point))
            .collect();
        let mut any = false;
        let mut sum = vec![0.0; h];
        for fc in signatures {
            any = true;
            for (s, p) in sum.iter_mut().zip(&fc.points) {
                *s += p.point;
            }
        }
        let bottom_up = match (any, self.remainder.forecast()) {
            (true, Some(rest)) => {
                for (s, p) in sum.iter_mut().zip(&rest.points) {
                    *s += p.point;
                }
                Some(sum)
            }
            _ => None,
        };
        let weights: Vec<f64> = (1..=h).map(|s| self.direct_weight(s)).collect();
        let combined = bottom_up.as_ref().map(|b| {
            direct_points
                .iter()
                .zip(b)
                .zip(&weights)
                .map(|((d, b), w)| w * d + (1.0 - w) * b)
                .collect::<Vec<f64>>()
        });
        let chosen: Vec<Source> = (1..=h)
            .map(|s| match bottom_up {
                Some(_) => self.best(s),
                None => Source::Direct,
            })
            .collect();
        for (counts, source) in self.chosen.iter_mut().zip(&chosen) {
            if let Some(c) = counts.get_mut(*source as usize) {
                *c += 1;
            }
        }
        let mut planned = direct.clone();
        for (i, fp) in planned.points.iter_mut().enumerate() {
            let (point, kind) = match chosen.get(i) {
                Some(Source::BottomUp) => (bottom_up.as_ref().and_then(|b| b.get(i)), BOTTOM_UP),
                Some(Source::Combined) => (combined.as_ref().and_then(|c| c.get(i)), COMBINED),
                _ => (None, DIRECT),
            };
            if let Some(point) = point {
                // Leaving the direct forecast needs enough errors (see `best`), so
                // these offsets exist; the direct one keeps its own adaptive band.
                *fp = self.band(kind, fp.step, *point).unwrap_or(*fp);
            }
        }
        let bottom_up_points = bottom_up.as_ref().map(|b| {
            b.iter()
                .enumerate()
                .map(|(i, p)| {
                    let step = i + 1;
                    self.band(BOTTOM_UP, step, *p).unwrap_or(ForecastPoint {
                        step,
                        point: *p,
                        lower: *p,
                        upper: *p,
                    })
                })
                .collect()
        });
        self.pending.push_back(Issued {
            origin,
            planned: planned.points.iter().map(|p| p.point).collect(),
            direct: direct_points,
            bottom_up,
            combined,
        });
        let choice = Reconciliation {
            chosen,
            direct_weight: weights,
            window: self.window,
            errors: Errors {
                direct: self.score(DIRECT),
                bottom_up: self.score(BOTTOM_UP),
                combined: self.score(COMBINED),
                planned: self.score(PLANNED),
            },
        };
        &self
            .latest
            .insert(Reconciled {
                planned,
                bottom_up: bottom_up_points,
                choice,
            })
            .planned
    }

    /// The forecast to plan with, and how it was reconciled, after the last issue.
    pub fn latest(&self) -> Option<&Reconciled> {
        self.latest.as_ref()
    }

    /// Every source's MAE per horizon step since start, and how often each was chosen.
    pub fn run_scores(&self) -> RunScores {
        let [d, b, c, p] = &self.run;
        RunScores {
            steps: (0..self.horizon)
                .map(|i| {
                    let [chosen_direct, chosen_bottom_up, chosen_combined] =
                        self.chosen.get(i).copied().unwrap_or_default();
                    RunStepScore {
                        step: i + 1,
                        mae_direct: d.mae(i),
                        mae_bottom_up: b.mae(i),
                        mae_combined: c.mae(i),
                        mae_planned: p.mae(i),
                        scored_direct: d.count(i),
                        scored_bottom_up: b.count(i),
                        scored_combined: c.count(i),
                        chosen_direct,
                        chosen_bottom_up,
                        chosen_combined,
                    }
                })
                .collect(),
        }
    }

    /// Drops the latest forecast (the direct one is gone too).
    pub fn clear(&mut self) {
        self.latest = None;
    }

    fn score(&self, kind: usize) -> SourceScore {
        let Some(cal) = self.errors.get(kind) else {
            return SourceScore::default();
        };
        SourceScore {
            mae: (1..=self.horizon).map(|s| cal.mae(s)).collect(),
            scored: (1..=self.horizon).map(|s| cal.len(s)).collect(),
        }
    }

    /// MAE of `kind` at `step` once it has enough errors to be trusted.
    fn trusted_mae(&self, kind: usize, step: usize) -> Option<f64> {
        let cal = self.errors.get(kind)?;
        (cal.len(step) >= MIN_ERRORS)
            .then(|| cal.mae(step))
            .flatten()
    }

    /// The direct forecast's weight in the combination at `step`: inverse squared MAE
    /// (Bates–Granger), equal weights until both have enough errors.
    fn direct_weight(&self, step: usize) -> f64 {
        match (
            self.trusted_mae(DIRECT, step),
            self.trusted_mae(BOTTOM_UP, step),
        ) {
            (Some(d), Some(b)) => {
                let (d, b) = (d.max(1e-12).powi(-2), b.max(1e-12).powi(-2));
                d / (d + b)
            }
            _ => 0.5,
        }
    }

    /// The source with the lowest trusted MAE at `step`; the direct one until another
    /// has enough errors, and on ties.
    fn best(&self, step: usize) -> Source {
        let Some(mut best) = self.trusted_mae(DIRECT, step) else {
            return Source::Direct;
        };
        let mut source = Source::Direct;
        for (kind, s) in [(BOTTOM_UP, Source::BottomUp), (COMBINED, Source::Combined)] {
            if let Some(m) = self.trusted_mae(kind, step).filter(|m| *m < best) {
                best = m;
                source = s;
            }
        }
        source
    }

    /// `point` at `step` with the interval of `kind`'s own errors at the level.
    fn band(&self, kind: usize, step: usize, point: f64) -> Option<ForecastPoint> {
        let (below, above) = self.errors.get(kind)?.offsets(step, self.level)?;
        let mut fp = ForecastPoint {
            step,
            point,
            lower: point + below.min(0.0),
            upper: point + above.max(0.0),
        };
        if self.non_negative {
            fp.point = fp.point.max(0.0);
            fp.lower = fp.lower.max(0.0);
            fp.upper = fp.upper.max(fp.point);
        }
        Some(fp)
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
