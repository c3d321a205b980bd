//! Narrated scenarios for the HPA, each expected value computed by hand in the comments
//! from upstream's horizontal.go and replica_calculator.go.
//!
//! Most scenarios use one CPU `Utilization` metric with a 50% target and a `Target` that
//! holds a fixed total demand: at `n` replicas each pod runs at `demand / n` percent of
//! its request, so a decision changes the next sync's sample as it would in a cluster
//! where new pods are ready at once.

mod clamps;
mod flapping;
mod legacy;
mod readiness;
mod scale_down;
mod scale_up;
mod select_policy;
mod spec;
mod tolerance;

use super::*;

/// Seconds to the HPA's milliseconds.
fn secs(s: u64) -> Millis {
    s * 1000
}

/// CPU utilization at `target` percent of the request, with `behavior` (so the behavior
/// path with every API default).
fn cpu(min: u32, max: u32, target: u32) -> HpaSpec {
    HpaSpec::new(min, max, cpu_metric(target)).with_behavior(HpaBehavior::default())
}

fn cpu_metric(target: u32) -> MetricSpec {
    MetricSpec::new(
        MetricSource::Resource,
        MetricTarget::Utilization {
            average_utilization: target,
        },
    )
}

/// A deployment under a fixed total CPU demand, scaled by the HPA.
struct Target {
    hpa: Hpa,
    replicas: u32,
}

impl Target {
    fn new(spec: HpaSpec, replicas: u32) -> Self {
        Self {
            hpa: Hpa::new(spec).expect("valid spec"),
            replicas,
        }
    }

    /// One sync at `at` seconds, each pod at `demand / replicas` percent; the decision
    /// is applied at once.
    fn sync(&mut self, at: u64, demand: f64) -> HpaDecision {
        let utilization = demand / f64::from(self.replicas);
        let decision = self
            .hpa
            .sync(
                secs(at),
                self.replicas,
                Some(MetricSample::new(utilization)),
            )
            .expect("sync");
        self.replicas = decision.desired;
        decision
    }

    /// Syncs at each time in `at` under the same demand; the replicas after each sync.
    fn run(&mut self, at: impl IntoIterator<Item = u64>, demand: f64) -> Vec<u32> {
        at.into_iter()
            .map(|t| self.sync(t, demand).desired)
            .collect()
    }
}

/// Every 15 s from `from` to `to` inclusive, in seconds.
fn every_15s(from: u64, to: u64) -> impl Iterator<Item = u64> {
    (from..=to).step_by(15)
}

fn normalization(decision: &HpaDecision) -> Normalization {
    *decision.normalization().expect("metric was computed")
}
