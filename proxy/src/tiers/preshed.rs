//! Pre-shedding at the edge: what the decision engine needs to know of the live
//! admission (its pre-shed settings and sheddable share), and setting the level the
//! engine returns on it. The model itself (ready capacity from the engine's own
//! decisions, the release ramp) is `prescale_engine::preshed`.
//!
//! The level is set on whatever admission is live (a reload carries it over); a reload
//! that changes `policies.admission.preshed` restarts the release ramp.

use super::{LiveTiers, TierPolicy};
use prescale_engine::AdmissionState;
use std::sync::Arc;

/// The live policy and its admission's state, if a policy is live.
pub fn admission_state(live: Option<&LiveTiers>) -> Option<(Arc<TierPolicy>, AdmissionState)> {
    let policy = live?.load()?;
    let state = AdmissionState {
        preshed: policy.preshed.clone(),
        sheddable_fraction: policy.admission.sheddable_fraction(),
    };
    Some((policy, state))
}

/// Sets the engine's pre-shed level on the live admission.
pub fn apply(policy: &TierPolicy, level: f64) {
    policy.admission.set_preshed(level);
}

#[cfg(test)]
mod tests {
    use super::*;
    use prescale_engine::PreShedding;

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
        // What the forecaster's driver does after each decision: the engine's model
        // computes the level for the live admission's state, the edge sets it.
        let mut after_decision = |live: Option<&LiveTiers>, desired, upper, at| {
            let (policy, state) = admission_state(live)?;
            let level =
                p.after_decision(&state.preshed, state.sheddable_fraction, desired, upper, at);
            apply(&policy, level);
            Some(level)
        };

        // 2 replicas ready (20 slots), 5 asked for, 45 forecast, all demand sheddable
        // (idle admission says 1): 25 of 45 cannot be served yet.
        after_decision(Some(&live), 2, Some(15.0), 0);
        let level = after_decision(Some(&live), 5, Some(45.0), 100_000).unwrap();
        assert!((level - 25.0 / 45.0).abs() < 1e-9, "{level}");
        assert_eq!(admission().preshed(), level);
        // Half a start-up later nothing has changed.
        assert_eq!(
            after_decision(Some(&live), 5, Some(45.0), 130_000),
            Some(level)
        );
        // Once the replicas are ready the level falls 0.01 per second, not at once.
        let later = after_decision(Some(&live), 5, Some(45.0), 161_000).unwrap();
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
            after_decision(Some(&live), 5, Some(45.0), 162_000),
            Some(0.0)
        );
        assert_eq!(admission().preshed(), 0.0);
        // Without a live policy nothing is set.
        assert_eq!(after_decision(None, 5, Some(45.0), 163_000), None);
    }
}
