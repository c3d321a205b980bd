//! Defaults (defaults.go, kube-controller-manager flags), validation (validation.go),
//! clock handling and the history bound.

use super::*;
use crate::hpa::resolve::{Mode, Resolved};

#[test]
fn an_empty_behavior_takes_the_api_defaults() {
    let resolved = Resolved::new(&cpu(1, 10, 50)).expect("valid spec");
    let Mode::Behavior { up, down } = resolved.mode else {
        panic!("behavior path expected");
    };

    // Scale up: no window, Max of Pods 4 and Percent 100 per 15 s.
    assert_eq!(up.window, 0);
    assert_eq!(up.select, SelectPolicy::Max);
    let up_policies: Vec<_> = up
        .policies
        .iter()
        .map(|p| (p.kind, p.value, p.period))
        .collect();
    assert_eq!(
        up_policies,
        [
            (PolicyType::Pods, 4, 15_000),
            (PolicyType::Percent, 100, 15_000)
        ]
    );

    // Scale down: the controller's 300 s window, Percent 100 per 15 s.
    assert_eq!(down.window, 300_000);
    assert_eq!(down.select, SelectPolicy::Max);
    let down_policies: Vec<_> = down
        .policies
        .iter()
        .map(|p| (p.kind, p.value, p.period))
        .collect();
    assert_eq!(down_policies, [(PolicyType::Percent, 100, 15_000)]);

    // Tolerance 0.1 both ways; min defaults to 1 in the API, and the sync period is 15 s.
    assert_eq!(resolved.tolerances.up, 0.1);
    assert_eq!(resolved.tolerances.down, 0.1);
    assert_eq!(
        Hpa::new(cpu(1, 10, 50)).expect("valid").sync_period(),
        15_000
    );
}

#[test]
fn unset_fields_fall_back_one_by_one() {
    // Only the select policy is set for scale down: the policies and the window still
    // come from the defaults (`copyHPAScalingRules`), the window from the flag.
    let mut spec = cpu(1, 10, 50);
    spec.controller.downscale_stabilization_seconds = 120;
    spec.behavior = Some(HpaBehavior {
        scale_up: None,
        scale_down: Some(ScalingRules {
            select_policy: Some(SelectPolicy::Min),
            ..ScalingRules::default()
        }),
    });
    let Mode::Behavior { down, .. } = Resolved::new(&spec).expect("valid").mode else {
        panic!("behavior path expected");
    };
    assert_eq!(down.select, SelectPolicy::Min);
    assert_eq!(down.window, 120_000);
    assert_eq!(down.policies.len(), 1);
}

#[test]
fn no_behavior_is_the_legacy_path() {
    let resolved = Resolved::new(&HpaSpec::new(1, 10, cpu_metric(50))).expect("valid");
    assert!(matches!(resolved.mode, Mode::Legacy { window: 300_000 }));
}

#[test]
fn what_the_api_server_rejects_is_rejected() {
    let field = |spec: HpaSpec| Hpa::new(spec).expect_err("invalid").field;

    let mut spec = cpu(1, 10, 50);
    spec.min_replicas = 0;
    assert_eq!(field(spec), "min_replicas");

    assert_eq!(field(cpu(5, 4, 50)), "max_replicas");
    assert_eq!(field(cpu(1, 10, 0)), "metric.target.average_utilization");

    // Utilization is for Resource metrics only; Value not for per-pod metrics.
    let spec = HpaSpec::new(
        1,
        10,
        MetricSpec::new(
            MetricSource::External,
            MetricTarget::Utilization {
                average_utilization: 50,
            },
        ),
    );
    assert_eq!(field(spec), "metric.target.type");
    let spec = HpaSpec::new(
        1,
        10,
        MetricSpec::new(MetricSource::Pods, MetricTarget::Value { value: 1.0 }),
    );
    assert_eq!(field(spec), "metric.target.type");
    let spec = HpaSpec::new(
        1,
        10,
        MetricSpec::new(
            MetricSource::Pods,
            MetricTarget::AverageValue { average_value: 0.0 },
        ),
    );
    assert_eq!(field(spec), "metric.target.average_value");

    let with_down = |rules: ScalingRules| {
        let mut spec = cpu(1, 10, 50);
        spec.behavior = Some(HpaBehavior {
            scale_up: None,
            scale_down: Some(rules),
        });
        spec
    };
    let e = Hpa::new(with_down(ScalingRules {
        policies: Some(vec![]),
        ..ScalingRules::default()
    }))
    .expect_err("empty policies");
    assert_eq!(
        e.to_string(),
        "hpa.behavior.scale_down.policies: must specify at least one policy"
    );
    assert_eq!(
        field(with_down(ScalingRules {
            policies: Some(vec![ScalingPolicy::pods(1, 1801)]),
            ..ScalingRules::default()
        })),
        "behavior.scale_down.policies[0].period_seconds"
    );
    assert_eq!(
        field(with_down(ScalingRules {
            policies: Some(vec![ScalingPolicy::percent(0, 15)]),
            ..ScalingRules::default()
        })),
        "behavior.scale_down.policies[0].value"
    );
    assert_eq!(
        field(with_down(ScalingRules {
            stabilization_window_seconds: Some(3601),
            ..ScalingRules::default()
        })),
        "behavior.scale_down.stabilization_window_seconds"
    );
    assert_eq!(
        field(with_down(ScalingRules {
            tolerance: Some(-0.1),
            ..ScalingRules::default()
        })),
        "behavior.scale_down.tolerance"
    );
}

#[test]
fn a_clock_running_backwards_or_a_broken_sample_is_refused_and_changes_nothing() {
    let mut hpa = Hpa::new(cpu(1, 10, 50)).expect("valid spec");
    hpa.sync(secs(30), 4, Some(MetricSample::new(50.0)))
        .expect("sync");

    assert_eq!(
        hpa.sync(secs(15), 4, Some(MetricSample::new(50.0))),
        Err(HpaSyncError::ClockWentBackwards {
            now: 15_000,
            previous: 30_000
        })
    );
    assert!(matches!(
        hpa.sync(secs(45), 4, Some(MetricSample::new(f64::NAN))),
        Err(HpaSyncError::NonFiniteSample { .. })
    ));
    // Neither was recorded: the seed and the t=30 recommendation only.
    assert_eq!(hpa.recommendations.len(), 2);
}

#[test]
fn histories_stay_bounded() {
    let mut target = Target::new(cpu(1, 10, 50), 4);

    // A sync every millisecond for 5000 ms inside a 300 s window: the cap holds.
    for t in 0..5000 {
        target
            .hpa
            .sync(t, 4, Some(MetricSample::new(50.0)))
            .expect("sync");
    }
    assert_eq!(target.hpa.recommendations.len(), HISTORY_CAP);

    // After a quiet hour, everything older than the 300 s window is dropped.
    target
        .hpa
        .sync(secs(3600), 4, Some(MetricSample::new(50.0)))
        .expect("sync");
    assert_eq!(target.hpa.recommendations.len(), 1);
}
