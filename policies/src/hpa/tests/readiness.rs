//! The replica calculation per metric type, and the unready/missing-pod adjustments of
//! replica_calculator.go (`GetResourceReplicas`, `calcPlainMetricReplicas`,
//! `getUsageRatioReplicaCount`, `GetExternalPerPodMetricReplicas`).

use super::*;

fn spec(source: MetricSource, target: MetricTarget) -> HpaSpec {
    HpaSpec::new(1, 100, MetricSpec::new(source, target)).with_behavior(HpaBehavior::default())
}

/// What the metric alone asks for at `current` replicas; `None` if the sync could not
/// compute it.
fn proposal(spec: HpaSpec, current: u32, sample: MetricSample) -> Option<u32> {
    let mut hpa = Hpa::new(spec).expect("valid spec");
    let d = hpa.sync(0, current, Some(sample)).expect("sync");
    d.normalization().map(|n| n.proposal)
}

fn pods_average(target: f64) -> HpaSpec {
    spec(
        MetricSource::Pods,
        MetricTarget::AverageValue {
            average_value: target,
        },
    )
}

#[test]
fn unready_pods_count_as_idle_on_a_scale_up() {
    // 6 replicas, 4 ready averaging 12 against a target of 10, 2 still starting.
    let sample = MetricSample::new(12.0).with_pods(PodCounts::new(4, 2, 0));

    // Without the unready pods: ratio 1.2, ceil(1.2 × 4) = 5 — a scale *down* from 6.
    // calcPlainMetricReplicas sees unready pods and a ratio above 1, so it counts them
    // as using 0: (4 × 12000 + 2 × 0) / 6 = 8000 milli, new ratio 0.8. The direction
    // flipped (1.2 → 0.8), so it keeps the current 6.
    assert_eq!(proposal(pods_average(10.0), 6, sample), Some(6));

    // Ready pods averaging 30: ratio 3. Rebuilt: 4 × 30000 / 6 = 20000, ratio 2,
    // ceil(2 × 6) = 12 — the same as ceil(3 × 4), the total over the target.
    let sample = MetricSample::new(30.0).with_pods(PodCounts::new(4, 2, 0));
    assert_eq!(proposal(pods_average(10.0), 6, sample), Some(12));
}

#[test]
fn missing_pods_count_as_at_target_on_a_scale_down() {
    // 6 replicas, 4 reporting an average of 5 against 10, 2 reporting nothing.
    let sample = MetricSample::new(5.0).with_pods(PodCounts::new(4, 0, 2));

    // Ratio 0.5 < 1, so each missing pod is taken to use the target: (4 × 5000 +
    // 2 × 10000) / 6 = 6666 milli (integer division), ratio 0.6666, ceil(0.6666 × 6)
    // = ceil(3.9996) = 4. Ignoring them would have asked for ceil(0.5 × 4) = 2.
    assert_eq!(proposal(pods_average(10.0), 6, sample), Some(4));
}

#[test]
fn missing_pods_at_full_request_can_cancel_a_cpu_scale_down() {
    // CPU at 50% target; 4 replicas, 2 reporting 20%, 2 missing.
    let spec = spec(
        MetricSource::Resource,
        MetricTarget::Utilization {
            average_utilization: 50,
        },
    );
    let sample = MetricSample::new(20.0).with_pods(PodCounts::new(2, 0, 2));

    // Ratio 0.4 < 1: missing pods count at max(100, 50) = 100% of their request.
    // With equal requests: (2 × 20 + 2 × 100) / 4 = 60%, new ratio 1.2 — the direction
    // flipped, so the current 4 stays.
    assert_eq!(proposal(spec, 4, sample), Some(4));
}

#[test]
fn no_ready_pod_means_no_metric() {
    // Every pod unready: no sample is left to average ("did not receive metrics for
    // targeted pods"), the sync fails and nothing changes.
    let sample = MetricSample::new(50.0).with_pods(PodCounts::new(0, 3, 0));
    let mut hpa = Hpa::new(pods_average(10.0)).expect("valid spec");
    let d = hpa.sync(0, 3, Some(sample)).expect("sync");
    assert_eq!(d.reason, HpaReason::MetricUnavailable);
    assert_eq!((d.desired, d.rescale), (3, false));
}

#[test]
fn external_average_value_divides_the_total_by_the_target() {
    let external = || {
        spec(
            MetricSource::External,
            MetricTarget::AverageValue {
                average_value: 100.0,
            },
        )
    };

    // 10 replicas, a total of 950 against 100 per pod: ratio 950 / (100 × 10) = 0.95,
    // within tolerance, so `status.replicas`: 10.
    assert_eq!(proposal(external(), 10, MetricSample::new(950.0)), Some(10));

    // 1250: ratio 1.25, so ceil(1250 / 100) = 13.
    assert_eq!(
        proposal(external(), 10, MetricSample::new(1250.0)),
        Some(13)
    );

    // Upstream divides by `status.replicas`, not `spec.replicas`: with 10 asked for but
    // 8 existing, 800 gives ratio 800 / (100 × 8) = 1.0, within tolerance, and the
    // proposal is the *status* count, 8.
    let pods = PodCounts::new(6, 2, 0);
    assert_eq!(
        proposal(external(), 10, MetricSample::new(800.0).with_pods(pods)),
        Some(8)
    );
}

#[test]
fn external_value_scales_the_ready_pods() {
    let external = || spec(MetricSource::External, MetricTarget::Value { value: 100.0 });

    // 300 against 100: ratio 3; 4 ready pods: ceil(3 × 4) = 12.
    assert_eq!(proposal(external(), 4, MetricSample::new(300.0)), Some(12));

    // getUsageRatioReplicaCount multiplies by the *ready* pods only: with 2 of the 4
    // still starting, ceil(3 × 2) = 6.
    let pods = PodCounts::new(2, 2, 0);
    assert_eq!(
        proposal(external(), 4, MetricSample::new(300.0).with_pods(pods)),
        Some(6)
    );
}

#[test]
fn pods_average_value_in_milli_units() {
    // 0.3 against 0.25 per pod, 4 pods: 300 / 250 milli = 1.2, ceil(1.2 × 4) = 5.
    assert_eq!(
        proposal(pods_average(0.25), 4, MetricSample::new(0.3)),
        Some(5)
    );
}
