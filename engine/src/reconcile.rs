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
//! intervals). The combination weights the two by inverse squared MAE
//! (Bates–Granger); at any step its error is at most the larger of the two, so no
//! choice among the three can do worse than the worse of direct and bottom-up.
//!
//! The choice compares sources only on the forecasts that issued all three (paired):
//! the direct forecast is also scored before there are signatures, often on the
//! worst steps of a trace, and an MAE over those against one over later steps picks
//! whichever started later, not whichever is better. Per horizon step it keeps the
//! source in force (direct at first) until another's paired MAE is lower by more
//! than twice the standard error of the paired difference and by at least 5 % of its
//! own: noise does not switch it (hysteresis), nor does a gain too small to be worth
//! the risk; a real, material difference does.
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
    /// The planned band, per horizon step.
    planned_band: Vec<(f64, f64)>,
}

/// How many standard errors of the paired difference a source's MAE must be below
/// the one in force's before it replaces it (≈ 97.7 % one-sided for independent
/// errors; consecutive forecasts' errors are correlated, so it is looser than that).
const SWITCH_SE: f64 = 2.0;

/// How much lower, as a share of the in-force source's MAE, another source's MAE must
/// also be before it replaces it. Significance alone is not enough: on traffic that is
/// mostly quiet (hours of zeros between bursts) a gain of 1–2 % made of tiny, steady
/// differences passes the standard-error test, while the burst that follows can cost
/// far more than the window's variance said (the Apache log: bottom-up chosen on a
/// 1.8 % gain at 3.7 standard errors, then 25 % worse). A switch must be worth it.
pub(crate) const MIN_GAIN: f64 = 0.05;

/// Absolute errors of direct, bottom-up and the combination on the same forecasts,
/// at one horizon step, over the last `window` forecasts that issued all three.
#[derive(Clone, Debug, Default)]
struct Paired {
    errors: VecDeque<[f64; 3]>,
    sum: [f64; 3],
    /// Σ (|e_i| − |e_j|)² for the pairs (direct, bottom-up), (direct, combined),
    /// (bottom-up, combined).
    sum_sq: [f64; 3],
}

/// Index of the pair (i, j), i ≠ j, in [`Paired::sum_sq`].
fn pair(i: usize, j: usize) -> usize {
    match (i.min(j), i.max(j)) {
        (0, 1) => 0,
        (0, 2) => 1,
        _ => 2,
    }
}

impl Paired {
    fn add(&mut self, e: [f64; 3], sign: f64) {
        for (s, v) in self.sum.iter_mut().zip(e) {
            *s += sign * v;
        }
        for (i, j) in [(0, 1), (0, 2), (1, 2)] {
            if let (Some(a), Some(b), Some(s)) =
                (e.get(i), e.get(j), self.sum_sq.get_mut(pair(i, j)))
            {
                *s += sign * (a - b).powi(2);
            }
        }
    }

    /// Records one forecast's absolute errors, forgetting the oldest beyond `window`.
    fn record(&mut self, e: [f64; 3], window: usize) {
        self.errors.push_back(e);
        self.add(e, 1.0);
        while self.errors.len() > window {
            if let Some(old) = self.errors.pop_front() {
                self.add(old, -1.0);
            }
        }
    }

    fn len(&self) -> usize {
        self.errors.len()
    }

    /// Mean absolute error of source `k` over the window.
    fn mae(&self, k: usize) -> Option<f64> {
        let n = self.len();
        (n > 0).then(|| self.sum.get(k).copied().unwrap_or(0.0).max(0.0) / n as f64)
    }

    /// How much lower `to`'s MAE is than `from`'s over the window, and the standard
    /// error of that mean difference.
    fn gain(&self, from: usize, to: usize) -> Option<(f64, f64)> {
        let n = self.len() as f64;
        let (a, b) = (self.mae(from)?, self.mae(to)?);
        let mean = a - b;
        let sq = self.sum_sq.get(pair(from, to)).copied().unwrap_or(0.0) / n;
        let var = (sq - mean * mean).max(0.0) * n / (n - 1.0).max(1.0);
        Some((mean, (var / n).sqrt()))
    }
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
    /// Steps each MAE is over: the forecasts that issued all three sources (the same
    /// forecasts for each, so the MAEs compare).
    pub scored_direct: u64,
    pub scored_bottom_up: u64,
    pub scored_combined: u64,
    /// The direct forecast's MAE over every forecast scored (also those issued before
    /// there were signatures), and how many.
    pub mae_direct_all: Option<f64>,
    pub scored_all: u64,
    /// Share of the steps scored (all forecasts) inside the planned band.
    pub planned_coverage: Option<f64>,
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
    /// Per horizon step (index 0 = step 1), the paired errors the choice reads.
    paired: Vec<Paired>,
    /// Per horizon step, the source in force.
    current: Vec<Source>,
    /// The same errors as `paired` (and the planned one's), over the whole run.
    run: [Running; 4],
    /// The direct forecast's errors over every forecast, and the planned band's
    /// hits (as an error of 1 when outside, 0 inside), over the whole run.
    run_all: [Running; 2],
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
            paired: vec![Paired::default(); h],
            current: vec![Source::Direct; h],
            run: std::array::from_fn(|_| Running::new(h)),
            run_all: std::array::from_fn(|_| Running::new(h)),
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
                for (cal, e) in self.errors.iter_mut().zip(errors) {
                    if let Some(e) = e {
                        cal.record(step, e);
                    }
                }
                if let [Some(d), Some(b), Some(c), Some(p)] = errors {
                    if let Some(paired) = self.paired.get_mut(i) {
                        paired.record([d.abs(), b.abs(), c.abs()], self.window);
                    }
                    for (run, e) in self.run.iter_mut().zip([d, b, c, p]) {
                        run.record(step, e);
                    }
                }
                if let Some(d) = errors[DIRECT] {
                    self.run_all[0].record(step, d);
                }
                if let Some((lo, hi)) = issued.planned_band.get(i) {
                    let outside = !(*lo..=*hi).contains(&y);
                    self.run_all[1].record(step, f64::from(u8::from(outside)));
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
        if bottom_up.is_some() {
            for i in 0..h {
                let next = self.switch(i);
                if let Some(c) = self.current.get_mut(i) {
                    *c = next;
                }
            }
        }
        let chosen: Vec<Source> = match bottom_up {
            Some(_) => self.current.clone(),
            None => vec![Source::Direct; h],
        };
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
                // Leaving the direct forecast needs enough errors (see `switch`), so
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
            planned_band: planned.points.iter().map(|p| (p.lower, p.upper)).collect(),
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
        let [all, outside] = &self.run_all;
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
                        mae_direct_all: all.mae(i),
                        scored_all: all.count(i),
                        planned_coverage: outside.mae(i).map(|o| 1.0 - o),
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

    /// The direct forecast's weight in the combination at `step`: inverse squared MAE
    /// over the paired errors (Bates–Granger), equal weights until there are enough.
    fn direct_weight(&self, step: usize) -> f64 {
        let Some(p) = step
            .checked_sub(1)
            .and_then(|i| self.paired.get(i))
            .filter(|p| p.len() >= MIN_ERRORS)
        else {
            return 0.5;
        };
        match (p.mae(DIRECT), p.mae(BOTTOM_UP)) {
            (Some(d), Some(b)) => {
                let (d, b) = (d.max(1e-12).powi(-2), b.max(1e-12).powi(-2));
                d / (d + b)
            }
            _ => 0.5,
        }
    }

    /// The source to plan with at horizon index `i`: the one in force, unless another
    /// has at least `MIN_ERRORS` paired errors and a paired MAE lower by more than
    /// `SWITCH_SE` standard errors of the difference (then the one lower by most).
    fn switch(&self, i: usize) -> Source {
        let current = self.current.get(i).copied().unwrap_or(Source::Direct);
        let Some(p) = self.paired.get(i).filter(|p| p.len() >= MIN_ERRORS) else {
            return current;
        };
        let mut best = (current, 0.0);
        for s in Source::ALL {
            if s == current {
                continue;
            }
            if let Some((gain, se)) = p.gain(current as usize, s as usize) {
                let floor = MIN_GAIN * p.mae(current as usize).unwrap_or(0.0);
                if gain > SWITCH_SE * se && gain > floor && gain > best.1 {
                    best = (s, gain);
                }
            }
        }
        best.0
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
