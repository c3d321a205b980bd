//! Scenario 6: `selectPolicy` Min and Disabled (`calculateScaleUpLimitWithScalingRules`,
//! `calculateScaleDownLimitWithBehaviors`).

use super::*;

fn with_rules(scale_up: Option<ScalingRules>, scale_down: Option<ScalingRules>) -> HpaSpec {
    let mut spec = cpu(1, 100, 50);
    spec.behavior = Some(HpaBehavior {
        scale_up,
        scale_down,
    });
    spec
}

fn select(policy: SelectPolicy) -> ScalingRules {
    ScalingRules {
        select_policy: Some(policy),
        ..ScalingRules::default()
    }
}

#[test]
fn min_on_scale_up_takes_the_smaller_step() {
    // Default policies (Pods 4, Percent 100, per 15 s) with Min. 2 replicas, demand
    // 1000: the proposal is 20 throughout (500% → 20; 250% → 5 × 4; 125% → 2.5 × 8;
    // 83.33% → 83 → ceil(1.66 × 12) = 20; 62.5% → 62 → ceil(1.24 × 16) = 20).
    //
    // t=0:  Pods 2 + 4 = 6, Percent 4: Min → 4.
    // t=15: Pods 8, Percent 8 → 8.
    // t=30: Pods 12, Percent 16 → 12.
    // t=45: Pods 16, Percent 24 → 16.
    // t=60: Pods 20, Percent 32 → 20.
    let mut target = Target::new(with_rules(Some(select(SelectPolicy::Min)), None), 2);
    assert_eq!(target.run(every_15s(0, 60), 1000.0), [4, 8, 12, 16, 20]);

    // Max (the default) from the same start: 6, then Pods 10 / Percent 12 → 12, then
    // Pods 16 / Percent 24 → 20.
    let mut target = Target::new(cpu(1, 100, 50), 2);
    assert_eq!(target.run(every_15s(0, 30), 1000.0), [6, 12, 20]);
}

#[test]
fn min_on_scale_down_takes_the_smaller_step() {
    // Scale down by 50% or 1 pod per 15 s, no window, from 10 replicas at demand 100.
    let rules = |policy| ScalingRules {
        stabilization_window_seconds: Some(0),
        select_policy: Some(policy),
        policies: Some(vec![
            ScalingPolicy::percent(50, 15),
            ScalingPolicy::pods(1, 15),
        ]),
        tolerance: None,
    };

    // Min keeps the higher count: max(int32(n × 0.5), n − 1), one pod per sync, with
    // the proposal at 2 all the way (10% → 0.2 × 10; 11% → ceil(0.22 × 9) = 2; ...).
    // At 3: max(int32(1.5) = 1, 2) = 2.
    let spec = with_rules(None, Some(rules(SelectPolicy::Min)));
    let mut target = Target::new(spec, 10);
    assert_eq!(
        target.run(every_15s(0, 105), 100.0),
        [9, 8, 7, 6, 5, 4, 3, 2]
    );

    // Max keeps the lower: min(5, 9) = 5; then at 5 (20%: 0.4 × 5 = 2):
    // min(int32(2.5) = 2, 4) = 2.
    let spec = with_rules(None, Some(rules(SelectPolicy::Max)));
    let mut target = Target::new(spec, 10);
    assert_eq!(target.run(every_15s(0, 15), 100.0), [5, 2]);
}

#[test]
fn disabled_freezes_its_direction() {
    // Scale-up Disabled: the limit is the current count.
    let spec = with_rules(Some(select(SelectPolicy::Disabled)), None);
    let mut target = Target::new(spec, 4);
    for t in every_15s(0, 120) {
        // 1000 / 4 = 250%: proposal 20, but the limit is 4.
        let d = target.sync(t, 1000.0);
        assert_eq!((d.desired, d.rescale), (4, false), "t={t}");
        assert_eq!(normalization(&d).limit, Limit::ScaleUpLimit);
    }

    // Scale-down Disabled: long after the window, still 10 (ScaleDownLimit).
    let spec = with_rules(None, Some(select(SelectPolicy::Disabled)));
    let mut target = Target::new(spec, 10);
    let replicas = target.run(every_15s(0, 900), 100.0);
    assert!(replicas.iter().all(|&r| r == 10));
    let d = target.sync(915, 100.0);
    assert_eq!(normalization(&d).limit, Limit::ScaleDownLimit);

    // Scale up still works while scale down is disabled: 10 → 20 at 2000 (200%).
    assert_eq!(target.sync(930, 2000.0).desired, 20);
}
