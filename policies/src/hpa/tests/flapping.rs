//! Scenario 4: load that flaps within the stabilisation windows is smoothed
//! (`stabilizeRecommendationWithBehaviors`: the highest recommendation of the
//! scale-down window, the lowest of the scale-up window).

use super::*;

#[test]
fn dips_every_other_sync_never_scale_down() {
    let mut target = Target::new(cpu(1, 20, 50), 10);

    // Demand alternates 500 (50%: proposal 10) and 250 (25%: ratio 0.5, proposal 5).
    // Every dip finds a 10 recorded 15 s earlier in the 300 s window: stabilised to 10.
    for t in every_15s(0, 600) {
        let dip = (t / 15) % 2 == 1;
        let d = target.sync(t, if dip { 250.0 } else { 500.0 });
        assert_eq!((d.desired, d.rescale), (10, false), "t={t}");
        if dip {
            let n = normalization(&d);
            assert_eq!(n.proposal, 5);
            assert_eq!(n.stabilization, Stabilization::ScaleDownStabilized);
        }
    }
}

#[test]
fn spikes_inside_a_scale_up_window_wait_until_they_are_sustained() {
    // A 60 s scale-up window: scale up only to the lowest recommendation of the last
    // minute.
    let mut spec = cpu(1, 20, 50);
    spec.behavior = Some(HpaBehavior {
        scale_up: Some(ScalingRules {
            stabilization_window_seconds: Some(60),
            ..ScalingRules::default()
        }),
        scale_down: None,
    });
    let mut target = Target::new(spec, 4);

    // t=0:  demand 200, 50%: proposal 4.
    // t=15: demand 400, 100%: ratio 2, proposal 8. The up bound is the lowest
    //       recommendation of the last 60 s, 4 (seed and t=0): stays 4
    //       (ScaleUpStabilized).
    // t=30: 200: 4. t=45: 400: 8, held by the 4 of t=30.
    let d = target.sync(0, 200.0);
    assert_eq!(d.desired, 4);
    let d = target.sync(15, 400.0);
    assert_eq!(d.desired, 4);
    assert_eq!(
        normalization(&d).stabilization,
        Stabilization::ScaleUpStabilized
    );
    assert_eq!(target.sync(30, 200.0).desired, 4);
    assert_eq!(target.sync(45, 400.0).desired, 4);

    // From t=60 the spike holds. The last 4 was recorded at t=30; it counts while
    // younger than 60 s, so through t=75. At t=90 the window holds only 8s (t=45, 60,
    // 75): stabilised 8; rate limit max(4 + 4, 4 × 2) = 8 → 8. At t=105: 50%, stays.
    assert_eq!(target.run(every_15s(60, 105), 400.0), [4, 4, 8, 8]);
}
