//! What one HPA sync decided, and why, in the words of upstream's status conditions.

/// The outcome of one sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HpaDecision {
    /// The replica count the HPA sets; `current_replicas` when it leaves the target alone.
    pub desired: u32,
    /// Whether the HPA writes a new count to the target (`desired != current_replicas`).
    pub rescale: bool,
    pub reason: HpaReason,
}

/// Why `desired` is what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HpaReason {
    /// The target has 0 replicas and `min_replicas` is not 0: upstream reads that as
    /// autoscaling switched off (`ScalingDisabled`), and leaves it at 0.
    ScalingDisabled,
    /// The target was above `max_replicas`: set to the maximum at once, with no
    /// stabilisation or rate limit ("Current number of replicas above Spec.MaxReplicas").
    AboveMaxReplicas,
    /// The target was below `min_replicas`: set to the minimum at once.
    BelowMinReplicas,
    /// No usable sample (none given, or no ready pod to average over): upstream fails the
    /// sync (`FailedComputeMetricsReplicas`), records nothing and leaves the count alone.
    MetricUnavailable,
    /// The metric was computed and normalised.
    Metric(Normalization),
}

/// How a metric's proposal became the desired count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Normalization {
    /// What the metric alone asks for, after the tolerance (never below 0).
    pub proposal: u32,
    /// After the stabilisation window.
    pub stabilized: u32,
    /// The `AbleToScale` condition's reason.
    pub stabilization: Stabilization,
    /// The `ScalingLimited` condition's reason.
    pub limit: Limit,
}

/// Upstream's `AbleToScale` reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stabilization {
    /// The window did not change the proposal.
    ReadyForNewScale,
    /// A lower recent recommendation held a scale up back.
    ScaleUpStabilized,
    /// A higher recent recommendation held a scale down back.
    ScaleDownStabilized,
}

/// Upstream's `ScalingLimited` reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    DesiredWithinRange,
    /// Capped by the scale-up rate (policies, or the legacy `max(2 × current, 4)`).
    ScaleUpLimit,
    /// Floored by the scale-down rate.
    ScaleDownLimit,
    /// Capped at `max_replicas`.
    TooManyReplicas,
    /// Floored at `min_replicas`.
    TooFewReplicas,
}

// === impl HpaDecision ===

impl HpaDecision {
    /// The normalisation details, when the metric was computed.
    pub fn normalization(&self) -> Option<&Normalization> {
        match &self.reason {
            HpaReason::Metric(n) => Some(n),
            _ => None,
        }
    }
}
