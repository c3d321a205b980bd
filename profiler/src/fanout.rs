//! Downstream fanout: how many outbound calls the local service made while serving
//! each inbound request, correlated by trace id.
//!
//! A fixed-size, lock-free open-addressing table. The inbound side claims a slot for
//! its trace id and releases it when the request completes; the outbound side bumps
//! the slot's counter when it sees the same trace id. When the table is full, new
//! requests are simply not tracked (and counted): the data path never waits or grows.

use crate::trace::TraceId;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// How far a lookup probes past the home slot before giving up.
const PROBES: usize = 8;

/// The table. Capacity is fixed at construction; memory is 16 bytes a slot.
pub struct FanoutTable {
    keys: Box<[AtomicU64]>,
    counts: Box<[AtomicU32]>,
    untracked: AtomicU64,
}

/// A claimed slot; release it with [`FanoutTable::finish`] to read the count.
#[derive(Debug, PartialEq, Eq)]
pub struct Slot(usize);

// === impl FanoutTable ===

impl FanoutTable {
    /// A table for at most `capacity` concurrently tracked requests (rounded up to a
    /// power of two, at least 64).
    pub fn new(capacity: usize) -> Self {
        let n = capacity.max(64).next_power_of_two();
        Self {
            keys: (0..n).map(|_| AtomicU64::new(0)).collect(),
            counts: (0..n).map(|_| AtomicU32::new(0)).collect(),
            untracked: AtomicU64::new(0),
        }
    }

    /// Starts tracking an inbound request. `None` when its probe window is full (or the
    /// same trace id is already in flight: a retry of a request that is still being
    /// served shares the first request's slot, so only the first one is tracked).
    pub fn begin(&self, id: TraceId) -> Option<Slot> {
        let key = id.get();
        for i in self.window(key) {
            let slot = self.keys.get(i)?;
            match slot.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if let Some(c) = self.counts.get(i) {
                        c.store(0, Ordering::Release);
                    }
                    return Some(Slot(i));
                }
                Err(existing) if existing == key => break,
                Err(_) => continue,
            }
        }
        self.untracked.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Counts one outbound call carrying `id`; returns whether an inbound request
    /// with that trace id was found.
    pub fn record_call(&self, id: TraceId) -> bool {
        let key = id.get();
        for i in self.window(key) {
            if self.keys.get(i).map(|k| k.load(Ordering::Acquire)) == Some(key) {
                if let Some(c) = self.counts.get(i) {
                    c.fetch_add(1, Ordering::AcqRel);
                }
                return true;
            }
        }
        false
    }

    /// Stops tracking and returns the number of outbound calls seen.
    pub fn finish(&self, slot: Slot) -> u32 {
        let n = self
            .counts
            .get(slot.0)
            .map_or(0, |c| c.swap(0, Ordering::AcqRel));
        if let Some(k) = self.keys.get(slot.0) {
            k.store(0, Ordering::Release);
        }
        n
    }

    /// Requests that could not be tracked because their probe window was full.
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.keys.len()
    }

    fn window(&self, key: u64) -> impl Iterator<Item = usize> {
        let mask = self.keys.len() - 1;
        // Fibonacci hashing spreads FNV output across the table.
        let home = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize;
        (0..PROBES).map(move |p| (home + p) & mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> TraceId {
        TraceId::parse("x-request-id", &format!("req-{n}")).unwrap()
    }

    #[test]
    fn counts_calls_per_request_and_frees_slots() {
        let t = FanoutTable::new(64);
        let a = t.begin(id(1)).unwrap();
        let b = t.begin(id(2)).unwrap();
        // Request 1 makes three calls, request 2 one, an unknown trace none.
        for _ in 0..3 {
            assert!(t.record_call(id(1)));
        }
        assert!(t.record_call(id(2)));
        assert!(!t.record_call(id(3)));
        assert_eq!(t.finish(a), 3);
        assert_eq!(t.finish(b), 1);
        // Finished requests no longer collect calls.
        assert!(!t.record_call(id(1)));
    }

    #[test]
    fn a_full_table_refuses_instead_of_growing() {
        let t = FanoutTable::new(64);
        let held: Vec<_> = (0..10_000).filter_map(|n| t.begin(id(n))).collect();
        assert!(held.len() <= t.capacity());
        assert!(t.untracked() >= 10_000 - t.capacity() as u64);
        // Everything released: the table is usable again.
        for s in held {
            t.finish(s);
        }
        assert!(t.begin(id(99_999)).is_some());
    }

    #[test]
    fn concurrent_callers_lose_no_counts() {
        let t = std::sync::Arc::new(FanoutTable::new(1024));
        let slots: Vec<_> = (0..100).map(|n| t.begin(id(n)).unwrap()).collect();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for n in 0..100 {
                        for _ in 0..10 {
                            t.record_call(id(n));
                        }
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        for s in slots {
            assert_eq!(t.finish(s), 40);
        }
    }
}
