//! Pre-shedding at each scaling decision: how much demand the forecast expects over
//! the lead time against the capacity that is ready, and the level that follows.
//!
//! The sidecar reads no cluster API, so "ready" is modelled from its own decisions: a
//! replica counts as ready `startup_time` after it was asked for, and only while it is
//! still asked for (a scale-down removes capacity at once). What the first decision
//! asks for is taken as ready: the sidecar cannot see what ran before it started, and
//! a sidecar restarted at peak must not pre-shed for a whole start-up time. Ready replicas × `capacity_per_replica` is the
//! ready capacity; replicas asked for but not yet ready are pending. Demand is the
//! forecast's upper bound over the lead time or the current demand, whichever is higher
//! (busy concurrency, the unit the scaling rule divides by `capacity_per_replica`), so
//! a spike larger than forecast raises the level; without a forecast nothing is pre-shed.
//!
//! The level is set on whatever admission is live (a reload carries it over); a reload
//! that changes `policies.admission.preshed` restarts the release ramp.

use super::LiveTiers;
use prescale_policies::admission::PreShedConfig;
use prescale_policies::scale::ScalingConfig;
use prescale_policies::{PreShed, PreShedInput};
use std::collections::VecDeque;

type Millis = u64;

/// Decisions kept: enough to cover a startup time of an hour at 1 s syncs.
const MAX_HISTORY: usize = 4096;

/// The forecaster's pre-shed state between decisions.
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

    /// After the scaling decision `desired` at `at`: computes and applies the level to
    /// the live admission. Returns the level set, if a policy is live.
    pub fn after_decision(
        &mut self,
        live: Option<&LiveTiers>,
        desired: u32,
        forecast_upper: Option<f64>,
        at: Millis,
    ) -> Option<f64> {
        self.record(desired, at);
        let policy = live?.load()?;
        let sheddable = policy.admission.sheddable_fraction();
        let input = self.input(forecast_upper, sheddable, at);
        let ramp = match &mut self.ramp {
            Some((cfg, ramp)) if *cfg == policy.preshed => ramp,
            slot => {
                let cfg = policy.preshed.clone();
                &mut slot.insert((cfg.clone(), PreShed::new(cfg))).1
            }
        };
        let level = ramp.update(&input, at.saturating_mul(1000));
        policy.admission.set_preshed(level);
        Some(level)
    }

    fn record(&mut self, desired: u32, at: Millis) {
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
    fn ready(&self, at: Millis) -> u32 {
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

    fn input(&self, forecast_upper: Option<f64>, sheddable: f64, at: Millis) -> PreShedInput {
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
    fn each_decision_sets_the_live_admission_level_and_releases_it_gradually() {
        use crate::routes::Snapshot;
        use arc_swap::ArcSwap;
        use std::sync::Arc;
        let yaml = "listeners: [{name: in, direction: inbound, address: \"127.0.0.1:1\", cluster: local}]\nclusters: [{name: local, endpoints: [\"127.0.0.1:2\"]}]\npolicies:\n  scaling: { capacity_per_replica: 10, startup_time: 60s, min_replicas: 2 }\n  admission: { preshed: { enabled: true, release_rate: 0.01 } }\n";
        let cfg = crate::MeshConfig::parse(yaml, std::path::Path::new("t.yaml")).unwrap();
        let snapshot = Arc::new(ArcSwap::from_pointee(
            Snapshot::build(&cfg, 1, &crate::clock::Clock::system()).unwrap(),
        ));
        let live = LiveTiers::new(snapshot.clone());
        let admission = || live.load().unwrap().admission.clone();
        let mut p = PreShedding::new(&cfg.policies.scaling);

        // 2 replicas ready (20 slots), 5 asked for, 45 forecast, all demand sheddable
        // (idle admission says 1): 25 of 45 cannot be served yet.
        p.after_decision(Some(&live), 2, Some(15.0), 0);
        let level = p
            .after_decision(Some(&live), 5, Some(45.0), 100_000)
            .unwrap();
        assert!((level - 25.0 / 45.0).abs() < 1e-9, "{level}");
        assert_eq!(admission().preshed(), level);
        // Half a start-up later nothing has changed.
        assert_eq!(
            p.after_decision(Some(&live), 5, Some(45.0), 130_000),
            Some(level)
        );
        // Once the replicas are ready the level falls 0.01 per second, not at once.
        let later = p
            .after_decision(Some(&live), 5, Some(45.0), 161_000)
            .unwrap();
        assert!((later - (level - 0.31)).abs() < 1e-9, "{later}");
        // Pre-shedding off in a reloaded config: the level goes to 0.
        let off = cfg.policies.admission.preshed.clone();
        assert!(off.enabled);
        let mut cfg2 = cfg.clone();
        cfg2.policies.admission.preshed.enabled = false;
        let next = Snapshot::build_after(&cfg2, 2, Some(&snapshot.load())).unwrap();
        snapshot.store(Arc::new(next));
        assert_eq!(
            admission().preshed(),
            later,
            "the level carries over a reload"
        );
        assert_eq!(
            p.after_decision(Some(&live), 5, Some(45.0), 162_000),
            Some(0.0)
        );
        assert_eq!(admission().preshed(), 0.0);
        // Without a live policy nothing is set.
        assert_eq!(p.after_decision(None, 5, Some(45.0), 163_000), None);
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
