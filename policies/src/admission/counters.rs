//! Decision counters per (tier, decision, reason), and the snapshot served as
//! `GET /v1/tiers`.

use super::decision::RejectReason;
use super::limit::LimitStats;
use crate::tiers::MAX_TIERS;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Per tier: admitted, then rejected by reason, then shadow-rejected by reason, then
/// admitted after waiting in the queue, then admitted on the overflow cluster (both
/// also counted as admitted).
const SLOTS: usize = 3 + 2 * RejectReason::ALL.len();
const QUEUED: usize = SLOTS - 2;
const OVERFLOWED: usize = SLOTS - 1;

/// Monotonic counters, bounded: [`MAX_TIERS`] × 11.
#[derive(Debug)]
pub(super) struct Counters {
    by_tier: [[AtomicU64; SLOTS]; MAX_TIERS],
}

/// What was decided (a fixed set: usable as a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// Forwarded.
    Admitted,
    /// Answered 503 or 429.
    Rejected,
    /// Would have been rejected; admitted because of shadow mode.
    ShadowRejected,
}

/// Admission state at one moment, for `GET /v1/tiers` and the metrics exporter.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AdmissionSnapshot {
    /// Whether the concurrency limit is enforced.
    pub enabled: bool,
    /// Global shadow mode (tiers may also be in shadow mode on their own).
    pub shadow: bool,
    pub preshed_level: f64,
    /// Median of the cost hints seen, once there has been one.
    pub median_cost: Option<f64>,
    pub tiers: Vec<TierSnapshot>,
    pub clusters: Vec<ClusterSnapshot>,
    pub sources: SourcesSnapshot,
}

/// One tier's settings, occupancy and decisions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TierSnapshot {
    pub name: String,
    pub priority: u8,
    pub share: f64,
    pub sheddable: bool,
    pub shadow: bool,
    /// Upstream cluster; `null`: the route's own.
    pub cluster: Option<String>,
    /// Requests of this tier holding a slot now.
    pub inflight: u32,
    pub admitted: u64,
    /// Of `admitted`: those that waited in the admission queue first.
    pub queued: u64,
    /// Of `admitted`: those given a slot on the overflow cluster (their own was full).
    pub overflowed: u64,
    pub rejected: ReasonCounts,
    pub shadow_rejected: ReasonCounts,
    /// Share of this tier's arrivals pre-shedding refuses now.
    pub preshed_share: f64,
}

/// Counts by [`RejectReason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReasonCounts {
    pub overload: u64,
    pub rate_limited: u64,
    pub pre_shed: u64,
    pub anomaly: u64,
}

/// One upstream cluster's limit and occupancy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterSnapshot {
    /// `null`: the route's own cluster.
    pub cluster: Option<String>,
    /// Admitted requests holding a slot.
    pub inflight: u32,
    /// Requests let through only by shadow mode (not counted against the limit).
    pub shadow_inflight: u32,
    /// Requests waiting in the admission queue for a slot.
    pub waiting: u32,
    #[serde(flatten)]
    pub limit: LimitStats,
}

/// The per-source table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SourcesSnapshot {
    pub rate_limit: bool,
    pub tracked: usize,
    pub capacity: usize,
    /// Requests of sources not tracked (the `other` bucket).
    pub other: u64,
}

// === impl Counters ===

impl Counters {
    pub(super) fn new() -> Self {
        Self {
            by_tier: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }

    pub(super) fn count(&self, tier: usize, kind: DecisionKind, reason: Option<RejectReason>) {
        if let Some(c) = self.slot(tier, kind, reason) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Counts an admission after a wait in the queue (on top of [`count`](Self::count)).
    pub(super) fn count_queued(&self, tier: usize) {
        self.bump(tier, QUEUED);
    }

    /// Counts an admission on the overflow cluster (on top of [`count`](Self::count)).
    pub(super) fn count_overflowed(&self, tier: usize) {
        self.bump(tier, OVERFLOWED);
    }

    pub(super) fn queued(&self, tier: usize) -> u64 {
        self.read(tier, QUEUED)
    }

    pub(super) fn overflowed(&self, tier: usize) -> u64 {
        self.read(tier, OVERFLOWED)
    }

    fn bump(&self, tier: usize, slot: usize) {
        if let Some(c) = self.by_tier.get(tier).and_then(|t| t.get(slot)) {
            c.fetch_add(1, Relaxed);
        }
    }

    fn read(&self, tier: usize, slot: usize) -> u64 {
        self.by_tier
            .get(tier)
            .and_then(|t| t.get(slot))
            .map_or(0, |c| c.load(Relaxed))
    }

    pub(super) fn get(&self, tier: usize, kind: DecisionKind, reason: Option<RejectReason>) -> u64 {
        self.slot(tier, kind, reason).map_or(0, |c| c.load(Relaxed))
    }

    /// Copies tier `from_tier`'s counts in `old` to `tier` (a config reload keeps
    /// counters monotonic).
    pub(super) fn carry(&self, tier: usize, old: &Counters, from_tier: usize) {
        let (Some(to), Some(from)) = (self.by_tier.get(tier), old.by_tier.get(from_tier)) else {
            return;
        };
        for (t, f) in to.iter().zip(from) {
            t.store(f.load(Relaxed), Relaxed);
        }
    }

    pub(super) fn reasons(&self, tier: usize, kind: DecisionKind) -> ReasonCounts {
        ReasonCounts {
            overload: self.get(tier, kind, Some(RejectReason::Overload)),
            rate_limited: self.get(tier, kind, Some(RejectReason::RateLimited)),
            pre_shed: self.get(tier, kind, Some(RejectReason::PreShed)),
            anomaly: self.get(tier, kind, Some(RejectReason::Anomaly)),
        }
    }

    fn slot(
        &self,
        tier: usize,
        kind: DecisionKind,
        reason: Option<RejectReason>,
    ) -> Option<&AtomicU64> {
        let r = reason.map_or(0, RejectReason::index);
        let i = match kind {
            DecisionKind::Admitted => 0,
            DecisionKind::Rejected => 1 + r,
            DecisionKind::ShadowRejected => 1 + RejectReason::ALL.len() + r,
        };
        self.by_tier.get(tier)?.get(i)
    }
}

// === impl DecisionKind ===

impl DecisionKind {
    /// Stable snake_case name (`admitted`, `rejected`, `shadow_rejected`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admitted => "admitted",
            Self::Rejected => "rejected",
            Self::ShadowRejected => "shadow_rejected",
        }
    }
}

// === impl AdmissionSnapshot ===

impl AdmissionSnapshot {
    /// Every `(tier, decision, reason, count)` for
    /// `prescale_admission_decisions_total{tier,decision,reason}`; `reason` is `None`
    /// for admissions.
    pub fn decision_counts(
        &self,
    ) -> impl Iterator<Item = (&str, DecisionKind, Option<RejectReason>, u64)> {
        self.tiers.iter().flat_map(|t| {
            let name = t.name.as_str();
            let by_reason = |kind, counts: ReasonCounts| {
                [
                    (name, kind, Some(RejectReason::Overload), counts.overload),
                    (
                        name,
                        kind,
                        Some(RejectReason::RateLimited),
                        counts.rate_limited,
                    ),
                    (name, kind, Some(RejectReason::PreShed), counts.pre_shed),
                    (name, kind, Some(RejectReason::Anomaly), counts.anomaly),
                ]
            };
            std::iter::once((name, DecisionKind::Admitted, None, t.admitted))
                .chain(by_reason(DecisionKind::Rejected, t.rejected))
                .chain(by_reason(DecisionKind::ShadowRejected, t.shadow_rejected))
        })
    }
}
