//! Admission control: per-source rate limits, an adaptive concurrency limit per
//! upstream cluster, tier shares with borrowing, priority and cost-aware shedding,
//! pre-shedding and shadow mode — decided per request without locks or allocation.
//!
//! Use: build an [`Admission`] per config (it compiles the [`TierTable`] too); per
//! request, `classify` with [`Admission::tiers`], then [`Admission::try_acquire`]. An
//! admitted request carries its [`Permit`] and releases it with the upstream's latency.
//!
//! Order of checks: a runtime override of the source (anomaly remediation, see
//! `sources::overrides`: demote it to a less important tier, or refuse it with 429
//! `anomaly`), the source's rate limit (429), pre-shedding (503 `pre_shed`: the tier's
//! share of a forecast shortfall, see `split.rs`), then the tier's slot on its cluster
//! (503, see `shares.rs` for the rule). A tier routed to its own `cluster`
//! uses that cluster's limit; other tiers share the route's cluster. In shadow mode
//! (global `policies.shadow` or the tier's `shadow`) a refusal is counted and a permit
//! returned anyway; shadow-admitted requests do not occupy slots, so shadow counts
//! match what enforcement would decide.
//!
//! Tiers with `queue: true` wait for a slot at the limit instead of being refused
//! (`queue.rs`: most important first, CoDel deadlines, adaptive LIFO); every other
//! refusal is answered at once.
//!
//! Not done (debts): one limit config for all clusters; on reload the learned
//! limits and counters carry over but in-flight counts restart from zero.

mod atomic;
mod config;
mod counters;
mod decision;
mod limit;
mod permit;
mod preshed;
mod queue;
mod report;
mod shares;
mod split;

#[cfg(test)]
mod queue_tests;
#[cfg(test)]
mod tests;

pub use self::config::{AdmissionConfig, LimitConfig, LimitOverride, PreShedConfig, QueueConfig};
pub use self::counters::{
    AdmissionSnapshot, ClusterSnapshot, DecisionKind, ReasonCounts, SourcesSnapshot, TierSnapshot,
};
pub use self::decision::{Decision, RejectReason, Rejection};
pub use self::limit::{ConcurrencyLimit, LimitStats, Outcome};
pub use self::permit::Permit;
pub use self::preshed::{preshed_level, PreShed, PreShedInput, PreShedLevel};
pub use self::queue::Ticket;

use self::atomic::{AtomicF64, FrugalMedian};
use self::counters::Counters;
use self::shares::{ClusterState, TierPlan};
use self::split::Split;
use crate::sources::{
    OverrideEffect, OverrideEntry, OverridesFull, SourceOverride, SourceOverrides, SourceTable,
};
use crate::tiers::{TierId, TierTable};
use crate::{Micros, PoliciesConfig, PoliciesConfigError};
use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

/// Admission state for one config: cheap to clone, shared by all workers.
#[derive(Clone, Debug)]
pub struct Admission {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    tiers: Arc<TierTable>,
    /// Indexed by tier.
    plans: Vec<TierPlan>,
    /// Indexed by tier: how it borrows on its cluster's overflow cluster, if any.
    overflow_plans: Vec<Option<TierPlan>>,
    /// Index 0 is the route's own cluster; then each named tier cluster.
    clusters: Vec<ClusterState>,
    sources: SourceTable,
    /// Runtime per-source overrides (anomaly remediation); carried over reloads.
    overrides: SourceOverrides,
    counters: Counters,
    /// The pre-shed level in force: the last one set, or `preshed.min_level` if higher.
    preshed: AtomicF64,
    /// The level last set (from the forecast), carried over a reload.
    preshed_set: AtomicF64,
    /// `preshed.min_level` (0 unless pre-shedding is enabled).
    preshed_min: f64,
    /// How the level is split over the sheddable tiers' arrivals.
    split: Split,
    median_cost: FrugalMedian,
    enabled: bool,
    shadow: bool,
    headroom: f64,
    max_cost_weight: f64,
    retry_after_secs: u32,
    queue: QueueSettings,
}

/// How the proxy's clusters appear to admission. From the proxy's cluster config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    /// The name of the route's own cluster (the one tiers without a cluster use), for
    /// `admission.cluster_limits`.
    pub route: Option<String>,
    /// Where each tier cluster's requests go when it is full or down: cluster name →
    /// overflow cluster (`None`: the route's own).
    pub overflow: std::collections::BTreeMap<String, Option<String>>,
}

/// [`QueueConfig`] in the admission clock's units.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QueueSettings {
    max_waiting: u32,
    target: Micros,
    interval: Micros,
    /// Without a latency objective: every waiter's deadline, served oldest first.
    burst_wait: Option<Micros>,
}

// === impl Admission ===

impl Admission {
    /// Validates `cfg` and builds admission for it; limiter windows start at `now`.
    pub fn new(cfg: &PoliciesConfig, now: Micros) -> Result<Self, PoliciesConfigError> {
        Self::build(cfg, now, RandomState::new(), &Topology::default())
    }

    /// [`new`](Self::new), knowing the route cluster's name and the clusters tiers
    /// overflow to.
    pub fn with_topology(
        cfg: &PoliciesConfig,
        now: Micros,
        topology: &Topology,
    ) -> Result<Self, PoliciesConfigError> {
        Self::build(cfg, now, RandomState::new(), topology)
    }

    /// [`new`](Self::new), with source overrides keyed by `hasher` (a reload keeps it).
    fn build(
        cfg: &PoliciesConfig,
        now: Micros,
        hasher: RandomState,
        topology: &Topology,
    ) -> Result<Self, PoliciesConfigError> {
        let overflow = &topology.overflow;
        cfg.validate()?;
        let tiers = Arc::new(TierTable::new(cfg)?);
        let a = &cfg.admission;
        // No latency objective: every tier waits at the limit (bounded), none is
        // refused at once.
        let burst = a.latency_objective.is_none();

        let mut names: Vec<Option<String>> = vec![None];
        let named: BTreeSet<&str> = tiers
            .iter()
            .filter_map(|(_, t)| t.cluster.as_deref())
            .collect();
        names.extend(named.iter().map(|n| Some(n.to_string())));
        // Overflow targets that no tier names get a limit of their own too.
        for (from, to) in overflow {
            if named.contains(from.as_str()) && !names.contains(to) {
                names.push(to.clone());
            }
        }
        let cluster_of = |c: &Option<String>| names.iter().position(|n| n == c).unwrap_or(0);

        let mut plans = Vec::with_capacity(tiers.len());
        let mut overflow_plans = Vec::with_capacity(tiers.len());
        for (_, t) in tiers.iter() {
            let cluster = cluster_of(&t.cluster);
            // Queueing tiers get freed slots first, so no room is left for them.
            let rank = |on: usize| {
                let levels: BTreeSet<u8> = tiers
                    .iter()
                    .filter(|(_, u)| {
                        cluster_of(&u.cluster) == on
                            && u.priority < t.priority
                            && !(u.queue || burst)
                    })
                    .map(|(_, u)| u.priority)
                    .collect();
                levels.len() as u8
            };
            let plan = TierPlan {
                cluster,
                share: t.share,
                sheddable: t.sheddable,
                shadow: t.shadow,
                priority: t.priority,
                queue: t.queue || burst,
                rank: rank(cluster),
            };
            // On the overflow cluster the tier has no guarantee and does not queue: it
            // borrows a free slot there by that cluster's rule, or waits at home.
            let spill = t
                .cluster
                .as_ref()
                .and_then(|c| overflow.get(c))
                .map(&cluster_of)
                .filter(|&to| to != cluster)
                .map(|to| TierPlan {
                    cluster: to,
                    share: 0.0,
                    queue: false,
                    rank: rank(to),
                    ..plan
                });
            plans.push(plan);
            overflow_plans.push(spill);
        }
        let clusters = names
            .into_iter()
            .map(|name| ClusterState {
                limit: ConcurrencyLimit::new(
                    &a.limit_for(name.as_deref().or(topology.route.as_deref())),
                    now,
                ),
                name,
                inflight: AtomicU32::new(0),
                tier_inflight: std::array::from_fn(|_| AtomicU32::new(0)),
                shadow_inflight: AtomicU32::new(0),
                queue: Default::default(),
            })
            .collect();

        let shared = Shared {
            tiers,
            plans,
            overflow_plans,
            clusters,
            sources: SourceTable::new(&cfg.sources),
            overrides: SourceOverrides::with_hasher(hasher),
            counters: Counters::new(),
            preshed: AtomicF64::new(0.0),
            preshed_set: AtomicF64::new(0.0),
            preshed_min: if a.preshed.enabled {
                a.preshed.min_level
            } else {
                0.0
            },
            split: Split::new(),
            median_cost: FrugalMedian::new(),
            enabled: a.enabled,
            shadow: cfg.shadow,
            headroom: a.priority_headroom,
            max_cost_weight: a.max_cost_weight,
            retry_after_secs: u32::try_from(a.retry_after.as_secs())
                .unwrap_or(u32::MAX)
                .max(1),
            queue: QueueSettings {
                max_waiting: a.queue.max_waiting,
                target: micros(a.queue.target),
                interval: micros(a.queue.interval),
                burst_wait: burst.then(|| micros(a.queue.max_wait)),
            },
        };
        let admission = Self {
            shared: Arc::new(shared),
        };
        admission.set_preshed(0.0);
        Ok(admission)
    }

    /// The tier table to classify requests with.
    pub fn tiers(&self) -> &Arc<TierTable> {
        &self.shared.tiers
    }

    /// Decides one request of `tier` (from [`TierTable::classify`]) from `source`
    /// (identity or client address, for rate limits and weights) with the expected
    /// service time of its signature as `cost_hint` (any unit, consistently; `None`
    /// when unknown). O(tiers), no allocation, no lock.
    pub fn try_acquire(
        &self,
        tier: TierId,
        cost_hint: Option<f64>,
        source: Option<&str>,
        now: Micros,
    ) -> Decision {
        self.try_acquire_unless_down(tier, cost_hint, source, now, |_| false)
    }

    /// [`try_acquire`](Self::try_acquire), told which named clusters have no endpoint
    /// to serve (`down`, asked only of a tier cluster that has an overflow cluster).
    /// A tier whose cluster is down takes its slot on the overflow cluster first, where
    /// its request will be sent, instead of holding one on a cluster it will not use.
    pub fn try_acquire_unless_down(
        &self,
        tier: TierId,
        cost_hint: Option<f64>,
        source: Option<&str>,
        now: Micros,
        down: impl Fn(&str) -> bool,
    ) -> Decision {
        let s = &self.shared;
        // A tier id from an older table (after a reload) falls back to the default.
        let mut tier = if tier.index() < s.plans.len() {
            tier
        } else {
            s.tiers.default_tier()
        };
        // Anomaly remediation: one atomic load unless some source is overridden.
        let effect = source.and_then(|src| s.overrides.effect(src, now));
        match effect {
            Some(OverrideEffect::Demote(to)) if s.demotes(tier, to) => tier = to,
            Some(OverrideEffect::Refuse { wait }) => {
                let Some(plan) = s.plans.get(tier.index()) else {
                    return Decision::Admit(Permit::new(
                        self.shared.clone(),
                        tier,
                        usize::MAX,
                        0,
                        None,
                    ));
                };
                let secs = if wait == 0 {
                    s.retry_after_secs
                } else {
                    u32::try_from(wait.div_ceil(1_000_000))
                        .unwrap_or(u32::MAX)
                        .max(1)
                };
                return self.refuse(tier, plan, RejectReason::Anomaly, secs);
            }
            _ => {}
        }
        let t = tier.index();
        let Some(plan) = s.plans.get(t) else {
            // Unreachable (a table has its default tier); fail open without a slot.
            return Decision::Admit(Permit::new(self.shared.clone(), tier, usize::MAX, 0, None));
        };

        let weight = source.map_or(1.0, |src| s.sources.weight(src));
        if let Some(src) = source {
            if let Err(wait) = s.sources.check(src, weight, now) {
                let secs = u32::try_from(wait.div_ceil(1_000_000))
                    .unwrap_or(u32::MAX)
                    .max(1);
                return self.refuse(tier, plan, RejectReason::RateLimited, secs);
            }
        }

        let need = s.need(plan, cost_hint, weight);
        if !s.enabled {
            let c = s.clusters.get(plan.cluster);
            if let Some(c) = c {
                c.inflight.fetch_add(1, Relaxed);
                if let Some(f) = c.tier_inflight.get(t) {
                    f.fetch_add(1, Relaxed);
                }
            }
            let inflight = c.map_or(0, |c| c.inflight.load(Relaxed));
            return self.admitted(tier, plan.cluster, inflight);
        }

        // Pre-shedding: this tier's share of the shortfall, refused before it takes a
        // slot (`split.rs`); a refused request is counted as an arrival all the same.
        if s.split.refuses(t) {
            return self.refuse(tier, plan, RejectReason::PreShed, s.retry_after_secs);
        }
        let spill = s.overflow_plans.get(t).copied().flatten();
        let home_down = spill.is_some()
            && s.clusters
                .get(plan.cluster)
                .and_then(|c| c.name.as_deref())
                .is_some_and(down);
        // Its own cluster is down: a slot on the overflow cluster, where the request
        // goes. Failing that it falls through to its own rule, as if it were up.
        if let (true, Some(spill)) = (home_down, spill) {
            if let Some(inflight) = s.take(t, &spill, need, true) {
                s.counters.count_overflowed(t);
                return self.admitted(tier, spill.cluster, inflight);
            }
        }
        if let Some(inflight) = s.take(t, plan, need, true) {
            return self.admitted(tier, plan.cluster, inflight);
        }
        // Its own cluster is full: a free slot on the overflow cluster, if it has one.
        if let (false, Some(spill)) = (home_down, spill) {
            if let Some(inflight) = s.take(t, &spill, need, true) {
                s.counters.count_overflowed(t);
                return self.admitted(tier, spill.cluster, inflight);
            }
        }
        let reason = RejectReason::Overload;
        if plan.queue && !(s.shadow || plan.shadow) {
            let rejection = Rejection {
                tier,
                reason,
                retry_after_secs: s.retry_after_secs,
            };
            if let Some(d) = s.enqueue(t, plan.cluster, need, rejection, now) {
                return d;
            }
        }
        self.refuse(tier, plan, reason, s.retry_after_secs)
    }

    /// Counts an admission of `tier` holding a slot on `cluster`, and hands its permit.
    fn admitted(&self, tier: TierId, cluster: usize, inflight: u32) -> Decision {
        self.shared
            .counters
            .count(tier.index(), DecisionKind::Admitted, None);
        Decision::Admit(Permit::new(
            self.shared.clone(),
            tier,
            cluster,
            inflight,
            None,
        ))
    }

    /// Refuses, or in shadow mode counts the refusal and admits outside the limit.
    fn refuse(
        &self,
        tier: TierId,
        plan: &TierPlan,
        reason: RejectReason,
        retry_after_secs: u32,
    ) -> Decision {
        let s = &self.shared;
        let t = tier.index();
        if s.shadow || plan.shadow {
            s.counters
                .count(t, DecisionKind::ShadowRejected, Some(reason));
            let inflight = s.clusters.get(plan.cluster).map_or(0, |c| {
                c.shadow_inflight.fetch_add(1, Relaxed);
                c.inflight.load(Relaxed) + c.shadow_inflight.load(Relaxed)
            });
            return Decision::Admit(Permit::new(
                self.shared.clone(),
                tier,
                plan.cluster,
                inflight,
                Some(reason),
            ));
        }
        s.counters.count(t, DecisionKind::Rejected, Some(reason));
        Decision::Reject(Rejection {
            tier,
            reason,
            retry_after_secs,
        })
    }

    /// Sets the pre-shed level in [0, 1] (from [`PreShed::update`]; NaN counts as 0):
    /// the share of sheddable demand to refuse as it arrives, least important tier
    /// first (`split.rs`). `preshed.min_level`, when higher, stands instead. Not for
    /// the data path (reads the tier mix under a lock only the caller takes).
    pub fn set_preshed(&self, level: f64) {
        let s = &self.shared;
        let level = if level.is_nan() {
            0.0
        } else {
            level.clamp(0.0, 1.0)
        };
        s.preshed_set.store(level);
        let level = level.max(s.preshed_min);
        s.split.apply(level, &s.plans);
        s.preshed.store(level);
    }

    /// The pre-shed level in force.
    pub fn preshed(&self) -> f64 {
        self.shared.preshed.load()
    }

    /// The share of `tier`'s arrivals pre-shedding refuses now (0 for a tier that is
    /// not sheddable).
    pub fn preshed_share(&self, tier: TierId) -> f64 {
        self.shared.split.share(tier.index())
    }

    /// The key of `source` (an identity as passed to [`try_acquire`](Self::try_acquire))
    /// in the source overrides: stable for this process, across reloads.
    pub fn identity_hash(&self, source: &str) -> u64 {
        self.shared.overrides.identity_hash(source)
    }

    /// Overrides every request of the source whose [`identity_hash`](Self::identity_hash)
    /// is `source` until `until` (see [`SourceOverride`]); replaces its previous
    /// override. Not for the hot path (takes the writers' lock).
    pub fn set_source_override(
        &self,
        source: u64,
        action: SourceOverride,
        now: Micros,
        until: Micros,
    ) -> Result<(), OverridesFull> {
        self.shared.overrides.set(source, action, now, until)
    }

    /// Ends the override of `source`; false if it had none.
    pub fn clear_source_override(&self, source: u64) -> bool {
        self.shared.overrides.clear(source)
    }

    /// Source overrides in force at `now`.
    pub fn source_overrides(&self, now: Micros) -> Vec<OverrideEntry> {
        self.shared.overrides.list(now)
    }

    /// The current limit of the cluster `tier` is routed to.
    pub fn limit(&self, tier: TierId) -> Option<u32> {
        let c = self.shared.plans.get(tier.index())?.cluster;
        Some(self.shared.clusters.get(c)?.limit.current())
    }
}

// === impl Shared ===

impl Shared {
    /// Whether moving a request from `from` to `to` is a demotion: `to` exists and is
    /// less important. An override never promotes.
    fn demotes(&self, from: TierId, to: TierId) -> bool {
        match (self.tiers.get(from), self.tiers.get(to)) {
            (Some(f), Some(t)) => t.priority > f.priority && to.index() < self.plans.len(),
            _ => false,
        }
    }

    /// Slots a request counts for when borrowing: its cost pressure (cost over the
    /// median, over the source's weight) for sheddable tiers, else 1.
    fn need(&self, plan: &TierPlan, cost_hint: Option<f64>, weight: f64) -> f64 {
        let ratio = match cost_hint {
            Some(c) if c.is_finite() && c > 0.0 => c / self.median_cost.observe(c),
            _ => 1.0,
        };
        if !plan.sheddable {
            return 1.0;
        }
        (ratio / weight).clamp(1.0, self.max_cost_weight)
    }
}

fn micros(d: std::time::Duration) -> Micros {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
