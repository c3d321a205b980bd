//! Scenario 7: min/max. `reconcileAutoscaler` snaps an out-of-range count straight to the
//! bound; inside the range, the normalisation clamps the proposal
//! (`convertDesiredReplicasWithBehaviorRate`, `convertDesiredReplicasWithRules`).

use super::*;

#[test]
fn the_proposal_is_clamped_to_max_and_min() {
    // min 2, max 6.
    let mut target = Target::new(cpu(2, 6, 50), 4);

    // 4 replicas at 150%: proposal 12. The rate would allow 8, but max is 6 and lower:
    // TooManyReplicas.
    let d = target.sync(0, 600.0);
    assert_eq!(d.desired, 6);
    assert_eq!(normalization(&d).limit, Limit::TooManyReplicas);

    // At 6, demand far above: already at max, no rescale.
    let d = target.sync(15, 6000.0);
    assert_eq!((d.desired, d.rescale), (6, false));

    // Demand collapses. After the window, proposal 1 (10 / 6 = 1.67% → 1 → ratio 0.02,
    // ceil(0.12) = 1); the 100% policy allows 0; min 2 binds: TooFewReplicas.
    let replicas = target.run(every_15s(30, 300), 10.0);
    assert!(replicas.iter().all(|&r| r == 6));
    let d = target.sync(315, 10.0);
    assert_eq!(d.desired, 2);
    let n = normalization(&d);
    assert_eq!((n.proposal, n.limit), (1, Limit::TooFewReplicas));
}

#[test]
fn the_legacy_path_clamps_the_same_way() {
    // Legacy, max 6: from 4 the legacy cap is max(8, 4) = 8; max 6 is lower, so
    // TooManyReplicas.
    let mut target = Target::new(HpaSpec::new(2, 6, cpu_metric(50)), 4);
    let d = target.sync(0, 600.0);
    assert_eq!(d.desired, 6);
    assert_eq!(normalization(&d).limit, Limit::TooManyReplicas);
}

#[test]
fn out_of_range_counts_snap_to_the_bound_at_once() {
    let mut hpa = Hpa::new(cpu(2, 6, 50)).expect("valid spec");
    let sample = Some(MetricSample::new(50.0));

    // Someone scaled to 9 by hand: straight to max, skipping window and policies.
    let d = hpa.sync(0, 9, sample).expect("sync");
    assert_eq!((d.desired, d.reason), (6, HpaReason::AboveMaxReplicas));

    // Below min: straight to min.
    let d = hpa.sync(15, 1, sample).expect("sync");
    assert_eq!((d.desired, d.reason), (2, HpaReason::BelowMinReplicas));

    // Zero replicas with min ≥ 1: autoscaling is off for this target; it stays at 0.
    let d = hpa.sync(30, 0, sample).expect("sync");
    assert_eq!(
        (d.desired, d.rescale, d.reason),
        (0, false, HpaReason::ScalingDisabled)
    );

    // Out-of-range snaps apply even without a metric: the bounds come first.
    let d = hpa.sync(45, 9, None).expect("sync");
    assert_eq!((d.desired, d.reason), (6, HpaReason::AboveMaxReplicas));
}

#[test]
fn a_missing_metric_changes_nothing_and_records_nothing() {
    let mut hpa = Hpa::new(cpu(1, 10, 50)).expect("valid spec");

    // First sync without a metric: the seed is recorded (it precedes the metric in
    // reconcileAutoscaler), nothing else.
    let d = hpa.sync(0, 4, None).expect("sync");
    assert_eq!(
        (d.desired, d.rescale, d.reason),
        (4, false, HpaReason::MetricUnavailable)
    );
    assert_eq!(hpa.recommendations.len(), 1);
}
