//! Lock-free numbers for the hot path: an atomic `f64` and a streaming median.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// An `f64` stored as its bits. Loads and stores only: writers that race may lose an
/// update, which every user here tolerates (each says why).
#[derive(Debug)]
pub(crate) struct AtomicF64(AtomicU64);

/// Frugal streaming median (Ma, Muthukrishnan, Sandler 2013), multiplicative: each value
/// moves the estimate 2 % towards itself, so it settles where half the values are above
/// it, in a few hundred samples from any start. One load and one store per value; a lost
/// update under contention only slows convergence.
#[derive(Debug)]
pub(crate) struct FrugalMedian(AtomicF64);

const STEP: f64 = 1.02;

// === impl AtomicF64 ===

impl AtomicF64 {
    pub(crate) fn new(v: f64) -> Self {
        Self(AtomicU64::new(v.to_bits()))
    }

    pub(crate) fn load(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }

    pub(crate) fn store(&self, v: f64) {
        self.0.store(v.to_bits(), Relaxed);
    }
}

// === impl FrugalMedian ===

impl FrugalMedian {
    pub(crate) fn new() -> Self {
        Self(AtomicF64::new(0.0))
    }

    /// Feeds a positive, finite `x`; returns the estimate before it (or `x` itself for
    /// the first value).
    pub(crate) fn observe(&self, x: f64) -> f64 {
        let m = self.0.load();
        if m <= 0.0 {
            self.0.store(x);
            return x;
        }
        if x > m {
            self.0.store(m * STEP);
        } else if x < m {
            self.0.store(m / STEP);
        }
        m
    }

    /// The current estimate, if any value was seen.
    pub(crate) fn get(&self) -> Option<f64> {
        let m = self.0.load();
        (m > 0.0).then_some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frugal_median_settles_on_the_median() {
        let m = FrugalMedian::new();
        // Costs 1..=99 ms in a scrambled order (37 is coprime to 99), many times over.
        for round in 0..50 {
            for i in 0..99u64 {
                let x = ((i * 37 + round) % 99 + 1) as f64;
                m.observe(x);
            }
        }
        let est = m.get().unwrap();
        assert!((40.0..=60.0).contains(&est), "median estimate {est}");
    }
}
