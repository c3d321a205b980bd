//! The predictive scaling decision: how many replicas the forecast says the service
//! will need by the time a new replica could be ready.
//!
//! With a calibrated forecast, the predictive rule plans a quantile of demand over
//! [now, now + lead time] at full capacity: the quantile q = c / (1 + c) for a
//! `shortfall_cost` c (a newsvendor rule: one replica-second short of demand costs c
//! idle replica-seconds), so the forecast's own uncertainty is the headroom and the
//! reactive rule's `target_utilization` is not stacked on top of it. Current demand
//! at full capacity stays a floor (the larger of the two counts, never their sum),
//! and a forecast step that current demand is already measured inside is left to it
//! ([`LeadForecast::over_steps`]): its band was forecast before the step began. With
//! a calibrated forecast every scale-down waits only `forecast_stabilization`, since
//! the forecast already says what is needed before a removed replica could be back.
//!
//! Before the forecast is calibrated its band is a wide fallback: the predictive rule
//! then asks for at most `uncalibrated_margin` above the reactive rule, never the
//! band's upper bound. Without any forecast only the reactive rule counts. Results
//! are clamped to [min, max], scale-ups limited per sync.

use crate::quantile::normal_quantile;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::ops::Range;
use std::time::Duration;

pub type Millis = u64;

/// The `policies.scaling` config section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScalingConfig {
    /// Busy concurrency one replica sustains at 100 % (its worker slots, say).
    pub capacity_per_replica: f64,
    /// Share of capacity to plan for, leaving headroom for noise.
    pub target_utilization: f64,
    /// Time from asking for a replica to it serving traffic.
    #[serde(with = "humantime_serde")]
    pub startup_time: Duration,
    /// Plan with the start-up time a signal learned from readiness
    /// (`signals.kubernetes`) instead of `startup_time`, once one is learned, up to
    /// `max_startup_time`.
    pub learn_startup_time: bool,
    /// The longest start-up time planned for: the forecast's horizon covers it.
    /// Absent: twice `startup_time`.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_startup_time: Option<Duration>,
    /// How often a decision is made (and a signal sent).
    #[serde(with = "humantime_serde")]
    pub sync_period: Duration,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Most replicas added in one sync (0: no limit).
    pub max_scale_up_step: u32,
    /// A scale-down waits until every recommendation in this window allows it.
    #[serde(with = "humantime_serde")]
    pub scale_down_stabilization: Duration,
    /// The cost of one replica-second short of demand, in idle replica-seconds: the
    /// predictive rule plans the demand quantile c / (1 + c) (19: the 95th percentile).
    pub shortfall_cost: f64,
    /// Before the forecast is calibrated, the most the predictive rule may ask for
    /// above the reactive rule, as a fraction of it (at least one replica).
    pub uncalibrated_margin: f64,
    /// How long a scale-down waits while a calibrated forecast is in force (the
    /// forecast already covers the lead time ahead; this only damps a single low
    /// reading); at most `scale_down_stabilization`.
    #[serde(with = "humantime_serde")]
    pub forecast_stabilization: Duration,
    /// CPU cores the app container requests: with `resources:`, forecast CPU also
    /// sets a replica count (the CPU rule). Absent: no CPU rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_per_replica: Option<f64>,
    /// Memory bytes the app container requests (the memory rule). Absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_per_replica: Option<f64>,
}

/// Forecast resource needs over the lead window (upper bounds), from the per-signature
/// cost model; each one absent without a `resources:` source or a forecast.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct ResourceNeed {
    pub cpu_cores: Option<f64>,
    pub memory_bytes: Option<f64>,
    /// The part of `cpu_cores` from tiers that are never shed (`sheddable: false`);
    /// None without tier admission. The resize bridge covers it first.
    pub protected_cpu_cores: Option<f64>,
}

// === impl ResourceNeed ===

impl ResourceNeed {
    /// The need with its non-sheddable CPU set from the share of demand in sheddable
    /// tiers (the tier admission's own estimate, `Admission::sheddable_fraction`);
    /// None: no tier admission, nothing is known to be protected.
    ///
    /// The share is of busy time (arrivals × mean service time per tier), used as the
    /// share of CPU: the cost model knows CPU per signature, not per tier, and a
    /// tier's CPU follows its busy time as far as its requests do similar work.
    pub fn with_sheddable_share(self, sheddable_fraction: Option<f64>) -> Self {
        let protected = sheddable_fraction
            .filter(|f| f.is_finite())
            .zip(self.cpu_cores)
            .map(|(f, cpu)| cpu * (1.0 - f.clamp(0.0, 1.0)));
        Self {
            protected_cpu_cores: protected,
            ..self
        }
    }
}

/// What the decision is based on; all demand in busy concurrency (Little's law).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct ScaleInput {
    pub now: Millis,
    /// Replicas the platform has now (requested, ready or not).
    pub current_replicas: u32,
    /// Demand measured over the last interval.
    pub current_demand: f64,
    /// Forecast demand over [now, now + lead time] (see [`LeadForecast::over_steps`]);
    /// None without a forecast (then only current demand counts).
    pub forecast: Option<LeadForecast>,
}

/// The forecast over the lead window, as the predictive rule needs it.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct LeadForecast {
    /// Highest point forecast over the window (the median).
    pub point: f64,
    /// Highest upper interval bound over the window.
    pub upper: f64,
    /// The interval's central coverage (0.9: the upper bound is the 95th percentile).
    pub level: f64,
    /// Whether the interval comes from the forecaster's own past errors.
    pub calibrated: bool,
}

/// One forecast step of the lead window, as [`LeadForecast::over_steps`] reads it.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct StepBand {
    /// The step's span, [start, end).
    pub start: Millis,
    pub end: Millis,
    /// Its median and upper interval bound.
    pub point: f64,
    pub upper: f64,
}

impl LeadForecast {
    /// The forecast over the lead window from its steps (the caller picks the steps
    /// that overlap [now, now + lead]): the highest median and upper bound, except for
    /// a step that current demand is measured inside (every arrival the reading
    /// averages, `measured`, falls in the step). That step's band was forecast before
    /// it began; the rest of the step is planned from the measurement (the rule's
    /// floor), so its band no longer holds capacity the measurement shows is idle. A
    /// reading that also averages time outside the step (a coarser one) does not
    /// measure it, and the band stays. With only the measured step in the window the
    /// forecast adds nothing to the floor (point and upper 0). None without steps.
    pub fn over_steps(
        steps: impl IntoIterator<Item = StepBand>,
        measured: Range<Millis>,
        level: f64,
        calibrated: bool,
    ) -> Option<Self> {
        let mut any = false;
        let (mut point, mut upper) = (0.0_f64, 0.0_f64);
        for s in steps {
            any = true;
            if s.start <= measured.start && measured.end <= s.end && !measured.is_empty() {
                continue;
            }
            point = point.max(s.point);
            upper = upper.max(s.upper);
        }
        any.then_some(Self {
            point,
            upper,
            level,
            calibrated,
        })
    }
}

/// Which rule set the predictive number (a fixed set: usable as a metric label).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Planning {
    /// A calibrated forecast: its `shortfall_cost` quantile at full capacity.
    Quantile,
    /// The forecast is not calibrated yet: at most `uncalibrated_margin` above the
    /// reactive rule.
    Uncalibrated,
    /// No forecast: current demand only.
    Reactive,
}

/// Why the number is what it is (a fixed set: usable as a metric label).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleReason {
    /// The forecast asks for more than current demand.
    Forecast,
    /// Current demand asks for at least as much as the forecast.
    CurrentDemand,
    /// A lower number was held back by the stabilisation window.
    Stabilizing,
    /// The scale-up step limit applied.
    StepLimited,
    AtMinimum,
    AtMaximum,
    /// Forecast CPU against `cpu_per_replica` asks for the most.
    Cpu,
    /// Forecast memory against `memory_per_replica` asks for the most.
    Memory,
}

#[derive(Copy, Clone, Debug, PartialEq, Serialize)]
pub struct ScaleDecision {
    pub desired: u32,
    /// What the forecast alone asks for, and what current demand alone asks for.
    pub predictive: u32,
    pub reactive: u32,
    pub reason: ScaleReason,
    /// How the predictive number was planned, and the demand quantile planned for.
    pub planning: Planning,
    pub quantile: f64,
    /// Lead time the forecast must cover: start-up time plus one sync period.
    pub lead_time_seconds: f64,
    /// Whether that start-up time is the learned one (else `startup_time`).
    pub learned_startup: bool,
}

/// Decisions over time (keeps the stabilisation window's recommendations).
pub struct Scaler {
    cfg: ScalingConfig,
    recommendations: VecDeque<(Millis, u32)>,
    /// The learned start-up time in use, if any (see [`Scaler::learned_startup`]).
    learned: Option<Duration>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("policies.scaling.{field}: {reason}")]
pub struct ScalingConfigError {
    pub field: &'static str,
    pub reason: String,
}

// === impl ScalingConfig ===

impl Default for ScalingConfig {
    fn default() -> Self {
        Self {
            capacity_per_replica: 10.0,
            target_utilization: 0.7,
            startup_time: Duration::from_secs(120),
            learn_startup_time: true,
            max_startup_time: None,
            sync_period: Duration::from_secs(15),
            min_replicas: 1,
            max_replicas: 100,
            max_scale_up_step: 0,
            scale_down_stabilization: Duration::from_secs(300),
            shortfall_cost: 19.0,
            uncalibrated_margin: 0.25,
            forecast_stabilization: Duration::from_secs(15),
            cpu_per_replica: None,
            memory_per_replica: None,
        }
    }
}

impl ScalingConfig {
    pub fn validate(&self) -> Result<(), ScalingConfigError> {
        let err = |field, reason: &str| {
            Err(ScalingConfigError {
                field,
                reason: reason.into(),
            })
        };
        if !(self.capacity_per_replica.is_finite() && self.capacity_per_replica > 0.0) {
            return err("capacity_per_replica", "must be a positive number");
        }
        if !(self.target_utilization > 0.0 && self.target_utilization <= 1.0) {
            return err("target_utilization", "must be in (0, 1]");
        }
        if !(self.shortfall_cost.is_finite() && (0.1..=10_000.0).contains(&self.shortfall_cost)) {
            return err("shortfall_cost", "must be in [0.1, 10000]");
        }
        if !(self.uncalibrated_margin.is_finite()
            && (0.0..=10.0).contains(&self.uncalibrated_margin))
        {
            return err("uncalibrated_margin", "must be in [0, 10]");
        }
        if self.min_replicas < 1 || self.min_replicas > self.max_replicas {
            return err("min_replicas", "need 1 <= min_replicas <= max_replicas");
        }
        if self.sync_period < Duration::from_secs(1)
            || self.startup_time > Duration::from_secs(3600)
        {
            return err("sync_period", "sync_period >= 1s and startup_time <= 1h");
        }
        for (field, v) in [
            ("cpu_per_replica", self.cpu_per_replica),
            ("memory_per_replica", self.memory_per_replica),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                return err(field, "must be a positive number");
            }
        }
        if self
            .max_startup_time
            .is_some_and(|m| m < self.startup_time || m > Duration::from_secs(3600))
        {
            return err(
                "max_startup_time",
                "need startup_time <= max_startup_time <= 1h",
            );
        }
        Ok(())
    }

    /// How far ahead the forecast must look with the configured start-up time.
    pub fn lead_time(&self) -> Duration {
        self.startup_time + self.sync_period
    }

    /// The longest start-up time planned for (`max_startup_time`, or twice
    /// `startup_time`); `startup_time` when learning is off.
    pub fn max_startup(&self) -> Duration {
        if !self.learn_startup_time {
            return self.startup_time;
        }
        self.max_startup_time
            .unwrap_or(self.startup_time * 2)
            .max(self.startup_time)
    }

    /// How far ahead the forecast must reach: the longest lead time planned for.
    pub fn horizon(&self) -> Duration {
        self.max_startup() + self.sync_period
    }

    /// Replicas the CPU and memory rules ask for: the forecast need over what one
    /// replica's container requests, at the target utilisation. None for a rule
    /// without its request configured or without a forecast need.
    pub fn replicas_for_resources(&self, need: ResourceNeed) -> (Option<u32>, Option<u32>) {
        let rule = |need: Option<f64>, per: Option<f64>| {
            let (need, per) = (need?, per?);
            let n = (need.max(0.0) / (per * self.target_utilization)).ceil();
            Some(n.min(f64::from(u32::MAX)) as u32)
        };
        (
            rule(need.cpu_cores, self.cpu_per_replica),
            rule(need.memory_bytes, self.memory_per_replica),
        )
    }

    /// Replicas needed for `demand` at the target utilisation.
    pub fn replicas_for(&self, demand: f64) -> u32 {
        self.replicas_at(demand, self.target_utilization)
    }

    /// Replicas needed for `demand` with each replica at `utilization`.
    pub fn replicas_at(&self, demand: f64, utilization: f64) -> u32 {
        let per = self.capacity_per_replica * utilization;
        // NaN demand counts as none (max() drops it); an infinite one saturates.
        let n = (demand.max(0.0) / per).ceil();
        n.min(f64::from(u32::MAX)) as u32
    }

    /// The demand quantile the predictive rule plans for: c / (1 + c).
    pub fn quantile(&self) -> f64 {
        self.shortfall_cost / (1.0 + self.shortfall_cost)
    }
}

// === impl Scaler ===

impl Scaler {
    pub fn new(cfg: ScalingConfig) -> Self {
        Self {
            cfg,
            recommendations: VecDeque::new(),
            learned: None,
        }
    }

    pub fn config(&self) -> &ScalingConfig {
        &self.cfg
    }

    /// Sets the start-up time learned from readiness (`None`: none yet). With
    /// `learn_startup_time` it replaces `startup_time`, capped at `max_startup_time`:
    /// replicas that take longer than configured are asked for earlier, and ones that
    /// start faster are not asked for before they are needed.
    pub fn learned_startup(&mut self, learned: Option<Duration>) {
        self.learned = learned.filter(|_| self.cfg.learn_startup_time);
    }

    /// The lead time in force: the start-up time (learned, else configured) plus one
    /// sync period.
    pub fn lead_time(&self) -> Duration {
        let startup = self
            .learned
            .map_or(self.cfg.startup_time, |l| l.min(self.cfg.max_startup()));
        startup + self.cfg.sync_period
    }

    pub fn decide(&mut self, input: ScaleInput) -> ScaleDecision {
        self.decide_with(input, ResourceNeed::default())
    }

    /// Like [`Scaler::decide`], with the CPU and memory rules: desired replicas are
    /// the most any rule asks for, and the reason names the binding one.
    pub fn decide_with(&mut self, input: ScaleInput, need: ResourceNeed) -> ScaleDecision {
        let cfg = &self.cfg;
        let q = cfg.quantile();
        let reactive = cfg.replicas_for(input.current_demand);
        let (predictive, planning, floor) = match input.forecast {
            None => (0, Planning::Reactive, reactive),
            Some(f) if !f.calibrated => {
                // A wide fallback band must not buy a fleet: a bounded step above
                // what current demand asks for.
                let margin = (f64::from(reactive) * cfg.uncalibrated_margin).ceil() as u32;
                let cap = reactive.saturating_add(margin.max(1));
                (
                    cfg.replicas_for(f.upper).min(cap),
                    Planning::Uncalibrated,
                    reactive,
                )
            }
            Some(f) => {
                let planned = demand_quantile(f, q);
                // Current demand at full capacity is the floor: never fewer replicas
                // than serve what arrives now.
                let floor = cfg.replicas_at(input.current_demand, 1.0);
                (cfg.replicas_at(planned, 1.0), Planning::Quantile, floor)
            }
        };
        let (mut desired, mut reason) = if predictive > floor {
            (predictive, ScaleReason::Forecast)
        } else {
            (floor, ScaleReason::CurrentDemand)
        };
        let (cpu, memory) = cfg.replicas_for_resources(need);
        for (n, why) in [(cpu, ScaleReason::Cpu), (memory, ScaleReason::Memory)] {
            if let Some(n) = n.filter(|n| *n > desired) {
                (desired, reason) = (n, why);
            }
        }
        if desired <= cfg.min_replicas {
            desired = cfg.min_replicas;
            reason = ScaleReason::AtMinimum;
        } else if desired >= cfg.max_replicas {
            desired = cfg.max_replicas;
            reason = ScaleReason::AtMaximum;
        }

        // Stabilise downward moves: remember this recommendation and never go below
        // the highest one in the window (the HPA's scale-down rule). A calibrated
        // forecast covers the lead window whichever rule binds now: when current demand
        // falls, the forecast says whether capacity is needed again before a replica
        // removed now could be back, so only the short window applies.
        let window = if planning == Planning::Quantile {
            cfg.forecast_stabilization.min(cfg.scale_down_stabilization)
        } else {
            cfg.scale_down_stabilization
        };
        let window = window.as_millis() as Millis;
        self.recommendations.push_back((input.now, desired));
        let longest = cfg.scale_down_stabilization.as_millis() as Millis;
        while self
            .recommendations
            .front()
            .is_some_and(|(t, _)| input.now.saturating_sub(*t) > longest)
        {
            self.recommendations.pop_front();
        }
        // Bounded even if the clock stalls: one entry per sync period is plenty.
        while self.recommendations.len() > 10_000 {
            self.recommendations.pop_front();
        }
        if desired < input.current_replicas {
            let held = self
                .recommendations
                .iter()
                .filter(|(t, _)| input.now.saturating_sub(*t) <= window)
                .map(|(_, r)| *r)
                .max()
                .unwrap_or(desired);
            let held = held.min(input.current_replicas);
            if held > desired {
                desired = held;
                reason = ScaleReason::Stabilizing;
            }
        }

        if cfg.max_scale_up_step > 0 {
            let limit = input.current_replicas.saturating_add(cfg.max_scale_up_step);
            if desired > limit {
                desired = limit;
                reason = ScaleReason::StepLimited;
            }
        }
        ScaleDecision {
            desired,
            predictive,
            reactive,
            reason,
            planning,
            quantile: q,
            lead_time_seconds: self.lead_time().as_secs_f64(),
            learned_startup: self.learned.is_some(),
        }
    }
}

/// The q-quantile of demand from the forecast's median and upper bound, taking the
/// band as normal: median + (upper − median) × z(q) / z((1 + level) / 2).
fn demand_quantile(f: LeadForecast, q: f64) -> f64 {
    let spread = (f.upper - f.point).max(0.0);
    let z_upper = normal_quantile((1.0 + f.level.clamp(0.01, 0.999)) / 2.0);
    let planned = f.point + spread * normal_quantile(q) / z_upper;
    if planned.is_nan() {
        f.upper
    } else {
        planned.max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binding_resource_sets_replicas_and_names_the_reason() {
        let cfg = ScalingConfig {
            capacity_per_replica: 10.0,
            target_utilization: 0.5,
            cpu_per_replica: Some(2.0),
            memory_per_replica: Some(1e9),
            ..ScalingConfig::default()
        };
        let input = |demand: f64| ScaleInput {
            now: 0,
            current_replicas: 1,
            current_demand: demand,
            forecast: None,
        };
        let mut s = Scaler::new(cfg.clone());
        // Concurrency 10 → 2 replicas; 7 cores at 2 × 0.5 per replica → 7; 2 GB → 4.
        let need = ResourceNeed {
            cpu_cores: Some(7.0),
            memory_bytes: Some(2e9),
            ..ResourceNeed::default()
        };
        let d = s.decide_with(input(10.0), need);
        assert_eq!((d.desired, d.reason), (7, ScaleReason::Cpu));
        // 6 GB → 12 replicas: memory binds.
        let need = ResourceNeed {
            cpu_cores: Some(7.0),
            memory_bytes: Some(6e9),
            ..ResourceNeed::default()
        };
        let d = Scaler::new(cfg.clone()).decide_with(input(10.0), need);
        assert_eq!((d.desired, d.reason), (12, ScaleReason::Memory));
        // Concurrency 100 → 20: the concurrency rule binds again.
        let d = Scaler::new(cfg.clone()).decide_with(input(100.0), need);
        assert_eq!((d.desired, d.reason), (20, ScaleReason::CurrentDemand));
        // Without the container's requests configured, resources do not count.
        let plain = ScalingConfig {
            cpu_per_replica: None,
            memory_per_replica: None,
            ..cfg
        };
        let d = Scaler::new(plain).decide_with(input(10.0), need);
        assert_eq!((d.desired, d.reason), (2, ScaleReason::CurrentDemand));
    }

    fn cfg() -> ScalingConfig {
        // One replica serves 10 busy requests; plan for 70 %: 7 per replica.
        ScalingConfig {
            capacity_per_replica: 10.0,
            target_utilization: 0.7,
            min_replicas: 2,
            max_replicas: 20,
            scale_down_stabilization: Duration::from_secs(300),
            ..ScalingConfig::default()
        }
    }

    /// A calibrated forecast over the lead window: median and 95th percentile.
    fn calibrated(point: f64, upper: f64) -> LeadForecast {
        LeadForecast {
            point,
            upper,
            level: 0.9,
            calibrated: true,
        }
    }

    /// Demand now, and a calibrated forecast whose 95th percentile is `forecast`
    /// (median 80 % of it), planned at the default shortfall cost (q = 0.95).
    fn at(now_s: u64, current: u32, demand: f64, forecast: Option<f64>) -> ScaleInput {
        ScaleInput {
            now: now_s * 1000,
            current_replicas: current,
            current_demand: demand,
            forecast: forecast.map(|u| calibrated(0.8 * u, u)),
        }
    }

    #[test]
    fn a_learned_startup_time_sets_the_lead_up_to_the_planned_maximum() {
        let mut s = Scaler::new(cfg());
        let input = ScaleInput {
            now: 0,
            current_replicas: 1,
            current_demand: 1.0,
            forecast: None,
        };
        let base = s.config().startup_time + s.config().sync_period;
        assert_eq!(s.lead_time(), base);
        // Replicas turn out to start in 30 s: plan with that.
        s.learned_startup(Some(Duration::from_secs(30)));
        let d = s.decide(input);
        assert_eq!(
            d.lead_time_seconds,
            30.0 + s.config().sync_period.as_secs_f64()
        );
        assert!(d.learned_startup);
        // Slower than anything planned for: capped at max_startup_time (twice
        // startup_time by default), which the forecast horizon covers.
        s.learned_startup(Some(Duration::from_secs(10_000)));
        assert_eq!(s.lead_time(), s.config().horizon());
        assert_eq!(s.config().max_startup(), s.config().startup_time * 2);
        // Learning off: the configured time, and no longer horizon than needed.
        let mut off = Scaler::new(ScalingConfig {
            learn_startup_time: false,
            ..cfg()
        });
        off.learned_startup(Some(Duration::from_secs(30)));
        assert_eq!(off.lead_time(), base);
        assert_eq!(off.config().horizon(), base);
        assert!(!off.decide(input).learned_startup);
        // A max below startup_time is a config error.
        let bad = ScalingConfig {
            max_startup_time: Some(Duration::from_secs(1)),
            ..cfg()
        };
        assert_eq!(bad.validate().unwrap_err().field, "max_startup_time");
    }

    #[test]
    fn scales_up_ahead_of_forecast_demand_and_never_below_current_demand() {
        let mut s = Scaler::new(cfg());
        // Demand 14 now (2 replicas at 70 %); the forecast's 95th percentile within the
        // lead time is 50: planned at full capacity, ceil(50 / 10) = 5 replicas before
        // the load lands (the quantile is the headroom; 70 % is not stacked on it).
        let d = s.decide(at(0, 2, 14.0, Some(50.0)));
        assert_eq!(
            (d.desired, d.predictive, d.reactive, d.reason),
            (5, 5, 2, ScaleReason::Forecast)
        );
        assert_eq!((d.planning, d.quantile), (Planning::Quantile, 0.95));
        assert_eq!(d.lead_time_seconds, 135.0);
        // The forecast under-shoots a surge (demand 60 now): never fewer replicas than
        // serve what arrives now, ceil(60 / 10) = 6.
        let d = s.decide(at(15, 8, 60.0, Some(20.0)));
        assert_eq!((d.desired, d.reason), (6, ScaleReason::CurrentDemand));
    }

    #[test]
    fn scale_down_waits_for_the_stabilisation_window() {
        let mut s = Scaler::new(cfg());
        assert_eq!(s.decide(at(0, 2, 63.0, None)).desired, 9);
        // Load drops right away: the recommendation of 9 holds the count for 300 s.
        let d = s.decide(at(60, 9, 7.0, None));
        assert_eq!((d.desired, d.reason), (9, ScaleReason::Stabilizing));
        let d = s.decide(at(299, 9, 7.0, None));
        assert_eq!(d.desired, 9);
        // 301 s after the high recommendation it leaves the window: down to the minimum.
        let d = s.decide(at(301, 9, 7.0, None));
        assert_eq!((d.desired, d.reason), (2, ScaleReason::AtMinimum));
    }

    #[test]
    fn a_calibrated_forecast_of_falling_demand_scales_down_after_its_short_window() {
        let mut s = Scaler::new(cfg());
        let short = s.config().forecast_stabilization.as_secs();
        assert!(
            short < 300,
            "the default short window is shorter than the HPA's"
        );
        // The forecast asks for 9 (95th percentile 90 at 10 per replica).
        assert_eq!(s.decide(at(0, 2, 30.0, Some(90.0))).desired, 9);
        // It now sees demand staying at 30 over the lead time: 3 replicas suffice, but
        // the 9 is still within forecast_stabilization.
        let d = s.decide(at(short, 9, 30.0, Some(30.0)));
        assert_eq!((d.desired, d.reason), (9, ScaleReason::Stabilizing));
        // Once it has passed, not the reactive rule's 300 s: down to what the forecast
        // covers.
        let d = s.decide(at(short + 1, 9, 20.0, Some(30.0)));
        assert_eq!((d.desired, d.reason), (3, ScaleReason::Forecast));
        // Without a forecast, the full window applies to the same drop.
        let mut r = Scaler::new(cfg());
        assert_eq!(r.decide(at(0, 2, 63.0, None)).desired, 9);
        assert_eq!(r.decide(at(short + 1, 9, 20.0, None)).desired, 9);
    }

    #[test]
    fn with_a_calibrated_forecast_a_fall_in_current_demand_releases_at_once() {
        // A surge the forecast missed: current demand 80 binds (8 at full capacity)
        // over a forecast of 30.
        let mut s = Scaler::new(cfg());
        let d = s.decide(at(0, 2, 80.0, Some(30.0)));
        assert_eq!((d.desired, d.reason), (8, ScaleReason::CurrentDemand));
        // It ebbs to 45 (5) and the forecast still sees 30 ahead: current demand binds
        // again, but nothing more is needed before a replica removed now could be
        // back, so the short window applies, not 300 s.
        let short = s.config().forecast_stabilization.as_secs();
        let d = s.decide(at(short + 1, 8, 45.0, Some(30.0)));
        assert_eq!((d.desired, d.reason), (5, ScaleReason::CurrentDemand));
        // The reactive rule alone (no forecast) holds the surge's count for 300 s.
        let mut r = Scaler::new(cfg());
        assert_eq!(r.decide(at(0, 2, 80.0, None)).desired, 12);
        assert_eq!(r.decide(at(short + 1, 12, 45.0, None)).desired, 12);
    }

    #[test]
    fn the_floor_and_the_forecast_take_the_larger_never_the_sum() {
        // Current demand 40 (4 replicas at full capacity) and a forecast whose 95th
        // percentile is 50 (5): 5, the forecast covering what arrives now too.
        let d = Scaler::new(cfg()).decide(at(0, 2, 40.0, Some(50.0)));
        assert_eq!((d.desired, d.reason), (5, ScaleReason::Forecast));
        // The other way round, current demand 50 over a forecast of 40: 5 again.
        let d = Scaler::new(cfg()).decide(at(0, 2, 50.0, Some(40.0)));
        assert_eq!((d.desired, d.reason), (5, ScaleReason::CurrentDemand));
    }

    #[test]
    fn a_step_current_demand_is_measured_inside_is_left_to_the_floor() {
        let step = |start: Millis, point: f64, upper: f64| StepBand {
            start,
            end: start + 300_000,
            point,
            upper,
        };
        // The lead window covers the step under way (a high band forecast before it
        // began) and the next one.
        let steps = [step(0, 20.0, 60.0), step(300_000, 15.0, 40.0)];
        // Current demand measured over [45 s, 60 s) of the first step: its band is
        // dropped, the next step's counts.
        let f = LeadForecast::over_steps(steps, 45_000..60_000, 0.9, true);
        assert_eq!(f.map(|f| (f.point, f.upper)), Some((15.0, 40.0)));
        // A reading across the steps' boundary, or one averaging a longer span than
        // the step (a coarse reading), does not measure the step: its band counts.
        let later = [step(300_000, 20.0, 60.0), step(600_000, 15.0, 40.0)];
        for measured in [290_000..305_000, 300_000..900_000] {
            let f = LeadForecast::over_steps(later, measured, 0.9, true);
            assert_eq!(f.map(|f| (f.point, f.upper)), Some((20.0, 60.0)));
        }
        // Only the measured step in the window: the forecast adds nothing to the floor,
        // and stays a (calibrated) forecast, so the short window still applies.
        let only = LeadForecast::over_steps([step(0, 20.0, 60.0)], 45_000..60_000, 0.9, true);
        assert_eq!(only, Some(calibrated(0.0, 0.0)));
        assert_eq!(
            LeadForecast::over_steps([], 45_000..60_000, 0.9, true),
            None
        );
        // In the rule: demand measured at 30 now (3 replicas) against the stale band's
        // 6, held by the next step's 40 (4).
        let d = Scaler::new(cfg()).decide(ScaleInput {
            now: 60_000,
            current_replicas: 6,
            current_demand: 30.0,
            forecast: LeadForecast::over_steps(steps, 45_000..60_000, 0.9, true),
        });
        assert_eq!((d.desired, d.reason), (4, ScaleReason::Forecast));
    }

    #[test]
    fn the_planned_quantile_follows_the_shortfall_cost() {
        // Median 40, 95th percentile 50 (spread 10 over z = 1.645).
        let f = calibrated(40.0, 50.0);
        let plan = |cost: f64| {
            let mut s = Scaler::new(ScalingConfig {
                shortfall_cost: cost,
                min_replicas: 1,
                max_replicas: 100,
                capacity_per_replica: 1.0,
                ..cfg()
            });
            s.decide(ScaleInput {
                now: 0,
                current_replicas: 1,
                current_demand: 0.0,
                forecast: Some(f),
            })
            .desired
        };
        // Equal costs: the median. Short costs 19 idle: the 95th percentile. Dearer
        // still: above the band, by the normal quantile (z(0.99) / z(0.95) = 1.414).
        assert_eq!(plan(1.0), 40);
        assert_eq!(plan(19.0), 50);
        assert_eq!(plan(99.0), 55, "40 + 10 × 1.414 = 54.1");
        assert!(plan(0.25) < 40, "idle dearer than short: below the median");
    }

    #[test]
    fn an_uncalibrated_band_asks_for_a_bounded_step_above_current_demand() {
        let mut s = Scaler::new(cfg());
        // Current demand 28 → 4 replicas at 70 %; the fallback band's upper bound 700
        // would ask for 100 (clamped to the maximum 20). Uncalibrated: at most 25 %
        // (at least one replica) above the reactive rule.
        let input = ScaleInput {
            now: 0,
            current_replicas: 4,
            current_demand: 28.0,
            forecast: Some(LeadForecast {
                calibrated: false,
                ..calibrated(30.0, 700.0)
            }),
        };
        let d = s.decide(input);
        assert_eq!((d.desired, d.predictive, d.reactive), (5, 5, 4));
        assert_eq!(d.planning, Planning::Uncalibrated);
        // Once calibrated, the same band is trusted (700 at full capacity: 70 → 20).
        let d = Scaler::new(cfg()).decide(ScaleInput {
            forecast: Some(calibrated(30.0, 700.0)),
            ..input
        });
        assert_eq!((d.desired, d.planning), (20, Planning::Quantile));
    }

    #[test]
    fn limits_and_degenerate_inputs() {
        let mut s = Scaler::new(ScalingConfig {
            max_scale_up_step: 3,
            ..cfg()
        });
        let d = s.decide(at(0, 2, 0.0, Some(1000.0)));
        // 1000 / 7 → 143, clamped to max 20, then limited to 2 + 3 per sync.
        assert_eq!((d.desired, d.reason), (5, ScaleReason::StepLimited));
        let d = Scaler::new(cfg()).decide(at(0, 2, f64::NAN, Some(f64::INFINITY)));
        assert_eq!(
            d.desired, 20,
            "an infinite forecast means the maximum, never a panic"
        );
        assert!(ScalingConfig {
            target_utilization: 0.0,
            ..cfg()
        }
        .validate()
        .is_err());
        assert!(ScalingConfig {
            min_replicas: 30,
            ..cfg()
        }
        .validate()
        .is_err());
    }
}
