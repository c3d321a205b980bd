//! The replica calculation: from one metric sample to the replica count the metric alone
//! asks for, following upstream's pkg/controller/podautoscaler/replica_calculator.go.
//!
//! Upstream reads per-pod samples and the pod list itself; we are handed one aggregated
//! value per sync plus, optionally, pod counts by readiness ([`PodCounts`]). With those
//! counts the readiness and missing-pod adjustments of `GetResourceReplicas` and
//! `calcPlainMetricReplicas` run as upstream, under one assumption, stated where it is
//! used: the per-pod values we cannot see (a sum, the requests) are rebuilt from the
//! average and the count.
//!
//! Like upstream, values are compared in integer milli-units (`Quantity.MilliValue()`),
//! and per-pod averages truncate, so a tolerance boundary falls where upstream's does.

/// One observation of the HPA's metric, in the unit its target is written in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricSample {
    /// `Utilization`: the ready pods' usage as a percent of their request.
    /// `Resource`/`Pods` `AverageValue`: the ready pods' average.
    /// `Object`/`External`: the object's value, or the sum of the external series.
    pub value: f64,
    /// Pods by readiness; `None` means every current replica is ready and reporting.
    pub pods: Option<PodCounts>,
}

/// The target's pods as the controller groups them (`groupPods`).
///
/// Only per-pod metrics (`Resource`, `Pods`) use all three counts. `Object`/`External`
/// use `ready + missing` as the ready pod count of a `Value` target, and the sum of all
/// three as `status.replicas` for an `AverageValue` target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodCounts {
    /// Running, ready, and reporting a sample: the pods `value` was averaged over.
    pub ready: u32,
    /// Pending, or (for CPU) still initialising: their samples are ignored, and on a scale
    /// up they count as using nothing.
    pub unready: u32,
    /// Running but without a sample: on a scale down they count as at target (100% of the
    /// request, or the target if higher, for `Utilization`); on a scale up as using nothing.
    pub missing: u32,
}

/// Scale-down and scale-up tolerances around a usage ratio of 1 (upstream `Tolerances`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Tolerances {
    pub down: f64,
    pub up: f64,
}

/// The calculation a `(source, target type)` pair selects.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Metric {
    /// `Resource` + `Utilization`: `GetResourceReplicas`.
    Utilization { target_percent: i64 },
    /// `Resource`/`Pods` + `AverageValue`: `GetRawResourceReplicas` / `GetMetricReplicas`,
    /// both `calcPlainMetricReplicas`.
    PodAverage { target_milli: i64 },
    /// `Object`/`External` + `Value`: `GetObjectMetricReplicas` /
    /// `GetExternalMetricReplicas`, both `getUsageRatioReplicaCount`.
    TotalValue { target_milli: i64 },
    /// `Object`/`External` + `AverageValue`: `GetObjectPerPodMetricReplicas` /
    /// `GetExternalPerPodMetricReplicas`.
    TotalAverage { target_milli: i64 },
}

// === impl MetricSample ===

impl MetricSample {
    /// A sample from a target whose replicas are all ready and reporting.
    pub fn new(value: f64) -> Self {
        Self { value, pods: None }
    }

    pub fn with_pods(mut self, pods: PodCounts) -> Self {
        self.pods = Some(pods);
        self
    }
}

// === impl PodCounts ===

impl PodCounts {
    pub fn new(ready: u32, unready: u32, missing: u32) -> Self {
        Self {
            ready,
            unready,
            missing,
        }
    }
}

// === impl Tolerances ===

impl Tolerances {
    pub fn both(tolerance: f64) -> Self {
        Self {
            down: tolerance,
            up: tolerance,
        }
    }

    /// `Tolerances.isWithin`: inclusive at both ends.
    fn is_within(self, ratio: f64) -> bool {
        (1.0 - self.down) <= ratio && ratio <= (1.0 + self.up)
    }
}

// === impl Metric ===

impl Metric {
    /// The replica count this sample asks for, or `None` where upstream returns an error
    /// (no ready pod to average over, or no pods at all). `current` is the scale's
    /// `spec.replicas`. It is never 0 here (at 0 the controller stops before the metric,
    /// and `min_replicas` ≥ 1), so `getUsageRatioReplicaCount`'s scale-from-zero branch,
    /// `ceil(usageRatio)`, has no counterpart.
    pub fn replicas(
        self,
        tolerances: Tolerances,
        current: i64,
        sample: &MetricSample,
    ) -> Option<i64> {
        let pods = sample.pods.unwrap_or(PodCounts {
            ready: u32::try_from(current).unwrap_or(u32::MAX),
            unready: 0,
            missing: 0,
        });
        let ready = i64::from(pods.ready);
        let unready = i64::from(pods.unready);
        let missing = i64::from(pods.missing);

        match self {
            Metric::Utilization { target_percent } => {
                // `GetResourceUtilizationRatio` truncates to a whole percent. We work in
                // milli-percent so the rebuilt sums below truncate like upstream's.
                let usage = to_milli(sample.value);
                let fallback = target_percent.max(100) * 1000;
                per_pod(
                    tolerances,
                    current,
                    PerPod {
                        usage,
                        ready,
                        unready,
                        missing,
                        missing_on_scale_down: fallback,
                        ratio: |usage| (usage / 1000) as f64 / target_percent as f64,
                    },
                )
            }
            Metric::PodAverage { target_milli } => per_pod(
                tolerances,
                current,
                PerPod {
                    usage: to_milli(sample.value),
                    ready,
                    unready,
                    missing,
                    missing_on_scale_down: target_milli,
                    ratio: |usage| usage as f64 / target_milli as f64,
                },
            ),
            Metric::TotalValue { target_milli } => {
                // `getUsageRatioReplicaCount`; `getReadyPodsCount` fails on an empty pod list.
                if ready + unready + missing == 0 {
                    return None;
                }
                let ratio = to_milli(sample.value) as f64 / target_milli as f64;
                if tolerances.is_within(ratio) {
                    return Some(current);
                }
                let ready_pods = ready + missing;
                Some(ceil_int32(ratio * ready_pods as f64))
            }
            Metric::TotalAverage { target_milli } => {
                // `Get{Object,External}PerPodMetricReplicas`: divides by `status.replicas`
                // and ignores readiness; the result is `ceil(total / target)`.
                let usage = to_milli(sample.value) as f64;
                let status = ready + unready + missing;
                let ratio = usage / (target_milli as f64 * status as f64);
                if tolerances.is_within(ratio) {
                    return Some(status);
                }
                Some(ceil_int32(usage / target_milli as f64))
            }
        }
    }
}

/// Inputs to the per-pod calculation shared by `GetResourceReplicas` and
/// `calcPlainMetricReplicas`. `usage` is the ready pods' average in milli-units.
struct PerPod<F> {
    usage: i64,
    ready: i64,
    unready: i64,
    missing: i64,
    /// What a missing pod is assumed to use when the ratio is below 1.
    missing_on_scale_down: i64,
    /// From an average usage to the usage ratio.
    ratio: F,
}

fn per_pod<F: Fn(i64) -> f64>(tolerances: Tolerances, current: i64, p: PerPod<F>) -> Option<i64> {
    // No sample left once unready pods are dropped: upstream's "did not receive metrics
    // for targeted pods (pods might be unready)".
    if p.ready == 0 {
        return None;
    }
    let usage_ratio = (p.ratio)(p.usage);

    let scale_up_with_unready = p.unready > 0 && usage_ratio > 1.0;
    if !scale_up_with_unready && p.missing == 0 {
        if tolerances.is_within(usage_ratio) {
            return Some(current);
        }
        return Some(ceil_int32(usage_ratio * p.ready as f64));
    }

    // Rebuild the per-pod sum as average × ready. Upstream sums the raw samples; ours may
    // sit up to ready − 1 milli-units lower, because the average we get is truncated.
    let mut total = p.usage.saturating_mul(p.ready);
    let mut pods = p.ready;
    if p.missing > 0 {
        if usage_ratio < 1.0 {
            total = total.saturating_add(p.missing_on_scale_down.saturating_mul(p.missing));
            pods += p.missing;
        } else if usage_ratio > 1.0 {
            pods += p.missing;
        }
        // At exactly 1.0 upstream leaves the missing pods out.
    }
    if scale_up_with_unready {
        pods += p.unready;
    }
    let new_usage_ratio = (p.ratio)(total / pods);

    // Too small a change, or one that would flip direction: keep the current count.
    if tolerances.is_within(new_usage_ratio)
        || (usage_ratio < 1.0 && new_usage_ratio > 1.0)
        || (usage_ratio > 1.0 && new_usage_ratio < 1.0)
    {
        return Some(current);
    }
    let new_replicas = ceil_int32(new_usage_ratio * pods as f64);
    if (new_usage_ratio < 1.0 && new_replicas > current)
        || (new_usage_ratio > 1.0 && new_replicas < current)
    {
        return Some(current);
    }
    Some(new_replicas)
}

/// A value in milli-units, rounded to the nearest: inputs are decimals, and rounding
/// keeps `0.3` at 300 where truncating its binary form could give 299.
pub(crate) fn to_milli(value: f64) -> i64 {
    // `as` saturates at the i64 bounds; non-finite samples are rejected before this.
    (value * 1000.0).round() as i64
}

/// `int32(math.Ceil(x))`, saturating where upstream caps at `MaxInt32`.
fn ceil_int32(x: f64) -> i64 {
    (x.ceil() as i64).clamp(i64::from(i32::MIN), i64::from(i32::MAX))
}
