//! The Kubernetes HorizontalPodAutoscaler (`autoscaling/v2`) as a pure state machine:
//! the reactive baseline prescale is measured against, and its `reactive` mode.
//!
//! [`Hpa::sync`] is one pass of upstream's `reconcileAutoscaler`
//! (pkg/controller/podautoscaler/horizontal.go): the caller passes the time, the target's
//! `spec.replicas` and one metric sample, and gets back the count the HPA would set. The
//! controller syncs every 15 s (`--horizontal-pod-autoscaler-sync-period`); here the caller
//! drives syncs, at [`Hpa::sync_period`] to match a real cluster.
//!
//! Exact, following upstream line by line:
//! - the replica calculation of replica_calculator.go for every `(type, target)` pair,
//!   tolerance included (`Tolerances.isWithin`, per direction as in KEP-4951), and its
//!   unready/missing-pod adjustments when [`PodCounts`] are given;
//! - the order of checks in `reconcileAutoscaler`: zero replicas disables scaling,
//!   out-of-range counts snap to min/max without stabilisation, a failed metric changes
//!   nothing, and the first sync seeds the recommendations (`recordInitialRecommendation`);
//! - both normalisations: `normalizeDesiredReplicasWithBehaviors` (stabilisation windows,
//!   Pods/Percent policies per period, selectPolicy Max/Min/Disabled, min/max) and the
//!   legacy `normalizeDesiredReplicas` for an HPA without `behavior`;
//! - the API defaults (defaults.go) and validation bounds (validation.go).
//!
//! Deliberately different or left out:
//! - one metric, not a list: upstream takes the highest proposal over its metrics and
//!   skips failed ones; prescale scales on one signal, the sum of its forecasts.
//! - per-pod samples: we get one aggregated value, so the unready/missing adjustments
//!   rebuild sums from the average and the counts (assuming equal requests per pod for
//!   `Utilization`); pod readiness itself (CPU initialisation period, readiness delay) is
//!   the caller's to judge when it fills [`PodCounts`].
//! - scale to zero (`minReplicas: 0`, alpha gate `HPAScaleToZero`): rejected.
//! - values are compared in milli-units as upstream does, but a sample is one `f64`
//!   rounded to the nearest milli-unit rather than a parsed `Quantity`.
//! - timing: a record exactly one window old no longer counts, in every window (see
//!   history.rs for why that is what a real controller observes).
//! - histories are capped at [`HISTORY_CAP`] records (oldest dropped); upstream is bounded
//!   only by its sync rate.
//! - status, events, conditions other than the two reasons in [`Normalization`], and the
//!   controller's failure modes (scale subresource errors, selector conflicts).

mod behavior;
mod decision;
mod history;
mod legacy;
mod replicas;
mod resolve;
mod spec;

#[cfg(test)]
mod tests;

pub use self::decision::{HpaDecision, HpaReason, Limit, Normalization, Stabilization};
pub use self::history::HISTORY_CAP;
pub use self::replicas::{MetricSample, PodCounts};
pub use self::resolve::HpaSpecError;
pub use self::spec::{
    HpaBehavior, HpaControllerConfig, HpaSpec, MetricSource, MetricSpec, MetricTarget, PolicyType,
    ScalingPolicy, ScalingRules, SelectPolicy, MAX_PERIOD_SECONDS,
    MAX_STABILIZATION_WINDOW_SECONDS,
};

use self::behavior::{Behavior, ScaleHistory};
use self::history::Recommendations;
use self::resolve::{Mode, Resolved};

/// Milliseconds on the caller's clock; only differences between syncs matter.
pub type Millis = u64;

/// One HPA and everything it remembers between syncs (upstream keeps this in the
/// controller's `recommendations`, `scaleUpEvents` and `scaleDownEvents` maps).
#[derive(Clone, Debug)]
pub struct Hpa {
    spec: HpaSpec,
    resolved: Resolved,
    last_sync: Option<Millis>,
    recommendations: Recommendations,
    events: ScaleHistory,
}

/// A sync the HPA refused; its state is unchanged.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HpaSyncError {
    /// Windows and periods are measured on one clock that must not run backwards.
    #[error("hpa sync at {now} ms is earlier than the previous sync at {previous} ms")]
    ClockWentBackwards { now: Millis, previous: Millis },
    #[error("hpa metric sample {value} is not a finite number")]
    NonFiniteSample { value: f64 },
}

// === impl Hpa ===

impl Hpa {
    /// Validates `spec` as the API server would and fills in the API defaults.
    pub fn new(spec: HpaSpec) -> Result<Self, HpaSpecError> {
        let resolved = Resolved::new(&spec)?;
        Ok(Self {
            spec,
            resolved,
            last_sync: None,
            recommendations: Recommendations::default(),
            events: ScaleHistory::default(),
        })
    }

    pub fn spec(&self) -> &HpaSpec {
        &self.spec
    }

    /// How often a real controller would call [`Hpa::sync`].
    pub fn sync_period(&self) -> Millis {
        Millis::from(self.spec.controller.sync_period_seconds) * 1000
    }

    /// One reconciliation at `now`: `current_replicas` is the target's `spec.replicas`,
    /// `sample` the metric (`None` when it could not be read).
    ///
    /// When the decision rescales, the caller is expected to apply it: the next sync's
    /// rate limits count the change as made.
    pub fn sync(
        &mut self,
        now: Millis,
        current_replicas: u32,
        sample: Option<MetricSample>,
    ) -> Result<HpaDecision, HpaSyncError> {
        if let Some(previous) = self.last_sync {
            if now < previous {
                return Err(HpaSyncError::ClockWentBackwards { now, previous });
            }
        }
        if let Some(sample) = &sample {
            if !sample.value.is_finite() {
                return Err(HpaSyncError::NonFiniteSample {
                    value: sample.value,
                });
            }
        }
        self.last_sync = Some(now);

        let current = i64::from(current_replicas);
        let r = &self.resolved;
        self.recommendations.seed(now, current);

        let (desired, reason) = if current == 0 && r.min != 0 {
            (current, HpaReason::ScalingDisabled)
        } else if current > r.max {
            (r.max, HpaReason::AboveMaxReplicas)
        } else if current < r.min {
            (r.min, HpaReason::BelowMinReplicas)
        } else {
            let proposal = sample.and_then(|s| r.metric.replicas(r.tolerances, current, &s));
            let Some(proposal) = proposal else {
                return Ok(HpaDecision {
                    desired: current_replicas,
                    rescale: false,
                    reason: HpaReason::MetricUnavailable,
                });
            };
            // `reconcileAutoscaler` starts from 0 and takes the higher: never negative.
            let proposal = proposal.max(0);
            let bounds = (r.min, r.max);
            let outcome = match &r.mode {
                Mode::Legacy { window } => legacy::normalize(
                    &mut self.recommendations,
                    now,
                    *window,
                    current,
                    proposal,
                    bounds,
                ),
                Mode::Behavior { up, down } => Behavior { up, down }.normalize(
                    &mut self.recommendations,
                    &self.events,
                    now,
                    current,
                    proposal,
                    bounds,
                ),
            };
            let normalization = Normalization {
                proposal: to_u32(proposal),
                stabilized: to_u32(outcome.stabilized),
                stabilization: outcome.stabilization,
                limit: outcome.limit,
            };
            (outcome.desired, HpaReason::Metric(normalization))
        };

        let rescale = desired != current;
        if rescale {
            // Only the behavior path keeps scale events (`storeScaleEvent`).
            if let Mode::Behavior { up, down } = &r.mode {
                Behavior { up, down }.store_event(&mut self.events, now, current, desired);
            }
        }
        Ok(HpaDecision {
            desired: to_u32(desired),
            rescale,
            reason,
        })
    }
}

/// Counts leaving the algorithm lie in `0..=i32::MAX` (clamped to min/max, or taken
/// from a `u32`); saturate rather than panic should that ever change.
fn to_u32(replicas: i64) -> u32 {
    u32::try_from(replicas.max(0)).unwrap_or(u32::MAX)
}
