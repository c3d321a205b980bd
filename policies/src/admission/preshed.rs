//! Pre-shedding: shrink sheddable tiers ahead of a forecast shortfall, release as
//! capacity arrives.
//!
//! All inputs are busy concurrency (Little's law: rate × service time), fleet-wide or
//! per replica as long as all three agree. The level is the fraction of sheddable
//! demand that will not fit:
//!
//! ```text
//! shortfall = max(0, forecast upper bound over the lead time − ready capacity)
//! level     = clamp(shortfall / (forecast × sheddable fraction), 0, 1)
//! ```
//!
//! Replicas requested but not ready are not capacity yet: until they are, the gap is
//! shed ahead of time; as they become ready the shortfall, and with it the level,
//! falls. [`PreShed`] lets the level rise at once but fall at most `release_rate` per
//! second, so freshly ready replicas are not stampeded by all the deferred work.

use super::config::PreShedConfig;
use crate::Micros;
use serde::Serialize;

/// What the level is computed from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PreShedInput {
    /// Highest upper interval bound of forecast demand over [now, now + lead time].
    pub forecast_upper: f64,
    /// Ready replicas × per-replica capacity.
    pub ready_capacity: f64,
    /// Requested-but-not-ready replicas × per-replica capacity.
    pub pending_capacity: f64,
    /// Share of demand in sheddable tiers, in [0, 1] (1 when unknown).
    pub sheddable_fraction: f64,
}

/// The computed level and why.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PreShedLevel {
    /// In [0, 1]: the share of sheddable demand refused as it arrives, least
    /// important tier first (see `Admission::set_preshed`).
    pub level: f64,
    /// Demand the ready capacity cannot carry.
    pub shortfall: f64,
    /// The pending replicas would cover the shortfall: it is transient. False with a
    /// shortfall means scaling has not asked (or cannot ask) for enough.
    pub covered_by_pending: bool,
}

/// The level over time, with a gradual release.
#[derive(Clone, Debug)]
pub struct PreShed {
    cfg: PreShedConfig,
    level: f64,
    last: Option<Micros>,
}

/// The pre-shed level for `input` (pure; no release ramp).
pub fn preshed_level(input: &PreShedInput) -> PreShedLevel {
    let demand = finite_or_zero(input.forecast_upper);
    let ready = finite_or_zero(input.ready_capacity);
    let pending = finite_or_zero(input.pending_capacity);
    let shortfall = (demand - ready).max(0.0);
    if shortfall <= 0.0 {
        return PreShedLevel {
            level: 0.0,
            shortfall: 0.0,
            covered_by_pending: true,
        };
    }
    let sheddable = demand * finite_or_zero(input.sheddable_fraction).clamp(0.0, 1.0);
    // With no sheddable demand the level is moot; 1 says "shed all there is".
    let level = if sheddable > 0.0 {
        (shortfall / sheddable).clamp(0.0, 1.0)
    } else {
        1.0
    };
    PreShedLevel {
        level,
        shortfall,
        covered_by_pending: ready + pending >= demand,
    }
}

fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() {
        x.max(0.0)
    } else {
        0.0
    }
}

// === impl PreShed ===

impl PreShed {
    /// Starts at level 0.
    pub fn new(cfg: PreShedConfig) -> Self {
        Self {
            cfg,
            level: 0.0,
            last: None,
        }
    }

    /// The level to apply now (pass it to `Admission::set_preshed`): the computed one
    /// when it is higher, else the previous one released by at most `release_rate` per
    /// second since the last update. Always 0 when pre-shedding is disabled.
    pub fn update(&mut self, input: &PreShedInput, now: Micros) -> f64 {
        let target = if self.cfg.enabled {
            preshed_level(input).level
        } else {
            0.0
        };
        let elapsed = self
            .last
            .map_or(0.0, |t| now.saturating_sub(t) as f64 / 1e6);
        self.last = Some(now);
        self.level = if target >= self.level {
            target
        } else {
            (self.level - self.cfg.release_rate * elapsed).max(target)
        };
        self.level
    }

    /// The level last returned.
    pub fn level(&self) -> f64 {
        self.level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(forecast: f64, ready: f64, pending: f64, sheddable: f64) -> PreShedInput {
        PreShedInput {
            forecast_upper: forecast,
            ready_capacity: ready,
            pending_capacity: pending,
            sheddable_fraction: sheddable,
        }
    }

    #[test]
    fn level_is_proportional_to_the_shortfall() {
        // 100 busy slots forecast, 80 ready: 20 short. Half the demand is sheddable
        // (50): shed 20/50 = 40 % of it.
        let l = preshed_level(&input(100.0, 80.0, 40.0, 0.5));
        assert_eq!(l.shortfall, 20.0);
        assert!((l.level - 0.4).abs() < 1e-12);
        assert!(l.covered_by_pending, "the 40 pending slots cover the gap");
        // Twice the shortfall, twice the level.
        assert!((preshed_level(&input(100.0, 60.0, 0.0, 0.5)).level - 0.8).abs() < 1e-12);
        // More short than there is sheddable demand: shed all of it, no more.
        let l = preshed_level(&input(100.0, 10.0, 0.0, 0.5));
        assert_eq!(l.level, 1.0);
        assert!(!l.covered_by_pending);
    }

    #[test]
    fn zero_when_capacity_suffices_and_on_nonsense_input() {
        assert_eq!(preshed_level(&input(80.0, 80.0, 0.0, 1.0)).level, 0.0);
        assert_eq!(preshed_level(&input(10.0, 80.0, 0.0, 1.0)).level, 0.0);
        assert_eq!(preshed_level(&input(f64::NAN, 80.0, 0.0, 1.0)).level, 0.0);
        assert_eq!(preshed_level(&input(-5.0, 0.0, 0.0, 1.0)).level, 0.0);
    }

    #[test]
    fn rises_at_once_and_releases_gradually_as_capacity_arrives() {
        let mut p = PreShed::new(PreShedConfig {
            enabled: true,
            release_rate: 0.1,
            min_level: 0.0,
        });
        // A surge is forecast: 50 % shortfall with everything sheddable.
        assert_eq!(p.update(&input(100.0, 50.0, 50.0, 1.0), 0), 0.5);
        // Two seconds later the replicas are ready: the level falls 0.1 per second.
        let l = p.update(&input(100.0, 100.0, 0.0, 1.0), 2_000_000);
        assert!((l - 0.3).abs() < 1e-12, "level {l}");
        let l = p.update(&input(100.0, 100.0, 0.0, 1.0), 10_000_000);
        assert_eq!(l, 0.0);
        // Disabled: always 0.
        let mut off = PreShed::new(PreShedConfig::default());
        assert_eq!(off.update(&input(100.0, 10.0, 0.0, 1.0), 0), 0.0);
    }
}
