//! The permit an admitted request holds: it frees its slot when released or dropped.

use super::decision::RejectReason;
use super::limit::Outcome;
use super::Shared;
use crate::tiers::TierId;
use crate::Micros;
use std::fmt;
use std::sync::atomic::{
    fence,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::Arc;
use std::time::Duration;

/// A slot on an upstream cluster, held from admission until the upstream has answered.
///
/// Release it with [`Permit::release`] so its latency teaches the limiter; dropping it
/// frees the slot without a sample (a cancelled request). Keep it in the per-request
/// context. It holds an `Arc` of the admission state it came from, so a permit taken
/// before a config reload frees its slot in the old state.
#[must_use = "dropping a permit frees its slot at once"]
pub struct Permit {
    shared: Arc<Shared>,
    tier: TierId,
    /// Index of the cluster; out of range for a permit that holds no slot.
    cluster: usize,
    /// The cluster's in-flight count (admitted and shadow) once this one was added.
    inflight: u32,
    shadow_rejected: Option<RejectReason>,
    released: bool,
}

// === impl Permit ===

impl Permit {
    pub(super) fn new(
        shared: Arc<Shared>,
        tier: TierId,
        cluster: usize,
        inflight: u32,
        shadow_rejected: Option<RejectReason>,
    ) -> Self {
        Self {
            shared,
            tier,
            cluster,
            inflight,
            shadow_rejected,
            released: false,
        }
    }

    /// The request's tier.
    pub fn tier(&self) -> TierId {
        self.tier
    }

    /// The cluster the slot is on: `None` for the route's own, else the tier cluster (or
    /// the overflow cluster it was given a slot on).
    pub fn cluster(&self) -> Option<&str> {
        self.shared.clusters.get(self.cluster)?.name.as_deref()
    }

    /// In shadow mode: the reason the request would have been refused. The proxy must
    /// forward it unchanged (shadow mode changes nothing on the wire).
    pub fn shadow_rejected(&self) -> Option<RejectReason> {
        self.shadow_rejected
    }

    /// Frees the slot and feeds the limiter: `latency` is the upstream's service time as
    /// the proxy measured it, `outcome` what it signalled, `now` the caller's clock.
    pub fn release(mut self, latency: Duration, outcome: Outcome, now: Micros) {
        self.leave();
        self.released = true;
        self.shared.split.finished(self.tier.index(), latency);
        if let Some(c) = self.shared.clusters.get(self.cluster) {
            c.limit.sample(latency, self.inflight, outcome, now);
        }
    }

    fn leave(&self) {
        let Some(c) = self.shared.clusters.get(self.cluster) else {
            return;
        };
        if self.shadow_rejected.is_some() {
            c.shadow_inflight.fetch_sub(1, Relaxed);
        } else {
            c.inflight.fetch_sub(1, Relaxed);
            if let Some(t) = c.tier_inflight.get(self.tier.index()) {
                t.fetch_sub(1, Relaxed);
            }
            // Pairs with the fence in `Shared::enqueue`: a request queueing right now
            // either sees this freed slot or is seen here and served.
            fence(SeqCst);
            if !c.queue.is_empty() {
                self.shared.serve(self.cluster);
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.released {
            self.leave();
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("tier", &self.tier)
            .field("cluster", &self.cluster)
            .field("shadow_rejected", &self.shadow_rejected)
            .finish()
    }
}
