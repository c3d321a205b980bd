//! Bounded per-source state: a lock-free top-K table of heavy hitters, each with a
//! rate-limit bucket, and an `other` count for everyone else.
//!
//! The table is set-associative: a source hashes to one set of [`WAYS`] slots. A source
//! already in its set is counted there. A new one takes the slot with the lowest count
//! and inherits that count plus one (Space-Saving), so any source sending more than
//! about 1/K of the traffic stays tracked however many distinct sources there are, and
//! the table never grows. Slots are claimed with a compare-and-swap on the key; a request
//! that loses that race, or whose source is not tracked, goes to `other`.
//!
//! Debts, stated plainly: counts never decay (a source that was heavy long ago keeps its
//! slot until newcomers' inherited counts pass it); an evicted source that comes back
//! starts with a full burst; two sources whose 64-bit hashes collide share a bucket (the
//! hasher is randomly keyed per table, so a client cannot aim for that).

use super::config::SourcesConfig;
use crate::Micros;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Slots per set.
pub const WAYS: usize = 8;

/// Per-source rate limits over a bounded table of sources.
#[derive(Debug)]
pub struct SourceTable {
    /// `sets × WAYS` slots, allocated once.
    slots: Box<[Slot]>,
    sets: u64,
    hasher: RandomState,
    limit: Option<Gcra>,
    /// Configured weights, by identity.
    weights: HashMap<String, f64>,
    /// Requests of sources not tracked (the `other` bucket).
    other: AtomicU64,
}

#[derive(Debug, Default)]
struct Slot {
    /// Hash of the source, never 0; 0 marks a free slot.
    key: AtomicU64,
    /// Space-Saving count (an over-estimate of the source's requests).
    count: AtomicU64,
    /// GCRA theoretical arrival time, in µs.
    tat: AtomicU64,
}

/// Generic cell rate algorithm, the one-word form of a token bucket.
#[derive(Clone, Copy, Debug)]
pub(super) struct Gcra {
    /// µs between requests at the sustained rate (weight 1).
    pub(super) interval: f64,
    pub(super) burst: f64,
}

// === impl SourceTable ===

impl SourceTable {
    /// Builds the table for `cfg` (validated).
    pub fn new(cfg: &SourcesConfig) -> Self {
        let sets = cfg.top_k.div_ceil(WAYS).max(1);
        let slots = std::iter::repeat_with(Slot::default)
            .take(sets * WAYS)
            .collect();
        Self {
            slots,
            sets: sets as u64,
            hasher: RandomState::new(),
            limit: cfg.rate_limit.as_ref().map(|r| Gcra {
                interval: 1e6 / r.rps,
                burst: r.burst(),
            }),
            weights: cfg
                .identities
                .iter()
                .map(|(id, s)| (id.clone(), s.weight))
                .collect(),
            other: AtomicU64::new(0),
        }
    }

    /// The configured weight of `source` (1 when unknown).
    pub fn weight(&self, source: &str) -> f64 {
        if self.weights.is_empty() {
            return 1.0;
        }
        self.weights.get(source).copied().unwrap_or(1.0)
    }

    /// Whether per-source rate limiting is on (sources are tracked only then).
    pub fn is_limiting(&self) -> bool {
        self.limit.is_some()
    }

    /// Takes one request of `source` at `now`: `Err(wait)` (µs until it would conform)
    /// when the source is over its rate. Untracked sources are never limited.
    pub fn check(&self, source: &str, weight: f64, now: Micros) -> Result<(), Micros> {
        let Some(gcra) = self.limit else {
            return Ok(());
        };
        let Some(slot) = self.track(source) else {
            return Ok(());
        };
        gcra.take(&slot.tat, weight, now)
    }

    /// Finds or claims the slot of `source`; `None` counts it as `other`.
    fn track(&self, source: &str) -> Option<&Slot> {
        let key = self.hasher.hash_one(source) | 1;
        let start = ((key >> 1) % self.sets) as usize * WAYS;
        let Some(set) = self.slots.get(start..start + WAYS) else {
            self.other.fetch_add(1, Relaxed);
            return None;
        };
        if let Some(slot) = set.iter().find(|s| s.key.load(Relaxed) == key) {
            slot.count.fetch_add(1, Relaxed);
            return Some(slot);
        }
        // Space-Saving: replace the least counted slot (a free one counts 0).
        let victim = set.iter().min_by_key(|s| s.count.load(Relaxed))?;
        let old = victim.key.load(Relaxed);
        let min = victim.count.load(Relaxed);
        if victim
            .key
            .compare_exchange(old, key, Relaxed, Relaxed)
            .is_err()
        {
            self.other.fetch_add(1, Relaxed);
            return None;
        }
        victim.count.store(min + 1, Relaxed);
        // A new source starts with a full bucket.
        victim.tat.store(0, Relaxed);
        Some(victim)
    }

    /// Sources tracked now (at most [`capacity`](Self::capacity)). O(capacity).
    pub fn tracked(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.key.load(Relaxed) != 0)
            .count()
    }

    /// The most sources tracked at once: `top_k` rounded up to a multiple of [`WAYS`].
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Requests whose source was not tracked.
    pub fn other(&self) -> u64 {
        self.other.load(Relaxed)
    }
}

// === impl Gcra ===

impl Gcra {
    /// Admits one request if the bucket has a token; else the wait until it would.
    pub(super) fn take(&self, tat: &AtomicU64, weight: f64, now: Micros) -> Result<(), Micros> {
        let interval = (self.interval / weight).max(1.0) as u64;
        // Tolerance: how far ahead of now the schedule may run ((burst - 1) intervals).
        let tau = ((self.burst * weight).max(1.0) - 1.0) * interval as f64;
        let tau = tau as u64;
        let mut current = tat.load(Relaxed);
        loop {
            let base = current.max(now);
            if base - now > tau {
                return Err(base - now - tau);
            }
            match tat.compare_exchange_weak(current, base + interval, Relaxed, Relaxed) {
                Ok(_) => return Ok(()),
                Err(seen) => current = seen,
            }
        }
    }
}
