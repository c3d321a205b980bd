//! The admission rule: guaranteed shares, borrowing, priority and cost at the limit.
//!
//! For a request of tier `t` on a cluster with limit `L` and in-flight `F` (the tier's
//! own in-flight `f`), with pre-shed level `p` (0 for tiers that are not sheddable):
//!
//! 1. **Guarantee.** If `f < share × L × (1 - p)` it is admitted, whatever `F` is. A
//!    guarantee is a guarantee: if others borrowed this tier's unused share, the tier
//!    takes it back by going over `L` (borrowed slots are never pre-empted), so `F` may
//!    reach `L` + the sum of the shares (at most `2L`) until borrowers finish; meanwhile
//!    nobody else borrows, so `F` drains back under `L`.
//! 2. **Borrowing.** Otherwise it may borrow a free slot while `F + need ≤ ceiling`:
//!    - not sheddable: `ceiling = L`, `need = 1` (refused only at the hard limit: over
//!      its own share with nothing left to borrow);
//!    - sheddable: `ceiling = L - rank × step`, where `rank` counts the distinct
//!      priority levels above the tier on its cluster and `step = max(1, headroom × L)`
//!      slots (none when `priority_headroom` is 0), so as `F` climbs the lowest tier is
//!      refused first and the top one last; `need = clamp(cost / median cost / source
//!      weight, 1, max_cost_weight)`, so near the ceiling an expensive request is
//!      refused while a cheap one still fits; and with pre-shedding the room above the
//!      non-sheddable in-flight `N` shrinks: `ceiling' = N + (ceiling - N) × (1 - p)`.
//!
//! 3. **Queueing tiers** (`queue: true`) never go over `L`, not even within their
//!    guarantee: at the limit they wait in the cluster's queue (`queue.rs`), and the
//!    next freed slot is handed to the most important waiter. So no room needs to be
//!    left for them: `rank` counts only the levels above that do not queue, and while
//!    a request of a more important tier waits, new requests of less important ones
//!    may not take a slot.
//!
//! Slots are taken with compare-and-swap loops on the counters, so concurrent requests
//! cannot overshoot a ceiling. O(tiers), no allocation, no lock.

use super::queue::WaitQueue;
use super::Shared;
use crate::admission::limit::ConcurrencyLimit;
use crate::tiers::MAX_TIERS;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// How one tier is admitted, precomputed from the config.
#[derive(Clone, Copy, Debug)]
pub(super) struct TierPlan {
    pub(super) cluster: usize,
    pub(super) share: f64,
    pub(super) sheddable: bool,
    pub(super) shadow: bool,
    pub(super) priority: u8,
    /// Waits in the queue at the limit.
    pub(super) queue: bool,
    /// Distinct priority levels above this tier on its cluster, of tiers that do not
    /// queue.
    pub(super) rank: u8,
}

/// One upstream cluster's limit and occupancy.
#[derive(Debug)]
pub(super) struct ClusterState {
    /// `None`: the route's own cluster.
    pub(super) name: Option<String>,
    pub(super) limit: ConcurrencyLimit,
    /// Admitted requests holding a slot.
    pub(super) inflight: AtomicU32,
    pub(super) tier_inflight: [AtomicU32; MAX_TIERS],
    /// Requests admitted only because of shadow mode: real load, but not counted
    /// against the limit, so shadow decisions are those enforcement would make.
    pub(super) shadow_inflight: AtomicU32,
    /// Bit `u` set: tier `u` is on this cluster and not sheddable.
    pub(super) fixed: u16,
    /// Requests of queueing tiers waiting for a slot.
    pub(super) queue: WaitQueue,
}

// === impl Shared (the rule) ===

impl Shared {
    /// Takes a slot for tier `tier` if the rule allows it; returns the cluster's total
    /// in-flight once taken. `arriving`: a new request, which must leave the slot to a
    /// waiter ahead of it (false when the queue serves a waiter).
    pub(super) fn take(
        &self,
        tier: usize,
        plan: &TierPlan,
        need: f64,
        p: f64,
        arriving: bool,
    ) -> Option<u32> {
        let c = self.clusters.get(plan.cluster)?;
        if arriving && self.queued_ahead(plan.cluster, plan.priority, plan.queue) {
            return None;
        }
        let mine = c.tier_inflight.get(tier)?;
        let limit = f64::from(c.limit.current());
        let guarantee = self.guarantee(plan, limit, p);
        let within_guarantee = mine
            .fetch_update(Relaxed, Relaxed, |f| {
                (f64::from(f) < guarantee).then_some(f + 1)
            })
            .is_ok();
        let (ceiling, need) = match (within_guarantee, plan.queue) {
            (true, false) => (f64::INFINITY, 1.0),
            (true, true) => (limit, 1.0),
            (false, _) => (self.ceiling(plan, c, limit, p), need),
        };
        let taken = c.inflight.fetch_update(Relaxed, Relaxed, |n| {
            (f64::from(n) + need <= ceiling).then_some(n + 1)
        });
        match (taken.is_ok(), within_guarantee) {
            (true, false) => {
                mine.fetch_add(1, Relaxed);
            }
            (false, true) => {
                mine.fetch_sub(1, Relaxed);
            }
            _ => {}
        }
        taken.ok()?;
        Some(c.inflight.load(Relaxed) + c.shadow_inflight.load(Relaxed))
    }

    /// Whether [`take`](Self::take) would succeed at pre-shed level `p`, taking nothing.
    pub(super) fn would_take(&self, tier: usize, plan: &TierPlan, need: f64, p: f64) -> bool {
        let (Some(c), true) = (self.clusters.get(plan.cluster), tier < MAX_TIERS) else {
            return false;
        };
        let f = c.tier_inflight.get(tier).map_or(0, |a| a.load(Relaxed));
        let limit = f64::from(c.limit.current());
        let n = f64::from(c.inflight.load(Relaxed));
        let within_guarantee = f64::from(f) < self.guarantee(plan, limit, p);
        (within_guarantee && (!plan.queue || n + 1.0 <= limit))
            || n + need <= self.ceiling(plan, c, limit, p)
    }

    fn guarantee(&self, plan: &TierPlan, limit: f64, p: f64) -> f64 {
        let p = if plan.sheddable { p } else { 0.0 };
        plan.share * limit * (1.0 - p)
    }

    fn ceiling(&self, plan: &TierPlan, c: &ClusterState, limit: f64, p: f64) -> f64 {
        if !plan.sheddable {
            return limit;
        }
        let step = if self.headroom > 0.0 {
            (self.headroom * limit).max(1.0)
        } else {
            0.0
        };
        let ceiling = limit - f64::from(plan.rank) * step;
        if p <= 0.0 {
            return ceiling;
        }
        let fixed: f64 = bits(c.fixed)
            .filter_map(|u| c.tier_inflight.get(u))
            .map(|a| f64::from(a.load(Relaxed)))
            .sum();
        fixed + (ceiling - fixed).max(0.0) * (1.0 - p)
    }
}

/// Indices of the set bits of `mask`, lowest first.
pub(super) fn bits(mask: u16) -> impl Iterator<Item = usize> {
    (0..MAX_TIERS).filter(move |i| mask & (1 << i) != 0)
}
