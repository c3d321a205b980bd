//! Passive health: an endpoint that fails several times in a row (refused or timed-out
//! connections, upstream timeouts and resets, 502/503/504) is ejected for a back-off
//! period that doubles with each ejection in a row, up to a cap. Requests skip ejected
//! endpoints; when a cluster has none left its requests go to its `overflow` cluster,
//! or, without one, to the ejected endpoints anyway (better a likely failure than a
//! certain one).
//!
//! State is a few atomics per endpoint, read on every pick and written only when a
//! count changes; it lives in the routing snapshot, and a reload carries it over to
//! endpoints at the same address.

use crate::config::PassiveHealthConfig;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// The passive health of one cluster's endpoints.
pub struct PassiveHealth {
    threshold: u32,
    /// Back-off of the first ejection and the cap, in µs.
    base: u64,
    max: u64,
    endpoints: Box<[EndpointHealth]>,
}

#[derive(Default)]
struct EndpointHealth {
    /// Failures in a row.
    failures: AtomicU32,
    /// Ejections in a row (the back-off doubles with each); reset by a success.
    ejections: AtomicU32,
    /// Ejected until this time (µs on the `Clock`'s `now_micros`); 0: never ejected.
    until: AtomicU64,
}

// === impl PassiveHealth ===

impl PassiveHealth {
    /// State for `endpoints` endpoints, all healthy.
    pub fn new(cfg: &PassiveHealthConfig, endpoints: usize) -> Self {
        let micros = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Self {
            threshold: cfg.consecutive_failures.max(1),
            base: micros(cfg.ejection),
            max: micros(cfg.max_ejection),
            endpoints: std::iter::repeat_with(EndpointHealth::default)
                .take(endpoints)
                .collect(),
        }
    }

    /// Endpoint `i` takes over endpoint `j`'s state in `old` (a reload).
    pub fn inherit(&self, i: usize, old: &PassiveHealth, j: usize) {
        if let (Some(e), Some(o)) = (self.endpoints.get(i), old.endpoints.get(j)) {
            e.failures.store(o.failures.load(Relaxed), Relaxed);
            e.ejections.store(o.ejections.load(Relaxed), Relaxed);
            e.until.store(o.until.load(Relaxed), Relaxed);
        }
    }

    /// Whether endpoint `i` is ejected at `now`.
    pub fn is_ejected(&self, i: usize, now: u64) -> bool {
        self.endpoints
            .get(i)
            .is_some_and(|e| e.until.load(Relaxed) > now)
    }

    /// Whether any endpoint is in at `now`.
    pub fn any_healthy(&self, now: u64) -> bool {
        (0..self.endpoints.len()).any(|i| !self.is_ejected(i, now))
    }

    /// Endpoints ejected at `now`.
    pub fn ejected(&self, now: u64) -> usize {
        (0..self.endpoints.len())
            .filter(|i| self.is_ejected(*i, now))
            .count()
    }

    /// Counts a failure of endpoint `i`; returns true when it ejected the endpoint.
    pub fn failure(&self, i: usize, now: u64) -> bool {
        let Some(e) = self.endpoints.get(i) else {
            return false;
        };
        let n = e.failures.fetch_add(1, Relaxed).saturating_add(1);
        // Exactly one of the threads that see the threshold ejects.
        if n < self.threshold || e.failures.compare_exchange(n, 0, Relaxed, Relaxed).is_err() {
            return false;
        }
        let k = e.ejections.fetch_add(1, Relaxed).min(20);
        let backoff = self.base.saturating_mul(1 << k).min(self.max);
        e.until.store(now.saturating_add(backoff), Relaxed);
        true
    }

    /// Counts a success of endpoint `i`: its failure run and back-off start over.
    pub fn success(&self, i: usize) {
        if let Some(e) = self.endpoints.get(i) {
            // Loads first: a healthy endpoint's counters are not written per request.
            if e.failures.load(Relaxed) != 0 {
                e.failures.store(0, Relaxed);
            }
            if e.ejections.load(Relaxed) != 0 {
                e.ejections.store(0, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const S: u64 = 1_000_000;

    fn health(n: usize) -> PassiveHealth {
        PassiveHealth::new(
            &PassiveHealthConfig {
                consecutive_failures: 3,
                ejection: Duration::from_secs(10),
                max_ejection: Duration::from_secs(30),
            },
            n,
        )
    }

    #[test]
    fn consecutive_failures_eject_for_a_doubling_back_off() {
        let h = health(2);
        // Two failures, then a success: the run starts over.
        assert!(!h.failure(0, 0));
        assert!(!h.failure(0, 0));
        h.success(0);
        assert!(!h.failure(0, 0));
        assert!(!h.failure(0, 0));
        // The third in a row ejects it for 10 s; the other endpoint stays in.
        assert!(h.failure(0, 0));
        assert!(h.is_ejected(0, 9 * S));
        assert!(!h.is_ejected(0, 10 * S));
        assert!(!h.is_ejected(1, 0));
        assert!(h.any_healthy(0));
        assert_eq!(h.ejected(0), 1);
        // Back in, it fails three more times: 20 s this time, then capped at 30 s.
        for _ in 0..3 {
            h.failure(0, 10 * S);
        }
        assert!(h.is_ejected(0, 29 * S) && !h.is_ejected(0, 30 * S));
        for _ in 0..3 {
            h.failure(0, 30 * S);
        }
        assert!(h.is_ejected(0, 59 * S) && !h.is_ejected(0, 60 * S));
        // A success resets the back-off.
        h.success(0);
        for _ in 0..3 {
            h.failure(0, 60 * S);
        }
        assert!(!h.is_ejected(0, 70 * S));
        // Both out: nothing healthy.
        for _ in 0..3 {
            h.failure(1, 60 * S);
        }
        assert!(!h.any_healthy(65 * S));
        // Out-of-range indexes are ignored.
        assert!(!h.failure(7, 0));
        h.success(7);
    }
}
