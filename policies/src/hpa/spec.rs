//! The HPA's settings, shaped like `autoscaling/v2` `HorizontalPodAutoscalerSpec` so an
//! operator can carry an HPA's `behavior` over field by field.
//!
//! Field names are the API's in snake_case (`stabilizationWindowSeconds` becomes
//! `stabilization_window_seconds`); enum values keep the API's spelling (`Pods`, `Percent`,
//! `Max`, `Min`, `Disabled`, `Utilization`, ...) so they read the same as in the cluster.
//! Durations stay whole seconds, as in the API, so rounding cannot differ from upstream.

use serde::{Deserialize, Serialize};

/// Upstream `MaxPeriodSeconds` (pkg/apis/autoscaling/validation/validation.go).
pub const MAX_PERIOD_SECONDS: u32 = 1800;
/// Upstream `MaxStabilizationWindowSeconds` (same file).
pub const MAX_STABILIZATION_WINDOW_SECONDS: u32 = 3600;

/// One HorizontalPodAutoscaler: bounds, the metric it follows, and how fast it may move.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HpaSpec {
    /// Lower bound. Upstream defaults it to 1 (`SetDefaults_HorizontalPodAutoscaler`);
    /// 0 needs the alpha `HPAScaleToZero` gate, which we do not model, so it must be ≥ 1.
    #[serde(default = "default_min_replicas")]
    pub min_replicas: u32,
    /// Upper bound; required, as in the API.
    pub max_replicas: u32,
    /// The one metric the HPA follows (upstream takes the max over a list; see the
    /// module docs for why we take one).
    pub metric: MetricSpec,
    /// Absent: the legacy path (`normalizeDesiredReplicas`), which is what the controller
    /// runs for an HPA created without `behavior`. Present, even empty: the behavior path,
    /// with every unset field filled from the API defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HpaBehavior>,
    /// The kube-controller-manager flags that shape every HPA.
    #[serde(default)]
    pub controller: HpaControllerConfig,
}

/// What is measured and the value the HPA steers it towards.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    /// The API's `metrics[].type`.
    #[serde(rename = "type")]
    pub source: MetricSource,
    pub target: MetricTarget,
}

/// The API's metric source types (`ContainerResource` computes as `Resource`).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum MetricSource {
    /// A per-pod resource (CPU, memory) from the resource metrics API.
    Resource,
    /// A per-pod custom metric, averaged over the pods.
    Pods,
    /// One value describing a Kubernetes object.
    Object,
    /// One value (the sum of the matching series) from outside the cluster; prescale's
    /// fleet mode exports its forecast this way (DESIGN.md, "Demand, forecast, scale").
    External,
}

/// The API's `MetricTarget`, one variant per `target.type`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum MetricTarget {
    /// Percent of the pods' resource request (`Resource` only).
    Utilization { average_utilization: u32 },
    /// Per-pod average (`Resource`, `Pods`), or the total divided by the pod count
    /// (`Object`, `External`).
    AverageValue { average_value: f64 },
    /// The value itself (`Object`, `External`).
    Value { value: f64 },
}

/// The API's `HorizontalPodAutoscalerBehavior`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HpaBehavior {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScalingRules>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScalingRules>,
}

/// The API's `HPAScalingRules`: every unset field takes the direction's default, field by
/// field, as upstream's `copyHPAScalingRules` does.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScalingRules {
    /// Up: 0. Down: the controller's `downscale_stabilization_seconds` (300).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stabilization_window_seconds: Option<u32>,
    /// Default `Max`: the policy that allows the biggest change wins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub select_policy: Option<SelectPolicy>,
    /// Up: `[Pods 4 per 15 s, Percent 100 per 15 s]`. Down: `[Percent 100 per 15 s]`.
    /// An explicit empty list is rejected, as upstream validation does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<ScalingPolicy>>,
    /// Per-direction tolerance (KEP-4951, gate `HPAConfigurableTolerance`: alpha in 1.33,
    /// later beta and on by default). Unset: the controller's `tolerance`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
}

/// The API's `HPAScalingPolicy`: at most `value` pods or percent per `period_seconds`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScalingPolicy {
    #[serde(rename = "type")]
    pub kind: PolicyType,
    pub value: u32,
    pub period_seconds: u32,
}

/// The API's `HPAScalingPolicyType`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum PolicyType {
    Pods,
    Percent,
}

/// The API's `ScalingPolicySelect`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum SelectPolicy {
    /// The policy allowing the biggest change wins.
    #[default]
    Max,
    /// The policy allowing the smallest change wins.
    Min,
    /// No change in this direction at all.
    Disabled,
}

/// kube-controller-manager flags that apply to every HPA it runs.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HpaControllerConfig {
    /// `--horizontal-pod-autoscaler-sync-period` (15 s). The caller drives syncs: `Hpa`
    /// never reads it, it is here so a replay driver and the config agree on one value.
    pub sync_period_seconds: u32,
    /// `--horizontal-pod-autoscaler-tolerance` (0.1): ratios within ±10% of 1 change nothing.
    pub tolerance: f64,
    /// `--horizontal-pod-autoscaler-downscale-stabilization` (5 m): the legacy path's
    /// window, and the behavior path's scale-down window when the rules leave it unset.
    pub downscale_stabilization_seconds: u32,
}

// === impl HpaSpec ===

impl HpaSpec {
    /// An HPA with upstream defaults everywhere and no `behavior` (the legacy path).
    pub fn new(min_replicas: u32, max_replicas: u32, metric: MetricSpec) -> Self {
        Self {
            min_replicas,
            max_replicas,
            metric,
            behavior: None,
            controller: HpaControllerConfig::default(),
        }
    }

    /// The same HPA on the behavior path.
    pub fn with_behavior(mut self, behavior: HpaBehavior) -> Self {
        self.behavior = Some(behavior);
        self
    }

    /// Checks what serde cannot, as the API server would; [`super::Hpa::new`] does too.
    pub fn validate(&self) -> Result<(), super::HpaSpecError> {
        super::resolve::Resolved::new(self).map(|_| ())
    }
}

fn default_min_replicas() -> u32 {
    1
}

// === impl MetricSpec ===

impl MetricSpec {
    pub fn new(source: MetricSource, target: MetricTarget) -> Self {
        Self { source, target }
    }
}

// === impl ScalingPolicy ===

impl ScalingPolicy {
    pub fn pods(value: u32, period_seconds: u32) -> Self {
        Self {
            kind: PolicyType::Pods,
            value,
            period_seconds,
        }
    }

    pub fn percent(value: u32, period_seconds: u32) -> Self {
        Self {
            kind: PolicyType::Percent,
            value,
            period_seconds,
        }
    }
}

// === impl HpaControllerConfig ===

impl Default for HpaControllerConfig {
    fn default() -> Self {
        Self {
            sync_period_seconds: 15,
            tolerance: 0.1,
            downscale_stabilization_seconds: 300,
        }
    }
}
