//! Checks an `HpaSpec` the way the API server would, then fills in the API defaults,
//! giving the fully-populated form the algorithm runs on.
//!
//! Upstream: pkg/apis/autoscaling/validation/validation.go (`validateHorizontalPodAutoscalerSpec`,
//! `validateScalingRules`, `validateScalingPolicy`, `validateMetricTarget`) and
//! pkg/apis/autoscaling/v2/defaults.go (`GenerateHPAScaleUpRules`,
//! `GenerateHPAScaleDownRules`, `copyHPAScalingRules`), plus horizontal.go's
//! `maybeInitScaleDownStabilizationWindow` and `tolerancesForHpa`.

use super::replicas::{Metric, Tolerances};
use super::spec::{
    HpaSpec, MetricSource, MetricTarget, PolicyType, ScalingPolicy, ScalingRules, SelectPolicy,
    MAX_PERIOD_SECONDS, MAX_STABILIZATION_WINDOW_SECONDS,
};
use super::Millis;

/// Upstream replica counts and policy values are `int32`.
const MAX_INT32: u32 = i32::MAX as u32;

/// An HPA setting the API server would reject.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("hpa.{field}: {reason}")]
pub struct HpaSpecError {
    pub field: String,
    pub reason: String,
}

/// A validated spec with every default applied; times in milliseconds.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub min: i64,
    pub max: i64,
    pub metric: Metric,
    pub tolerances: Tolerances,
    pub mode: Mode,
}

/// Which normalisation runs after the replica calculation.
#[derive(Clone, Debug)]
pub(crate) enum Mode {
    /// `normalizeDesiredReplicas`: no `behavior` on the HPA.
    Legacy { window: Millis },
    /// `normalizeDesiredReplicasWithBehaviors`.
    Behavior { up: Rules, down: Rules },
}

/// One direction's `HPAScalingRules` after defaulting.
#[derive(Clone, Debug)]
pub(crate) struct Rules {
    pub window: Millis,
    pub select: SelectPolicy,
    pub policies: Vec<Policy>,
    /// `getLongestPolicyPeriod`: how long this direction's scale events stay live.
    pub longest_period: Millis,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    pub kind: PolicyType,
    pub value: i64,
    pub period: Millis,
}

// === impl Resolved ===

impl Resolved {
    pub fn new(spec: &HpaSpec) -> Result<Self, HpaSpecError> {
        if spec.min_replicas < 1 {
            return Err(error(
                "min_replicas",
                "must be at least 1 (scale to zero needs the alpha HPAScaleToZero gate, not modelled)",
            ));
        }
        if spec.max_replicas > MAX_INT32 {
            return Err(error("max_replicas", "must fit in an int32"));
        }
        if spec.max_replicas < spec.min_replicas {
            return Err(error(
                "max_replicas",
                "must be greater than or equal to min_replicas",
            ));
        }

        let controller = &spec.controller;
        if controller.sync_period_seconds == 0 {
            return Err(error(
                "controller.sync_period_seconds",
                "must be greater than zero",
            ));
        }
        check_tolerance("controller.tolerance", controller.tolerance)?;
        let flag_window = seconds(controller.downscale_stabilization_seconds);

        let metric = resolve_metric(spec)?;

        let (tolerances, mode) = match &spec.behavior {
            None => (
                Tolerances::both(controller.tolerance),
                Mode::Legacy {
                    window: flag_window,
                },
            ),
            Some(behavior) => {
                // `maybeInitScaleDownStabilizationWindow`: defaults.go leaves the scale-down
                // window unset so that the controller flag fills it; scale-up defaults to 0.
                // `tolerancesForHpa`: a direction's own tolerance, else the flag.
                let (up, up_tolerance) = resolve_rules(
                    "behavior.scale_up",
                    behavior.scale_up.as_ref(),
                    &UP,
                    0,
                    controller.tolerance,
                )?;
                let (down, down_tolerance) = resolve_rules(
                    "behavior.scale_down",
                    behavior.scale_down.as_ref(),
                    &DOWN,
                    flag_window,
                    controller.tolerance,
                )?;
                let tolerances = Tolerances {
                    down: down_tolerance,
                    up: up_tolerance,
                };
                (tolerances, Mode::Behavior { up, down })
            }
        };

        Ok(Self {
            min: i64::from(spec.min_replicas),
            max: i64::from(spec.max_replicas),
            metric,
            tolerances,
            mode,
        })
    }
}

fn resolve_metric(spec: &HpaSpec) -> Result<Metric, HpaSpecError> {
    use MetricSource::*;
    use MetricTarget::*;

    let source = spec.metric.source;
    match spec.metric.target {
        Utilization {
            average_utilization,
        } => {
            if source != Resource {
                return Err(error(
                    "metric.target.type",
                    "Utilization is only for Resource metrics",
                ));
            }
            if !(1..=MAX_INT32).contains(&average_utilization) {
                return Err(error(
                    "metric.target.average_utilization",
                    "must be greater than 0 and fit in an int32",
                ));
            }
            Ok(Metric::Utilization {
                target_percent: i64::from(average_utilization),
            })
        }
        AverageValue { average_value } => {
            let target_milli = target_milli("metric.target.average_value", average_value)?;
            Ok(match source {
                Resource | Pods => Metric::PodAverage { target_milli },
                Object | External => Metric::TotalAverage { target_milli },
            })
        }
        Value { value } => {
            let target_milli = target_milli("metric.target.value", value)?;
            match source {
                Object | External => Ok(Metric::TotalValue { target_milli }),
                Resource | Pods => Err(error(
                    "metric.target.type",
                    "Value is only for Object and External metrics",
                )),
            }
        }
    }
}

/// Upstream compares `Quantity.MilliValue()`s; a target must be at least one milli-unit.
fn target_milli(field: &str, value: f64) -> Result<i64, HpaSpecError> {
    let milli = super::replicas::to_milli(value);
    if !value.is_finite() || milli < 1 {
        return Err(error(field, "must be positive (at least 0.001)"));
    }
    Ok(milli)
}

/// The defaults one direction falls back on (defaults.go).
struct Defaults {
    select: SelectPolicy,
    policies: &'static [ScalingPolicy],
}

/// `defaultHPAScaleUpRules`: `max(4 pods, 100%)` per 15 s.
const UP: Defaults = Defaults {
    select: SelectPolicy::Max,
    policies: &[
        ScalingPolicy {
            kind: PolicyType::Pods,
            value: 4,
            period_seconds: 15,
        },
        ScalingPolicy {
            kind: PolicyType::Percent,
            value: 100,
            period_seconds: 15,
        },
    ],
};

/// `defaultHPAScaleDownRules`: 100% per 15 s.
const DOWN: Defaults = Defaults {
    select: SelectPolicy::Max,
    policies: &[ScalingPolicy {
        kind: PolicyType::Percent,
        value: 100,
        period_seconds: 15,
    }],
};

/// `copyHPAScalingRules` over the direction's defaults, then `validateScalingRules`.
/// Returns the rules and the direction's tolerance.
fn resolve_rules(
    field: &str,
    rules: Option<&ScalingRules>,
    defaults: &Defaults,
    default_window: Millis,
    default_tolerance: f64,
) -> Result<(Rules, f64), HpaSpecError> {
    let empty = ScalingRules::default();
    let rules = rules.unwrap_or(&empty);

    let window = match rules.stabilization_window_seconds {
        None => default_window,
        Some(window) if window <= MAX_STABILIZATION_WINDOW_SECONDS => seconds(window),
        Some(_) => {
            return Err(error(
                &format!("{field}.stabilization_window_seconds"),
                &format!("must be less than or equal to {MAX_STABILIZATION_WINDOW_SECONDS}"),
            ))
        }
    };
    let tolerance = match rules.tolerance {
        None => default_tolerance,
        Some(tolerance) => {
            check_tolerance(&format!("{field}.tolerance"), tolerance)?;
            tolerance
        }
    };

    let policies = rules.policies.as_deref().unwrap_or(defaults.policies);
    if policies.is_empty() {
        return Err(error(
            &format!("{field}.policies"),
            "must specify at least one policy",
        ));
    }
    let mut resolved = Vec::with_capacity(policies.len());
    for (i, policy) in policies.iter().enumerate() {
        if !(1..=MAX_INT32).contains(&policy.value) {
            return Err(error(
                &format!("{field}.policies[{i}].value"),
                "must be greater than zero and fit in an int32",
            ));
        }
        if !(1..=MAX_PERIOD_SECONDS).contains(&policy.period_seconds) {
            return Err(error(
                &format!("{field}.policies[{i}].period_seconds"),
                &format!("must be between 1 and {MAX_PERIOD_SECONDS}"),
            ));
        }
        resolved.push(Policy {
            kind: policy.kind,
            value: i64::from(policy.value),
            period: seconds(policy.period_seconds),
        });
    }
    let longest_period = resolved.iter().map(|p| p.period).max().unwrap_or(0);

    let rules = Rules {
        window,
        select: rules.select_policy.unwrap_or(defaults.select),
        policies: resolved,
        longest_period,
    };
    Ok((rules, tolerance))
}

/// KEP-4951 validation: a tolerance may not be negative.
fn check_tolerance(field: &str, tolerance: f64) -> Result<(), HpaSpecError> {
    if !tolerance.is_finite() || tolerance < 0.0 {
        return Err(error(field, "must be a finite number >= 0"));
    }
    Ok(())
}

fn seconds(s: u32) -> Millis {
    Millis::from(s) * 1000
}

fn error(field: &str, reason: &str) -> HpaSpecError {
    HpaSpecError {
        field: field.to_string(),
        reason: reason.to_string(),
    }
}
