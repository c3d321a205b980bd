//! The normalisation for an HPA without `behavior`: upstream horizontal.go's
//! `normalizeDesiredReplicas`, `stabilizeRecommendation` and
//! `convertDesiredReplicasWithRules`.
//!
//! A scale down waits out the controller's downscale window; a scale up is capped at
//! `max(2 × current, 4)` on every sync, with no memory of earlier syncs, so a driver that
//! syncs faster than 15 s doubles faster.

use super::behavior::Outcome;
use super::decision::{Limit, Stabilization};
use super::history::Recommendations;
use super::Millis;

/// `scaleUpLimitFactor` and `scaleUpLimitMinimum`.
const SCALE_UP_LIMIT_FACTOR: f64 = 2.0;
const SCALE_UP_LIMIT_MINIMUM: f64 = 4.0;

/// `normalizeDesiredReplicas`: `desired` is the metric's proposal.
pub(crate) fn normalize(
    recommendations: &mut Recommendations,
    now: Millis,
    window: Millis,
    current: i64,
    desired: i64,
    (min, max): (i64, i64),
) -> Outcome {
    // `stabilizeRecommendation`: the highest recommendation of the window wins, so the
    // count only falls once every recommendation above it has aged out.
    recommendations.forget_older_than(now, window);
    let stabilized = recommendations.within(now, window).fold(desired, i64::max);
    recommendations.push(now, desired);
    let stabilization = if stabilized != desired {
        Stabilization::ScaleDownStabilized
    } else {
        Stabilization::ReadyForNewScale
    };

    // `convertDesiredReplicasWithRules`.
    let scale_up_limit = calculate_scale_up_limit(current);
    let (maximum_allowed, limiting) = if max > scale_up_limit {
        (scale_up_limit, Limit::ScaleUpLimit)
    } else {
        (max, Limit::TooManyReplicas)
    };
    let (desired, limit) = if stabilized < min {
        (min, Limit::TooFewReplicas)
    } else if stabilized > maximum_allowed {
        (maximum_allowed, limiting)
    } else {
        (stabilized, Limit::DesiredWithinRange)
    };

    Outcome {
        desired,
        stabilized,
        stabilization,
        limit,
    }
}

/// `calculateScaleUpLimit`: `int32(math.Max(2 × current, 4))`.
fn calculate_scale_up_limit(current: i64) -> i64 {
    (SCALE_UP_LIMIT_FACTOR * current as f64).max(SCALE_UP_LIMIT_MINIMUM) as i64
}
