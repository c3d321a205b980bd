//! The admission rule: guaranteed shares, borrowing, priority and cost at the limit.
//!
//! For a request of tier `t` on a cluster with limit `L` and in-flight `F` (the tier's
//! own in-flight `f`); pre-shedding has already refused its share (`split.rs`):
//!
//! 1. **Guarantee.** If `f < share × L` it is admitted, whatever `F` is. A
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
//!      refused while a cheap one still fits.
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
        arriving: bool,
    ) -> Option<u32> {
        let c = self.clusters.get(plan.cluster)?;
        if arriving && self.queued_ahead(plan.cluster, plan.priority, plan.queue) {
            return None;
        }
        let mine = c.tier_inflight.get(tier)?;
        let limit = f64::from(c.limit.current());
        let guarantee = plan.share * limit;
        let within_guarantee = mine
            .fetch_update(Relaxed, Relaxed, |f| {
                (f64::from(f) < guarantee).then_some(f + 1)
            })
            .is_ok();
        let (ceiling, need) = match (within_guarantee, plan.queue) {
            (true, false) => (f64::INFINITY, 1.0),
            (true, true) => (limit, 1.0),
            (false, _) => (self.ceiling(plan, limit), need),
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

    fn ceiling(&self, plan: &TierPlan, limit: f64) -> f64 {
        if !plan.sheddable {
            return limit;
        }
        let step = if self.headroom > 0.0 {
            (self.headroom * limit).max(1.0)
        } else {
            0.0
        };
        limit - f64::from(plan.rank) * step
    }
}
