//! A bank of exponential-smoothing filters, each updated in O(1) per observation, with
//! per-horizon model choice and a combination of the best members.
//!
//! Refitting a model at every origin (what AutoETS does) costs a numerical optimisation
//! over the whole history; a filter with fixed parameters costs a few flops per step.
//! So the bank runs one filter per point of a small grid of diverse models on every
//! observation, scores every member's h-step forecasts as the actuals arrive
//! (exponentially forgetting old errors), and publishes, per horizon step, the mean of
//! the members with the lowest recent absolute error there. Choosing models by the
//! out-of-sample error at each horizon is the rolling-origin backtest done online; the
//! mean of a few good members is the M4 competition's lesson (combinations beat the
//! best single model).
//!
//! The grid, each member in three spaces (the series itself, its square root and
//! `ln(1 + y)`: demand is a count whose noise and seasonal swing grow with its level,
//! so a multiplicative model often fits better, and the back-transformed forecast of a
//! log model is a median, which is what an absolute error rewards):
//! - simple exponential smoothing over a wide range of smoothing weights (the last
//!   value is weight 1), and a damped trend;
//! - a seasonal profile (daily, weekly) plus a smoothed level of what the profile
//!   does not explain: the STL-style "profile with level correction". Each profile
//!   slot is an exponentially weighted mean of the same slot in past seasons, read as a
//!   moving average over neighbouring slots (fine-grained series have noisy slots);
//! - a direct autoregression per horizon step on the series, and on what each profile
//!   view does not explain (`ar.rs`), in place of the smoothed level.
//!
//! Measured with the peers' harness (`docs/forecasting.md`): the log and square-root
//! members and the absolute profile are what took the NYC taxi ratio from 0.77 to 0.57
//! and the 15-minute ELB ratio from 0.96 to 0.90; the autoregressive members took NYC
//! taxi to 0.50 and Twitter AMZN at 5 minutes from 0.95 to 0.89.

use super::ar::Ar;
use super::model::ModelKind;

/// Tuning of the bank that does not depend on the series (a method, not a fit).
#[derive(Clone, Debug, PartialEq)]
pub struct BankConfig {
    /// Seasonal periods in steps (day, week); a profile is built for each.
    pub periods: Vec<usize>,
    /// Horizon steps scored and forecast.
    pub horizon: usize,
    /// Members averaged per horizon step.
    pub combine: usize,
    /// Error memory in steps: each error's weight decays by 1/e over this many steps.
    pub memory: usize,
    /// The series is never negative: the square-root and log members run too.
    pub non_negative: bool,
}

/// Smoothing weights of the level of the non-seasonal members.
const ALPHAS: [f64; 7] = [0.03, 0.08, 0.15, 0.3, 0.5, 0.8, 1.0];
/// Level weights of the damped-trend members (beta, phi below).
const TREND_ALPHAS: [f64; 2] = [0.1, 0.3];
/// Damped trend: slope smoothing and damping.
const TREND: (f64, f64) = (0.02, 0.9);
/// Smoothing weights of the level correction of the seasonal members.
const SEASONAL_ALPHAS: [f64; 4] = [0.05, 0.2, 0.5, 1.0];
/// Per-season learning rates of the seasonal profiles.
const GAMMAS: [f64; 2] = [0.1, 0.3];
/// Forgetting of the autoregressive members, in error memories
/// (`BankConfig::memory`): a regression needs more rows than a score does.
const AR_MEMORIES: f64 = 4.0;
/// Their ridge prior (towards "the profile alone"), which fades as rows arrive.
const AR_RIDGE: f64 = 1.0;
/// Effective errors a member needs at a horizon before it can be chosen there.
const MIN_WEIGHT: f64 = 20.0;
/// Largest log-space value turned back (e^700 is near f64's limit).
const MAX_LOG: f64 = 700.0;

/// The space a member models the series in.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Transform {
    Raw,
    Sqrt,
    Log,
}

impl Transform {
    fn forward(self, y: f64) -> f64 {
        match self {
            Self::Raw => y,
            Self::Sqrt => y.max(0.0).sqrt(),
            Self::Log => y.max(0.0).ln_1p(),
        }
    }

    fn inverse(self, z: f64) -> f64 {
        match self {
            Self::Raw => z,
            Self::Sqrt => z.max(0.0).powi(2),
            Self::Log => z.min(MAX_LOG).exp_m1(),
        }
    }
}

/// A seasonal profile in one space: for each slot of the period, an exponentially
/// weighted mean of the observations in that slot, read through moving averages over
/// neighbouring slots of a few widths (its views).
#[derive(Clone, Debug)]
struct Profile {
    /// Index into the bank's transforms.
    space: usize,
    period: usize,
    gamma: f64,
    slots: Vec<f64>,
    views: Vec<View>,
    /// Observations seen.
    seen: usize,
}

/// The slots averaged over `2 * smooth + 1` neighbours, kept up to date on each
/// update (O(smooth) per step) so that a read is O(1). Width 0 reads the slots.
#[derive(Clone, Debug)]
struct View {
    smooth: usize,
    smoothed: Vec<f64>,
}

impl Profile {
    fn new(space: usize, period: usize, gamma: f64, widths: &[usize]) -> Self {
        let views = widths
            .iter()
            .map(|w| {
                let smooth = (*w).min(period.saturating_sub(1) / 2);
                View {
                    smooth,
                    smoothed: if smooth == 0 {
                        Vec::new()
                    } else {
                        vec![0.0; period]
                    },
                }
            })
            .collect();
        Self {
            space,
            period,
            gamma,
            slots: vec![0.0; period],
            views,
            seen: 0,
        }
    }

    /// Every slot has been filled at least once.
    fn ready(&self) -> bool {
        self.seen >= self.period
    }

    /// The seasonal value of observation index `t` (0-based) through view `v`.
    fn at(&self, v: usize, t: usize) -> f64 {
        let i = t % self.period.max(1);
        let view = self.views.get(v);
        match view {
            Some(view) if view.smooth > 0 => view.smoothed.get(i),
            _ => self.slots.get(i),
        }
        .copied()
        .unwrap_or(0.0)
    }

    /// Learns observation index `self.seen` (in the profile's space).
    fn update(&mut self, z: f64) {
        let p = self.period.max(1);
        let slot = self.seen % p;
        let first = self.seen < p;
        if let Some(s) = self.slots.get_mut(slot) {
            let old = *s;
            // The first fill of a slot takes the observation as it is.
            *s = if first {
                z
            } else {
                old + self.gamma * (z - old)
            };
            let change = *s - old;
            for view in self.views.iter_mut().filter(|v| v.smooth > 0) {
                let w = view.smooth;
                let delta = change / (2 * w + 1) as f64;
                for d in 0..=2 * w {
                    if let Some(v) = view.smoothed.get_mut((slot + p + d - w) % p) {
                        *v += delta;
                    }
                }
            }
        }
        self.seen += 1;
        if slot + 1 == p {
            self.resync();
        }
    }

    /// Recomputes the smoothed slots from scratch once per period (a sliding sum,
    /// O(period)), so that rounding in the incremental updates never accumulates.
    fn resync(&mut self) {
        let p = self.period.max(1);
        for view in self.views.iter_mut().filter(|v| v.smooth > 0) {
            let w = view.smooth;
            let n = (2 * w + 1) as f64;
            let slot = |i: usize| self.slots.get(i % p).copied().unwrap_or(0.0);
            let mut sum: f64 = (0..=2 * w).map(|d| slot(p + d - w)).sum();
            for (i, v) in view.smoothed.iter_mut().enumerate() {
                *v = sum / n;
                sum += slot(i + p + w + 1) - slot(i + p - w);
            }
        }
    }
}

/// One member: an ETS(A,Ad,N) filter in error-correction form, in one space, on the
/// series minus a seasonal profile (or on the series itself).
#[derive(Clone, Debug)]
struct Member {
    /// Index into the bank's transforms.
    space: usize,
    transform: Transform,
    alpha: f64,
    trend: Option<(f64, f64)>,
    /// (profile, view) of the seasonal part.
    profile: Option<(usize, usize)>,
    level: f64,
    slope: f64,
    started: bool,
    /// An autoregression in place of the level (boxed: few members have one).
    ar: Option<Box<Ar>>,
    /// Last `horizon` origins' forecasts (ring by origin index), for scoring.
    issued: Vec<f64>,
    /// Per horizon step: decayed sum of absolute errors and of weights.
    abs_err: Vec<f64>,
    weight: Vec<f64>,
    /// Forecasts from the latest origin, steps 1..=horizon (NaN until started).
    current: Vec<f64>,
}

impl Member {
    fn new(
        (space, transform): (usize, Transform),
        alpha: f64,
        trend: Option<(f64, f64)>,
        profile: Option<(usize, usize)>,
        h: usize,
    ) -> Self {
        Self {
            space,
            transform,
            alpha,
            trend,
            profile,
            level: 0.0,
            slope: 0.0,
            started: false,
            ar: None,
            issued: vec![f64::NAN; h * h],
            abs_err: vec![0.0; h],
            weight: vec![0.0; h],
            current: vec![f64::NAN; h],
        }
    }

    fn kind(&self) -> ModelKind {
        match self.profile {
            _ if self.ar.is_some() => ModelKind::Ets,
            Some(_) => ModelKind::SeasonalEts,
            None if self.alpha >= 1.0
                && self.trend.is_none()
                && self.transform == Transform::Raw =>
            {
                ModelKind::LastValue
            }
            None => ModelKind::Ets,
        }
    }

    fn score(&self, step: usize) -> Option<f64> {
        let (e, w) = (*self.abs_err.get(step - 1)?, *self.weight.get(step - 1)?);
        (w >= MIN_WEIGHT).then(|| e / w)
    }
}

/// The bank of members and the profiles they share.
#[derive(Clone, Debug)]
pub struct Bank {
    config: BankConfig,
    transforms: Vec<Transform>,
    profiles: Vec<Profile>,
    members: Vec<Member>,
    /// Observations seen.
    seen: usize,
    decay: f64,
}

impl Bank {
    pub fn new(config: BankConfig) -> Self {
        let h = config.horizon.max(1);
        let transforms = if config.non_negative {
            vec![Transform::Raw, Transform::Sqrt, Transform::Log]
        } else {
            vec![Transform::Raw]
        };
        let mut profiles = Vec::new();
        for space in 0..transforms.len() {
            for &period in config.periods.iter().filter(|p| **p >= 2) {
                // Read over none, ~1/96 and ~1/32 of the period each side: at 5-minute
                // steps 15 and 45 minutes of a day.
                let mut widths = vec![0, period / 96, period / 32];
                widths.dedup();
                for &gamma in &GAMMAS {
                    profiles.push(Profile::new(space, period, gamma, &widths));
                }
            }
        }
        let mut members = Vec::new();
        for (space, &transform) in transforms.iter().enumerate() {
            for &alpha in &ALPHAS {
                members.push(Member::new((space, transform), alpha, None, None, h));
            }
            for &alpha in &TREND_ALPHAS {
                members.push(Member::new((space, transform), alpha, Some(TREND), None, h));
            }
        }
        for (i, p) in profiles.iter().enumerate() {
            let transform = transforms.get(p.space).copied().unwrap_or(Transform::Raw);
            for v in 0..p.views.len() {
                for &alpha in &SEASONAL_ALPHAS {
                    let space = (p.space, transform);
                    members.push(Member::new(space, alpha, None, Some((i, v)), h));
                }
            }
        }
        // One autoregression per space on the series itself and one per profile view
        // on what the profile does not explain, forgetting over ~4 error memories.
        let lambda = 1.0 - 1.0 / (AR_MEMORIES * config.memory.max(1) as f64);
        let ar = |m: Member| Member {
            ar: Some(Box::new(Ar::new(h, lambda, AR_RIDGE))),
            ..m
        };
        for (space, &transform) in transforms.iter().enumerate() {
            members.push(ar(Member::new((space, transform), 1.0, None, None, h)));
        }
        for (i, p) in profiles.iter().enumerate() {
            let transform = transforms.get(p.space).copied().unwrap_or(Transform::Raw);
            for v in 0..p.views.len() {
                let space = (p.space, transform);
                members.push(ar(Member::new(space, 1.0, None, Some((i, v)), h)));
            }
        }
        let decay = (-1.0 / config.memory.max(1) as f64).exp();
        Self {
            config,
            transforms,
            profiles,
            members,
            seen: 0,
            decay,
        }
    }

    pub fn horizon(&self) -> usize {
        self.config.horizon.max(1)
    }

    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Adds observation index `self.seen` (finite): scores the forecasts that
    /// predicted it, updates every member and profile, and forecasts from it.
    pub fn observe(&mut self, y: f64) {
        let t = self.seen;
        let h = self.horizon();
        let decay = self.decay;
        // No allocation per step: at most three spaces, and profile reads are O(1).
        let mut z = [y; 3];
        for (slot, tr) in z.iter_mut().zip(&self.transforms) {
            *slot = tr.forward(y);
        }
        let profiles = &self.profiles;
        for m in &mut self.members {
            score_member(m, t, h, y, decay);
            let season = match m.profile {
                Some((i, v)) => match profiles.get(i).filter(|p| p.ready()) {
                    Some(p) => p.at(v, t),
                    None => continue,
                },
                None => 0.0,
            };
            let zm = z.get(m.space).copied().unwrap_or(y);
            update_member(m, zm - season);
        }
        for p in &mut self.profiles {
            p.update(z.get(p.space).copied().unwrap_or(y));
        }
        let profiles = &self.profiles;
        for m in &mut self.members {
            let season = m.profile.and_then(|(i, v)| profiles.get(i).map(|p| (p, v)));
            forecast_member(m, season, t, h);
        }
        self.seen += 1;
    }

    /// The combined forecast for steps 1..=horizon after the latest observation, and
    /// the kind of the best member at the last step; None before any observation.
    pub fn forecast(&self) -> Option<(Vec<f64>, ModelKind)> {
        if self.seen == 0 {
            return None;
        }
        let h = self.horizon();
        let mut kind = ModelKind::LastValue;
        let mut points = Vec::with_capacity(h);
        let k = self.config.combine.max(1);
        for step in 1..=h {
            let mut ranked: Vec<(f64, &Member)> = self
                .members
                .iter()
                .filter(|m| m.current.get(step - 1).is_some_and(|p| p.is_finite()))
                .filter_map(|m| Some((m.score(step)?, m)))
                .collect();
            // The k best by selection (O(members)), not a sort per step.
            if ranked.len() > k {
                ranked.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
            }
            let point = if ranked.is_empty() {
                // Before errors accumulate: the last value (the alpha = 1 member).
                kind = ModelKind::LastValue;
                self.members
                    .iter()
                    .find(|m| m.kind() == ModelKind::LastValue)
                    .and_then(|m| m.current.get(step - 1).copied())
                    .unwrap_or(f64::NAN)
            } else {
                ranked.truncate(k);
                let top = &ranked;
                if let Some((_, m)) = top.iter().min_by(|a, b| a.0.total_cmp(&b.0)) {
                    kind = m.kind();
                }
                top.iter()
                    .filter_map(|(_, m)| m.current.get(step - 1))
                    .sum::<f64>()
                    / top.len() as f64
            };
            points.push(point);
        }
        points
            .iter()
            .all(|p| p.is_finite())
            .then_some((points, kind))
    }
}

fn score_member(m: &mut Member, t: usize, h: usize, y: f64, decay: f64) {
    for step in 1..=h {
        let Some(origin) = t.checked_sub(step) else {
            break;
        };
        let p = m.issued.get((origin % h) * h + step - 1).copied();
        if let (Some(p), Some(e), Some(w)) = (
            p.filter(|p| p.is_finite()),
            m.abs_err.get_mut(step - 1),
            m.weight.get_mut(step - 1),
        ) {
            let abs = (y - p).abs();
            *e = *e * decay + abs;
            *w = *w * decay + 1.0;
        }
    }
}

fn update_member(m: &mut Member, x: f64) {
    if let Some(ar) = m.ar.as_mut() {
        ar.push(x);
        m.started = true;
        return;
    }
    if !m.started {
        m.level = x;
        m.slope = 0.0;
        m.started = true;
        return;
    }
    let (beta, phi) = m.trend.unwrap_or((0.0, 0.0));
    let pred = m.level + phi * m.slope;
    let e = x - pred;
    m.level = pred + m.alpha * e;
    m.slope = phi * m.slope + beta * e;
}

fn forecast_member(m: &mut Member, season: Option<(&Profile, usize)>, t: usize, h: usize) {
    let base = (t % h) * h;
    let (_, phi) = m.trend.unwrap_or((0.0, 0.0));
    let mut damp = 0.0;
    let mut pow = 1.0;
    for step in 1..=h {
        pow *= phi;
        damp += pow;
        let s = match season {
            Some((p, v)) if p.ready() => p.at(v, t + step),
            Some(_) => f64::NAN,
            None => 0.0,
        };
        let v = if let Some(ar) = &m.ar {
            ar.predict(step)
                .map_or(f64::NAN, |d| m.transform.inverse(d + s))
        } else if m.started {
            m.transform.inverse(m.level + damp * m.slope + s)
        } else {
            f64::NAN
        };
        if let Some(slot) = m.current.get_mut(step - 1) {
            *slot = v;
        }
        if let Some(slot) = m.issued.get_mut(base + step - 1) {
            *slot = v;
        }
    }
}

/// Error memory for a series with these seasonal periods: the first period (a day),
/// at least 288 steps, so a member's rank reflects the recent daily regime and one
/// burst of a few steps does not re-rank the bank; at most 2 880 steps.
pub fn memory_steps(periods: &[usize]) -> usize {
    periods.first().copied().unwrap_or(288).clamp(288, 2880)
}

#[cfg(test)]
impl Bank {
    /// The forecast of the member in this space with these parameters (no trend when
    /// `trend` is false; the bank's one damped trend otherwise; `profile` = (index
    /// among the profiles of that space, view)).
    pub(crate) fn member_forecast(
        &self,
        transform: Transform,
        alpha: f64,
        trend: bool,
        profile: Option<(usize, usize)>,
    ) -> Option<Vec<f64>> {
        let per_space = (self.profiles.len() / self.transforms.len().max(1)).max(1);
        self.members
            .iter()
            .find(|m| {
                m.transform == transform
                    && m.alpha == alpha
                    && m.trend.is_some() == trend
                    && m.profile.map(|(i, v)| (i % per_space, v)) == profile
            })
            .map(|m| m.current.clone())
    }

    /// (score, point) of every ranked member at `step`.
    pub(crate) fn ranked(&self, step: usize) -> Vec<(f64, f64)> {
        self.members
            .iter()
            .filter_map(|m| Some((m.score(step)?, *m.current.get(step - 1)?)))
            .filter(|(_, p)| p.is_finite())
            .collect()
    }

    /// Alpha and score of the best smoothing member at `step`.
    pub(crate) fn best(&self, step: usize) -> Option<(f64, f64)> {
        self.members
            .iter()
            .filter(|m| m.ar.is_none())
            .filter_map(|m| Some((m.alpha, m.score(step)?)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }
}

#[cfg(test)]
mod profile_tests {
    use super::Profile;

    #[test]
    fn a_smoothed_view_kept_incrementally_equals_the_moving_average_of_the_slots() {
        // Irregular inputs so that every update changes a slot; checked at every step,
        // mid-period (incremental) and just after a wrap (resynced).
        let period = 20;
        let mut p = Profile::new(0, period, 0.3, &[0, 2, 9, 50]);
        let mut state: u64 = 99;
        for step in 0..200 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            p.update((state % 1000) as f64 / 7.0);
            if !p.ready() {
                continue;
            }
            for (v, w) in [(0, 0usize), (1, 2), (2, 9), (3, 9)] {
                for t in 0..period {
                    let want = (0..=2 * w)
                        .map(|d| p.slots[(t + period + d - w) % period])
                        .sum::<f64>()
                        / (2 * w + 1) as f64;
                    let got = p.at(v, t);
                    assert!(
                        (got - want).abs() < 1e-9 * want.abs().max(1.0),
                        "step {step} view {v} slot {t}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
