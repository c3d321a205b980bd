//! Scenario 5: an HPA without `behavior` runs the legacy `normalizeDesiredReplicas`:
//! scale up capped at `max(2 × current, 4)` per sync (`calculateScaleUpLimit`), scale
//! down held by the controller's 300 s window (`stabilizeRecommendation`).

use super::*;

fn legacy_cpu(min: u32, max: u32, target: u32) -> HpaSpec {
    HpaSpec::new(min, max, cpu_metric(target))
}

#[test]
fn scale_up_at_most_doubles_per_sync_with_a_floor_of_4() {
    // 1 replica at 50% target, demand 1000.
    let mut target = Target::new(legacy_cpu(1, 100, 50), 1);

    // t=0:  1000% → ratio 20, proposal 20. Limit max(2 × 1, 4) = 4 → 4 (ScaleUpLimit).
    // t=15: 250% → ratio 5, 20. Limit 8 → 8.
    // t=30: 125% → 2.5, 20. Limit 16 → 16.
    // t=45: 62.5% → 62 → 1.24, ceil(19.84) = 20. Limit 32 → 20.
    // t=60: 50%, within tolerance: 20.
    let d = target.sync(0, 1000.0);
    assert_eq!(d.desired, 4);
    assert_eq!(normalization(&d).limit, Limit::ScaleUpLimit);
    assert_eq!(target.run(every_15s(15, 60), 1000.0), [8, 16, 20, 20]);

    // The behavior path's defaults from the same start, for contrast:
    // t=0: Pods 1 + 4 = 5 beats Percent 2 → 5. t=15: 200% → 4 → 20; Pods 9, Percent
    // 10 → 10. t=30: 100% → 2 → 20; Pods 14, Percent 20 → 20.
    let mut target = Target::new(cpu(1, 100, 50), 1);
    assert_eq!(target.run(every_15s(0, 45), 1000.0), [5, 10, 20, 20]);
}

#[test]
fn the_legacy_limit_has_no_memory_of_earlier_syncs() {
    // Syncing every 5 s, the legacy cap applies to each sync's current count, so it
    // doubles every 5 s: 4, 8, 16, 20 (as above, 3 times faster).
    let mut target = Target::new(legacy_cpu(1, 100, 50), 1);
    assert_eq!(target.run([0, 5, 10, 15], 1000.0), [4, 8, 16, 20]);

    // The behavior path counts the +4 of t=0 against its 15 s period: t=5 and t=10
    // start the period at 5 − 4 = 1, limit max(1 + 4, 2) = 5: hold. t=15: the event is
    // out of the period, start 5: max(9, 10) = 10.
    let mut target = Target::new(cpu(1, 100, 50), 1);
    assert_eq!(target.run([0, 5, 10, 15], 1000.0), [5, 5, 5, 10]);
}

#[test]
fn scale_down_waits_out_the_window_then_drops_without_a_rate_limit() {
    // 10 replicas at target until t=60, then demand 100 (10% each: proposal 2).
    let mut target = Target::new(legacy_cpu(1, 20, 50), 10);
    assert_eq!(target.run(every_15s(0, 60), 500.0), [10; 5]);

    // The highest recommendation of the last 300 s is the 10 of t=60 until t=360.
    let d = target.sync(75, 100.0);
    assert_eq!(d.desired, 10);
    let n = normalization(&d);
    assert_eq!((n.proposal, n.stabilized), (2, 10));
    assert_eq!(n.stabilization, Stabilization::ScaleDownStabilized);
    assert_eq!(target.run(every_15s(90, 345), 100.0), [10; 18]);

    // t=360: everything in the window is 2; no scale-down limit in the legacy path.
    assert_eq!(target.sync(360, 100.0).desired, 2);
}

#[test]
fn a_shorter_controller_window_shortens_the_hold() {
    // --horizontal-pod-autoscaler-downscale-stabilization=1m.
    let mut spec = legacy_cpu(1, 20, 50);
    spec.controller.downscale_stabilization_seconds = 60;
    let mut target = Target::new(spec, 10);

    // Fresh HPA under low load: the seed (10, t=0) counts while younger than 60 s.
    assert_eq!(target.run(every_15s(0, 45), 100.0), [10; 4]);
    assert_eq!(target.sync(60, 100.0).desired, 2);
}
