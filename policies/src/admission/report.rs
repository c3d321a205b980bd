//! What admission tells the outside: snapshots for `/v1/tiers` and metrics, and what
//! it carries over a config reload.

use super::counters::{
    AdmissionSnapshot, ClusterSnapshot, DecisionKind, SourcesSnapshot, TierSnapshot,
};
use super::{Admission, Topology};
use crate::{Micros, PoliciesConfig, PoliciesConfigError};
use std::sync::atomic::Ordering::Relaxed;

// === impl Admission ===

impl Admission {
    /// Builds admission for a reloaded `cfg`, keeping what this one learned: each
    /// cluster's limit (by name), the decision counters (by tier name), the pre-shed
    /// level, the median cost and the source overrides (demotions re-targeted by tier
    /// name, dropped if their tier is gone). Permits taken before keep freeing slots here.
    pub fn reconfigure(
        &self,
        cfg: &PoliciesConfig,
        now: Micros,
    ) -> Result<Self, PoliciesConfigError> {
        self.reconfigure_with_topology(cfg, now, &Topology::default())
    }

    /// [`reconfigure`](Self::reconfigure), knowing the clusters (see
    /// [`Admission::with_topology`]).
    pub fn reconfigure_with_topology(
        &self,
        cfg: &PoliciesConfig,
        now: Micros,
        topology: &Topology,
    ) -> Result<Self, PoliciesConfigError> {
        let next = Self::build(cfg, now, self.shared.overrides.hasher().clone(), topology)?;
        let (old, new) = (&self.shared, &next.shared);
        new.overrides.inherit(&old.overrides, now, |t| {
            old.tiers
                .get(t)
                .and_then(|tier| new.tiers.by_name(&tier.name))
        });
        for c in &new.clusters {
            if let Some(o) = old.clusters.iter().find(|o| o.name == c.name) {
                c.limit.inherit(&o.limit);
            }
        }
        for (id, t) in new.tiers.iter() {
            if let Some(old_id) = old.tiers.by_name(&t.name) {
                new.counters
                    .carry(id.index(), &old.counters, old_id.index());
            }
        }
        new.split.inherit(&old.split, |t| {
            let (_, tier) = new.tiers.iter().find(|(id, _)| id.index() == t)?;
            Some(old.tiers.by_name(&tier.name)?.index())
        });
        next.set_preshed(old.preshed_set.load());
        if let Some(m) = old.median_cost.get() {
            new.median_cost.observe(m);
        }
        Ok(next)
    }

    /// Share of recent demand (arrivals × mean service time, over about the last
    /// thousand requests, refused ones included) in sheddable tiers; 1 before any: a
    /// stand-in for [`PreShedInput::sheddable_fraction`] when the forecast has no tier
    /// split. Not for the data path.
    pub fn sheddable_fraction(&self) -> f64 {
        self.shared.split.sheddable_fraction(&self.shared.plans)
    }

    /// Counters, limits and occupancy now. Allocates; not for the hot path.
    pub fn snapshot(&self) -> AdmissionSnapshot {
        let s = &self.shared;
        let tiers = s
            .tiers
            .iter()
            .map(|(id, t)| {
                let i = id.index();
                let inflight = s
                    .plans
                    .get(i)
                    .and_then(|p| s.clusters.get(p.cluster))
                    .and_then(|c| c.tier_inflight.get(i))
                    .map_or(0, |a| a.load(Relaxed));
                TierSnapshot {
                    name: t.name.clone(),
                    priority: t.priority,
                    share: t.share,
                    sheddable: t.sheddable,
                    shadow: t.shadow,
                    cluster: t.cluster.clone(),
                    inflight,
                    admitted: s.counters.get(i, DecisionKind::Admitted, None),
                    queued: s.counters.queued(i),
                    overflowed: s.counters.overflowed(i),
                    rejected: s.counters.reasons(i, DecisionKind::Rejected),
                    shadow_rejected: s.counters.reasons(i, DecisionKind::ShadowRejected),
                    preshed_share: s.split.share(i),
                }
            })
            .collect();
        let clusters = s
            .clusters
            .iter()
            .map(|c| ClusterSnapshot {
                cluster: c.name.clone(),
                inflight: c.inflight.load(Relaxed),
                shadow_inflight: c.shadow_inflight.load(Relaxed),
                waiting: c.queue.waiting(),
                limit: c.limit.stats(),
            })
            .collect();
        AdmissionSnapshot {
            enabled: s.enabled,
            shadow: s.shadow,
            preshed_level: s.preshed.load(),
            median_cost: s.median_cost.get(),
            tiers,
            clusters,
            sources: SourcesSnapshot {
                rate_limit: s.sources.is_limiting(),
                tracked: s.sources.tracked(),
                capacity: s.sources.capacity(),
                other: s.sources.other(),
            },
        }
    }
}
