//! Scenario 3: a demand step down. The scale-down window (300 s) holds the count at the
//! highest recent recommendation (`stabilizeRecommendationWithBehaviors`), then the
//! scale-down policies pace the fall (`calculateScaleDownLimitWithBehaviors`).

use super::*;

/// 10 replicas at target (500 = 10 × 50%) for t = 0..=60, then demand falls to 100.
fn settled_at_10(spec: HpaSpec) -> Target {
    let mut target = Target::new(spec, 10);
    // Each sync: 50%, ratio 1, within tolerance: proposal 10 recorded at 0, 15, .., 60.
    assert_eq!(target.run(every_15s(0, 60), 500.0), [10; 5]);
    target
}

#[test]
fn nothing_moves_for_the_window_then_the_default_policy_allows_all_at_once() {
    let mut target = settled_at_10(cpu(1, 20, 50));

    // t=75..=345: at 10 replicas each pod runs 100 / 10 = 10%: ratio 0.2, proposal
    //   ceil(0.2 × 10) = 2. The scale-down bound is the highest recommendation younger
    //   than 300 s; the 10 recorded at t=60 is in it until t=360. Stabilised at 10.
    for t in every_15s(75, 345) {
        let d = target.sync(t, 100.0);
        assert_eq!((d.desired, d.rescale), (10, false), "t={t}");
        let n = normalization(&d);
        assert_eq!((n.proposal, n.stabilized), (2, 10), "t={t}");
        assert_eq!(n.stabilization, Stabilization::ScaleDownStabilized);
    }

    // t=360: the t=60 record is 300 s old, out of the window; every record left is 2.
    //   The default policy, Percent 100 per 15 s, allows int32(10 × (1 − 1)) = 0, below
    //   min 1, so only min binds: 2 is within range → 10 to 2 in one step.
    let d = target.sync(360, 100.0);
    assert_eq!(d.desired, 2);
    assert_eq!(normalization(&d).limit, Limit::DesiredWithinRange);

    // t=375: 100 / 2 = 50%: on target.
    assert_eq!(target.sync(375, 100.0).desired, 2);
}

#[test]
fn a_pods_policy_paces_the_fall_once_the_window_has_passed() {
    // Scale down by at most 2 pods per 60 s.
    let mut spec = cpu(1, 20, 50);
    spec.behavior = Some(HpaBehavior {
        scale_up: None,
        scale_down: Some(ScalingRules {
            policies: Some(vec![ScalingPolicy::pods(2, 60)]),
            ..ScalingRules::default()
        }),
    });
    let mut target = settled_at_10(spec);

    // t=75..=345: held at 10 by the window, as above.
    assert_eq!(target.run(every_15s(75, 345), 100.0), [10; 19]);

    // t=360: stabilised to 2. No event within 60 s: start 10, Pods 10 − 2 = 8 → 8
    //        (ScaleDownLimit). Event −2 at t=360.
    // t=375: 100 / 8 = 12.5% → 12 → ratio 0.24, ceil(1.92) = 2. The −2 is 15 s old,
    //        inside 60 s: start 8 + 2 = 10, limit 8 = current: hold. Same at 390, 405.
    // t=420: the −2 is 60 s old, out: start 8, limit 6 → 6.
    // t=435..=465: 16.67% → 16 → 0.32, ceil(1.92) = 2; start 6 + 2 = 8, limit 6: hold.
    // t=480: start 6 → 4. t=495..=525: 25% → 0.5, proposal 2; limit 4: hold.
    // t=540: start 4 → 2 (limit 2, and 2 is not below it: DesiredWithinRange).
    let replicas = target.run(every_15s(360, 555), 100.0);
    assert_eq!(replicas, [8, 8, 8, 8, 6, 6, 6, 6, 4, 4, 4, 4, 2, 2]);

    // Each scale-down event recycled the slot of the previous one, older than the
    // longest period (60 s), so the history never grew past one event.
    assert_eq!(target.hpa.events.down.len(), 1);
}

#[test]
fn a_fresh_hpa_waits_a_full_window_before_scaling_down() {
    // The first sync seeds the recommendations with the current count
    // (`recordInitialRecommendation`), so even an HPA that starts under low load holds.
    let mut target = Target::new(cpu(1, 20, 50), 10);

    // t=0..=285: proposal 2, but the seed 10 (t=0) is in the window: 10.
    assert_eq!(target.run(every_15s(0, 285), 100.0), [10; 20]);
    // t=300: the seed is 300 s old: out. → 2.
    assert_eq!(target.sync(300, 100.0).desired, 2);
}
