//! Pre-shedding at each scaling decision: how much demand the forecast expects over
//! the lead time against the capacity that is ready, and the level that follows.
//!
//! The sidecar reads no cluster API, so "ready" is modelled from its own decisions: a
//! replica counts as ready `startup_time` after it was asked for, and only while it is
//! still asked for (a scale-down removes capacity at once). What the first decision
//! asks for is taken as ready: the sidecar cannot see what ran before it started, and
//! a sidecar restarted at peak must not pre-shed for a whole start-up time. Ready
//! replicas × `capacity_per_replica` is the ready capacity; replicas asked for but not
//! yet ready are pending. Demand is the forecast's upper bound over the lead time or
//! the current demand, whichever is higher (busy concurrency, the unit the scaling
//! rule divides by `capacity_per_replica`; the engine passes it), so a spike larger
//! than forecast raises the level; without a forecast nothing is pre-shed.
//!
//! A change of the admission's pre-shed config (a reload) restarts the release ramp.
//! Setting the level on a live admission is the caller's (`proxy/src/tiers/preshed.rs`).

use crate::Millis;
use prescale_policies::admission::PreShedConfig;
use prescale_policies::scale::ScalingConfig;
use prescale_policies::{PreShed, PreShedInput};
use std::collections::VecDeque;

/// Decisions kept: enough to cover a startup time of an hour at 1 s syncs.
const MAX_HISTORY: usize = 4096;

/// The pre-shed state between decisions.
pub struct PreShedding {
    startup_ms: Millis,
    capacity_per_replica: f64,
    /// Replicas taken as ready before the oldest decision kept (at first: what the
    /// first decision asked for).
    initial: u32,
    /// Desired replicas by decision time, oldest first.
    history: VecDeque<(Millis, u32)>,
    /// The level's ramp, and the config it was built from (policies reload).
    ramp: Option<(PreShedConfig, PreShed)>,
}

// === impl PreShedding ===

impl PreShedding {
    pub fn new(scaling: &ScalingConfig) -> Self {
        Self {
            startup_ms: u64::try_from(scaling.startup_time.as_millis()).unwrap_or(u64::MAX),
            capacity_per_replica: scaling.capacity_per_replica,
            initial: scaling.min_replicas,
            history: VecDeque::new(),
            ramp: None,
        }
    }

    /// After the scaling decision `desired` at `at`: the level for an admission
    /// whose pre-shed config is `cfg` and whose sheddable share of demand is
    /// `sheddable` (the caller sets it on the live admission).
    pub fn after_decision(
        &mut self,
        cfg: &PreShedConfig,
        sheddable: f64,
        desired: u32,
        forecast_upper: Option<f64>,
        at: Millis,
    ) -> f64 {
        self.record(desired, at);
        let input = self.input(forecast_upper, sheddable, at);
        let ramp = match &mut self.ramp {
            Some((c, ramp)) if c == cfg => ramp,
            slot => &mut slot.insert((cfg.clone(), PreShed::new(cfg.clone()))).1,
        };
        ramp.update(&input, at.saturating_mul(1000))
    }

    /// Records the decision `desired` at `at` (the ready-capacity model's input).
    pub fn record(&mut self, desired: u32, at: Millis) {
        if self.history.is_empty() {
            self.initial = self.initial.max(desired);
        }
        self.history.push_back((at, desired));
        // Keep the newest decision at or before the ready horizon, and all after it.
        let horizon = at.saturating_sub(self.startup_ms);
        while self.history.len() > MAX_HISTORY
            || self.history.get(1).is_some_and(|(t, _)| *t <= horizon)
        {
            if let Some((_, d)) = self.history.pop_front() {
                self.initial = d;
            }
        }
    }

    /// Replicas asked for continuously since `startup_time` ago.
    pub fn ready(&self, at: Millis) -> u32 {
        let horizon = at.saturating_sub(self.startup_ms);
        let before = self
            .history
            .iter()
            .rev()
            .find(|(t, _)| *t <= horizon)
            .map_or(self.initial, |(_, d)| *d);
        self.history
            .iter()
            .filter(|(t, _)| *t > horizon && *t <= at)
            .map(|(_, d)| *d)
            .fold(before, u32::min)
    }

    /// What the pre-shed rule is given at `at`.
    pub fn input(&self, forecast_upper: Option<f64>, sheddable: f64, at: Millis) -> PreShedInput {
        let desired = self.history.back().map_or(self.initial, |(_, d)| *d);
        let ready = self.ready(at);
        PreShedInput {
            forecast_upper: forecast_upper.unwrap_or(0.0),
            ready_capacity: f64::from(ready) * self.capacity_per_replica,
            pending_capacity: f64::from(desired.saturating_sub(ready)) * self.capacity_per_replica,
            sheddable_fraction: sheddable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn scaling() -> ScalingConfig {
        ScalingConfig {
            capacity_per_replica: 10.0,
            startup_time: Duration::from_secs(60),
            min_replicas: 2,
            ..ScalingConfig::default()
        }
    }

    #[test]
    fn replicas_become_ready_one_startup_time_after_they_are_asked_for() {
        let mut p = PreShedding::new(&scaling());
        // Two replicas from the start; a surge is forecast at t = 100 s.
        p.record(2, 0);
        p.record(5, 100_000);
        let i = p.input(Some(45.0), 1.0, 100_000);
        // 45 busy slots forecast, 20 ready, 30 pending.
        assert_eq!(
            (i.ready_capacity, i.pending_capacity, i.forecast_upper),
            (20.0, 30.0, 45.0)
        );
        let level = prescale_policies::admission::preshed_level(&i);
        assert!((level.level - 25.0 / 45.0).abs() < 1e-9, "{level:?}");

        // Still starting 30 s later; ready a minute after the request.
        p.record(5, 130_000);
        assert_eq!(p.ready(130_000), 2);
        p.record(5, 160_000);
        assert_eq!(p.ready(160_000), 5);
        let i = p.input(Some(45.0), 1.0, 160_000);
        assert_eq!((i.ready_capacity, i.pending_capacity), (50.0, 0.0));
        assert_eq!(prescale_policies::admission::preshed_level(&i).level, 0.0);
    }

    #[test]
    fn what_the_first_decision_asks_for_is_taken_as_ready() {
        // A sidecar restarted at peak: it asks for 6 at once, and 6 are running.
        let mut p = PreShedding::new(&scaling());
        p.record(6, 100_000);
        assert_eq!(p.ready(100_000), 6);
        let i = p.input(Some(55.0), 1.0, 100_000);
        assert_eq!(prescale_policies::admission::preshed_level(&i).level, 0.0);
    }

    #[test]
    fn a_scale_down_removes_capacity_at_once_and_history_stays_bounded() {
        let mut p = PreShedding::new(&scaling());
        p.record(6, 0);
        p.record(6, 70_000);
        assert_eq!(p.ready(70_000), 6);
        p.record(3, 80_000);
        assert_eq!(p.ready(80_000), 3);
        // No forecast: nothing to pre-shed.
        let i = p.input(None, 1.0, 80_000);
        assert_eq!(prescale_policies::admission::preshed_level(&i).level, 0.0);
        for t in 0..10_000u64 {
            p.record(4, 80_000 + t * 1000);
        }
        assert!(p.history.len() <= 62, "history {}", p.history.len());
        assert_eq!(p.ready(80_000 + 9_999_000), 4);
    }
}
