//! Scenario 1: the tolerance band (`Tolerances.isWithin`, replica_calculator.go).

use super::*;

/// Proposal at 4 replicas for a CPU sample against an 80% target.
fn proposal_at_4(spec: HpaSpec, utilization: f64) -> u32 {
    let mut hpa = Hpa::new(spec).expect("valid spec");
    let d = hpa
        .sync(0, 4, Some(MetricSample::new(utilization)))
        .expect("sync");
    normalization(&d).proposal
}

#[test]
fn usage_within_ten_percent_keeps_the_replicas() {
    let spec = || cpu(1, 20, 80);

    // 84% against 80%: usageRatio = 84 / 80 = 1.05, inside [1 − 0.1, 1 + 0.1], so
    // GetResourceReplicas returns currentReplicas: 4.
    assert_eq!(proposal_at_4(spec(), 84.0), 4);

    // 88%: ratio 1.1, and the band is inclusive (`usageRatio <= 1.0 + t.scaleUp`): 4.
    assert_eq!(proposal_at_4(spec(), 88.0), 4);

    // 88.9%: GetResourceUtilizationRatio truncates to a whole percent, 88, so still 4.
    assert_eq!(proposal_at_4(spec(), 88.9), 4);

    // 89%: ratio 1.1125 is outside: ceil(1.1125 × 4) = ceil(4.45) = 5.
    assert_eq!(proposal_at_4(spec(), 89.0), 5);

    // 72%: ratio 0.9, inclusive at the bottom too: 4. 71%: 0.8875, outside:
    // ceil(0.8875 × 4) = ceil(3.55) = 4 — rounding up keeps 4 anyway.
    assert_eq!(proposal_at_4(spec(), 72.0), 4);
    assert_eq!(proposal_at_4(spec(), 71.0), 4);
    // 60%: ratio 0.75: ceil(0.75 × 4) = 3.
    assert_eq!(proposal_at_4(spec(), 60.0), 3);
}

#[test]
fn a_direction_can_carry_its_own_tolerance() {
    // KEP-4951: scale_up.tolerance 0 makes any rise count; scale-down keeps the
    // controller's 0.1 (`tolerancesForHpa`).
    let spec = || {
        let mut spec = cpu(1, 20, 80);
        spec.behavior = Some(HpaBehavior {
            scale_up: Some(ScalingRules {
                tolerance: Some(0.0),
                ..ScalingRules::default()
            }),
            scale_down: None,
        });
        spec
    };

    // 84%: ratio 1.05 > 1 + 0: ceil(1.05 × 4) = ceil(4.2) = 5.
    assert_eq!(proposal_at_4(spec(), 84.0), 5);
    // 76%: ratio 0.95 ≥ 1 − 0.1: within, 4.
    assert_eq!(proposal_at_4(spec(), 76.0), 4);
}

#[test]
fn the_controller_tolerance_widens_the_band_for_both_directions() {
    // --horizontal-pod-autoscaler-tolerance 0.2 on the legacy path.
    let mut spec = HpaSpec::new(1, 20, cpu_metric(80));
    spec.controller.tolerance = 0.2;

    // 95%: ratio 1.1875 ≤ 1.2: 4. 97%: 1.2125: ceil(4.85) = 5.
    assert_eq!(proposal_at_4(spec.clone(), 95.0), 4);
    assert_eq!(proposal_at_4(spec.clone(), 97.0), 5);
    // 64%: ratio 0.8 ≥ 0.8: 4.
    assert_eq!(proposal_at_4(spec, 64.0), 4);
}
