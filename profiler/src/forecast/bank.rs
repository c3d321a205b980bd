//! A bank of exponential-smoothing filters, each updated in O(1) per observation, with
//! per-horizon model choice and a combination of the best members.
//!
//! Refitting a model at every origin (what AutoETS does) costs a numerical optimisation
//! over the whole history; a filter with fixed parameters costs a few flops per step.
//! So the bank runs one filter per point of a small parameter grid (level smoothing,
//! damped trend, a seasonal profile or none, a robust update or not) on every
//! observation, scores every member's h-step forecasts as the actuals arrive
//! (exponentially forgetting old errors), and publishes, per horizon step, the mean of
//! the members with the lowest recent absolute error there. Choosing parameters by the
//! out-of-sample error at each horizon is the rolling-origin backtest done online; the
//! mean of a few good members is the M4 competition's lesson (combinations beat the
//! best single model).

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
}

/// Smoothing weights of the level in the grid.
const ALPHAS: [f64; 8] = [0.03, 0.08, 0.15, 0.25, 0.4, 0.6, 0.8, 1.0];
/// Damped trend (beta, phi) pairs in the grid; `None` = no trend.
const TRENDS: [Option<(f64, f64)>; 2] = [None, Some((0.02, 0.9))];
/// Per-season learning rates of the seasonal profiles.
const GAMMAS: [f64; 3] = [0.05, 0.15, 0.3];
/// Huber clip of the robust update, in units of the mean absolute one-step error.
const ROBUST_CLIP: f64 = 2.0;
/// Rate of the mean absolute one-step error used by the robust update.
const SCALE_RATE: f64 = 0.02;
/// Effective errors a member needs at a horizon before it can be chosen there.
const MIN_WEIGHT: f64 = 20.0;

/// A seasonal profile: for each slot of the period, an exponentially weighted mean of
/// the observation's deviation from the mean of the trailing period.
#[derive(Clone, Debug)]
struct Profile {
    period: usize,
    gamma: f64,
    /// Half-width in slots of the moving average applied when reading the profile
    /// (fine-grained series have noisy slots; neighbours share the signal).
    smooth: usize,
    slots: Vec<f64>,
    recent: std::collections::VecDeque<f64>,
    sum: f64,
    /// Observations seen.
    seen: usize,
}

impl Profile {
    fn new(period: usize, gamma: f64, smooth: usize) -> Self {
        Self {
            period,
            gamma,
            smooth,
            slots: vec![0.0; period],
            recent: std::collections::VecDeque::with_capacity(period + 1),
            sum: 0.0,
            seen: 0,
        }
    }

    /// Every slot has been filled at least once.
    fn ready(&self) -> bool {
        self.seen + 1 >= 2 * self.period
    }

    /// The seasonal value of observation index `t` (0-based).
    fn at(&self, t: usize) -> f64 {
        let p = self.period as isize;
        let w = self.smooth as isize;
        let sum: f64 = (-w..=w)
            .filter_map(|d| self.slots.get((t as isize + d).rem_euclid(p) as usize))
            .sum();
        sum / (2 * w + 1) as f64
    }

    /// Learns observation index `self.seen`.
    fn update(&mut self, y: f64) {
        let t = self.seen;
        self.recent.push_back(y);
        self.sum += y;
        if self.recent.len() > self.period {
            self.sum -= self.recent.pop_front().unwrap_or(0.0);
        }
        if self.recent.len() == self.period {
            let dev = y - self.sum / self.period as f64;
            if let Some(s) = self.slots.get_mut(t % self.period) {
                // The first fill of a slot takes the deviation as it is.
                *s = if t < 2 * self.period - 1 {
                    dev
                } else {
                    *s + self.gamma * (dev - *s)
                };
            }
        }
        self.seen += 1;
    }
}

/// One member: an ETS(A,Ad,N) filter in error-correction form on the series minus a
/// seasonal profile (or on the series itself).
#[derive(Clone, Debug)]
struct Member {
    alpha: f64,
    trend: Option<(f64, f64)>,
    profile: Option<usize>,
    robust: bool,
    level: f64,
    slope: f64,
    scale: f64,
    started: bool,
    /// Last `horizon` origins' forecasts (ring by origin index), for scoring.
    issued: Vec<f64>,
    /// Per horizon step: decayed sum of absolute errors and of weights.
    abs_err: Vec<f64>,
    weight: Vec<f64>,
    /// Forecasts from the latest origin, steps 1..=horizon (NaN until started).
    current: Vec<f64>,
}

impl Member {
    fn kind(&self) -> ModelKind {
        match self.profile {
            Some(_) => ModelKind::SeasonalEts,
            None if self.alpha >= 1.0 && self.trend.is_none() && !self.robust => {
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
    profiles: Vec<Profile>,
    members: Vec<Member>,
    /// Observations seen.
    seen: usize,
    decay: f64,
}

impl Bank {
    pub fn new(config: BankConfig) -> Self {
        let h = config.horizon.max(1);
        let mut profiles = Vec::new();
        for &period in config.periods.iter().filter(|p| **p >= 2) {
            // Read a profile over ~1/48 of its period each side: 15 minutes of a day at
            // 5-minute steps, none at 30-minute steps.
            for smooth in [period / 96, period / 32] {
                for &gamma in &GAMMAS {
                    profiles.push(Profile::new(period, gamma, smooth));
                }
            }
        }
        let mut members = Vec::new();
        let profile_choices: Vec<Option<usize>> = std::iter::once(None)
            .chain((0..profiles.len()).map(Some))
            .collect();
        for profile in profile_choices {
            for &alpha in &ALPHAS {
                for trend in TRENDS {
                    for robust in [false, true] {
                        members.push(Member {
                            alpha,
                            trend,
                            profile,
                            robust,
                            level: 0.0,
                            slope: 0.0,
                            scale: 0.0,
                            started: false,
                            issued: vec![f64::NAN; h * h],
                            abs_err: vec![0.0; h],
                            weight: vec![0.0; h],
                            current: vec![f64::NAN; h],
                        });
                    }
                }
            }
        }
        let decay = (-1.0 / config.memory.max(1) as f64).exp();
        Self {
            config,
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
        // Each profile is read once per step, not once per member.
        let now: Vec<Option<f64>> = self
            .profiles
            .iter()
            .map(|p| p.ready().then(|| p.at(t)))
            .collect();
        for m in &mut self.members {
            score_member(m, t, h, y, decay);
            let season = match m.profile {
                Some(i) => match now.get(i).copied().flatten() {
                    Some(s) => s,
                    None => continue,
                },
                None => 0.0,
            };
            update_member(m, y - season);
        }
        for p in &mut self.profiles {
            p.update(y);
        }
        let ahead: Vec<Vec<f64>> = self
            .profiles
            .iter()
            .map(|p| {
                (1..=h)
                    .map(|s| if p.ready() { p.at(t + s) } else { f64::NAN })
                    .collect()
            })
            .collect();
        for m in &mut self.members {
            let season = m.profile.and_then(|i| ahead.get(i));
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
    if !m.started {
        m.level = x;
        m.slope = 0.0;
        m.started = true;
        return;
    }
    let (beta, phi) = m.trend.unwrap_or((0.0, 0.0));
    let pred = m.level + phi * m.slope;
    let e = x - pred;
    let e = if m.robust && m.scale > 0.0 {
        let c = ROBUST_CLIP * m.scale;
        e.clamp(-c, c)
    } else {
        e
    };
    let bound = if m.scale > 0.0 {
        4.0 * m.scale
    } else {
        e.abs()
    };
    m.scale += SCALE_RATE * (e.abs().min(bound) - m.scale);
    m.level = pred + m.alpha * e;
    m.slope = phi * m.slope + beta * e;
}

fn forecast_member(m: &mut Member, season: Option<&Vec<f64>>, t: usize, h: usize) {
    let base = (t % h) * h;
    let (_, phi) = m.trend.unwrap_or((0.0, 0.0));
    let mut damp = 0.0;
    let mut pow = 1.0;
    for step in 1..=h {
        pow *= phi;
        damp += pow;
        let s = match season {
            Some(v) => v.get(step - 1).copied().unwrap_or(f64::NAN),
            None => 0.0,
        };
        let v = if m.started {
            m.level + damp * m.slope + s
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
    /// The forecast of the member with these parameters (no trend when `trend` is
    /// false; the bank's one damped trend otherwise).
    pub(crate) fn member_forecast(
        &self,
        alpha: f64,
        trend: bool,
        robust: bool,
        profile: Option<usize>,
    ) -> Option<Vec<f64>> {
        self.members
            .iter()
            .find(|m| {
                m.alpha == alpha
                    && m.trend.is_some() == trend
                    && m.robust == robust
                    && m.profile == profile
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

    /// Alpha and score of the best member at `step`.
    pub(crate) fn best(&self, step: usize) -> Option<(f64, f64)> {
        self.members
            .iter()
            .filter_map(|m| Some((m.alpha, m.score(step)?)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }
}
