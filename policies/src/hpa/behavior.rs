//! The normalisation for an HPA with `behavior`: upstream horizontal.go's
//! `normalizeDesiredReplicasWithBehaviors`, `stabilizeRecommendationWithBehaviors`,
//! `convertDesiredReplicasWithBehaviorRate`, `calculateScaleUpLimitWithScalingRules`,
//! `calculateScaleDownLimitWithBehaviors` and `storeScaleEvent`.
//!
//! First the stabilisation window bounds the proposal by recent recommendations (up: the
//! lowest of the scale-up window; down: the highest of the scale-down window), then the
//! policies bound the step by what was already changed within each policy's period.

use super::decision::{Limit, Stabilization};
use super::history::{Recommendations, ScaleEvents};
use super::resolve::Rules;
use super::spec::{PolicyType, SelectPolicy};
use super::Millis;

/// A normalised proposal (shared with the legacy path).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outcome {
    pub desired: i64,
    pub stabilized: i64,
    pub stabilization: Stabilization,
    pub limit: Limit,
}

/// Both directions' scale events, as the rate limits read them.
#[derive(Clone, Debug, Default)]
pub(crate) struct ScaleHistory {
    pub up: ScaleEvents,
    pub down: ScaleEvents,
}

/// Both directions' rules.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Behavior<'a> {
    pub up: &'a Rules,
    pub down: &'a Rules,
}

// === impl Behavior ===

impl Behavior<'_> {
    /// `normalizeDesiredReplicasWithBehaviors`: `desired` is the metric's proposal.
    pub fn normalize(
        self,
        recommendations: &mut Recommendations,
        events: &ScaleHistory,
        now: Millis,
        current: i64,
        desired: i64,
        bounds: (i64, i64),
    ) -> Outcome {
        let (stabilized, stabilization) = self.stabilize(recommendations, now, current, desired);
        let (desired, limit) = self.limit_rate(events, now, current, stabilized, bounds);
        Outcome {
            desired,
            stabilized,
            stabilization,
            limit,
        }
    }

    /// `stabilizeRecommendationWithBehaviors`.
    fn stabilize(
        self,
        recommendations: &mut Recommendations,
        now: Millis,
        current: i64,
        desired: i64,
    ) -> (i64, Stabilization) {
        recommendations.forget_older_than(now, self.up.window.max(self.down.window));

        // A scale up goes only as high as the lowest recommendation of its window; a
        // scale down only as low as the highest of its window.
        let up_recommendation = recommendations
            .within(now, self.up.window)
            .fold(desired, i64::min);
        let down_recommendation = recommendations
            .within(now, self.down.window)
            .fold(desired, i64::max);
        let mut recommendation = current;
        if recommendation < up_recommendation {
            recommendation = up_recommendation;
        }
        if recommendation > down_recommendation {
            recommendation = down_recommendation;
        }

        // The unstabilised proposal is what is remembered.
        recommendations.push(now, desired);

        let reason = if recommendation == desired {
            Stabilization::ReadyForNewScale
        } else if desired >= current {
            Stabilization::ScaleUpStabilized
        } else {
            Stabilization::ScaleDownStabilized
        };
        (recommendation, reason)
    }

    /// `convertDesiredReplicasWithBehaviorRate`: min/max and the policies' rate.
    fn limit_rate(
        self,
        events: &ScaleHistory,
        now: Millis,
        current: i64,
        desired: i64,
        (min, max): (i64, i64),
    ) -> (i64, Limit) {
        if desired > current {
            // A limit below current means earlier events used up the period's allowance:
            // hold until they age out.
            let scale_up_limit = scale_up_limit(current, events, now, self.up).max(current);
            let (maximum_allowed, reason) = if max > scale_up_limit {
                (scale_up_limit, Limit::ScaleUpLimit)
            } else {
                (max, Limit::TooManyReplicas)
            };
            if desired > maximum_allowed {
                return (maximum_allowed, reason);
            }
        } else if desired < current {
            let scale_down_limit = scale_down_limit(current, events, now, self.down).min(current);
            let (minimum_allowed, reason) = if min < scale_down_limit {
                (scale_down_limit, Limit::ScaleDownLimit)
            } else {
                (min, Limit::TooFewReplicas)
            };
            if desired < minimum_allowed {
                return (minimum_allowed, reason);
            }
        }
        (desired, Limit::DesiredWithinRange)
    }

    /// `storeScaleEvent`: remember a change so later syncs count it against the policies.
    pub fn store_event(self, events: &mut ScaleHistory, now: Millis, previous: i64, new: i64) {
        if new > previous {
            events.up.store(now, self.up.longest_period, new - previous);
        } else {
            events
                .down
                .store(now, self.down.longest_period, previous - new);
        }
    }
}

/// The replica count each policy's period started from: current, minus what was added
/// and plus what was removed within the period.
fn period_start(current: i64, events: &ScaleHistory, now: Millis, period: Millis) -> i64 {
    current - events.up.changed_within(now, period) + events.down.changed_within(now, period)
}

/// `calculateScaleUpLimitWithScalingRules`: the most replicas the policies allow.
fn scale_up_limit(current: i64, events: &ScaleHistory, now: Millis, rules: &Rules) -> i64 {
    let (mut result, select): (i64, fn(i64, i64) -> i64) = match rules.select {
        SelectPolicy::Disabled => return current,
        // For scaling up, the smallest change is the smallest count.
        SelectPolicy::Min => (i64::from(i32::MAX), i64::min),
        SelectPolicy::Max => (i64::from(i32::MIN), i64::max),
    };
    for policy in &rules.policies {
        let start = period_start(current, events, now, policy.period);
        let proposed = match policy.kind {
            PolicyType::Pods => start + policy.value,
            // Rounded up, or a small count could never grow.
            PolicyType::Percent => {
                (start as f64 * (1.0 + policy.value as f64 / 100.0)).ceil() as i64
            }
        };
        result = select(result, proposed);
    }
    result
}

/// `calculateScaleDownLimitWithBehaviors`: the fewest replicas the policies allow.
fn scale_down_limit(current: i64, events: &ScaleHistory, now: Millis, rules: &Rules) -> i64 {
    let (mut result, select): (i64, fn(i64, i64) -> i64) = match rules.select {
        SelectPolicy::Disabled => return current,
        // For scaling down, the smallest change is the largest count.
        SelectPolicy::Min => (i64::from(i32::MIN), i64::max),
        SelectPolicy::Max => (i64::from(i32::MAX), i64::min),
    };
    for policy in &rules.policies {
        let start = period_start(current, events, now, policy.period);
        let proposed = match policy.kind {
            PolicyType::Pods => start - policy.value,
            // Truncated toward zero, as Go's int32() conversion does.
            PolicyType::Percent => (start as f64 * (1.0 - policy.value as f64 / 100.0)) as i64,
        };
        result = select(result, proposed);
    }
    result
}
