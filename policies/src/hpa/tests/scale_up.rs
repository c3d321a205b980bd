//! Scenario 2: a demand step up under the default behavior, scale-up
//! `max(4 pods, 100%)` per 15 s (defaults.go `defaultHPAScaleUpRules`), applied by
//! `calculateScaleUpLimitWithScalingRules` against the scale events of each period.

use super::*;

#[test]
fn tripled_load_from_4_replicas_goes_8_then_12() {
    // 4 replicas at 50% target; demand jumps to 3× what they serve at target:
    // 3 × 4 × 50 = 600 (percent of one request, summed).
    let mut target = Target::new(cpu(1, 20, 50), 4);

    // t=0: each pod at 600 / 4 = 150%: ratio 3, proposal ceil(3 × 4) = 12.
    //   Stabilisation: scale-up window 0 counts nothing, so the up bound is 12; the
    //   scale-down window holds the seed (4) and the bound is max(12, 4) = 12: 12.
    //   Rate: no events yet, the period starts at 4: Pods 4 + 4 = 8, Percent
    //   ceil(4 × 2) = 8; Max picks 8 → 8, limited (ScaleUpLimit).
    let d = target.sync(0, 600.0);
    assert_eq!(d.desired, 8);
    assert_eq!(
        normalization(&d),
        Normalization {
            proposal: 12,
            stabilized: 12,
            stabilization: Stabilization::ReadyForNewScale,
            limit: Limit::ScaleUpLimit,
        }
    );

    // t=15: 600 / 8 = 75%: ratio 1.5, proposal ceil(1.5 × 8) = 12. The +4 event of t=0
    //   is 15 s old, outside the 15 s period, so the period starts at 8: Pods 12,
    //   Percent 16, Max 16 ≥ 12 → 12, within range.
    let d = target.sync(15, 600.0);
    assert_eq!(d.desired, 12);
    assert_eq!(normalization(&d).limit, Limit::DesiredWithinRange);

    // t=30: 600 / 12 = 50%: ratio 1, within tolerance: stays 12.
    let d = target.sync(30, 600.0);
    assert_eq!((d.desired, d.rescale), (12, false));
}

#[test]
fn a_tenfold_jump_from_2_shows_both_policies_winning_in_turn() {
    // 2 replicas at 50%, demand 10 × 2 × 50 = 1000.
    let mut target = Target::new(cpu(1, 40, 50), 2);

    // t=0:  500%  → ratio 10, proposal 20. Pods 2 + 4 = 6 beats Percent 2 × 2 = 4 → 6.
    // t=15: 1000 / 6 = 166.67% → 166 (whole percent) → ratio 3.32,
    //       ceil(3.32 × 6) = ceil(19.92) = 20. Pods 10, Percent 12 wins → 12.
    // t=30: 1000 / 12 = 83.33% → 83 → 1.66, ceil(19.92) = 20. Pods 16, Percent 24 → 20.
    // t=45: 50% → within tolerance, 20.
    assert_eq!(target.run(every_15s(0, 45), 1000.0), [6, 12, 20, 20]);
}

#[test]
fn syncing_faster_than_the_period_counts_earlier_steps_against_it() {
    // Same step as the first test, but the driver syncs every 5 s.
    let mut target = Target::new(cpu(1, 20, 50), 4);

    // t=0:  4 → 8 as before; event +4 at t=0.
    // t=5:  75% → proposal 12. The +4 is 5 s old, inside the 15 s period: the period
    //       started at 8 − 4 = 4, so Pods 8, Percent 8: the limit is 8 = current. Hold.
    // t=10: the same.
    // t=15: the event is 15 s old, out of the period: start 8, limit 16 → 12.
    let replicas = target.run([0, 5, 10, 15], 600.0);
    assert_eq!(replicas, [8, 8, 8, 12]);
}
