//! The predictive scaling decision: how many replicas the forecast says the service
//! will need by the time a new replica could be ready.
//!
//! desired = ceil(upper forecast bound of demand over [now, now + lead time]
//!                / (per-replica capacity × target utilisation)),
//! never below what the same rule asks for on the demand measured now (so a forecast
//! that misses a surge never holds capacity back), clamped to [min, max], with
//! scale-ups limited per sync and scale-downs held for a stabilisation window.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
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
}

/// What the decision is based on; all demand in busy concurrency (Little's law).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct ScaleInput {
    pub now: Millis,
    /// Replicas the platform has now (requested, ready or not).
    pub current_replicas: u32,
    /// Demand measured over the last interval.
    pub current_demand: f64,
    /// Highest upper interval bound of forecast demand over [now, now + lead time];
    /// None without a forecast (then only current demand counts).
    pub forecast_upper: Option<f64>,
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
        let per = self.capacity_per_replica * self.target_utilization;
        // NaN demand counts as none (max() drops it); an infinite one saturates.
        let n = (demand.max(0.0) / per).ceil();
        n.min(f64::from(u32::MAX)) as u32
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
        let reactive = cfg.replicas_for(input.current_demand);
        let predictive = input.forecast_upper.map_or(0, |f| cfg.replicas_for(f));
        let (mut desired, mut reason) = if predictive > reactive {
            (predictive, ScaleReason::Forecast)
        } else {
            (reactive, ScaleReason::CurrentDemand)
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
        // the highest one in the window (the HPA's scale-down rule).
        let window = cfg.scale_down_stabilization.as_millis() as Millis;
        self.recommendations.push_back((input.now, desired));
        while self
            .recommendations
            .front()
            .is_some_and(|(t, _)| input.now.saturating_sub(*t) > window)
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
            lead_time_seconds: self.lead_time().as_secs_f64(),
            learned_startup: self.learned.is_some(),
        }
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
            forecast_upper: Some(demand),
        };
        let mut s = Scaler::new(cfg.clone());
        // Concurrency 10 → 2 replicas; 7 cores at 2 × 0.5 per replica → 7; 2 GB → 4.
        let need = ResourceNeed {
            cpu_cores: Some(7.0),
            memory_bytes: Some(2e9),
        };
        let d = s.decide_with(input(10.0), need);
        assert_eq!((d.desired, d.reason), (7, ScaleReason::Cpu));
        // 6 GB → 12 replicas: memory binds.
        let need = ResourceNeed {
            cpu_cores: Some(7.0),
            memory_bytes: Some(6e9),
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

    fn at(now_s: u64, current: u32, demand: f64, forecast: Option<f64>) -> ScaleInput {
        ScaleInput {
            now: now_s * 1000,
            current_replicas: current,
            current_demand: demand,
            forecast_upper: forecast,
        }
    }

    #[test]
    fn a_learned_startup_time_sets_the_lead_up_to_the_planned_maximum() {
        let mut s = Scaler::new(cfg());
        let input = ScaleInput {
            now: 0,
            current_replicas: 1,
            current_demand: 1.0,
            forecast_upper: None,
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
        // Demand 14 now (2 replicas); the forecast's upper bound within the lead time is
        // 50: ceil(50 / 7) = 8 replicas before the load lands.
        let d = s.decide(at(0, 2, 14.0, Some(50.0)));
        assert_eq!(
            (d.desired, d.predictive, d.reactive, d.reason),
            (8, 8, 2, ScaleReason::Forecast)
        );
        assert_eq!(d.lead_time_seconds, 135.0);
        // The forecast under-shoots a surge (demand 60 now): current demand wins.
        let d = s.decide(at(15, 8, 60.0, Some(20.0)));
        assert_eq!((d.desired, d.reason), (9, ScaleReason::CurrentDemand));
    }

    #[test]
    fn scale_down_waits_for_the_stabilisation_window() {
        let mut s = Scaler::new(cfg());
        assert_eq!(s.decide(at(0, 2, 63.0, None)).desired, 9);
        // Load drops right away: the recommendation of 9 holds the count for 300 s.
        let d = s.decide(at(60, 9, 7.0, Some(7.0)));
        assert_eq!((d.desired, d.reason), (9, ScaleReason::Stabilizing));
        let d = s.decide(at(299, 9, 7.0, Some(7.0)));
        assert_eq!(d.desired, 9);
        // 301 s after the high recommendation it leaves the window: down to the minimum.
        let d = s.decide(at(301, 9, 7.0, Some(7.0)));
        assert_eq!((d.desired, d.reason), (2, ScaleReason::AtMinimum));
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
