//! Per-signature time series: requests and work (Σ service time) in 10 s buckets,
//! rolled up to minutes. Demand is work per unit time: by Little's law, the number of
//! requests being served at once, i.e. the concurrency the service must provide.

use crate::sample::Millis;
use crate::signature::SignatureId;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// Samples not yet classified (before the first fit) are counted under this id.
pub const UNCLASSIFIED: SignatureId = 0;

pub const FINE_STEP_MS: Millis = 10_000;
pub const MINUTE_MS: Millis = 60_000;

/// Requests and work in one bucket.
#[derive(Copy, Clone, Debug, Default, PartialEq, Serialize)]
pub struct Cell {
    pub requests: u64,
    /// Σ service time, in microseconds.
    pub work_us: u64,
}

/// One bucket: the total and each signature's share.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bucket {
    pub start: Millis,
    pub total: Cell,
    pub by_signature: BTreeMap<SignatureId, Cell>,
}

/// Fine (10 s) and minute buckets, each a bounded ring.
pub struct Series {
    fine: Ring,
    minutes: Ring,
    /// Samples older than the oldest bucket kept: counted, not stored.
    pub too_old: u64,
}

struct Ring {
    step: Millis,
    cap: usize,
    buckets: VecDeque<Bucket>,
}

// === impl Cell ===

impl Cell {
    fn add(&mut self, service_us: u64) {
        self.requests += 1;
        self.work_us = self.work_us.saturating_add(service_us);
    }

    /// Mean concurrency over a bucket of `step` ms: Σ service time / bucket length.
    pub fn demand(&self, step: Millis) -> f64 {
        self.work_us as f64 / (step as f64 * 1000.0)
    }

    /// Requests per second over a bucket of `step` ms.
    pub fn rate(&self, step: Millis) -> f64 {
        self.requests as f64 * 1000.0 / step as f64
    }
}

// === impl Series ===

impl Series {
    /// Keeps `fine_buckets` 10 s buckets and `minute_buckets` minutes in memory.
    pub fn new(fine_buckets: usize, minute_buckets: usize) -> Self {
        Self {
            fine: Ring::new(FINE_STEP_MS, fine_buckets),
            minutes: Ring::new(MINUTE_MS, minute_buckets),
            too_old: 0,
        }
    }

    /// Adds one finished request that arrived at `at`.
    pub fn add(&mut self, at: Millis, sig: SignatureId, service_us: u64) {
        let fine = self.fine.add(at, sig, service_us);
        let minute = self.minutes.add(at, sig, service_us);
        if !(fine && minute) {
            self.too_old += 1;
        }
    }

    pub fn fine(&self) -> impl DoubleEndedIterator<Item = &Bucket> {
        self.fine.buckets.iter()
    }

    pub fn minutes(&self) -> impl DoubleEndedIterator<Item = &Bucket> {
        self.minutes.buckets.iter()
    }

    /// Minute buckets starting at or after `since`.
    pub fn minutes_since(&self, since: Millis) -> impl Iterator<Item = &Bucket> {
        self.minutes
            .buckets
            .iter()
            .filter(move |b| b.start >= since)
    }

    /// Minute buckets complete at `now` (ended at least `grace` ms ago, the time late
    /// samples are given) that start after `after`, oldest first: what the sidecar's
    /// profiler hands the forecaster each tick, and what `prescale replay` hands the
    /// same engine as it reads a log.
    pub fn complete_minutes(
        &self,
        now: Millis,
        grace: Millis,
        after: Option<Millis>,
    ) -> impl Iterator<Item = &Bucket> {
        self.minutes.buckets.iter().filter(move |b| {
            b.start + MINUTE_MS + grace <= now && after.is_none_or(|a| b.start > a)
        })
    }

    /// Restores minute buckets (e.g. from the store at startup), oldest first.
    pub fn restore_minutes(&mut self, rows: impl IntoIterator<Item = Bucket>) {
        for b in rows {
            self.minutes.insert(b);
        }
    }
}

// === impl Ring ===

impl Ring {
    fn new(step: Millis, cap: usize) -> Self {
        Self {
            step,
            cap: cap.max(1),
            buckets: VecDeque::new(),
        }
    }

    /// Returns false when `at` is older than every bucket kept.
    fn add(&mut self, at: Millis, sig: SignatureId, service_us: u64) -> bool {
        let start = at - at % self.step;
        let Some(b) = self.bucket_mut(start) else {
            return false;
        };
        b.total.add(service_us);
        b.by_signature.entry(sig).or_default().add(service_us);
        true
    }

    fn bucket_mut(&mut self, start: Millis) -> Option<&mut Bucket> {
        let newest = self.buckets.back().map(|b| b.start);
        match newest {
            Some(n) if start > n => self.push(start),
            None => self.push(start),
            _ => {}
        }
        // Out-of-order arrivals (logs are only roughly sorted) find their bucket here;
        // older than the oldest bucket kept is too old.
        let i = self.buckets.iter().rposition(|b| b.start <= start)?;
        if self.buckets.get(i).is_some_and(|b| b.start == start) {
            return self.buckets.get_mut(i);
        }
        // A gap in the past (no traffic then): insert an empty bucket in order.
        self.buckets.insert(i + 1, empty(start));
        self.trim();
        self.buckets.iter_mut().find(|b| b.start == start)
    }

    fn push(&mut self, start: Millis) {
        self.buckets.push_back(empty(start));
        self.trim();
    }

    fn insert(&mut self, bucket: Bucket) {
        match self.buckets.iter().position(|b| b.start >= bucket.start) {
            Some(i) if self.buckets.get(i).is_some_and(|b| b.start == bucket.start) => {
                if let Some(b) = self.buckets.get_mut(i) {
                    *b = bucket;
                }
            }
            Some(i) => self.buckets.insert(i, bucket),
            None => self.buckets.push_back(bucket),
        }
        self.trim();
    }

    fn trim(&mut self) {
        while self.buckets.len() > self.cap {
            self.buckets.pop_front();
        }
    }
}

fn empty(start: Millis) -> Bucket {
    Bucket {
        start,
        total: Cell::default(),
        by_signature: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_work_and_demand_follows_littles_law() {
        let mut s = Series::new(6, 10);
        // 100 requests of 50 ms each within one 10 s bucket: 0.5 s of work per 10 s
        // is 0.05 busy servers on average; 10 req/s.
        for i in 0..100 {
            s.add(20_000 + i * 10, 1, 50_000);
        }
        let b = s.fine().next().unwrap();
        assert_eq!(b.start, 20_000);
        assert_eq!(b.total.requests, 100);
        assert!((b.total.demand(FINE_STEP_MS) - 0.5).abs() < 1e-9);
        assert!((b.total.rate(FINE_STEP_MS) - 10.0).abs() < 1e-9);
        assert_eq!(s.minutes().next().unwrap().by_signature[&1].requests, 100);
    }

    #[test]
    fn complete_minutes_are_those_past_their_grace_and_not_yet_handed_over() {
        let mut s = Series::new(6, 10);
        for m in 0..4 {
            s.add(m * MINUTE_MS + 5, 1, 1_000);
        }
        let starts = |now, after| {
            s.complete_minutes(now, 2_000, after)
                .map(|b| b.start)
                .collect::<Vec<_>>()
        };
        // At 3 min + 1 s the third minute has ended but is still within its grace.
        assert_eq!(starts(3 * MINUTE_MS + 1_000, None), vec![0, MINUTE_MS]);
        assert_eq!(
            starts(3 * MINUTE_MS + 2_000, None),
            vec![0, MINUTE_MS, 2 * MINUTE_MS]
        );
        assert_eq!(
            starts(3 * MINUTE_MS + 2_000, Some(MINUTE_MS)),
            vec![2 * MINUTE_MS]
        );
    }

    #[test]
    fn late_samples_land_in_their_bucket_and_rings_stay_bounded() {
        let mut s = Series::new(3, 10);
        s.add(100_000, 1, 1);
        s.add(130_000, 2, 1);
        // 25 s late: bucket 110 000 did not exist yet, it is created in order.
        s.add(115_000, 1, 1);
        let starts: Vec<_> = s.fine().map(|b| b.start).collect();
        assert_eq!(starts, vec![100_000, 110_000, 130_000]);
        // Far in the future: the ring keeps only the newest three buckets.
        s.add(1_000_000, 1, 1);
        assert_eq!(s.fine().count(), 3);
        // Older than everything kept: counted as too old, not stored.
        s.add(0, 1, 1);
        assert_eq!(s.too_old, 1);
    }
}
